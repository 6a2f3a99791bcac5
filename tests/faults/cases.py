"""The three real plugins as fault-suite cases: a realistic fake node, a config, and faults.

Every test in ``tests/faults`` runs once per :class:`Case`. A case knows how to build its node
on a :class:`~devplugin_core.testing.FakeHost`, the config document that serves it, the plugin
options of a test run (in-process) and the flags of a ``devplugin run`` subprocess, what the
kubelet should see per resource, and one health fault it can inject and heal.

Nodes (realistic IDs and drivers):

* ``rdma-shared``: two ConnectX-5 RoCE PFs (NUMA 0 and 1), a ConnectX-6 InfiniBand HCA
  (NUMA 1), an Intel E810 without RDMA; three resources (RoCE, InfiniBand, all Mellanox).
* ``sriov-net``: an Intel X710 PF with 8 VFs (4 ``iavf``, 4 ``vfio-pci``), a ConnectX-5 PF with
  4 RDMA-capable VFs, the management NIC holding the default route; three pools.
* ``rebel-npu``: four CA22 cards behind two PCIe switches (NUMA 0/1), one CA25 card (four NPUs
  behind the card's switch), one REBEL CR03, ``rbln-stat`` and the fake ``rbln-smi``; the
  zero-config resources ``rebellions.ai/ATOM`` and ``rebellions.ai/REBEL``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devplugin_plugins.rdma_shared import SPEC as RDMA_SPEC
from devplugin_plugins.rebel_npu import SPEC as NPU_SPEC
from devplugin_plugins.rebel_npu.testing import (
    add_ca22_switches,
    add_ca25_card,
    add_switch,
    add_tools,
    install_fake_smi,
)
from devplugin_plugins.sriov_net import SPEC as SRIOV_SPEC

from devplugin_core import PluginSpec
from devplugin_core.testing import FakeHost

__all__ = ["CASES", "Case", "Fault", "case_ids"]


@dataclass(frozen=True)
class Fault:
    """A health fault: ``inject`` breaks the node, ``heal`` repairs it; the ``resource``'s
    devices ``affected`` must go Unhealthy and come back."""

    resource: str
    affected: tuple[str, ...]
    inject: Callable[[FakeHost], None]
    heal: Callable[[FakeHost], None]


@dataclass(frozen=True, repr=False)
class Case:
    """One plugin under test."""

    name: str
    spec: PluginSpec[Any]
    build: Callable[[FakeHost, Path], dict[str, Any]]  # (host, scratch dir) -> config document
    expected: Mapping[str, int]  # resource -> device count the kubelet must see
    stable: Mapping[str, str]  # resource -> a device ID every config variant advertises
    fault: Fault
    options: Callable[[FakeHost, Path], dict[str, Any]] = lambda host, scratch: {}
    flags: Callable[[FakeHost, Path], list[str]] = lambda host, scratch: []
    # a resource whose device count follows one integer in the config (reload storms)
    scaled: Callable[[dict[str, Any], int], dict[str, Any]] | None = None
    scaled_resource: str = ""
    scaled_max: int = 0
    # True once the running plugin has opened everything it keeps open (threads, sockets)
    settled: Callable[[Any], bool] = lambda runtime: True

    @property
    def resources(self) -> tuple[str, ...]:
        return tuple(self.expected)

    def __repr__(self) -> str:
        return f"Case({self.name})"


# -- rdma-shared ------------------------------------------------------------------------------
ROCE0, ROCE1, IB, E810 = "0000:3b:00.0", "0000:86:00.0", "0000:af:00.0", "0000:17:00.0"
RDMA_ROCE, RDMA_IB, RDMA_ALL = "rdma/roce_shared", "rdma/ib_shared", "rdma/mlx_all"


def rdma_node(host: FakeHost, scratch: Path) -> dict[str, Any]:
    host.add_pci(E810, vendor="8086", device="1593", driver="ice", numa_node=0)
    host.add_netdev(E810, "ens1f0")
    for address, netdev, ibdev, numa in (
        (ROCE0, "enp59s0f0np0", "mlx5_0", 0),
        (ROCE1, "enp134s0f0np0", "mlx5_1", 1),
    ):
        host.add_pci(address, vendor="15b3", device="1017", driver="mlx5_core", numa_node=numa)
        host.add_netdev(address, netdev)
        host.add_rdma(address, ibdev, link_layer="Ethernet")
    host.add_pci(
        IB, vendor="15b3", device="101b", driver="mlx5_core", numa_node=1, class_code=0x020700
    )
    host.add_netdev(IB, "ibp175s0", link_type="infiniband")
    host.add_rdma(IB, "mlx5_2", link_layer="InfiniBand", hca_type="MT4123")
    host.add_rdma_cm()
    return rdma_config(100)


def rdma_config(roce_slots: int) -> dict[str, Any]:
    return {
        "periodicUpdateInterval": 60,
        "configList": [
            {
                "resourceName": "roce_shared",
                "rdmaHcaMax": roce_slots,
                "selectors": {"vendors": ["15b3"], "linkTypes": ["ether"]},
            },
            {
                "resourceName": "ib_shared",
                "rdmaHcaMax": 20,
                "selectors": {"vendors": ["15b3"], "linkTypes": ["infiniband"]},
            },
            {
                "resourceName": "mlx_all",
                "rdmaHcaMax": 10,
                "selectors": {"vendors": ["15b3"], "drivers": ["mlx5_core"]},
            },
        ],
    }


def _rdma_scaled(doc: dict[str, Any], n: int) -> dict[str, Any]:
    return rdma_config(n)


RDMA = Case(
    name="rdma-shared",
    spec=RDMA_SPEC,
    build=rdma_node,
    expected={RDMA_ROCE: 100, RDMA_IB: 20, RDMA_ALL: 10},
    stable={RDMA_ROCE: "0", RDMA_IB: "0", RDMA_ALL: "0"},
    fault=Fault(
        RDMA_IB,
        tuple(str(i) for i in range(20)),
        lambda host: host.set_port_state("mlx5_2", 1, active=False),
        lambda host: host.set_port_state("mlx5_2", 1, active=True),
    ),
    scaled=_rdma_scaled,
    scaled_resource=RDMA_ROCE,
    scaled_max=200,
)


# -- sriov-net --------------------------------------------------------------------------------
X710, CX5, MGMT = "0000:3b:00.0", "0000:5e:00.0", "0000:01:00.0"
X710_VFS = [f"0000:3b:02.{i}" for i in range(8)]
CX5_VFS = [f"0000:5e:00.{i}" for i in range(2, 6)]
SRIOV_NET, SRIOV_DPDK, SRIOV_RDMA = (
    "intel.com/intel_sriov_netdevice",
    "intel.com/intel_sriov_dpdk",
    "nvidia.com/mlnx_sriov_rdma",
)
ROUTE = (
    "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
    "eno1\t00000000\t0102A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"
)


def sriov_node(host: FakeHost, scratch: Path) -> dict[str, Any]:
    host.add_pci(MGMT, vendor="8086", device="1533", driver="igb", numa_node=0)
    host.add_netdev(MGMT, "eno1")
    host.write("/proc/net/route", ROUTE)
    host.add_sriov_pf(
        X710,
        vendor="8086",
        device="1572",
        driver="i40e",
        totalvfs=64,
        numa_node=0,
        netdev="enp59s0f0",
        parents=["0000:3a:00.0"],
    )
    for index, address in enumerate(X710_VFS):
        kernel = index < 4
        host.add_vf(
            X710,
            index,
            address,
            device="154c",
            driver="iavf" if kernel else "vfio-pci",
            netdev=f"enp59s0f0v{index}" if kernel else None,
            iommu_group=None if kernel else 100 + index,
        )
    host.add_sriov_pf(
        CX5,
        vendor="15b3",
        device="1017",
        driver="mlx5_core",
        totalvfs=8,
        numa_node=1,
        netdev="ens2f0np0",
        parents=["0000:5d:00.0"],
    )
    host.add_rdma(CX5, "mlx5_0")
    for index, address in enumerate(CX5_VFS):
        host.add_vf(
            CX5, index, address, device="1018", driver="mlx5_core", netdev=f"ens2f0v{index}"
        )
        host.add_rdma(address, f"mlx5_{index + 1}")
    host.add_rdma_cm()
    host.add_dev("/dev/vhost-net")
    host.add_dev("/dev/net/tun")
    return sriov_config(4)


def sriov_config(netdevice_vfs: int) -> dict[str, Any]:
    last = netdevice_vfs - 1
    net: dict[str, Any] = {"vendors": ["8086"], "drivers": ["iavf"]}
    if netdevice_vfs < 4:
        net["pfNames"] = [f"enp59s0f0#0-{last}"] if netdevice_vfs else ["nonexistent0"]
    return {
        "resourceList": [
            {"resourceName": "intel_sriov_netdevice", "selectors": net},
            {
                "resourceName": "intel_sriov_dpdk",
                "selectors": {
                    "vendors": ["8086"],
                    "drivers": ["vfio-pci"],
                    "pfNames": ["enp59s0f0"],
                    "needVhostNet": True,
                },
            },
            {
                "resourceName": "mlnx_sriov_rdma",
                "resourcePrefix": "nvidia.com",
                "selectors": {"vendors": ["15b3"], "devices": ["1018"], "isRdma": True},
                "additionalInfo": {"*": {"fabric": "roce"}},
            },
        ]
    }


def sriov_options(host: FakeHost, scratch: Path) -> dict[str, Any]:
    return {"device_info_dir": str(scratch / "devinfo"), "link_monitor": "sysfs"}


def sriov_settled(runtime: Any) -> bool:
    """The netlink link monitor (when used) has its socket open and its first dump read."""
    monitors = [getattr(rt.resource.health, "monitor", None) for rt in runtime.resources.values()]
    return all(m.active for m in monitors if m is not None)


def sriov_flags(host: FakeHost, scratch: Path) -> list[str]:
    return ["--device-info-dir", str(scratch / "devinfo")]


SRIOV = Case(
    name="sriov-net",
    spec=SRIOV_SPEC,
    build=sriov_node,
    expected={SRIOV_NET: 4, SRIOV_DPDK: 4, SRIOV_RDMA: 4},
    stable={SRIOV_NET: X710_VFS[0], SRIOV_DPDK: X710_VFS[4], SRIOV_RDMA: CX5_VFS[0]},
    fault=Fault(
        SRIOV_RDMA,
        tuple(CX5_VFS),
        lambda host: host.set_link("ens2f0np0", False),
        lambda host: host.set_link("ens2f0np0", True),
    ),
    options=sriov_options,
    flags=sriov_flags,
    settled=sriov_settled,
    scaled=lambda doc, n: sriov_config(n),
    scaled_resource=SRIOV_NET,
    scaled_max=4,
)


# -- rebel-npu --------------------------------------------------------------------------------
ATOM, REBEL = "rebellions.ai/ATOM", "rebellions.ai/REBEL"
CR03 = "0000:63:00.0"


def npu_node(host: FakeHost, scratch: Path) -> dict[str, Any]:
    atoms = add_ca22_switches(host, numa_nodes=2, switches_per_numa=1, cards_per_switch=2)
    atoms += add_ca25_card(host, 0x40, 0, numa=0)
    chain = add_switch(host, 0x60, 1, numa=1)[0]
    host.add_npu(CR03, device="2030", numa_node=1, parents=chain, index=len(atoms))
    add_tools(host)
    install_fake_smi(host)
    return npu_config(scratch, len(atoms))


def npu_config(scratch: Path, atoms: int | None = None, *, pools: bool = False) -> dict[str, Any]:
    """``rsdGroups: off`` (allocations measure the plugin, not the fake tool); with ``pools``
    an explicit upstream resourceList whose ATOM pool holds the first ``atoms`` NPUs."""
    doc: dict[str, Any] = {
        "rsdGroups": "off",
        "rsdLockFile": str(scratch / "rsd.lock"),
        "rblnSmiTimeout": 3.0,
    }
    if pools:
        addresses = NPU_ATOMS[: atoms or 0] or ["0000:ff:1f.7"]
        doc["resourceList"] = [
            {
                "resourceName": "ATOM",
                "resourcePrefix": "rebellions.ai",
                "deviceType": "accelerator",
                "selectors": {"vendors": ["1eff"], "pciAddresses": addresses},
            },
            {
                "resourceName": "REBEL",
                "selectors": {"vendors": ["1eff"], "devices": ["2030"]},
            },
        ]
    return doc


NPU_ATOMS = [
    "0000:13:00.0",
    "0000:14:00.0",
    "0000:23:00.0",
    "0000:24:00.0",
    "0000:45:00.0",
    "0000:46:00.0",
    "0000:47:00.0",
    "0000:48:00.0",
]


def _npu_scaled(doc: dict[str, Any], n: int) -> dict[str, Any]:
    scratch = Path(os.path.dirname(doc["rsdLockFile"]))
    return npu_config(scratch, n, pools=True)


NPU = Case(
    name="rebel-npu",
    spec=NPU_SPEC,
    build=npu_node,
    expected={ATOM: 8, REBEL: 1},
    stable={ATOM: "0000:13:00.0", REBEL: CR03},
    fault=Fault(
        ATOM,
        (NPU_ATOMS[0],),
        lambda host: host.remove("/dev/rbln0"),
        lambda host: host.add_dev("/dev/rbln0"),
    ),
    scaled=_npu_scaled,
    scaled_resource=ATOM,
    scaled_max=8,
)

CASES = (RDMA, SRIOV, NPU)


def case_ids(case: Case) -> str:
    return case.name
