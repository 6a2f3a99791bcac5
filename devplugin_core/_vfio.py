"""VFIO device nodes of a PCI function bound to vfio-pci (shared by sriov-net and rebel-npu).

A VMM or DPDK process opens a function bound to vfio-pci through the VFIO container
``/dev/vfio/vfio`` and the node of the function's IOMMU group, ``/dev/vfio/<group>``. In
no-IOMMU mode (the group's ``name`` reads ``vfio-noiommu``) the host node is
``/dev/vfio/noiommu-<group>``, handed to the container as ``/dev/vfio/<group>``, as
sriov-network-device-plugin does.
"""

from __future__ import annotations

from ._hostfs import HostFS
from ._model import DeviceNode
from ._pci import SYS_PCI_DEVICES

__all__ = ["IOMMU_GROUPS", "VFIO_CONTAINER", "read_iommu_group", "vfio_info", "vfio_nodes"]

VFIO_CONTAINER = "/dev/vfio/vfio"
IOMMU_GROUPS = "/sys/kernel/iommu_groups"


def vfio_nodes(group: str | None, noiommu: bool) -> tuple[DeviceNode, ...]:
    """``/dev/vfio/vfio`` and the group's node (``/dev/vfio/<group>`` in the container)."""
    if group is None:
        return (DeviceNode(VFIO_CONTAINER),)
    host = f"/dev/vfio/noiommu-{group}" if noiommu else f"/dev/vfio/{group}"
    return (DeviceNode(VFIO_CONTAINER), DeviceNode(host, f"/dev/vfio/{group}"))


def vfio_info(group: str | None) -> dict[str, str]:
    """The ``vfio`` entry of ``PCIDEVICE_..._INFO``, in upstream's keys."""
    info = {"mount": VFIO_CONTAINER}
    if group is not None:
        info["dev-mount"] = f"/dev/vfio/{group}"
    return info


def read_iommu_group(host: HostFS, address: str) -> tuple[str | None, bool]:
    """A function's IOMMU group now and whether it is a no-IOMMU group (raises HostReadError)."""
    group = host.link_name(f"{SYS_PCI_DEVICES}/{address}/iommu_group")
    if group is None or not group.isdigit():
        return None, False
    return group, host.read_attr(f"{IOMMU_GROUPS}/{group}/name") == "vfio-noiommu"
