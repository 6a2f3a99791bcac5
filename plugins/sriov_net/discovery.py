"""The scan: one PCI pass fills every pool, first match wins; each device carries a VfInfo.

:class:`SriovScanner` scans PCI once per pass, drops what upstream drops (no driver, SR-IOV PFs
with VFs enabled, devices holding a default route), builds selector candidates, assigns each to
the first pool and selector that match (``devplugin_core.assign``) and adds every pool's
devices to the scan, rejections included. Each device's payload is a :class:`VfInfo`: what
Allocate, the health checks and the metrics need, so none of them shares state with the scan.

A VF used by a pod has no netdev (and, with exclusive RDMA, no RDMA device) in the host
namespace. So that it keeps its pool, a VF without netdev takes its link type from its PF
(``Candidate.from_pci``), is RDMA-capable when it is bound to a kernel driver and its PF is, and
keeps the netdev-derived attributes it had in the previous pass while its driver is unchanged
(the scanner's memo of the last pass, used only by the scan).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property

from devplugin_core import (
    ContainerEdits,
    Device,
    HostFS,
    PciDevice,
    PciScan,
    Resource,
    Scan,
    Scanner,
    scan_pci,
)
from devplugin_core.toolkit import (
    SYS_PCI_DEVICES,
    SYS_PCI_DRIVERS,
    AcceleratorSelectors,
    Candidate,
    Pool,
    Selector,
    additional_info,
    assign,
    match_flag,
    match_values,
    match_vf_ranges,
    natural_key,
    parse_vf_range,
)

from .config import AcceleratorResource, NetResource, NetSelectors
from .links import uplink_netdev
from .routes import default_route_netdevs
from .specs import USERSPACE_DRIVERS, FunctionState, Needs, build_specs, state_from_scan

__all__ = ["ACCEL_CLASS", "NET_CLASS", "PoolSpec", "SriovScanner", "VfInfo"]

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

    @property
    def pci_class(self) -> int:
        return NET_CLASS if self.is_net else ACCEL_CLASS

    @cached_property
    def pool(self) -> Pool:
        entry = self.entry
        if isinstance(entry, NetResource):
            return Pool(self.name, tuple(net_selector(s) for s in entry.selectors))
        return Pool(self.name, tuple(accelerator_selector(s) for s in entry.selectors))

    def needs(self, selector: int, candidate: Candidate) -> Needs:
        """What the selector that matched adds (RDMA only for RDMA-capable devices), plus the
        pool's ``additionalInfo`` for this device (``None`` when the pool has none)."""
        entry = self.entry
        rdma = vhost = False
        if isinstance(entry, NetResource):
            chosen = entry.selectors[selector]
            rdma = chosen.is_rdma and candidate.is_rdma
            vhost = chosen.need_vhost_net
        table = entry.additional_info
        extra = None if table is None else tuple(additional_info(table, candidate.address).items())
        return Needs(rdma=rdma, vhost_net=vhost, extra=extra)


@dataclass(frozen=True)
class VfInfo:
    """The payload of every sriov-net device (a VF, or a function pooled whole).

    ``pf``/``pf_netdev``: the PF's PCI address and uplink netdev as the scan saw them (``""``
    without a PF), for the health checks, the metrics and the PF spread of preferred
    allocation; ``needs``: what the matching selector adds at Allocate (RDMA nodes, vhost-net,
    ``additionalInfo``); ``numa_node``: as sysfs shows it, also under ``excludeTopology``.
    """

    driver: str
    pf: str = ""
    pf_netdev: str = ""
    vf_index: int | None = None
    numa_node: int | None = None
    needs: Needs = Needs()


def _attributes(c: Candidate, state: FunctionState, needs: Needs) -> dict[str, str]:
    """What ``devplugin discover`` shows (display only)."""
    attrs = {"driver": c.driver, "vendor": c.vendor, "device": c.device}
    if c.pf_address:
        attrs.update(pf=c.pf_address, pfName=c.pf_name)
    if c.vf_index is not None:
        attrs["vf"] = str(c.vf_index)
    if c.link_type:
        attrs["linkType"] = c.link_type
    if state.rdma_names:
        attrs["rdma"] = ",".join(state.rdma_names)
    if state.iommu_group is not None:
        attrs["iommuGroup"] = state.iommu_group
    if needs.rdma:
        attrs["isRdma"] = "true"
    if needs.vhost_net:
        attrs["needVhostNet"] = "true"
    return attrs


