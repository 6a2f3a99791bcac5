"""The sriov-net config: upstream's ``resourceList`` read unchanged, plus three optional keys.

Three device types as upstream: ``netDevice`` (PCI class 0x02), ``accelerator`` (0x12) and
``auxNetDevice`` (Scalable Functions on the auxiliary bus). Selector keys and their order follow
upstream's ``NetDeviceSelectors`` / ``AuxNetDeviceSelectors``; keys match case-insensitively
(operators emit ``"IsRdma"``). Upstream's fatal checks are errors here too (``isRdma`` with
``vdpaType`` in one selector; ``auxTypes`` missing or other than ``sf``); keys upstream accepts
but never applies (``acpiIndexes`` of an auxNetDevice selector) and values that can never match
are warnings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from devplugin_core import ConfigError, one_or_many, option
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
    "AuxNetResource",
    "AuxNetSelectors",
    "NetResource",
    "NetSelectors",
    "PoolEntry",
    "SriovNetConfig",
]

ALLOCATION_POLICIES = ("spread", "packed")
VDPA_TYPES = ("vhost", "virtio")  # upstream's SupportedVdpaTypes
AUX_TYPES = ("sf",)  # upstream's auxNetDeviceProvider.ValidConfig


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


def vdpa_type(value: Any, path: str, ctx: DecodeContext) -> str:
    """``vdpaType``: upstream does not validate it, so another value simply matches nothing."""
    text: str = ctx.decode(str, value, path) if value is not None else ""
    if text and text not in VDPA_TYPES:
        ctx.warnings.append(f"{path}: {text!r} can never match (use 'vhost' or 'virtio')")
    return text


def ignored_for_aux(value: Any, path: str, ctx: DecodeContext) -> tuple[str, ...]:
    """``acpiIndexes`` of an auxNetDevice selector: upstream parses it but never applies it."""
    values = strings(value, path, ctx)
    if values:
        ctx.warnings.append(
            f"{path}: ignored for auxNetDevice pools (upstream never applies it to auxiliary "
            "devices, which have no ACPI index of their own)"
        )
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
    ddp_profiles: tuple[str, ...] = option(
        "ddpProfiles", default=(), decoder=strings, doc="DDP package name (devlink fw.app.name)"
    )
    pkeys: tuple[str, ...] = option("pKeys", default=(), decoder=strings)
    is_rdma: bool = option("isRdma", default=False, doc="RDMA-capable VFs only; adds RDMA nodes")
    vdpa_type: str = option(
        "vdpaType", default="", decoder=vdpa_type, doc="VFs with a vhost or virtio vDPA device"
    )
    need_vhost_net: bool = option(
        "needVhostNet", default=False, doc="not a filter: adds /dev/vhost-net and /dev/net/tun"
    )

    def __post_init__(self) -> None:
        if self.is_rdma and self.vdpa_type:  # upstream netDeviceProvider.ValidConfig
            raise ConfigError(
                "vdpaType",
                "vdpaType and isRdma are mutually exclusive in one selector object",
                self.vdpa_type,
            )


@dataclass(frozen=True, kw_only=True)
class AuxNetSelectors:
    """One auxNetDevice selector object (upstream's ``AuxNetDeviceSelectors``), applied in this
    order; ``vendors``/``devices``/``drivers`` are those of the parent PCI function and the VF
    index ranges of ``pfNames``/``rootDevices`` count the SF number (``sfnum``)."""

    vendors: tuple[str, ...] = option("vendors", default=(), decoder=hex_ids)
    devices: tuple[str, ...] = option("devices", default=(), decoder=hex_ids)
    drivers: tuple[str, ...] = option("drivers", default=(), decoder=strings)
    aux_types: tuple[str, ...] = option(
        "auxTypes", default=(), decoder=strings, doc='required; only "sf" (Scalable Functions)'
    )
    pf_names: tuple[str, ...] = option("pfNames", default=(), decoder=vf_ranges)
    root_devices: tuple[str, ...] = option("rootDevices", default=(), decoder=vf_ranges)
    link_types: tuple[str, ...] = option("linkTypes", default=(), decoder=link_types)
    is_rdma: bool = option("isRdma", default=False, doc="SFs with an RDMA device; adds its nodes")
    need_vhost_net: bool = option(
        "needVhostNet", default=False, doc="not a filter: adds /dev/vhost-net and /dev/net/tun"
    )
    acpi_indexes: tuple[str, ...] = option("acpiIndexes", default=(), decoder=ignored_for_aux)

    def __post_init__(self) -> None:  # upstream auxNetDeviceProvider.ValidConfig
        if not self.aux_types:
            raise ConfigError("auxTypes", "is required for auxNetDevice pools", show_value=False)
        for i, aux_type in enumerate(self.aux_types):
            if aux_type not in AUX_TYPES:
                raise ConfigError(
                    f"auxTypes[{i}]",
                    'only "sf" auxiliary devices (Scalable Functions) are supported, as upstream',
                    aux_type,
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


@dataclass(frozen=True, kw_only=True)
class AuxNetResource(PoolEntry):
    """A ``deviceType: auxNetDevice`` pool: Scalable Functions of class 0x02 PCI functions."""

    selectors: tuple[AuxNetSelectors, ...] = option(
        "selectors", decoder=one_or_many(AuxNetSelectors)
    )


PoolResource = NetResource | AcceleratorResource | AuxNetResource


@dataclass(frozen=True)
class SriovNetConfig:
    """The config file: ``{"resourceList": [...]}``."""

    resource_list: tuple[PoolResource, ...] = option(
        "resourceList",
        decoder=resource_list(
            {
                "netDevice": NetResource,
                "accelerator": AcceleratorResource,
                "auxNetDevice": AuxNetResource,
            }
        ),
        doc="the pools, in priority order (a device goes to the first pool that matches)",
    )
