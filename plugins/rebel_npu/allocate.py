"""What a container gets for a set of NPUs, and which NPUs to prefer.

Allocate: devices sorted by PCI address; per device ``/dev/rblnN`` (rw); the host tools
read-only (once); env as upstream — ``PCIDEVICE_<PREFIX>_<NAME>`` (addresses), its ``_INFO``
JSON (``{"<bdf>": {"rebellions": {"mount": "/dev/rblnN"}}}``), ``PCI_RESOURCE_<PREFIX>_<NAME>``
— plus ``RBLN_DEVICES`` (the host NPU indices, same order); and, unless RSD groups are off, the
allocation's own group device as ``/dev/rsd0``. A passed-through NPU (bound to ``vfio-pci``, for a
VM) gets ``/dev/vfio/vfio`` and its IOMMU group's node instead, the same ``PCIDEVICE_*`` and
``PCI_RESOURCE_*`` (what KubeVirt reads) with a ``vfio`` ``_INFO`` entry (``{"mount":
"/dev/vfio/vfio", "dev-mount": "/dev/vfio/<group>"}``), and no tools, ``RBLN_DEVICES`` nor RSD
group.

Preferred allocation, one rule for every product: devices are grouped by NUMA node, then by
each PCI bridge on their path from the root port down, then by physical function (VFs of one
PF together), and packed into the fewest groups level by level, preferring one group at any
depth that can hold the whole request (:func:`~devplugin_core._allocation.prefer_nested`). For
a CA22 (cards behind PCIe switches) this is upstream's "bridge index 1" grouping; for a CA25
(four NPUs behind the card's own switch) upstream's "bridge index 2"; no depth is hard-coded.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from devplugin_core import (
    AllocationRequest,
    Allocator,
    ContainerEdits,
    Device,
    Mount,
    PreferredRequest,
)
from devplugin_core.toolkit import KeyFn, additional_info, pcidevice_env, prefer_nested

from .config import PoolConfig
from .discovery import DRIVER, NpuInfo
from .passthrough import vfio_info
from .rsd import RsdGroups

__all__ = ["NpuAllocator", "levels_for", "preferred"]


class NpuAllocator(Allocator):
    """Allocator of one pool; the RSD policy is shared by all pools."""

    def __init__(self, pool: PoolConfig, rsd: RsdGroups, *, passthrough_only: bool = False) -> None:
        self.pool = pool
        self.rsd = rsd
        self.passthrough_only = passthrough_only

    @property
    def reusable(self) -> bool:
        """Without RSD groups an answer depends only on the devices (nothing is created);
        a pool of passed-through NPUs never creates one."""
        return self.passthrough_only or self.rsd.peek() == "off"

    @property
    def build_ahead(self) -> bool:
        return True  # only used while reusable: nothing is created ahead

    def _info(self, device: Device) -> dict[str, dict[str, str]]:
        npu = device.payload_as(NpuInfo)
        info: dict[str, dict[str, str]]
        if npu.passthrough:
            info = {"vfio": vfio_info(npu.iommu_group)}
        else:
            info = {DRIVER: {"mount": f"/dev/{npu.npu}"}}
        extra = additional_info(self.pool.additional_info, device.id)
        if extra:
            info["extra"] = extra
        return info

    def allocate(self, request: AllocationRequest) -> ContainerEdits:
        # plain string order: PCI addresses are fixed-width lower-case hex (natural sort
        # would put 0000:0a:00.0 before 0000:09:00.0)
        devices: Sequence[Device] = sorted(request.devices, key=lambda d: d.id)
        npus = [d.payload_as(NpuInfo) for d in devices]
        ids = [d.id for d in devices]
        env = pcidevice_env(
            self.pool.prefix(),
            self.pool.resource_name,
            ids,
            {d.id: self._info(d) for d in devices},
            extra_kinds=("PCI_RESOURCE",),
        )
        edits = ContainerEdits().merge(*(d.edits for d in devices))
        npus = [n for n in npus if not n.passthrough]  # a VM uses no tools nor RSD group
        if not npus:
            return edits.merge(ContainerEdits(env=env))
        env["RBLN_DEVICES"] = ",".join(n.index for n in npus)
        tools: dict[str, Mount] = {}
        for npu in npus:
            for mount in npu.tools:
                tools.setdefault(mount.container_path, mount)
        group = self.rsd.node_for([n.address for n in npus])
        return edits.merge(
            ContainerEdits(
                device_nodes=(group,) if group is not None else (),
                mounts=tuple(tools.values()),
                env=env,
            )
        )

    def preferred(self, request: PreferredRequest) -> Sequence[str]:
        return preferred(request)


def _bridges(device: Device) -> tuple[str, ...]:
    return device.payload_as(NpuInfo).bridges


def _numa(device: Device) -> Hashable:
    return device.numa_nodes or None


def _bridge(depth: int) -> KeyFn:
    def key(device: Device) -> Hashable:
        chain = _bridges(device)
        if len(chain) > depth:
            return chain[: depth + 1]
        return ("-", device.id)  # nothing shared this deep: a group of its own

    return key


def _function(device: Device) -> Hashable:
    return device.payload_as(NpuInfo).pf or device.id


def levels_for(devices: Sequence[Device]) -> list[KeyFn]:
    """Grouping keys from the outermost (NUMA) to the innermost (physical function)."""
    depth = max((len(_bridges(d)) for d in devices), default=0)
    return [_numa, *(_bridge(i) for i in range(depth)), _function]


def preferred(request: PreferredRequest) -> list[str]:
    """The preferred IDs for ``request`` (must-include first, always kept)."""
    return prefer_nested(request, levels_for((*request.available, *request.must_include)))
