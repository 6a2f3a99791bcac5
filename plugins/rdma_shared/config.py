"""The config model: upstream ``k8s-rdma-shared-dev-plugin`` JSON, read unchanged.

Upstream keys (matched case-insensitively, as Go's ``encoding/json`` does)::

    periodicUpdateInterval   int seconds; absent -> 60, 0 -> no periodic rescan, < 0 -> error
    configList[]             one resource per entry (at least one)
      resourceName           ^[a-zA-Z0-9_]+$, unique in the file
      resourcePrefix         default "rdma"; "<prefix>/<name>" must be a valid extended resource
      rdmaHcaMax             shared slots to advertise, 0..100000 (0 advertises nothing)
      selectors              vendors, deviceIDs, drivers, ifNames, linkTypes
                             (OR inside a list, AND across lists, empty lists are skipped)
      devices                deprecated alias of selectors.ifNames (never both)

Keys we add (optional; upstream would ignore them)::

    healthCheckInterval      float seconds between port-state checks; default 0.5, 0 disables
    configList[].excludeTopology   true: never advertise NUMA topology for this resource

Validation mirrors upstream's ``ValidateConfigs`` checks in the same order; every error is a
:class:`~devplugin_core.ConfigError` naming the field path and value. Unknown keys (such as
``kubeletRootDir`` in one upstream manifest) are warnings, as are IDs and link types that can
never match and the deprecated ``devices`` key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from devplugin_core import ConfigError, option
from devplugin_core.toolkit import (
    DecodeContext,
    extended_resource_name_error,
    hex_id_warnings,
    validate_resource_name,
)

__all__ = [
    "DEFAULT_HEALTH_INTERVAL",
    "DEFAULT_PREFIX",
    "DEFAULT_UPDATE_INTERVAL",
    "KNOWN_LINK_TYPES",
    "MAX_HEALTH_INTERVAL",
    "MAX_RDMA_HCA_MAX",
    "RdmaSharedConfig",
    "ResourceConfig",
    "Selectors",
]

DEFAULT_PREFIX = "rdma"
DEFAULT_UPDATE_INTERVAL = 60
DEFAULT_HEALTH_INTERVAL = 0.5
MAX_HEALTH_INTERVAL = 300.0
#: Far below the kubelet's 4 MiB gRPC message limit (a ListAndWatch device costs ~20 bytes).
MAX_RDMA_HCA_MAX = 100_000
#: Link types the kernel reports for RDMA-capable netdevs (``/sys/class/net/<if>/type``).
KNOWN_LINK_TYPES = ("ether", "infiniband")
_RESOURCE_NAME = re.compile(r"^[a-zA-Z0-9_]+$")


def _strings(value: Any, path: str, ctx: DecodeContext) -> tuple[str, ...]:
    decoded: tuple[str, ...] = ctx.decode(tuple[str, ...], value, path)
    return decoded


def _hex_ids(value: Any, path: str, ctx: DecodeContext) -> tuple[str, ...]:
    """A list of PCI IDs; warns about entries that can never match (``0x15b3``, ``15B3``)."""
    ids = _strings(value, path, ctx)
    ctx.warnings.extend(hex_id_warnings(ids, path))
    return ids


def _link_types(value: Any, path: str, ctx: DecodeContext) -> tuple[str, ...]:
    """A list of link types; warns about names no RDMA netdev reports (``ethernet``, ``IB``)."""
    types = _strings(value, path, ctx)
    for i, name in enumerate(types):
        if name not in KNOWN_LINK_TYPES:
            known = ", ".join(KNOWN_LINK_TYPES)
            ctx.warnings.append(
                f"{path}[{i}]: {name!r} never matches an RDMA netdev (link types are {known})"
            )
    return types


def _legacy_devices(value: Any, path: str, ctx: DecodeContext) -> tuple[str, ...]:
    names = _strings(value, path, ctx)
    if names:
        ctx.warnings.append(
            f'{path}: "devices" is deprecated, use "selectors": {{"ifNames": [...]}} instead'
        )
    return names


@dataclass(frozen=True)
class Selectors:
    """Which PCI network functions a resource takes (upstream ``Selectors``)."""

    vendors: tuple[str, ...] = option(
        "vendors", default=(), decoder=_hex_ids, doc="PCI vendor IDs, e.g. 15b3"
    )
    device_ids: tuple[str, ...] = option(
        "deviceIDs", default=(), decoder=_hex_ids, doc="PCI device IDs, e.g. 1017"
    )
    drivers: tuple[str, ...] = option(
        "drivers", default=(), decoder=_strings, doc="bound kernel drivers, e.g. mlx5_core"
    )
    if_names: tuple[str, ...] = option(
        "ifNames", default=(), decoder=_strings, doc="first netdev name of the PCI function"
    )
    link_types: tuple[str, ...] = option(
        "linkTypes", default=(), decoder=_link_types, doc="netdev link type: ether or infiniband"
    )

    @property
    def empty(self) -> bool:
        """True when no list is set (upstream ``isEmptySelector``)."""
        return not (
            self.vendors or self.device_ids or self.drivers or self.if_names or self.link_types
        )


@dataclass(frozen=True)
class ResourceConfig:
    """One ``configList`` entry: one extended resource of shared HCA slots."""

    resource_name: str = option("resourceName", default="", doc="resource name (no prefix)")
    resource_prefix: str = option(
        "resourcePrefix", default=DEFAULT_PREFIX, doc="resource prefix (domain); default rdma"
    )
    rdma_hca_max: int = option("rdmaHcaMax", default=0, doc="shared slots to advertise")
    devices: tuple[str, ...] = option(
        "devices", default=(), decoder=_legacy_devices, doc="deprecated: same as selectors.ifNames"
    )
    selectors: Selectors = option("selectors", default=Selectors(), doc="device selectors")
    exclude_topology: bool = option(
        "excludeTopology", default=False, doc="never advertise NUMA topology (ours)"
    )

    def __post_init__(self) -> None:
        if not self.resource_prefix:
            object.__setattr__(self, "resource_prefix", DEFAULT_PREFIX)  # as upstream
        if not _RESOURCE_NAME.match(self.resource_name):
            raise ConfigError(
                "resourceName",
                "resource name contains invalid characters (allowed: letters, digits and '_')",
                self.resource_name,
                show_value=True,
            )
        reason = extended_resource_name_error(f"{self.resource_prefix}/x")
        if reason is not None:
            raise ConfigError(
                "resourcePrefix", f"invalid resource prefix: {reason}", self.resource_prefix
            )
        validate_resource_name(self.full_name, "resourceName")
        if self.rdma_hca_max < 0:
            raise ConfigError("rdmaHcaMax", "invalid value for rdmaHcaMax < 0", self.rdma_hca_max)
        if self.rdma_hca_max > MAX_RDMA_HCA_MAX:
            raise ConfigError(
                "rdmaHcaMax",
                f"must be at most {MAX_RDMA_HCA_MAX} (the device list "
                "must fit the kubelet's 4 MiB message limit)",
                self.rdma_hca_max,
            )
        if self.selectors.empty and not self.devices:
            raise ConfigError(
                "selectors",
                'configuration mismatch: neither "selectors" nor '
                '"devices" is set (use "selectors")',
                show_value=False,
            )
        if not self.selectors.empty and self.devices:
            raise ConfigError(
                "devices",
                'configuration mismatch: cannot specify both "selectors" and "devices"',
                list(self.devices),
            )

    @property
    def full_name(self) -> str:
        """The extended resource name, ``<resourcePrefix>/<resourceName>``."""
        return f"{self.resource_prefix}/{self.resource_name}"

    @property
    def effective_selectors(self) -> Selectors:
        """The selectors to apply: legacy ``devices`` become ``ifNames`` (as upstream)."""
        if self.selectors.empty:
            return Selectors(if_names=self.devices)
        return self.selectors


@dataclass(frozen=True)
class RdmaSharedConfig:
    """The whole config file."""

    periodic_update_interval: int | None = option(
        "periodicUpdateInterval",
        default=None,
        doc="seconds between rescans; absent -> 60, 0 disables",
    )
    config_list: tuple[ResourceConfig, ...] = option(
        "configList", default=(), doc="resources (at least one)"
    )
    health_check_interval: float = option(
        "healthCheckInterval",
        default=DEFAULT_HEALTH_INTERVAL,
        doc="seconds between HCA port-state checks; 0 disables (ours)",
    )

    def __post_init__(self) -> None:
        interval = self.periodic_update_interval
        if interval is not None and interval < 0:
            raise ConfigError(
                "periodicUpdateInterval",
                'invalid "periodicUpdateInterval" '
                "configuration: must be >= 0 seconds (0 disables the rescan)",
                interval,
            )
        if not self.config_list:
            raise ConfigError(
                "configList",
                "no resources configuration found (configList needs at least one entry)",
                show_value=False,
            )
        seen: dict[str, int] = {}
        for i, resource in enumerate(self.config_list):
            first = seen.setdefault(resource.resource_name, i)
            if first != i:
                raise ConfigError(
                    f"configList[{i}].resourceName",
                    f"resource name already exists (configList[{first}])",
                    resource.resource_name,
                )
        health = self.health_check_interval
        if not 0 <= health <= MAX_HEALTH_INTERVAL:
            raise ConfigError(
                "healthCheckInterval",
                f"must be between 0 (disabled) and {MAX_HEALTH_INTERVAL:g} seconds",
                health,
            )

    @property
    def update_interval(self) -> int:
        """Seconds between full rescans (0: none); upstream's default when unset."""
        if self.periodic_update_interval is None:
            return DEFAULT_UPDATE_INTERVAL
        return self.periodic_update_interval
