"""devplugin_core: a framework for Kubernetes device plugins.

Vendors implement a :class:`Scanner` (which devices each resource has, from one pass over the host),
an :class:`Allocator` (what a container gets) and optionally a :class:`HealthChecker` (which devices
are healthy), name them in :class:`Resource` s of a :class:`Plugin`, and publish a
:class:`PluginSpec` through the ``devplugin.plugins`` entry-point group. The framework speaks the
kubelet device plugin API ``v1beta1``: one gRPC server and socket per resource, registration and
re-registration, health with recovery, preferred allocation, CDI, hot config reload, Prometheus
metrics and a CLI (``devplugin``).

This module is the whole public API (pinned by a test); optional helpers for PCI and network
plugins live in :mod:`devplugin_core.toolkit` and the testing kit in :mod:`devplugin_core.testing`.
Every ``_``-prefixed module is private and may change in any release.
"""

from __future__ import annotations

__version__ = "0.2.0"

from ._allocation import prefer_packed
from ._api import (
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
    Resource,
    Scan,
    Scanner,
    numa_level,
)
from ._config import one_or_many, option
from ._errors import AllocationError, ConfigError, DevicePluginError
from ._hostfs import HostFS, HostReadError
from ._model import ContainerEdits, Device, DeviceNode, Mount, Part
from ._pci import PciDevice, PciScan, scan_pci
from ._store import Snapshot

__all__ = [
    "AllocationError",
    "AllocationRequest",
    "Allocator",
    "ConfigError",
    "ContainerEdits",
    "Device",
    "DeviceNode",
    "DevicePluginError",
    "HealthChecker",
    "HostFS",
    "HostReadError",
    "MetricsCollector",
    "Mount",
    "Observation",
    "Part",
    "PciDevice",
    "PciScan",
    "Plugin",
    "PluginContext",
    "PluginFlag",
    "PluginSpec",
    "PreferredRequest",
    "Resource",
    "Scan",
    "Scanner",
    "Snapshot",
    "__version__",
    "numa_level",
    "one_or_many",
    "option",
    "prefer_packed",
    "scan_pci",
]
