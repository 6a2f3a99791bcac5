"""Discovery: one PCI scan per pass, every pool filled from it, first match wins.

:class:`Inventory` is shared by all pools of one build. Per discovery pass (cached on the
:class:`~devplugin_core.DiscoveryPass`) it scans PCI once, drops what upstream drops (no driver,
SR-IOV PFs with VFs enabled, devices holding a default route), builds selector candidates and
assigns each candidate to the first pool and selector that match. Each pool's
:class:`PoolDiscoverer` then turns its members into :class:`~devplugin_core.Device` values.

A VF used by a pod has no netdev (and, with exclusive RDMA, no RDMA device) in the host
namespace. So that it keeps its pool, a VF without netdev takes its link type from its PF
(``Candidate.from_pci``), is RDMA-capable when it is bound to a kernel driver and its PF is, and
keeps the netdev-derived attributes it had in the previous pass while its driver is unchanged.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from devplugin_core import (
    Candidate,
    ContainerEdits,
    Device,
    Discoverer,
    DiscoveryPass,
    HostFS,
    PciDevice,
    PciScan,
    Pool,
    Selector,
    assign,
    health_round,
    match_flag,
    match_values,
    match_vf_ranges,
    natural_key,
    parse_vf_range,
    scan_pci,
)
from devplugin_core.pci import SYS_PCI_DEVICES, SYS_PCI_DRIVERS
from devplugin_core.pcidp import AcceleratorSelectors, additional_info

from .config import AcceleratorResource, NetResource, NetSelectors, PoolEntry
from .links import uplink_netdev
from .routes import default_route_netdevs
from .specs import USERSPACE_DRIVERS, FunctionState, Needs, build_specs, state_from_scan

__all__ = ["ACCEL_CLASS", "NET_CLASS", "Inventory", "Member", "PoolDiscoverer", "PoolSpec"]

log = logging.getLogger("devplugin.sriov_net.discovery")

NET_CLASS = 0x02
ACCEL_CLASS = 0x12


def net_selector(s: NetSelectors) -> Selector:
    """Upstream's netDevice filter order (``GetFilteredDevices``)."""
    return Selector.of(
        match_values("vendors", "vendor", s.vendors),
        match_values("devices", "device", s.devices),
        match_values("drivers", "driver", s.drivers),
        match_values("pciAddresses", "address", s.pci_addresses),
        match_values("acpiIndexes", "acpi_index", s.acpi_indexes),
        match_vf_ranges("pfNames", "pf_name", [parse_vf_range(v) for v in s.pf_names]),
        match_vf_ranges("rootDevices", "pf_address", [parse_vf_range(v) for v in s.root_devices]),
        match_values("linkTypes", "link_type", s.link_types),
        match_values("pKeys", "pkey", s.pkeys),
        match_flag("isRdma", "is_rdma", s.is_rdma),
    )


def accelerator_selector(s: AcceleratorSelectors) -> Selector:
    return Selector.of(
        match_values("vendors", "vendor", s.vendors),
        match_values("devices", "device", s.devices),
        match_values("drivers", "driver", s.drivers),
        match_values("pciAddresses", "address", s.pci_addresses),
    )


@dataclass(frozen=True)
class PoolSpec:
    """One configured pool: its names, its config entry and its compiled selectors."""

    name: str
    prefix: str
    entry: NetResource | AcceleratorResource

    @property
    def resource_name(self) -> str:
        return self.entry.resource_name

    @property
    def is_net(self) -> bool:
        return isinstance(self.entry, NetResource)

    @cached_property
    def pool(self) -> Pool:
        entry = self.entry
        if isinstance(entry, NetResource):
            return Pool(self.name, tuple(net_selector(s) for s in entry.selectors))
        return Pool(self.name, tuple(accelerator_selector(s) for s in entry.selectors))

    def needs(self, selector: int, candidate: Candidate) -> Needs:
        """What the selector that matched adds (RDMA only for RDMA-capable devices)."""
        entry = self.entry
        rdma = vhost = False
        if isinstance(entry, NetResource):
            chosen = entry.selectors[selector]
            rdma = chosen.is_rdma and candidate.is_rdma
            vhost = chosen.need_vhost_net
        return Needs(rdma=rdma, vhost_net=vhost, extra=extra_info(entry, candidate.address))


def extra_info(entry: PoolEntry, address: str) -> Mapping[str, str] | None:
    """``additionalInfo`` for one device; None when the pool has none (no ``extra`` entry)."""
    table = entry.additional_info
    return None if table is None else additional_info(table, address)


