"""RDMA char devices of a PCI function, shared by the RDMA-shared and SR-IOV plugins.

A usable RDMA device needs its ``uverbs`` and ``umad`` nodes plus the global
``/dev/infiniband/rdma_cm``; ``issm`` exists only for InfiniBand ports and ``ucm`` only on old
kernels, so both are optional (upstream dropped ``issm`` from the required list for RoCE).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ._hostfs import HostFS
from ._model import DeviceNode
from ._pci import RdmaDevice

__all__ = ["RDMA_CM", "REQUIRED_RDMA_NODES", "RdmaNodes", "rdma_nodes"]

RDMA_CM = "/dev/infiniband/rdma_cm"
REQUIRED_RDMA_NODES = ("uverbs", "umad", "rdma_cm")


@dataclass(frozen=True)
class RdmaNodes:
    """Device nodes for some RDMA devices and the required kinds that are missing."""

    nodes: tuple[DeviceNode, ...]
    missing: tuple[str, ...]

    @property
    def complete(self) -> bool:
        return not self.missing


def rdma_nodes(
    host: HostFS, devices: Iterable[RdmaDevice], *, permissions: str = "rw"
) -> RdmaNodes:
    """All char devices of ``devices`` (ucm, issm, umad, uverbs per device, upstream's order)
    followed by ``rdma_cm`` once, deduplicated; ``missing`` lists required kinds not present
    (per the sysfs class entries, and ``/dev`` for rdma_cm)."""
    nodes: dict[str, DeviceNode] = {}
    kinds: set[str] = set()
    any_device = False
    for dev in devices:
        any_device = True
        for char in dev.char_devices:
            nodes.setdefault(char.path, DeviceNode(char.path, permissions=permissions))
            kinds.add(char.kind)
    if host.exists(RDMA_CM):
        nodes.setdefault(RDMA_CM, DeviceNode(RDMA_CM, permissions=permissions))
        kinds.add("rdma_cm")
    missing = (
        tuple(k for k in REQUIRED_RDMA_NODES if k not in kinds)
        if any_device
        else (REQUIRED_RDMA_NODES)
    )
    return RdmaNodes(tuple(nodes.values()), missing)
