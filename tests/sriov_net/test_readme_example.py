"""Upstream README's example ``resourceList`` (10 pools, every device type) on a node that has
every kind of device it names; the expected membership is written down, with its derivation
from upstream's code, in ``fixtures/sriovdp-readme-example.expected.yaml``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from devplugin_plugins.sriov_net.config import SriovNetConfig

from devplugin_core.cli import main
from devplugin_core.testing import FakeHost, FakeKubelet
from devplugin_core.toolkit import decode

from .helpers import (
    add_pf_with_vfs,
    bluefield_node,
    default_route,
    devinfo_dir,
    discover,
    ids,
    info,
    serve,
    specs,
    vdpa_node,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures"
EXAMPLE = FIXTURES / "sriovdp-readme-example.json"
EXPECTED: dict[str, Any] = yaml.safe_load(
    (FIXTURES / "sriovdp-readme-example.expected.yaml").read_text()
)


def example() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(EXAMPLE.read_text())
    return document


def readme_node(host: FakeHost) -> FakeHost:
    """Every kind of device the example names, plus near misses for each pool."""
    host.add_pci("0000:01:00.0", vendor="8086", device="1533", driver="igb", numa_node=0)
    host.add_netdev("0000:01:00.0", "eno1")
    default_route(host, "eno1")
    xl710 = add_pf_with_vfs(host, "0000:3b:00.0", "enp0s0f0", 4, first_group=40)
    host.bind(xl710[1], "i40evf")
    for index in (2, 3):
        host.remove_netdev(f"enp0s0f0v{index}")
        host.bind(xl710[index], "vfio-pci")
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
        numa=1,
        device="1592",
        vf_device="1889",
        driver="ice",
        first_group=60,
    )
    host.remove_netdev("ens5f0v1")
    host.bind(e810[1], "vfio-pci")
    host.add_dev("/dev/vhost-net")
    host.add_dev("/dev/net/tun")
    cx5 = add_pf_with_vfs(
        host,
        "0000:af:00.0",
        "ens6f0np0",
        3,
        numa=1,
        vendor="15b3",
        device="1017",
        vf_device="1018",
        driver="mlx5_core",
        vf_driver="mlx5_ib",
    )
    host.add_rdma("0000:af:00.0", "mlx5_0")
    host.add_rdma(cx5[0], "mlx5_1")
    host.add_rdma(cx5[1], "mlx5_4")
    ib = add_pf_with_vfs(
        host,
        "0000:d8:00.0",
        "ib0",
        3,
        numa=1,
        vendor="15b3",
        device="101b",
        vf_device="101c",
        driver="mlx5_core",
        vf_driver="mlx5_core",
        link_type="infiniband",
    )
    host.add_rdma("0000:d8:00.0", "mlx5_5", link_layer="InfiniBand")
    host.add_rdma(ib[0], "mlx5_6", link_layer="InfiniBand")
    host.add_rdma(ib[1], "mlx5_7", link_layer="InfiniBand")
    vdpa_node(host)
    host.add_pci(
        "0000:b1:00.0", vendor="8086", device="0d90", class_code=0x120000, driver="dfl-pci"
    )
    host.add_pci(
        "0000:b2:00.0",
        vendor="8086",
        device="0d5c",
        class_code=0x120000,
        driver="vfio-pci",
        iommu_group=90,
    )
    bluefield_node(host)
    host.add_sriov_pf(
        "0000:d9:00.0",
        vendor="14e4",
        device="1750",
        driver="bnxt_en",
        totalvfs=8,
        netdev="ens7f0np0",
    )
    add_pf_with_vfs(
        host,
        "0000:da:00.0",
        "ens8f0np0",
        2,
        vendor="14e4",
        device="1750",
        vf_device="1806",
        driver="bnxt_en",
        vf_driver="bnxt_en",
    )
    return host


def test_the_readme_example_validates(tmp_path: Path) -> None:
    result = decode(SriovNetConfig, example())
    assert result.warnings == []
    assert [e.device_type for e in result.value.resource_list] == [
        *["netDevice"] * 5,
        "accelerator",
        "auxNetDevice",
        *["netDevice"] * 3,
    ]
    assert main(["validate", "sriov-net", "--config-file", str(EXAMPLE)]) == 0


def test_every_pool_gets_what_upstreams_selectors_give_it(fake_host: FakeHost) -> None:
    found = discover(readme_node(fake_host), example())
    assert {name: found.ids(name) for name in found.devices} == EXPECTED["pools"]
    for subject, reason in EXPECTED["excluded"].items():
        assert found.why(subject)[0].startswith(reason), subject
    assert found.why("0000:3b:02.0") == [  # the duplicate pools: first pool wins
        "also matches, but intel.com/intel_sriov_netdevice comes first (a device belongs to "
        "one pool)",
        "also matches, but intel.com/intel_sriov_netdevice comes first (a device belongs to "
        "one pool)",
    ]
    assert {r.resource for r in found.rejections if r.subject == "0000:3b:02.0"} == {
        "intel.com/intel_sriov_netdevice_additional_env",
        "intel.com/old_selectors_syntax_example",
    }


async def test_the_readme_example_end_to_end(
    fake_host: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    readme_node(fake_host)
    async with serve(fake_host, fake_kubelet, example()):
        for name, expected in EXPECTED["pools"].items():
            conn = await fake_kubelet.wait_for_registration(name)
            assert ids(conn.devices) == expected, name
            assert {d.health for d in conn.devices} <= {"Healthy"}
        reply = await fake_kubelet.allocate("intel.com/intel_sriov_dpdk", ["0000:3b:02.2"])
        assert [path for path, _, _ in specs(reply)] == [
            "/dev/vfio/vfio",
            "/dev/vfio/42",
            "/dev/vhost-net",
            "/dev/net/tun",
        ]
        reply = await fake_kubelet.allocate("intel.com/ct6dx_vdpa_vhost", ["0000:65:00.2"])
        assert specs(reply) == [("/dev/vhost-vdpa-7", "/dev/vhost-vdpa-7", "rw")]
        reply = await fake_kubelet.allocate("nvidia.com/bf2_sf", ["mlx5_core.sf.3"])
        assert reply.envs["PCIDEVICE_NVIDIA_COM_BF2_SF"] == "mlx5_core.sf.3"
        assert (devinfo_dir(fake_host) / "nvidia.com-bf2_sf-mlx5_core.sf.3-device.json").exists()
        reply = await fake_kubelet.allocate("intel.com/intel_fpga", ["0000:b1:00.0"])
        assert info(reply, "PCIDEVICE_INTEL_COM_INTEL_FPGA_INFO") == {
            "0000:b1:00.0": {"generic": {"deviceID": "0000:b1:00.0"}}
        }
        reply = await fake_kubelet.allocate("mellanox.com/mlnx_sriov_rdma", ["0000:af:02.1"])
        assert (
            info(reply, "PCIDEVICE_MELLANOX_COM_MLNX_SRIOV_RDMA_INFO")["0000:af:02.1"]["rdma"][
                "rdma_dev"
            ]
            == "mlx5_4"
        )
