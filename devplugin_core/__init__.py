"""devplugin_core: a framework for Kubernetes device plugins.

Vendors implement a :class:`Scanner` (which devices each resource has, from one pass over the host),
an :class:`Allocator` (what a container gets) and optionally a :class:`HealthChecker` (which devices
are healthy), name them in :class:`Resource` s of a :class:`Plugin`, and publish a
:class:`PluginSpec` through the ``devplugin.plugins`` entry-point group. The framework speaks the
kubelet device plugin API ``v1beta1``: one gRPC server and socket per resource, registration and
re-registration, health with recovery, preferred allocation, CDI, hot config reload, Prometheus metrics
and a CLI (``devplugin``).
The testing kit lives in :mod:`devplugin_core.testing`.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .allocation import prefer_nested, prefer_packed
from .api import (
    AllocationRequest,
    Allocator,
    HealthChecker,
    MetricsCollector,
    Observation,
    Plugin,
    PluginContext,
    PluginFlag,
    PluginSpec,
    PreferredRequest,
    Rejection,
    Resource,
    Scan,
    Scanner,
    numa_level,
)
from .config import DecodeContext, decode, encode, load_document, one_or_many, option
from .errors import (
    AllocationError,
    ConfigError,
    DevicePluginError,
    DiscoveryError,
    HostPathError,
    PluginNotFoundError,
    RegistrationError,
    UnhealthyDeviceError,
    UnknownDeviceError,
)
from .hostfs import HostFS, HostReadError
from .model import (
    ContainerEdits,
    Device,
    DeviceNode,
    Health,
    Mount,
    Part,
    extended_resource_name_error,
    natural_key,
    validate_resource_name,
)
from .pci import (
    CharDevice,
    NetDevice,
    PciDevice,
    PciScan,
    RdmaDevice,
    RdmaPort,
    bridges_of,
    pci_class,
    scan_pci,
)
from .runtime import PluginRuntime, RuntimeOptions, load_config
from .selectors import (
    Candidate,
    Pool,
    PoolAssignment,
    Selector,
    VfRange,
    assign,
    hex_id_warnings,
    match_flag,
    match_values,
    match_vf_ranges,
    parse_vf_range,
)
from .tools import CommandResult, DeadlineLock, LockTimeout, run_bounded

__all__ = [
    "AllocationError",
    "AllocationRequest",
    "Allocator",
    "Candidate",
    "CharDevice",
    "CommandResult",
    "ConfigError",
    "ContainerEdits",
    "DeadlineLock",
    "DecodeContext",
    "Device",
    "DeviceNode",
    "DevicePluginError",
    "DiscoveryError",
    "Health",
    "HealthChecker",
    "HostFS",
    "HostPathError",
    "HostReadError",
    "LockTimeout",
    "MetricsCollector",
    "Mount",
    "NetDevice",
    "Observation",
    "Part",
    "PciDevice",
    "PciScan",
    "Plugin",
    "PluginContext",
    "PluginFlag",
    "PluginNotFoundError",
    "PluginRuntime",
    "PluginSpec",
    "Pool",
    "PoolAssignment",
    "PreferredRequest",
    "RdmaDevice",
    "RdmaPort",
    "RegistrationError",
    "Rejection",
    "Resource",
    "RuntimeOptions",
    "Scan",
    "Scanner",
    "Selector",
    "UnhealthyDeviceError",
    "UnknownDeviceError",
    "VfRange",
    "__version__",
    "assign",
    "bridges_of",
    "decode",
    "encode",
    "extended_resource_name_error",
    "hex_id_warnings",
    "load_config",
    "load_document",
    "match_flag",
    "match_values",
    "match_vf_ranges",
    "natural_key",
    "numa_level",
    "one_or_many",
    "option",
    "parse_vf_range",
    "pci_class",
    "prefer_nested",
    "prefer_packed",
    "run_bounded",
    "scan_pci",
    "validate_resource_name",
]
