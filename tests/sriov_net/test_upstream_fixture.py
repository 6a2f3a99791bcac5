"""Upstream's example ``deployments/configMap.yaml`` (all four resources) on a matching node."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from devplugin_plugins.sriov_net.config import SriovNetConfig

from devplugin_core.cli import main
from devplugin_core.testing import FakeHost, FakeKubelet
from devplugin_core.toolkit import decode

from .helpers import add_pf_with_vfs, discover, ids, info, serve

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "sriov_net" / "configMap.yaml"
NETDEVICE, DPDK = "intel.com/intel_sriov_netdevice", "intel.com/intel_sriov_dpdk"
RDMA, BNXT = "intel.com/mlnx_sriov_rdma", "intel.com/brcm_sriov_bnxt"


def upstream_config() -> dict[str, Any]:
    configmap = yaml.safe_load(FIXTURE.read_text())
    document: dict[str, Any] = json.loads(configmap["data"]["config.json"])
    return document


def matching_node(host: FakeHost) -> None:
    """XL710 (i40e) and 82599 (ixgbe) PFs named as in the ConfigMap, an E810 on another name,
    a ConnectX-5 whose VFs run mlx5_ib, and Broadcom NetXtreme-E PFs."""
    xl710 = add_pf_with_vfs(host, "0000:3b:00.0", "enp0s0f0", 4, first_group=40)
    host.bind(xl710[1], "i40evf")
    for vf in xl710[2:]:
        host.remove_netdev(f"enp0s0f0v{xl710.index(vf)}")
        host.bind(vf, "vfio-pci")
    x520 = add_pf_with_vfs(
        host,
        "0000:5e:00.0",
        "enp2s2f1",
        2,
        device="10fb",
        vf_device="10ed",
        driver="ixgbe",
        vf_driver="ixgbevf",
        first_group=50,
    )
    host.remove_netdev("enp2s2f1v1")
    host.bind(x520[1], "vfio-pci")
    e810 = add_pf_with_vfs(
        host,
        "0000:86:00.0",
        "ens5f0",
        2,
        device="1592",
        vf_device="1889",
        driver="ice",
        first_group=60,
    )
    host.remove_netdev("ens5f0v1")
    host.bind(e810[1], "vfio-pci")
    cx5 = add_pf_with_vfs(
        host,
        "0000:af:00.0",
        "ens6f0np0",
        3,
        vendor="15b3",
        device="1017",
        vf_device="1018",
        driver="mlx5_core",
        vf_driver="mlx5_ib",
        numa=1,
    )
    host.add_rdma("0000:af:00.0", "mlx5_0")
    host.add_rdma(cx5[0], "mlx5_1")
    host.add_rdma(cx5[1], "mlx5_2")  # cx5[2] has no RDMA device: not for an isRdma pool
    host.add_rdma_cm()
    host.add_sriov_pf(
        "0000:d8:00.0",
        vendor="14e4",
        device="1750",
        driver="bnxt_en",
        totalvfs=8,
        netdev="ens7f0np0",
    )
    add_pf_with_vfs(
        host,
        "0000:d9:00.0",
        "ens8f0np0",
        2,
        vendor="14e4",
        device="1750",
        vf_device="1806",
        driver="bnxt_en",
        vf_driver="bnxt_en",
    )


EXPECTED = {
    NETDEVICE: ["0000:3b:02.0", "0000:3b:02.1", "0000:5e:02.0", "0000:86:02.0"],
    DPDK: ["0000:3b:02.2", "0000:3b:02.3", "0000:5e:02.1"],
    RDMA: ["0000:af:02.0", "0000:af:02.1"],
    BNXT: ["0000:d8:00.0"],
}


def test_configmap_validates_without_warnings(tmp_path: Path) -> None:
    result = decode(SriovNetConfig, upstream_config())
    assert result.warnings == []
    assert [e.resource_name for e in result.value.resource_list] == [
        "intel_sriov_netdevice",
        "intel_sriov_dpdk",
        "mlnx_sriov_rdma",
        "brcm_sriov_bnxt",
    ]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(upstream_config()))
    assert main(["validate", "sriov-net", "--config-file", str(path)]) == 0


def test_configmap_pools_on_a_matching_node(fake_host: FakeHost) -> None:
    matching_node(fake_host)
    found = discover(fake_host, upstream_config())
    assert {name: found.ids(name) for name in EXPECTED} == EXPECTED
    assert found.why("0000:86:02.1")[0].startswith("matches no pool: ")
    assert (
        "pfNames ['enp0s0f0', 'enp2s2f1'] does not include 'ens5f0'" in found.why("0000:86:02.1")[0]
    )
    assert found.why("0000:d9:00.0") == [
        "SR-IOV PF with 2 VFs enabled (its VFs are pooled instead)"
    ]


async def test_configmap_end_to_end(fake_host: FakeHost, fake_kubelet: FakeKubelet) -> None:
    matching_node(fake_host)
    async with serve(fake_host, fake_kubelet, upstream_config()):
        for name, expected in EXPECTED.items():
            conn = await fake_kubelet.wait_for_registration(name)
            assert ids(conn.devices) == expected
        reply = await fake_kubelet.allocate(RDMA, ["0000:af:02.1"])
        assert [d.host_path for d in reply.devices] == [
            "/dev/infiniband/umad2",
            "/dev/infiniband/uverbs2",
            "/dev/infiniband/rdma_cm",
        ]
        rdma = info(reply, "PCIDEVICE_INTEL_COM_MLNX_SRIOV_RDMA_INFO")["0000:af:02.1"]["rdma"]
        assert rdma["rdma_dev"] == "mlx5_2"
        reply = await fake_kubelet.allocate(BNXT, ["0000:d8:00.0"])
        assert reply.envs["PCIDEVICE_INTEL_COM_BRCM_SRIOV_BNXT"] == "0000:d8:00.0"
