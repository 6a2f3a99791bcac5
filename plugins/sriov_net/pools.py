"""The configured pools: their compiled selectors, what a matching selector adds, the payload.

Selector order per device type follows upstream's ``GetFilteredDevices``:

* netDevice: vendors, devices, drivers, pciAddresses, acpiIndexes, pfNames, rootDevices,
  linkTypes, ddpProfiles, pKeys, isRdma, vdpaType;
* accelerator: vendors, devices, drivers, pciAddresses;
* auxNetDevice: vendors, devices, drivers (all three of the parent PCI function), auxTypes,
  pfNames, rootDevices (ranges over the SF number), linkTypes, isRdma.

Candidates are :class:`NetCandidate` values: the toolkit's ``Candidate`` plus what only these
pools compare (auxiliary type, vDPA device, DDP profile — the last read only when a
``ddpProfiles`` selector reaches the device).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from devplugin_core.toolkit import (
    AcceleratorSelectors,
    Candidate,
    Filter,
    Pool,
    Selector,
    additional_info,
    match_flag,
    match_values,
    match_vf_ranges,
    parse_vf_range,
)

from .config import AcceleratorResource, AuxNetResource, AuxNetSelectors, NetSelectors, PoolResource
from .ddp import DdpRef
from .vdpa import VdpaDevice

__all__ = [
    "ACCEL_CLASS",
    "NET_CLASS",
    "Needs",
    "NetCandidate",
    "PoolSpec",
    "VfInfo",
    "aux_selector",
    "net_selector",
]

NET_CLASS = 0x02
ACCEL_CLASS = 0x12


@dataclass(frozen=True)
class Needs:
    """What the pool adds on top of the driver: RDMA nodes, vhost-net, the vDPA type
    (``vdpaType``) and ``additionalInfo`` as ``(key, value)`` pairs (``None``: the pool has
    none, so no ``extra`` entry)."""

    rdma: bool = False
    vhost_net: bool = False
    extra: tuple[tuple[str, str], ...] | None = None
    vdpa: str = ""


@dataclass(frozen=True)
class NetCandidate(Candidate):
    """``aux_type``: ``sf`` for a Scalable Function; ``vdpa``: the function's vDPA device;
    ``ddp``: its DDP profile, read on demand."""

    aux_type: str = ""
    vdpa: VdpaDevice | None = None
    ddp: DdpRef | None = None


def _shown(values: Sequence[str]) -> str:
    return "[" + ", ".join(repr(v) for v in values) + "]"


def match_ddp(profiles: Sequence[str]) -> Filter | None:
    """``ddpProfiles``: the device's DDP package is one of ``profiles``; a device whose
    package cannot be read never matches (upstream's ``ddpSelector``)."""
    if not profiles:
        return None
    wanted = frozenset(profiles)

    def test(c: Candidate) -> bool:
        ref = getattr(c, "ddp", None)
        profile = ref.get().profile if ref is not None else None
        return bool(profile) and profile in wanted

    def describe(c: Candidate) -> str:
        ref = getattr(c, "ddp", None)
        found = ref.get() if ref is not None else None
        if found is None or not found.profile:
            why = found.why if found is not None else "no DDP reader"
            return f"ddpProfiles {_shown(profiles)}: no DDP profile could be read ({why})"
        return f"ddpProfiles {_shown(profiles)} does not include {found.profile!r}"

    return Filter("ddpProfiles", test, describe)


def match_vdpa(kind: str) -> Filter | None:
    """``vdpaType``: the function's vDPA device is bound to that type's driver (upstream's
    ``GetFilteredDevices``); a vhost one also needs its ``/dev/vhost-vdpa-*`` node."""
    if not kind:
        return None

    def test(c: Candidate) -> bool:
        dev: VdpaDevice | None = getattr(c, "vdpa", None)
        return dev is not None and dev.kind == kind and (kind != "vhost" or bool(dev.vhost))

    def describe(c: Candidate) -> str:
        dev: VdpaDevice | None = getattr(c, "vdpa", None)
        if dev is None:
            return f"vdpaType {kind!r}: the function has no vDPA device"
        return f"vdpaType {kind!r}: {dev.state()}"

    return Filter("vdpaType", test, describe)


def _ranges(key: str, attr: str, items: Sequence[str], index: str = "VF") -> Filter | None:
    found = match_vf_ranges(key, attr, [parse_vf_range(v) for v in items])
    if found is None or index == "VF":
        return found
    return Filter(found.key, found.test, lambda c: found.describe(c).replace("VF index", index))


def net_selector(s: NetSelectors) -> Selector:
    return Selector.of(
        match_values("vendors", "vendor", s.vendors),
        match_values("devices", "device", s.devices),
        match_values("drivers", "driver", s.drivers),
        match_values("pciAddresses", "address", s.pci_addresses),
        match_values("acpiIndexes", "acpi_index", s.acpi_indexes),
        _ranges("pfNames", "pf_name", s.pf_names),
        _ranges("rootDevices", "pf_address", s.root_devices),
        match_values("linkTypes", "link_type", s.link_types),
        match_ddp(s.ddp_profiles),
        match_values("pKeys", "pkey", s.pkeys),
        match_flag("isRdma", "is_rdma", s.is_rdma),
        match_vdpa(s.vdpa_type),
    )


def accelerator_selector(s: AcceleratorSelectors) -> Selector:
    return Selector.of(
        match_values("vendors", "vendor", s.vendors),
        match_values("devices", "device", s.devices),
        match_values("drivers", "driver", s.drivers),
        match_values("pciAddresses", "address", s.pci_addresses),
    )


def aux_selector(s: AuxNetSelectors) -> Selector:
    return Selector.of(
        match_values("vendors", "vendor", s.vendors),
        match_values("devices", "device", s.devices),
        match_values("drivers", "driver", s.drivers),
        match_values("auxTypes", "aux_type", s.aux_types),
        _ranges("pfNames", "pf_name", s.pf_names, "SF number"),
        _ranges("rootDevices", "pf_address", s.root_devices, "SF number"),
        match_values("linkTypes", "link_type", s.link_types),
        match_flag("isRdma", "is_rdma", s.is_rdma),
    )


@dataclass(frozen=True)
class PoolSpec:
    """One configured pool: its names, its config entry and its compiled selectors."""

    name: str
    prefix: str
    entry: PoolResource

    @property
    def resource_name(self) -> str:
        return self.entry.resource_name

    @property
    def kind(self) -> str:
        """``net``, ``accel`` or ``aux``."""
        if isinstance(self.entry, AuxNetResource):
            return "aux"
        return "accel" if isinstance(self.entry, AcceleratorResource) else "net"

    @property
    def is_net(self) -> bool:
        return self.kind == "net"

    @property
    def writes_device_info(self) -> bool:
        """netDevice pools as upstream, auxNetDevice pools too (our addition)."""
        return self.kind != "accel"

    @property
    def pci_class(self) -> int:
        return ACCEL_CLASS if self.kind == "accel" else NET_CLASS

    @cached_property
    def pool(self) -> Pool:
        entry = self.entry
        if isinstance(entry, AuxNetResource):
            return Pool(self.name, tuple(aux_selector(s) for s in entry.selectors))
        if isinstance(entry, AcceleratorResource):
            return Pool(self.name, tuple(accelerator_selector(s) for s in entry.selectors))
        return Pool(self.name, tuple(net_selector(s) for s in entry.selectors))

    def needs(self, selector: int, candidate: Candidate, parent: str = "") -> Needs:
        """What the selector that matched adds (RDMA only for RDMA-capable devices; vDPA for
        ``vdpaType``), plus the pool's ``additionalInfo`` for this device: the ``"*"`` entry
        overridden by the PCI address (an SF's ``parent``, as upstream keys it)."""
        entry = self.entry
        rdma = vhost = False
        vdpa = ""
        if not isinstance(entry, AcceleratorResource):
            chosen = entry.selectors[selector]
            rdma = chosen.is_rdma and candidate.is_rdma
            vhost = chosen.need_vhost_net
            vdpa = getattr(chosen, "vdpa_type", "")
        table = entry.additional_info
        address = parent or candidate.address
        extra = None if table is None else tuple(additional_info(table, address).items())
        return Needs(rdma=rdma, vhost_net=vhost, extra=extra, vdpa=vdpa)


@dataclass(frozen=True)
class VfInfo:
    """The payload of every sriov-net device: a VF, a function pooled whole, or an SF.

    ``pf``/``pf_netdev``: the PF's PCI address and uplink netdev as the scan saw them (``""``
    without a PF; an SF's parent and its uplink representor), for the health checks, the
    metrics and the PF spread of preferred allocation; ``vf_index``: the VF index (an SF's
    number); ``needs``: what the matching selector adds at Allocate (RDMA nodes, vhost-net,
    vDPA, ``additionalInfo``); ``numa_node``: as sysfs shows it, also under
    ``excludeTopology``; ``bus``: ``pci`` or ``auxiliary`` (where the device ID lives);
    ``vdpa``: the name of the VF's vDPA device when its pool asks for one.
    """

    driver: str
    pf: str = ""
    pf_netdev: str = ""
    vf_index: int | None = None
    numa_node: int | None = None
    needs: Needs = Needs()
    bus: str = "pci"
    vdpa: str = ""
