"""What a container gets for a set of NPUs.

Devices sorted by PCI address; per device ``/dev/rblnN`` (rw); the host tools read-only (once);
env as upstream — ``PCIDEVICE_<PREFIX>_<NAME>`` (addresses), its ``_INFO`` JSON
(``{"<bdf>": {"rebellions": {"mount": "/dev/rblnN"}}}``), ``PCI_RESOURCE_<PREFIX>_<NAME>`` —
plus ``RBLN_DEVICES`` (the host NPU indices, same order); and, unless RSD groups are off, the
allocation's own group device as ``/dev/rsd0``.
"""

from __future__ import annotations

from collections.abc import Sequence

from devplugin_core import (
    AllocationRequest,
    Allocator,
    ContainerEdits,
    Device,
    PreferredRequest,
)
from devplugin_core.pcidp import additional_info, pcidevice_env

from .config import PoolConfig
from .discovery import DRIVER, ToolMounts
from .rsd import RsdGroups
from .topology import preferred

__all__ = ["NpuAllocator"]


class NpuAllocator(Allocator):
    """Allocator of one pool; the tools and RSD policy are shared by all pools."""

    def __init__(self, pool: PoolConfig, tools: ToolMounts, rsd: RsdGroups) -> None:
        self.pool = pool
        self.tools = tools
        self.rsd = rsd

    def _info(self, device: Device) -> dict[str, dict[str, str]]:
        info = {DRIVER: {"mount": f"/dev/{device.attributes.get('npu', '')}"}}
        extra = additional_info(self.pool.additional_info, device.id)
        if extra:
            info["extra"] = extra
        return info

    def allocate(self, request: AllocationRequest) -> ContainerEdits:
        # plain string order: PCI addresses are fixed-width lower-case hex (natural sort
        # would put 0000:0a:00.0 before 0000:09:00.0)
        devices: Sequence[Device] = sorted(request.devices, key=lambda d: d.id)
        ids = [d.id for d in devices]
        env = pcidevice_env(
            self.pool.prefix(),
            self.pool.resource_name,
            ids,
            {d.id: self._info(d) for d in devices},
            extra_kinds=("PCI_RESOURCE",),
        )
        env["RBLN_DEVICES"] = ",".join(
            d.attributes.get("npu", "").removeprefix("rbln") for d in devices
        )
        edits = ContainerEdits().merge(*(d.edits for d in devices))
        group = self.rsd.node_for(ids)
        return edits.merge(
            ContainerEdits(
                device_nodes=(group,) if group is not None else (),
                mounts=self.tools.mounts,
                env=env,
            )
        )

    def preferred(self, request: PreferredRequest) -> Sequence[str]:
        return preferred(request)
