"""The sriov-net config: upstream's ``resourceList`` read unchanged, plus three optional keys.

Selector keys and their order follow upstream's ``NetDeviceSelectors``; keys match
case-insensitively (operators emit ``"IsRdma"``). Keys upstream has but we do not implement
(``vdpaType``, ``ddpProfiles``, ``deviceType: auxNetDevice``) fail validation instead of being
ignored, because ignoring a selector would hand out devices the operator excluded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from devplugin_core import one_or_many, option
from devplugin_core.toolkit import (
    AcceleratorSelectors,
    DecodeContext,
    ResourceEntry,
    hex_ids,
    parse_vf_range,
    pci_addresses,
    resource_list,
    strings,
)

__all__ = [
    "AcceleratorResource",
    "AcceleratorSelectors",
    "NetResource",
    "NetSelectors",
    "PoolEntry",
    "SriovNetConfig",
]

ALLOCATION_POLICIES = ("spread", "packed")


def vf_ranges(value: Any, path: str, ctx: DecodeContext) -> tuple[str, ...]:
    """``pfNames``/``rootDevices`` items (``name`` or ``name#0,2-4``); bad ranges are fatal."""
    items = strings(value, path, ctx)
    for i, item in enumerate(items):
        parse_vf_range(item, f"{path}[{i}]")
    return items


def link_types(value: Any, path: str, ctx: DecodeContext) -> tuple[str, ...]:
    """``linkTypes``: upstream warns when more than one is given (they still OR together)."""
    values = strings(value, path, ctx)
    if len(values) > 1:
        ctx.warnings.append(f"{path}: {len(values)} link types given; a device matches any of them")
    return values


@dataclass(frozen=True, kw_only=True)
class NetSelectors:
    """One netDevice selector object: keys AND together in this (upstream's) order."""

    vendors: tuple[str, ...] = option("vendors", default=(), decoder=hex_ids)
    devices: tuple[str, ...] = option("devices", default=(), decoder=hex_ids)
    drivers: tuple[str, ...] = option("drivers", default=(), decoder=strings)
    pci_addresses: tuple[str, ...] = option("pciAddresses", default=(), decoder=pci_addresses)
    acpi_indexes: tuple[str, ...] = option("acpiIndexes", default=(), decoder=strings)
    pf_names: tuple[str, ...] = option("pfNames", default=(), decoder=vf_ranges)
    root_devices: tuple[str, ...] = option("rootDevices", default=(), decoder=vf_ranges)
    link_types: tuple[str, ...] = option("linkTypes", default=(), decoder=link_types)
    ddp_profiles: Any = option(
        "ddpProfiles",
        default=None,
        unsupported="DDP profile selection is not supported yet (remove the key or use "
        "upstream's plugin for this pool)",
    )
    pkeys: tuple[str, ...] = option("pKeys", default=(), decoder=strings)
    is_rdma: bool = option("isRdma", default=False, doc="RDMA-capable VFs only; adds RDMA nodes")
    vdpa_type: Any = option(
        "vdpaType",
        default=None,
        unsupported="vDPA devices are not supported yet (remove the key or use upstream's "
        "plugin for this pool)",
    )
    need_vhost_net: bool = option(
        "needVhostNet", default=False, doc="not a filter: adds /dev/vhost-net and /dev/net/tun"
    )


@dataclass(frozen=True, kw_only=True)
class PoolEntry(ResourceEntry):
    """Keys every sriov-net pool has: upstream's, plus our optional health and policy keys."""

    check_health_on_pf: bool = option(
        "checkHealthOnPf", default=True, doc="VFs are Unhealthy while their PF's link is down"
    )
    check_health_on_device_exist: bool = option(
        "checkHealthOnDeviceExist",
        default=True,
        doc="a device whose PCI function vanished is Unhealthy",
    )
    allocation_policy: Literal["spread", "packed"] = option(
        "allocationPolicy",
        default="spread",
        doc="GetPreferredAllocation inside one NUMA node: spread over PFs or pack per PF",
    )


@dataclass(frozen=True, kw_only=True)
class NetResource(PoolEntry):
    """A ``deviceType: netDevice`` pool (PCI class 0x02)."""

    selectors: tuple[NetSelectors, ...] = option("selectors", decoder=one_or_many(NetSelectors))


@dataclass(frozen=True, kw_only=True)
class AcceleratorResource(PoolEntry):
    """A ``deviceType: accelerator`` pool (PCI class 0x12)."""

    selectors: tuple[AcceleratorSelectors, ...] = option(
        "selectors", decoder=one_or_many(AcceleratorSelectors)
    )


@dataclass(frozen=True)
class SriovNetConfig:
    """The config file: ``{"resourceList": [...]}``."""

    resource_list: tuple[NetResource | AcceleratorResource, ...] = option(
        "resourceList",
        decoder=resource_list(
            {"netDevice": NetResource, "accelerator": AcceleratorResource},
            unsupported={
                "auxNetDevice": "auxiliary (sub-function) pools need the auxiliary "
                "bus and are not implemented"
            },
        ),
        doc="the pools, in priority order (a device goes to the first pool that matches)",
    )