@dataclass(frozen=True)
class Member:
    """A function placed in a pool, with what its Device and metrics are built from."""

    candidate: Candidate
    selector: int
    state: FunctionState
    needs: Needs
    numa_node: int | None

    @property
    def address(self) -> str:
        return self.candidate.address


@dataclass
class PassResult:
    """The outcome of one discovery pass: members per pool."""

    members: dict[str, list[Member]] = field(default_factory=dict)


class Inventory:
    """The plugin's shared view of the host: one scan and one assignment per discovery pass."""

    def __init__(self, host: HostFS, pools: Sequence[PoolSpec]) -> None:
        self.host = host
        self.pools = tuple(pools)
        self.members: dict[str, dict[str, Member]] = {p.name: {} for p in self.pools}
        self.unhealthy: dict[str, frozenset[str]] = {p.name: frozenset() for p in self.pools}
        self.pfs: tuple[str, ...] = ()
        self.functions: tuple[str, ...] = ()
        self._seen: dict[str, Candidate] = {}
        self._classes = frozenset(NET_CLASS if p.is_net else ACCEL_CLASS for p in self.pools)
        self._present: tuple[int, frozenset[str]] = (0, frozenset())
        self._present_lock = threading.Lock()

    def present_functions(self) -> frozenset[str]:
        """The PCI functions on the host now: one listing of ``/sys/bus/pci/devices`` per
        health round, shared by the checks of every pool in it (``health_round``). Raises
        HostReadError when the directory cannot be listed."""
        current = health_round()
        with self._present_lock:
            taken, names = self._present
            if taken != current:
                names = self.host.names(SYS_PCI_DEVICES)
                self._present = (current, names)
            return names

    # -- a pass ----------------------------------------------------------------------------------
    def result(self, scan: DiscoveryPass) -> PassResult:
        return scan.cached(("sriov-net", id(self)), lambda: self._discover(scan))

    def _discover(self, scan: DiscoveryPass) -> PassResult:
        pci = scan_pci(self.host, classes=self._classes, rdma=True)
        routes = default_route_netdevs(self.host) if NET_CLASS in self._classes else frozenset()
        devices = sorted(pci.devices.values(), key=lambda d: natural_key(d.address))
        net: list[Candidate] = []
        accel: list[Candidate] = []
        by_address: dict[str, PciDevice] = {}
        for dev in devices:
            kind = dev.base_class
            if kind not in self._classes:
                continue
            reason = (
                self._excluded(dev, routes)
                if kind == NET_CLASS
                else (None if dev.driver else "no driver bound")
            )
            if reason:
                scan.reject(dev.address, reason)
                continue
            by_address[dev.address] = dev
            (net if kind == NET_CLASS else accel).append(self._candidate(dev, pci))
        self._seen = {c.address: c for c in (*net, *accel)}
        result = PassResult({p.name: [] for p in self.pools})
        for pools, candidates in (
            ([p for p in self.pools if p.is_net], net),
            ([p for p in self.pools if not p.is_net], accel),
        ):
            if not pools:
                continue
            self._assign(scan, pci, pools, candidates, by_address, result)
        self.members = {name: {m.address: m for m in ms} for name, ms in result.members.items()}
        self.pfs = tuple(
            sorted(
                {d.physfn for d in by_address.values() if d.physfn}
                | {d.address for d in devices if d.is_pf},
                key=natural_key,
            )
        )
        self.functions = tuple(d.address for d in devices)
        return result

    def _excluded(self, dev: PciDevice, routes: frozenset[str]) -> str | None:
        """Upstream's netDevice exclusions, in its order."""
        held = [n for n in dev.netdevs if n in routes]
        if held:
            return f"holds the node's default route ({', '.join(held)})"
        if dev.is_pf and dev.sriov_enabled:
            return f"SR-IOV PF with {dev.sriov_numvfs} VFs enabled (its VFs are pooled instead)"
        if not dev.driver:
            return "no driver bound"
        return None

    def _candidate(self, dev: PciDevice, pci: PciScan) -> Candidate:
        c = Candidate.from_pci(dev, pci)
        pf = pci.pf_of(dev)
        if pf is not None and len(pf.netdevs) > 1:
            c = dataclasses.replace(c, pf_name=uplink_netdev(self.host, pf.address, pf.netdevs))
        if dev.is_vf and not dev.netdevs:
            in_kernel = (dev.driver or "") not in USERSPACE_DRIVERS
            if in_kernel and not c.is_rdma and pf is not None and pf.rdma_devices:
                c = dataclasses.replace(c, is_rdma=True)
            before = self._seen.get(dev.address)
            key = (c.driver, c.pf_address)
            if before is not None and (before.driver, before.pf_address) == key:
                c = dataclasses.replace(
                    c,
                    is_rdma=c.is_rdma or before.is_rdma,
                    pkey=c.pkey or before.pkey,
                    link_type=c.link_type or before.link_type,
                )
        return c

    def _assign(
        self,
        scan: DiscoveryPass,
        pci: PciScan,
        pools: list[PoolSpec],
        candidates: list[Candidate],
        by_address: Mapping[str, PciDevice],
        result: PassResult,
    ) -> None:
        compiled = [p.pool for p in pools]
        placed = assign(candidates, compiled)
        for address, reasons in placed.rejections.items():
            scan.reject(address, "matches no pool: " + "; ".join(reasons))
        for index, spec in enumerate(pools):
            for candidate, selector in placed.members.get(spec.name, []):
                dev = by_address[candidate.address]
                for later in compiled[index + 1 :]:
                    if any(s.mismatch(candidate) is None for s in later.selectors):
                        scan.reject(
                            candidate.address,
                            f"also matches, but {spec.name} comes first "
                            "(a device belongs to one pool)",
                            later.name,
                        )
                result.members[spec.name].append(
                    Member(
                        candidate=candidate,
                        selector=selector,
                        state=state_from_scan(dev, pci),
                        needs=spec.needs(selector, candidate),
                        numa_node=dev.numa_node,
                    )
                )

    # -- cheap change detection --------------------------------------------------------------
    def _fingerprint_now(self, host: HostFS) -> Hashable:
        """PCI functions present, VFs enabled and netdev names per PF (``pfNames``), which
        functions each driver holds (a rebind), RDMA devices, and which netdevs hold a default
        route. While it does not change the periodic full rescans are skipped (one still runs
        every tenth interval); a VF's netdev moving into a pod does not change it."""
        known = set(self.functions)
        bound = tuple(
            (driver, tuple(a for a in host.listdir(f"{SYS_PCI_DRIVERS}/{driver}") if a in known))
            for driver in host.listdir(SYS_PCI_DRIVERS)
        )
        return (
            tuple(host.listdir(SYS_PCI_DEVICES)),
            tuple(host.read_attr(f"{SYS_PCI_DEVICES}/{pf}/sriov_numvfs") for pf in self.pfs),
            tuple(tuple(host.listdir(f"{SYS_PCI_DEVICES}/{pf}/net")) for pf in self.pfs),
            bound,
            tuple(host.listdir("/sys/class/infiniband")),
            default_route_netdevs(host) if NET_CLASS in self._classes else frozenset(),
        )

    def fingerprint(self, host: HostFS) -> Hashable:
        """The host's current fingerprint (the runtime compares it with the value it took right
        after the last discovery and rediscovers on a difference)."""
        return self._fingerprint_now(host)