class SriovScanner(Scanner):
    """Every pool's devices from one PCI pass; the fingerprint says when to scan again."""

    def __init__(self, pools: Iterable[tuple[PoolSpec, Resource]]) -> None:
        self.pools = tuple(pools)
        self._classes = frozenset(spec.pci_class for spec, _ in self.pools)
        # memo of the last pass: candidates (for pod-held VFs) and what the fingerprint watches
        self._seen: dict[str, Candidate] = {}
        self._watched: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())  # functions, PFs

    def scan(self, scan: Scan) -> None:
        host = scan.host
        pci = scan_pci(host, classes=self._classes, rdma=True)
        routes = default_route_netdevs(host) if NET_CLASS in self._classes else frozenset()
        devices = sorted(pci.devices.values(), key=lambda d: natural_key(d.address))
        candidates: dict[int, list[Candidate]] = {NET_CLASS: [], ACCEL_CLASS: []}
        kept: dict[str, PciDevice] = {}
        for dev in devices:
            kind = dev.base_class
            if kind not in self._classes:
                continue
            reason = self._excluded(dev, routes) if kind == NET_CLASS else None
            if reason is None and not dev.driver:
                reason = "no driver bound"
            if reason:
                scan.reject(dev.address, reason)
                continue
            kept[dev.address] = dev
            candidates[kind].append(self._candidate(host, dev, pci))
        self._seen = {c.address: c for group in candidates.values() for c in group}
        for kind, group in candidates.items():
            pools = [(spec, res) for spec, res in self.pools if spec.pci_class == kind]
            if pools:
                self._assign(scan, pci, pools, group, kept)
        pfs = {d.physfn for d in kept.values() if d.physfn} | {
            d.address for d in devices if d.is_pf
        }
        self._watched = (tuple(d.address for d in devices), tuple(sorted(pfs, key=natural_key)))

    @staticmethod
    def _excluded(dev: PciDevice, routes: frozenset[str]) -> str | None:
        """Upstream's netDevice exclusions, in its order (then "no driver bound")."""
        held = [n for n in dev.netdevs if n in routes]
        if held:
            return f"holds the node's default route ({', '.join(held)})"
        if dev.is_pf and dev.sriov_enabled:
            return f"SR-IOV PF with {dev.sriov_numvfs} VFs enabled (its VFs are pooled instead)"
        return None

    def _candidate(self, host: HostFS, dev: PciDevice, pci: PciScan) -> Candidate:
        c = Candidate.from_pci(dev, pci)
        pf = pci.pf_of(dev)
        if pf is not None and len(pf.netdevs) > 1:
            c = dataclasses.replace(c, pf_name=uplink_netdev(host, pf.address, pf.netdevs))
        if dev.is_vf and not dev.netdevs:
            in_kernel = (dev.driver or "") not in USERSPACE_DRIVERS
            if in_kernel and not c.is_rdma and pf is not None and pf.rdma_devices:
                c = dataclasses.replace(c, is_rdma=True)
            before = self._seen.get(dev.address)
            if before is not None and (before.driver, before.pf_address) == (
                c.driver,
                c.pf_address,
            ):
                c = dataclasses.replace(
                    c,
                    is_rdma=c.is_rdma or before.is_rdma,
                    pkey=c.pkey or before.pkey,
                    link_type=c.link_type or before.link_type,
                )
        return c

    def _assign(
        self,
        scan: Scan,
        pci: PciScan,
        pools: Sequence[tuple[PoolSpec, Resource]],
        candidates: list[Candidate],
        kept: dict[str, PciDevice],
    ) -> None:
        compiled = [spec.pool for spec, _ in pools]
        placed = assign(candidates, compiled)
        for address, reasons in placed.rejections.items():
            scan.reject(address, "matches no pool: " + "; ".join(reasons))
        for index, (spec, resource) in enumerate(pools):
            members = []
            for candidate, selector in placed.members.get(spec.name, []):
                for later in compiled[index + 1 :]:
                    if any(s.mismatch(candidate) is None for s in later.selectors):
                        scan.reject(
                            candidate.address,
                            f"also matches, but {spec.name} comes first "
                            "(a device belongs to one pool)",
                            later.name,
                        )
                dev = kept[candidate.address]
                members.append(self._device(scan.host, spec, candidate, selector, dev, pci))
            scan.add(resource, *members)

    @staticmethod
    def _device(
        host: HostFS, spec: PoolSpec, c: Candidate, selector: int, dev: PciDevice, pci: PciScan
    ) -> Device:
        state = state_from_scan(dev, pci)
        needs = spec.needs(selector, c)
        nodes, _ = build_specs(host, state, needs)
        numa = dev.numa_node
        info = VfInfo(c.driver, c.pf_address, c.pf_name, c.vf_index, numa, needs)
        return Device(
            c.address,
            () if numa is None or spec.entry.exclude_topology else (numa,),
            edits=ContainerEdits(device_nodes=nodes),
            payload=info,
            attributes=_attributes(c, state, needs),
        )

    def fingerprint(self, host: HostFS) -> Hashable:
        """PCI functions present, VFs enabled and netdev names per PF (``pfNames``), which
        functions each driver holds (a rebind), RDMA devices, and which netdevs hold a default
        route. While it does not change the periodic full rescans are skipped (one still runs
        every tenth interval); a VF's netdev moving into a pod does not change it."""
        functions, pfs = self._watched
        known = set(functions)
        bound = tuple(
            (driver, tuple(a for a in host.listdir(f"{SYS_PCI_DRIVERS}/{driver}") if a in known))
            for driver in host.listdir(SYS_PCI_DRIVERS)
        )
        return (
            tuple(host.listdir(SYS_PCI_DEVICES)),
            tuple(host.read_attr(f"{SYS_PCI_DEVICES}/{pf}/sriov_numvfs") for pf in pfs),
            tuple(tuple(host.listdir(f"{SYS_PCI_DEVICES}/{pf}/net")) for pf in pfs),
            bound,
            tuple(host.listdir("/sys/class/infiniband")),
            default_route_netdevs(host) if NET_CLASS in self._classes else frozenset(),
        )
