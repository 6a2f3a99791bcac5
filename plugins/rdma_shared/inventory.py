"""The HCA inventory: every PCI network function, once per scan, with what it offers.

One :func:`scan_pci` pass (shared by every resource of the scan) becomes a list of
:class:`Hca` records: the selector view (:class:`~devplugin_core.Candidate`), NUMA node,
RDMA ports, and the ``/dev/infiniband`` nodes a container needs — or the reason the function
cannot be offered. A function is usable when it has an RDMA device whose required char devices
(``uverbs``, ``umad``) are registered in sysfs and present under ``/dev``, and
``/dev/infiniband/rdma_cm`` exists. ``issm`` (InfiniBand only) and ``ucm`` (old kernels) are
taken when present and never required.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from devplugin_core import DeviceNode, HostFS, PciDevice, scan_pci
from devplugin_core.toolkit import RDMA_CM, REQUIRED_RDMA_NODES, Candidate, RdmaDevice, rdma_nodes

from .ports import HcaRef, PortRef

__all__ = ["UNSELECTED", "Hca", "Inventory", "ProblemLog", "build_inventory"]

log = logging.getLogger("devplugin.rdma_shared")

NETWORK_CLASS = 0x02
#: the problem of a function no resource's selectors can match (its details were not read)
UNSELECTED = "selected by no resource"


@dataclass(frozen=True)
class Hca:
    """One PCI network function and what the plugin can offer from it."""

    candidate: Candidate
    numa_node: int | None
    rdma_devices: tuple[str, ...]
    ref: HcaRef
    nodes: tuple[DeviceNode, ...]  # its own char devices; rdma_cm is added per resource
    problem: str = ""  # why it cannot be offered ("" when usable)

    @property
    def address(self) -> str:
        return self.candidate.address


@dataclass(frozen=True)
class Inventory:
    """Every network function of one pass (PCI address order) and the global rdma_cm node."""

    hcas: tuple[Hca, ...]
    rdma_cm: DeviceNode | None


class ProblemLog:
    """Logs a function's problem once, and again only when it changes (rescans stay quiet).
    Owned by the scanner (used from the scan thread only)."""

    def __init__(self) -> None:
        self._seen: dict[str, str] = {}

    def report(self, address: str, problem: str) -> None:
        before = self._seen.get(address)
        if before == problem:
            return
        self._seen[address] = problem
        if problem:
            log.warning("%s: RDMA device excluded: %s", address, problem)
        elif before:
            log.info("%s: RDMA device usable again", address)

    def forget_all_but(self, read: set[str]) -> None:
        """Forget the functions not read in this pass (gone, or selected by no resource)."""
        for address in set(self._seen) - read:
            del self._seen[address]


def _kind(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    return name.rstrip("0123456789")


def _offer(host: HostFS, rdma: Sequence[RdmaDevice]) -> tuple[tuple[DeviceNode, ...], str]:
    """The function's own nodes, or the problem that excludes it."""
    found = rdma_nodes(host, rdma)
    missing = [kind for kind in found.missing if kind != "rdma_cm"]
    if missing:
        names = ", ".join(r.name for r in rdma)
        return (), (
            f"missing RDMA char device(s) {', '.join(missing)} for {names} "
            "(no /sys/class/infiniband_* entry; is ib_uverbs/ib_umad loaded?)"
        )
    nodes = []
    for node in found.nodes:
        if node.host_path == RDMA_CM:
            continue
        if host.exists(node.host_path):
            nodes.append(node)
        elif _kind(node.host_path) in REQUIRED_RDMA_NODES:
            return (), (
                f"missing RDMA char device {node.host_path} (registered in sysfs, "
                "absent under /dev)"
            )
        else:
            log.debug("optional RDMA node %s is absent under /dev; not offered", node.host_path)
    return tuple(nodes), ""


def build_inventory(
    host: HostFS, problems: ProblemLog, wanted: Callable[[PciDevice], bool] | None = None
) -> Inventory:
    """Every network function of the host as it is now (one PCI pass). The netdevs and RDMA
    devices of a function ``wanted`` refuses (no resource can select it) are not read: its
    record says so instead of what it would offer."""
    unselected: set[str] = set()  # asked once per function, in the scan

    def details(dev: PciDevice) -> bool:
        if wanted is None or wanted(dev):
            return True
        unselected.add(dev.address)
        return False

    pci = scan_pci(
        host,
        classes=[NETWORK_CLASS],
        rdma=True,
        details=details if wanted is not None else None,
        rdma_attributes=False,
    )
    rdma_cm = DeviceNode(RDMA_CM) if host.exists(RDMA_CM) else None
    hcas = []
    for dev in pci.devices.values():
        candidate = Candidate.from_pci(dev, pci)
        if dev.address in unselected:
            ref = HcaRef(dev.address, (), "")
            hcas.append(Hca(candidate, dev.numa_node, dev.rdma_devices, ref, (), UNSELECTED))
            continue
        rdma = pci.rdma_of(dev)
        names = [r.name for r in rdma]
        ports = tuple(
            PortRef(
                r.name,
                p.number,
                f"/sys/bus/pci/devices/{dev.address}/infiniband/{r.name}/ports/{p.number}",
            )
            for r in rdma
            for p in r.ports
        )
        nodes: tuple[DeviceNode, ...] = ()
        if not rdma:
            problem = (
                f"no RDMA device (nothing under /sys/bus/pci/devices/{dev.address}/"
                "infiniband; not an RDMA NIC, or mlx5_ib is not loaded)"
            )
        else:
            nodes, problem = _offer(host, rdma)
            if not problem and rdma_cm is None:
                problem = f"missing RDMA char device {RDMA_CM} (is rdma_ucm loaded?)"
            problems.report(dev.address, problem)
        # RoCE traffic rides on the netdev, so its link counts; an InfiniBand HCA's IPoIB netdev
        # may be down or unconfigured while verbs traffic flows: only its ports count.
        netdev = "" if candidate.link_type == "infiniband" else dev.netdev
        ref = HcaRef(dev.address, ports, netdev)
        hcas.append(Hca(candidate, dev.numa_node, tuple(names), ref, nodes, problem))
    problems.forget_all_but({h.address for h in hcas} - unselected)
    return Inventory(tuple(hcas), rdma_cm)
