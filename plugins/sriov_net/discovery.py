"""The scan: one host pass fills every pool, first match wins; each device carries a VfInfo.

:class:`SriovScanner` scans PCI once per pass and builds three groups of candidates, as
upstream's three device providers do:

* netDevice: class 0x02 functions minus what upstream drops (no driver, SR-IOV PFs with VFs
  enabled, devices holding a default route), each with its vDPA device when a pool asks for
  ``vdpaType`` and its DDP profile read lazily for ``ddpProfiles``;
* accelerator: class 0x12 functions with a driver;
* auxNetDevice: the Scalable Functions under any class 0x02 function (:mod:`.aux`; upstream
  applies no netDevice exclusion to their parents).

Each group is assigned to its pools (``devplugin_core.toolkit.assign``: first pool and first
selector win; IDs of different groups never collide) and every pool's devices are added to the
scan, rejections included. Each device's payload is a :class:`~.pools.VfInfo`: what Allocate,
the health checks and the metrics need, so none of them shares state with the scan.

A VF or SF used by a pod has no netdev (and, with exclusive RDMA, no RDMA device) in the host
namespace. So that it keeps its pool, a VF without netdev takes its link type from its PF
(``Candidate.from_pci``), is RDMA-capable when it is bound to a kernel driver and its PF is,
and a VF or SF keeps the netdev-derived attributes it had in the previous pass while its driver
and parent are unchanged (the scanner's memo of the last pass, used only by the scan).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, cast

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
    RdmaDevice,
    assign,
    natural_key,
)

from .aux import SYS_AUX, AuxDevice, Found, sf_candidates
from .config import NetResource
from .ddp import DdpProfiles, DdpSource
from .links import uplink_netdev
from .pools import ACCEL_CLASS, NET_CLASS, Needs, NetCandidate, PoolSpec, VfInfo
from .routes import default_route_netdevs
from .specs import (
    USERSPACE_DRIVERS,
    FunctionState,
    build_specs,
    rdma_below,
    state_from_scan,
)
from .vdpa import VdpaDevice, vdpa_by_function, vdpa_fingerprint

__all__ = ["ACCEL_CLASS", "NET_CLASS", "PoolSpec", "SriovScanner", "VfInfo"]


def _attributes(c: NetCandidate, state: FunctionState, needs: Needs) -> dict[str, str]:
    """What ``devplugin discover`` shows (display only)."""
    attrs = {"driver": c.driver, "vendor": c.vendor, "device": c.device}
    if c.pf_address:
        attrs.update(pf=c.pf_address, pfName=c.pf_name)
    if c.vf_index is not None:
        attrs["sfnum" if c.aux_type else "vf"] = str(c.vf_index)
    if c.aux_type:
        attrs.update(auxType=c.aux_type, netdev=c.netdev)
    if c.link_type:
        attrs["linkType"] = c.link_type
    if state.rdma_names:
        attrs["rdma"] = ",".join(state.rdma_names)
    if state.iommu_group is not None:
        attrs["iommuGroup"] = state.iommu_group
    if c.vdpa is not None:
        attrs["vdpa"] = f"{c.vdpa.name} ({c.vdpa.kind or 'unbound'})"
    ddp = c.ddp.peek() if c.ddp is not None else None
    if ddp is not None and ddp.profile:
        attrs["ddpProfile"] = ddp.profile
    if needs.rdma:
        attrs["isRdma"] = "true"
    if needs.vhost_net:
        attrs["needVhostNet"] = "true"
    return attrs


class SriovScanner(Scanner):
    """Every pool's devices from one host pass; the fingerprint says when to scan again."""

    def __init__(
        self, pools: Iterable[tuple[PoolSpec, Resource]], ddp: DdpSource | None = None
    ) -> None:
        self.pools = tuple(pools)
        self.ddp = ddp
        self._classes = frozenset(spec.pci_class for spec, _ in self.pools)
        self._pooled = frozenset(spec.pci_class for spec, _ in self.pools if spec.kind != "aux")
        self._aux = any(spec.kind == "aux" for spec, _ in self.pools)
        net = [
            s
            for spec, _ in self.pools
            if isinstance(spec.entry, NetResource)
            for s in spec.entry.selectors
        ]
        self._vdpa = any(s.vdpa_type for s in net)
        self._ddp = any(s.ddp_profiles for s in net)
        self._pkeys = any(s.pkeys for s in net)  # the only RDMA attribute a selector reads
        # memo of the last pass: candidates (for pod-held VFs/SFs) and what the fingerprint
        # watches: PCI functions, PFs, SF parents
        self._seen: dict[str, NetCandidate] = {}
        self._watched: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())

    def scan(self, scan: Scan) -> None:
        host = scan.host
        pci = scan_pci(host, classes=self._classes, rdma=True, rdma_attributes=self._pkeys)
        routes = default_route_netdevs(host) if NET_CLASS in self._pooled else frozenset()
        vdpa = vdpa_by_function(host) if self._vdpa else {}
        ddp = DdpProfiles(self.ddp) if self._ddp and self.ddp is not None else None
        devices = sorted(pci.devices.values(), key=lambda d: natural_key(d.address))
        groups: dict[str, list[Found]] = {"net": [], "accel": [], "aux": []}
        for dev in devices:
            kind = dev.base_class
            if kind not in self._pooled:
                continue
            reason = self._excluded(dev, routes) if kind == NET_CLASS else None
            if reason is None and not dev.driver:
                reason = "no driver bound"
            if reason:
                scan.reject(dev.address, reason)
                continue
            c = self._candidate(host, dev, pci, vdpa.get(dev.address), ddp)
            groups["net" if kind == NET_CLASS else "accel"].append((c, dev, None))
        if self._aux:
            groups["aux"] = sf_candidates(scan, devices, self._remembered)
        self._seen = {c.address: c for group in groups.values() for c, _, _ in group}
        for name, group in groups.items():
            pools = [(spec, res) for spec, res in self.pools if spec.kind == name]
            if pools:
                self._assign(scan, pools, group, lambda *a: self._device(host, pci, *a))
        pfs = {d.physfn for _, d, _ in groups["net"] if d.physfn}
        pfs |= {d.address for d in devices if d.is_pf} | {d.address for _, d, _ in groups["aux"]}
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

    def _remembered(self, c: NetCandidate) -> NetCandidate:
        """A netdev-less VF or SF keeps what the previous pass saw while nothing else changed."""
        before = self._seen.get(c.address)
        if before is None or (before.driver, before.pf_address) != (c.driver, c.pf_address):
            return c
        return dataclasses.replace(
            c,
            is_rdma=c.is_rdma or before.is_rdma,
            pkey=c.pkey or before.pkey,
            link_type=c.link_type or before.link_type,
        )

    def _candidate(
        self,
        host: HostFS,
        dev: PciDevice,
        pci: PciScan,
        vdpa: VdpaDevice | None,
        ddp: DdpProfiles | None,
    ) -> NetCandidate:
        c = cast(NetCandidate, NetCandidate.from_pci(dev, pci))
        pf = pci.pf_of(dev)
        changes: dict[str, Any] = {}  # one copy, and none for the common VF
        if vdpa is not None:
            changes["vdpa"] = vdpa
        if ddp is not None:
            changes["ddp"] = ddp.ref(dev.address, dev.physfn or "")
        if pf is not None and len(pf.netdevs) > 1:
            changes["pf_name"] = uplink_netdev(host, pf.address, pf.netdevs)
        netdevless_vf = dev.is_vf and not dev.netdevs
        if netdevless_vf:
            in_kernel = (dev.driver or "") not in USERSPACE_DRIVERS
            if in_kernel and not c.is_rdma and pf is not None and pf.rdma_devices:
                changes["is_rdma"] = True
        if changes:
            c = dataclasses.replace(c, **changes)
        return self._remembered(c) if netdevless_vf else c

    def _assign(
        self,
        scan: Scan,
        pools: Sequence[tuple[PoolSpec, Resource]],
        found: list[Found],
        build: Callable[[PoolSpec, NetCandidate, int, PciDevice, AuxDevice | None], Device],
    ) -> None:
        compiled = [spec.pool for spec, _ in pools]
        context = {c.address: (dev, aux) for c, dev, aux in found}
        placed = assign([c for c, _, _ in found], compiled)
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
                assert isinstance(candidate, NetCandidate)
                members.append(build(spec, candidate, selector, *context[candidate.address]))
            scan.add(resource, *members)

    @staticmethod
    def _device(
        host: HostFS,
        pci: PciScan,
        spec: PoolSpec,
        c: NetCandidate,
        selector: int,
        dev: PciDevice,
        aux: AuxDevice | None,
    ) -> Device:
        needs = spec.needs(selector, c, dev.address if aux is not None else "")
        if aux is not None:
            rdma = (
                rdma_below(host, aux.path, aux.name)
                if needs.rdma
                else tuple(RdmaDevice(n) for n in aux.rdma)  # names only, for display
            )
            state = FunctionState(address=aux.name, driver=c.driver, rdma=rdma)
        else:
            state = state_from_scan(dev, pci, c.vdpa if needs.vdpa else None)
        nodes, _ = build_specs(host, state, needs)
        numa = dev.numa_node
        info = VfInfo(
            c.driver,
            c.pf_address,
            c.pf_name,
            c.vf_index,
            numa,
            needs,
            bus="auxiliary" if aux is not None else "pci",
            vdpa=c.vdpa.name if c.vdpa is not None and needs.vdpa else "",
        )
        return Device(
            c.address,
            () if numa is None or spec.entry.exclude_topology else (numa,),
            edits=ContainerEdits(device_nodes=nodes),
            payload=info,
            attributes=_attributes(c, state, needs),
        )

    def fingerprint(self, host: HostFS) -> Hashable:
        """PCI functions present, VFs enabled and netdev names per PF (``pfNames``; an SF
        parent's representors too), which functions each driver holds (a rebind), RDMA
        devices, which netdevs hold a default route, and — when pools use them — the
        auxiliary devices (SFs created or deleted) and vDPA devices with their drivers. While
        it does not change the periodic full rescans are skipped (one still runs every tenth
        interval); a VF's netdev moving into a pod does not change it."""
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
            default_route_netdevs(host) if NET_CLASS in self._pooled else frozenset(),
            tuple(host.listdir(SYS_AUX)) if self._aux else (),
            vdpa_fingerprint(host) if self._vdpa else (),
        )
