"""NPUs bound to ``vfio-pci``, for virtual machines (KubeVirt): their device nodes and health.

A VMM opens a function bound to vfio-pci through the VFIO container ``/dev/vfio/vfio`` and the
node of the function's IOMMU group, ``/dev/vfio/<group>``. In no-IOMMU mode (the group's
``name`` reads ``vfio-noiommu``) the host node is ``/dev/vfio/noiommu-<group>``, handed to the
container as ``/dev/vfio/<group>``, as sriov-network-device-plugin does.

VFIO hands a group to userspace only while it is *viable*: every other function in the group
is bound to a VFIO driver or to ``pci-stub``, bound to no driver, or is a bridge. That is
``vfio_dev_viable()`` / ``vfio_dev_driver_allowed()`` of drivers/vfio/vfio.c up to Linux 5.18
(a bridge is any function whose header type is not "normal"); since 5.19 the same rule is
enforced through DMA ownership (``iommu_group_claim_dma_owner()``, taken when VFIO attaches
the group; the vfio drivers, pci-stub and pcieport set ``driver_managed_dma``). sysfs does not
show the header type, so bridges are recognised by class: PCI-to-PCI (``0x0604``), CardBus
(``0x0607``) and semi-transparent (``0x0609``) bridges are the header types 1 and 2. A device
whose group is not viable is advertised Unhealthy with the offending functions named —
KubeVirt would fail at VM start.
"""

from __future__ import annotations

from devplugin_core import DeviceNode, HostFS, HostReadError, Observation
from devplugin_core.toolkit import (
    IOMMU_GROUPS,
    VFIO_CONTAINER,
    read_iommu_group,
    vfio_info,
    vfio_nodes,
)

__all__ = [
    "VFIO_CONTAINER",
    "VFIO_DRIVER",
    "Blockers",
    "group_blockers",
    "group_nodes",
    "passthrough_problem",
    "read_group",
    "vfio_info",
]

VFIO_DRIVER = "vfio-pci"
#: ``vfio_driver_allowed[]`` of the kernel: drivers that only keep others off a device
ALLOWED_DRIVERS = frozenset({"pci-stub"})
_BRIDGE_CLASSES = frozenset({0x0604, 0x0607, 0x0609})

#: group number -> the functions keeping it from being viable (one health check's memo)
Blockers = dict[str, tuple[str, ...]]


def group_nodes(group: str, noiommu: bool) -> tuple[DeviceNode, ...]:
    """``/dev/vfio/vfio`` and the group's node (always ``/dev/vfio/<group>`` in the container)."""
    return vfio_nodes(group, noiommu)


def _host_node(group: str, noiommu: bool) -> str:
    return vfio_nodes(group, noiommu)[-1].host_path


def read_group(host: HostFS, address: str) -> tuple[str | None, bool]:
    """A function's IOMMU group now and whether it is a no-IOMMU group (raises HostReadError)."""
    return read_iommu_group(host, address)


def _is_vfio(driver: str) -> bool:
    # vfio-pci and its variant drivers (mlx5_vfio_pci, hisi_acc_vfio_pci, ...)
    return driver == VFIO_DRIVER or "vfio" in driver


def group_blockers(host: HostFS, group: str) -> tuple[str, ...]:
    """The functions of IOMMU ``group`` bound to a driver that keeps it from being viable for
    VFIO, each as ``"<bdf> (bound to <driver>)"`` (raises HostReadError)."""
    members = f"{IOMMU_GROUPS}/{group}/devices"
    out = []
    for member in sorted(host.listdir(members)):
        if not host.exists(f"{members}/{member}"):
            continue  # removed meanwhile
        driver = host.link_name(f"{members}/{member}/driver")
        if driver is None or driver in ALLOWED_DRIVERS or _is_vfio(driver):
            continue
        text = host.read_attr(f"{members}/{member}/class") or ""
        try:
            if int(text, 16) >> 8 in _BRIDGE_CLASSES:
                continue
        except ValueError:
            pass  # not a PCI function: only its driver counts
        out.append(f"{member} (bound to {driver})")
    return tuple(out)


def passthrough_problem(
    host: HostFS, address: str, group: str, noiommu: bool, blockers: Blockers
) -> Observation | None:
    """Why a function bound to vfio-pci cannot be passed through now (None: it can).

    A changed IOMMU group (vfio-pci rebound in no-IOMMU mode gets a new one) asks for a
    rescan, which advertises the new node. ``blockers`` memoises group reads within one check.
    """
    try:
        now, now_noiommu = read_group(host, address)
        if (now, now_noiommu) != (group, noiommu):
            shown = _host_node(now, now_noiommu) if now is not None else "none"
            return Observation(
                False, f"IOMMU group changed ({_host_node(group, noiommu)} -> {shown})", True
            )
        for node in (n.host_path for n in vfio_nodes(group, noiommu)):
            if not host.exists(node):
                return Observation.bad(f"{node} is missing")
        if group not in blockers:
            blockers[group] = group_blockers(host, group)
        others = tuple(b for b in blockers[group] if not b.startswith(f"{address} "))
    except HostReadError as err:
        return Observation.bad(str(err))
    if others:
        return Observation.bad(
            f"IOMMU group {group} is not viable for VFIO: {', '.join(others)}; every other "
            f"function in the group must be bound to vfio-pci or pci-stub, unbound, or a bridge"
        )
    return None