def _attributes(member: Member) -> dict[str, str]:
    c = member.candidate
    attrs = {"driver": c.driver, "vendor": c.vendor, "device": c.device}
    if c.pf_address:
        attrs.update(pf=c.pf_address, pfName=c.pf_name)
    if c.vf_index is not None:
        attrs["vf"] = str(c.vf_index)
    if c.link_type:
        attrs["linkType"] = c.link_type
    if member.state.rdma_names:
        attrs["rdma"] = ",".join(member.state.rdma_names)
    if member.state.iommu_group is not None:
        attrs["iommuGroup"] = member.state.iommu_group
    if member.needs.rdma:
        attrs["isRdma"] = "true"
    if member.needs.vhost_net:
        attrs["needVhostNet"] = "true"
    return attrs


class PoolDiscoverer(Discoverer):
    """The devices of one pool. The first pool of a build also answers the fingerprint."""

    def __init__(self, inventory: Inventory, spec: PoolSpec, *, leader: bool = False) -> None:
        self.inventory = inventory
        self.spec = spec
        self.leader = leader

    def discover(self, scan: DiscoveryPass) -> list[Device]:
        members = self.inventory.result(scan).members[self.spec.name]
        host = scan.host
        devices = []
        for member in members:
            nodes, _ = build_specs(host, member.state, member.needs)
            numa = member.numa_node
            topology = () if numa is None or self.spec.entry.exclude_topology else (numa,)
            devices.append(
                Device(
                    member.address,
                    topology,
                    edits=ContainerEdits(device_nodes=nodes),
                    attributes=_attributes(member),
                )
            )
        return devices

    def fingerprint(self, host: HostFS) -> Hashable:
        return self.inventory.fingerprint(host) if self.leader else None
