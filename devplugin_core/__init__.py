"""devplugin_core: a framework for Kubernetes device plugins.

Vendors implement a :class:`Discoverer` (which devices exist), an :class:`Allocator` (what a
container gets) and optionally a :class:`HealthChecker` (which devices are healthy), group them
into :class:`Resource` s, and publish a :class:`PluginSpec` through the ``devplugin.plugins``
entry-point group. The framework speaks the kubelet device plugin API ``v1beta1``: one gRPC server
and socket per resource, registration and re-registration, health with recovery, preferred
allocation, CDI, hot config reload, Prometheus metrics and a CLI (``devplugin``).
The testing kit lives in :mod:`devplugin_core.testing`.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .allocation import prefer_nested, prefer_packed
from .api import (
    AllocationRequest,
    Allocator,
    Discoverer,
    DiscoveryPass,
    HealthChecker,
    Observation,
    PluginContext,
    PluginFlag,
    PluginSpec,
    PreferredRequest,
    Rejection,
    Resource,
    ResourceSet,
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
from .health import health_round
from .hostfs import HostFS, HostReadError
from .model import (
    ContainerEdits,
    Device,
    DeviceNode,
    Health,
    Mount,
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
    "Discoverer",
    "DiscoveryError",
    "DiscoveryPass",
    "Health",
    "HealthChecker",
    "HostFS",
    "HostPathError",
    "HostReadError",
    "LockTimeout",
    "Mount",
    "NetDevice",
    "Observation",
    "PciDevice",
    "PciScan",
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
    "ResourceSet",
    "RuntimeOptions",
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
    "health_round",
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
