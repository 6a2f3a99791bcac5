"""The benchmark node, generated with the testing kit's FakeHost.

One host serves all three plugins (``make bench`` builds it once):

* ``pfs`` x ConnectX-6 Dx PFs (15b3:101d, ``mlx5_core``, RoCE, with their own RDMA device),
  each with 127 VFs (15b3:101e, the ConnectX maximum): VFs 0-111 bound to ``mlx5_core`` with a
  netdev and an RDMA device (uverbs/umad), VFs 112-126 bound to ``vfio-pci`` with an IOMMU group
  each (DPDK). PFs 0-3 sit on NUMA node 0, the rest on node 1.
* 16 single-function RDMA HCAs for rdma-shared: 8 ConnectX-6 InfiniBand (15b3:101b) and 8
  ConnectX-7 RoCE (15b3:1021), alternating NUMA nodes.
* 16 Rebellions CA22 NPUs behind four PCIe switches (two per NUMA node), ``rbln-stat`` and the
  fake ``rbln-smi``.
* a management NIC holding the default route; ``/dev/infiniband/rdma_cm``, ``/dev/vhost-net``.

:func:`build_host` returns a :class:`Node` with the addresses and the three config documents.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devplugin_plugins.rebel_npu.testing import add_ca22_switches, add_tools, install_fake_smi

from devplugin_core.testing import FakeHost

VFS_PER_PF = 127
KERNEL_VFS = 112  # VFs 0..111 mlx5_core (RDMA), 112..126 vfio-pci
ROUTE = (
    "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
    "eno1\t00000000\t0102A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"
)


@dataclass
class Node:
    """What was generated, for the benchmarks to address."""

    host: FakeHost
    pfs: list[str] = field(default_factory=list)
    pf_netdevs: list[str] = field(default_factory=list)
    rdma_vfs: list[str] = field(default_factory=list)
    vfio_vfs: list[str] = field(default_factory=list)
    hcas: list[str] = field(default_factory=list)
    hca_ibdevs: list[str] = field(default_factory=list)
    npus: list[str] = field(default_factory=list)

    def sriov_config(self) -> dict[str, Any]:
        return {
            "resourceList": [
                {
                    "resourceName": "mlnx_sriov_rdma",
                    "resourcePrefix": "nvidia.com",
                    "selectors": {
                        "vendors": ["15b3"],
                        "devices": ["101e"],
                        "drivers": ["mlx5_core"],
                        "isRdma": True,
                    },
                },
                {
                    "resourceName": "mlnx_sriov_dpdk",
                    "resourcePrefix": "nvidia.com",
                    "selectors": {
                        "vendors": ["15b3"],
                        "devices": ["101e"],
                        "drivers": ["vfio-pci"],
                    },
                },
            ]
        }

    def rdma_config(self, slots: int = 1000) -> dict[str, Any]:
        return {
            "configList": [
                {
                    "resourceName": "hca_ib",
                    "rdmaHcaMax": slots,
                    "selectors": {"vendors": ["15b3"], "deviceIDs": ["101b"]},
                },
                {
                    "resourceName": "hca_roce",
                    "rdmaHcaMax": slots,
                    "selectors": {"vendors": ["15b3"], "deviceIDs": ["1021"]},
                },
                {  # one rail: a resource backed by a single HCA (its port going down is a fault)
                    "resourceName": "hca_rail0",
                    "rdmaHcaMax": 64,
                    "selectors": {"ifNames": [self._hca_netdev(0)]},
                },
            ]
        }

    def npu_config(self, scratch: Path, rsd: str = "off") -> dict[str, Any]:
        return {"rsdGroups": rsd, "rsdLockFile": str(scratch / "rsd.lock")}

    @staticmethod
    def _hca_netdev(index: int) -> str:
        return f"ibp{0xE0 + index}s0" if index % 2 == 0 else f"enp{0xE0 + index}s0np0"


def add_pfs(host: FakeHost, node: Node, count: int) -> None:
    """``count`` ConnectX-6 Dx PFs with 127 VFs each (see the module docstring)."""
    for i in range(count):
        bus = 0x60 + 0x10 * i
        pf = f"0000:{bus:02x}:00.0"
        netdev = f"enp{bus}s0f0np0"
        numa = 0 if i < 4 else 1
        host.add_sriov_pf(
            pf,
            vendor="15b3",
            device="101d",
            driver="mlx5_core",
            totalvfs=VFS_PER_PF,
            numa_node=numa,
            netdev=netdev,
            parents=[f"0000:{bus - 1:02x}:00.0"],
        )
        host.add_rdma(pf, f"mlx5_pf{i}")
        node.pfs.append(pf)
        node.pf_netdevs.append(netdev)
        for index in range(VFS_PER_PF):
            address = f"0000:{bus + 1:02x}:{index // 8:02x}.{index % 8}"
            if index < KERNEL_VFS:
                host.add_vf(
                    pf,
                    index,
                    address,
                    device="101e",
                    driver="mlx5_core",
                    netdev=f"enp{bus}s0f0v{index}",
                )
                host.add_rdma(address, f"mlx5_{i}v{index}", counters=False)
                node.rdma_vfs.append(address)
            else:
                host.add_vf(
                    pf,
                    index,
                    address,
                    device="101e",
                    driver="vfio-pci",
                    iommu_group=1000 + i * VFS_PER_PF + index,
                )
                node.vfio_vfs.append(address)


def add_hcas(host: FakeHost, node: Node, count: int = 16) -> None:
    for i in range(count):
        address = f"0000:{0xE0 + i:02x}:00.0"
        ib = i % 2 == 0
        host.add_pci(
            address,
            vendor="15b3",
            device="101b" if ib else "1021",
            driver="mlx5_core",
            numa_node=i % 2,
            class_code=0x020700 if ib else 0x020000,
        )
        host.add_netdev(address, Node._hca_netdev(i), link_type="infiniband" if ib else "ether")
        ibdev = f"mlx5_hca{i}"
        host.add_rdma(
            address,
            ibdev,
            link_layer="InfiniBand" if ib else "Ethernet",
            hca_type="MT4123" if ib else "MT4129",
        )
        node.hcas.append(address)
        node.hca_ibdevs.append(ibdev)


def build_host(root: Path, *, pfs: int = 8, hcas: int = 16, npus: bool = True) -> Node:
    """The benchmark node under ``root`` (see the module docstring)."""
    host = FakeHost(root)
    node = Node(host)
    host.add_pci("0000:01:00.0", vendor="8086", device="1533", driver="igb", numa_node=0)
    host.add_netdev("0000:01:00.0", "eno1")
    host.write("/proc/net/route", ROUTE)
    add_pfs(host, node, pfs)
    if hcas:
        add_hcas(host, node, hcas)
    host.add_rdma_cm()
    host.add_dev("/dev/vhost-net")
    host.add_dev("/dev/net/tun")
    if npus:
        node.npus = add_ca22_switches(
            host, numa_nodes=2, switches_per_numa=2, cards_per_switch=4, base_bus=0x10
        )
        add_tools(host)
        install_fake_smi(host)
    return node
