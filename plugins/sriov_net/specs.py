"""What a container gets for one function: device nodes and the ``_INFO`` entry, per driver.

Upstream's "info providers", as data: ``generic`` always; ``vfio`` for ``vfio-pci``; ``uio``
for ``uio``/``igb_uio``/``uio_pci_generic`` (upstream forgets the last one); ``vdpa`` for
``vdpaType`` (vhost: ``/dev/vhost-vdpa-M`` and its ``mount``; virtio: no node, an empty entry);
otherwise ``rdma`` when the pool asks for RDMA; ``vhost`` for ``needVhostNet``; ``extra`` from
``additionalInfo``. Every node is ``rw``. The ``uio`` and ``vdpa`` ``mount`` keys are there from
the first allocation on (upstream fills them only once the specs were computed, after the env).
:func:`read_state` re-reads one function (or SF) at Allocate time, so a group, RDMA device or
vDPA char device that changed since discovery is handed out as it is now.
"""

from __future__ import annotations

from dataclasses import dataclass

from devplugin_core import DeviceNode, HostFS, PciDevice, PciScan
from devplugin_core.toolkit import (
    SYS_PCI_DEVICES,
    RdmaDevice,
    rdma_char_devices_of,
    rdma_nodes,
    read_iommu_group,
    vfio_info,
    vfio_nodes,
)

from .aux import SYS_AUX
from .pools import Needs
from .vdpa import VdpaDevice, vdpa_by_function

__all__ = [
    "UIO_DRIVERS",
    "USERSPACE_DRIVERS",
    "VFIO_DRIVER",
    "FunctionState",
    "Needs",
    "build_specs",
    "rdma_below",
    "read_state",
    "sf_state",
    "state_from_scan",
]

VFIO_DRIVER = "vfio-pci"
UIO_DRIVERS = frozenset({"uio", "igb_uio", "uio_pci_generic"})
USERSPACE_DRIVERS = UIO_DRIVERS | {VFIO_DRIVER}
VHOST_NET = "/dev/vhost-net"
TUN = "/dev/net/tun"

Info = dict[str, dict[str, str]]


@dataclass(frozen=True)
class FunctionState:
    """The driver-dependent facts of one PCI function."""

    address: str
    driver: str = ""
    iommu_group: str | None = None
    noiommu: bool = False
    uio: tuple[str, ...] = ()
    rdma: tuple[RdmaDevice, ...] = ()
    vdpa: VdpaDevice | None = None

    @property
    def rdma_names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.rdma)


def state_from_scan(dev: PciDevice, scan: PciScan, vdpa: VdpaDevice | None = None) -> FunctionState:
    return FunctionState(
        address=dev.address,
        driver=dev.driver or "",
        iommu_group=dev.iommu_group,
        noiommu=dev.iommu_noiommu,
        uio=dev.uio,
        rdma=tuple(scan.rdma_of(dev)),
        vdpa=vdpa,
    )


def rdma_below(host: HostFS, device_dir: str, name: str) -> tuple[RdmaDevice, ...]:
    names = [
        n
        for n in host.listdir(f"{device_dir}/infiniband")
        if host.is_dir(f"{device_dir}/infiniband/{n}")
    ]
    chars = rdma_char_devices_of(host, name, device_dir=device_dir) if names else {}
    return tuple(RdmaDevice(n, char_devices=tuple(chars.get(n, ()))) for n in names)


def sf_state(host: HostFS, name: str, parent_driver: str) -> FunctionState | None:
    """A Scalable Function now (``None`` if gone): its parent's driver and its own RDMA
    devices. Raises HostReadError."""
    base = f"{SYS_AUX}/{name}"
    if not host.exists(base):
        return None
    return FunctionState(address=name, driver=parent_driver, rdma=rdma_below(host, base, name))


def read_state(
    host: HostFS, address: str, *, vdpa: bool = False, bus: str = "pci", driver: str = ""
) -> FunctionState | None:
    """Read one function now (``None`` if it no longer exists); ``vdpa``: with its vDPA
    device; ``bus="auxiliary"``: an SF, whose parent has ``driver``. Raises HostReadError."""
    if bus == "auxiliary":
        return sf_state(host, address, driver)
    base = f"{SYS_PCI_DEVICES}/{address}"
    if not host.exists(base):
        return None
    group, noiommu = read_iommu_group(host, address)
    uio = tuple(n for n in host.listdir(f"{base}/uio") if n.startswith("uio") and n[3:].isdigit())
    return FunctionState(
        address=address,
        driver=host.link_name(f"{base}/driver") or "",
        iommu_group=group,
        noiommu=noiommu,
        uio=uio,
        rdma=rdma_below(host, base, address),
        vdpa=vdpa_by_function(host).get(address) if vdpa else None,
    )


def _vfio(state: FunctionState) -> tuple[list[DeviceNode], dict[str, str]]:
    return list(vfio_nodes(state.iommu_group, state.noiommu)), vfio_info(state.iommu_group)


def _rdma(host: HostFS, state: FunctionState) -> tuple[list[DeviceNode], dict[str, str]]:
    nodes = list(rdma_nodes(host, state.rdma).nodes) if state.rdma else []
    env: dict[str, str] = {}
    for node in nodes:
        name = node.container_path.rsplit("/", 1)[-1]
        for kind in ("uverbs", "umad", "issm", "rdma_cm"):
            if name.startswith(kind):
                env[kind] = node.container_path
    if state.rdma:
        env["rdma_dev"] = state.rdma[0].name
    return nodes, env


def build_specs(
    host: HostFS, state: FunctionState, needs: Needs
) -> tuple[tuple[DeviceNode, ...], Info]:
    """Device nodes (in upstream's order) and the ``{provider: {key: value}}`` info map."""
    nodes: list[DeviceNode] = []
    info: Info = {"generic": {"deviceID": state.address}}
    if state.driver == VFIO_DRIVER:
        vfio_nodes, info["vfio"] = _vfio(state)
        nodes += vfio_nodes
    elif state.driver in UIO_DRIVERS:
        info["uio"] = {}
        if state.uio:
            path = f"/dev/{state.uio[0]}"
            nodes.append(DeviceNode(path))
            info["uio"]["mount"] = path
    if needs.extra is not None:
        info["extra"] = dict(needs.extra)
    if needs.vdpa:
        info["vdpa"] = {}
        dev = state.vdpa
        if needs.vdpa == "vhost" and dev is not None and dev.kind == "vhost" and dev.path:
            nodes.append(DeviceNode(dev.path))
            info["vdpa"]["mount"] = dev.path
    elif needs.rdma:
        rdma_list, info["rdma"] = _rdma(host, state)
        nodes += rdma_list
    if needs.vhost_net:
        nodes += [DeviceNode(VHOST_NET), DeviceNode(TUN)]
        info["vhost"] = {"net-mount": VHOST_NET, "tun-mount": TUN}
    return tuple(nodes), info
