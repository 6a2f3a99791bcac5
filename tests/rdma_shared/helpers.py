"""A fake RDMA node and helpers shared by the rdma_shared tests.

The node (:func:`build_node`; the ``node`` fixture in conftest) has two RoCE ConnectX-5 PFs
on NUMA 0 and 1, one ConnectX-6 InfiniBand HCA on NUMA 1, an Intel E810 NIC (no RDMA) that
must always be ignored, and ``/dev/infiniband/rdma_cm``. FakeHost numbers the char devices
in creation order::

    0000:3b:00.0  mlx5_0  enp59s0f0np0   ether       NUMA 0  umad0 uverbs0
    0000:86:00.0  mlx5_1  enp134s0f0np0  ether       NUMA 1  umad1 uverbs1
    0000:af:00.0  mlx5_2  ibp175s0       infiniband  NUMA 1  issm2 umad2 uverbs2
    0000:01:00.0  -       eno1           ether       NUMA 0  (Intel, ice)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from devplugin_plugins.rdma_shared import build
from devplugin_plugins.rdma_shared.config import RdmaSharedConfig

from devplugin_core import Device, PluginContext
from devplugin_core._api import Rejection
from devplugin_core.testing import FakeHost, scan_once
from devplugin_core.toolkit import decode

ROCE0, ROCE1, IB, INTEL = "0000:3b:00.0", "0000:86:00.0", "0000:af:00.0", "0000:01:00.0"
NETDEV = {ROCE0: "enp59s0f0np0", ROCE1: "enp134s0f0np0", IB: "ibp175s0", INTEL: "eno1"}
IBDEV = {ROCE0: "mlx5_0", ROCE1: "mlx5_1", IB: "mlx5_2"}
NODES = {
    ROCE0: ["/dev/infiniband/umad0", "/dev/infiniband/uverbs0"],
    ROCE1: ["/dev/infiniband/umad1", "/dev/infiniband/uverbs1"],
    IB: ["/dev/infiniband/issm2", "/dev/infiniband/umad2", "/dev/infiniband/uverbs2"],
}
RDMA_CM = "/dev/infiniband/rdma_cm"


def build_node(host: FakeHost) -> FakeHost:
    """Populate ``host`` with the node described in the module docstring."""
    host.add_pci(INTEL, vendor="8086", device="1593", driver="ice", numa_node=0)
    host.add_netdev(INTEL, NETDEV[INTEL])
    for address, numa in ((ROCE0, 0), (ROCE1, 1)):
        host.add_pci(address, vendor="15b3", device="1017", driver="mlx5_core", numa_node=numa)
        host.add_netdev(address, NETDEV[address], link_type="ether")
        host.add_rdma(address, IBDEV[address], link_layer="Ethernet")
    host.add_pci(
        IB, vendor="15b3", device="101b", driver="mlx5_core", numa_node=1, class_code=0x020700
    )
    host.add_netdev(IB, NETDEV[IB], link_type="infiniband")
    host.add_rdma(IB, IBDEV[IB], link_layer="InfiniBand", hca_type="MT4123")
    host.add_rdma_cm()
    return host


def resource(name: str = "r", max_: int = 4, **fields: Any) -> dict[str, Any]:
    """One configList entry; ``selectors=...``/``devices=...`` pass straight through."""
    entry: dict[str, Any] = {"resourceName": name, "rdmaHcaMax": max_}
    entry.update(fields)
    return entry


def config(*entries: Mapping[str, Any], **top: Any) -> dict[str, Any]:
    """A config document; health checks are driven by the test unless it sets an interval."""
    doc: dict[str, Any] = {"configList": list(entries), "healthCheckInterval": 300}
    doc.update(top)
    return doc


def discover(
    host: FakeHost, doc: Mapping[str, Any]
) -> tuple[dict[str, Sequence[Device]], list[Rejection]]:
    """One discovery pass of every resource of ``doc`` (no kubelet): devices and rejections."""
    cfg = decode(RdmaSharedConfig, doc).value
    scan = scan_once(build(cfg, PluginContext(host=host.host)), host)
    return {name: devices for name, (_, devices) in scan.tree.items()}, scan.rejections


def hcas(devices: Sequence[Device]) -> list[str]:
    """The PCI addresses behind a resource's slots ([] when it advertises nothing)."""
    return devices[0].attributes["hcas"].split(",") if devices else []


def node_paths(devices: Sequence[Device]) -> list[str]:
    """Every host node a slot grants (its parts' char devices, then rdma_cm)."""
    if not devices:
        return []
    return [n.host_path for n in devices[0].all_edits.device_nodes]
