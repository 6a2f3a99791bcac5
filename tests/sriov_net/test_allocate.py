"""Allocate through the fake kubelet: per-driver specs and env (tables E, F, J), device-info
files (table G), and the reference's §7.4 end-to-end scenario."""

from __future__ import annotations

import json
import os
import stat

import grpc
import pytest
from devplugin_plugins.sriov_net import SPEC

from devplugin_core.testing import FakeHost, FakeKubelet, run_plugin

from .helpers import (
    SECTION_7_4,
    VF,
    add_pf_with_vfs,
    devinfo_dir,
    doc,
    ids,
    info,
    intel_node,
    options,
    pool,
    serve,
    specs,
)

RW = "rw"


async def test_section_7_4_end_to_end(fake_host: FakeHost, fake_kubelet: FakeKubelet) -> None:
    intel_node(fake_host)
    async with serve(fake_host, fake_kubelet, SECTION_7_4):
        net = await fake_kubelet.wait_for_registration("intel.com/sriov_net")
        dpdk = await fake_kubelet.wait_for_registration("intel.com/sriov_dpdk")
        every = await fake_kubelet.wait_for_registration("intel.com/sriov_all")
        assert ids(net.devices) == VF[:2] and ids(dpdk.devices) == VF[2:]
        assert every.devices == []  # served although empty
        for device in (*net.devices, *dpdk.devices):
            assert device.health == "Healthy"
            assert [n.ID for n in device.topology.nodes] == [1]

        response = await fake_kubelet.allocate("intel.com/sriov_dpdk", [VF[2]])
        assert specs(response) == [
            ("/dev/vfio/vfio", "/dev/vfio/vfio", RW),
            ("/dev/vfio/52", "/dev/vfio/52", RW),
        ]
        assert list(response.mounts) == []
        assert dict(response.envs) == {
            "PCIDEVICE_INTEL_COM_SRIOV_DPDK": VF[2],
            "PCIDEVICE_INTEL_COM_SRIOV_DPDK_INFO": (
                '{"0000:03:02.2":{"generic":{"deviceID":"0000:03:02.2"},'
                '"vfio":{"dev-mount":"/dev/vfio/52","mount":"/dev/vfio/vfio"}}}'
            ),
        }
        path = devinfo_dir(fake_host) / "intel.com-sriov_dpdk-0000:03:02.2-device.json"
        assert path.read_text() == (
            '{"type":"pci","version":"1.1.0","pci":{"pci-address":"0000:03:02.2"}}'
        )
        assert stat.S_IMODE(path.stat().st_mode) == 0o444

        response = await fake_kubelet.allocate("intel.com/sriov_net", [VF[0]])
        assert specs(response) == []
        assert response.envs["PCIDEVICE_INTEL_COM_SRIOV_NET_INFO"] == (
            '{"0000:03:02.0":{"generic":{"deviceID":"0000:03:02.0"}}}'
        )


async def test_two_vfio_vfs_get_deduplicated_specs_in_request_order(
    fake_host: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    vfs = add_pf_with_vfs(
        fake_host,
        "0000:01:00.0",
        "enp2s0f0",
        2,
        vf_driver="vfio-pci",
        first_group=0,
        vf_netdevs=False,
    )
    async with serve(fake_host, fake_kubelet, doc(pool("dpdk", {"drivers": ["vfio-pci"]}))):
        await fake_kubelet.wait_for_registration("intel.com/dpdk")
        response = await fake_kubelet.allocate("intel.com/dpdk", [vfs[1], vfs[0]])
        assert specs(response) == [
            ("/dev/vfio/vfio", "/dev/vfio/vfio", RW),
            ("/dev/vfio/1", "/dev/vfio/1", RW),
            ("/dev/vfio/0", "/dev/vfio/0", RW),
        ]
        assert response.envs["PCIDEVICE_INTEL_COM_DPDK"] == f"{vfs[1]},{vfs[0]}"
        assert list(info(response, "PCIDEVICE_INTEL_COM_DPDK_INFO")) == sorted(vfs)


async def test_noiommu_group_maps_host_node_to_container_group(
    fake_host: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    vfs = add_pf_with_vfs(
        fake_host, "0000:01:00.0", "ens1", 1, vf_driver="vfio-pci", vf_netdevs=False
    )
    fake_host.set_iommu_group(vfs[0], 7, noiommu=True)
    async with serve(fake_host, fake_kubelet, doc(pool("dpdk", {}))):
        await fake_kubelet.wait_for_registration("intel.com/dpdk")
        response = await fake_kubelet.allocate("intel.com/dpdk", vfs)
        assert specs(response) == [
            ("/dev/vfio/vfio", "/dev/vfio/vfio", RW),
            ("/dev/vfio/noiommu-7", "/dev/vfio/7", RW),
        ]
        assert info(response, "PCIDEVICE_INTEL_COM_DPDK_INFO")[vfs[0]]["vfio"] == {
            "dev-mount": "/dev/vfio/7",
            "mount": "/dev/vfio/vfio",
        }


@pytest.mark.parametrize("driver", ["igb_uio", "uio", "uio_pci_generic"])
async def test_uio_drivers_get_their_uio_node_and_complete_info_on_first_allocation(
    fake_host: FakeHost, fake_kubelet: FakeKubelet, driver: str
) -> None:
    vfs = add_pf_with_vfs(fake_host, "0000:01:00.0", "ens1", 1, vf_driver=driver, vf_netdevs=False)
    fake_host.add_uio(vfs[0], 3)
    async with serve(fake_host, fake_kubelet, doc(pool("uio", {"drivers": [driver]}))):
        await fake_kubelet.wait_for_registration("intel.com/uio")
        response = await fake_kubelet.allocate("intel.com/uio", vfs)
        assert specs(response) == [("/dev/uio3", "/dev/uio3", RW)]
        assert response.envs["PCIDEVICE_INTEL_COM_UIO_INFO"] == (
            '{"0000:01:02.0":{"generic":{"deviceID":"0000:01:02.0"},"uio":{"mount":"/dev/uio3"}}}'
        )


async def test_need_vhost_net_applies_to_the_selector_that_matched(
    fake_host: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    vfs = add_pf_with_vfs(
        fake_host, "0000:01:00.0", "ens1", 2, vf_driver="vfio-pci", first_group=0, vf_netdevs=False
    )
    fake_host.add_dev("/dev/vhost-net")
    fake_host.add_dev("/dev/net/tun")
    selectors = [{"pciAddresses": [vfs[0]]}, {"needVhostNet": True}]
    async with serve(fake_host, fake_kubelet, doc(pool("dpdk", selectors))):
        await fake_kubelet.wait_for_registration("intel.com/dpdk")
        first = await fake_kubelet.allocate("intel.com/dpdk", [vfs[0]])
        second = await fake_kubelet.allocate("intel.com/dpdk", [vfs[1]])
    assert (
        len(first.devices) == 2
        and "vhost" not in info(first, "PCIDEVICE_INTEL_COM_DPDK_INFO")[vfs[0]]
    )
    assert [d.host_path for d in second.devices] == [
        "/dev/vfio/vfio",
        "/dev/vfio/1",
        "/dev/vhost-net",
        "/dev/net/tun",
    ]
    assert info(second, "PCIDEVICE_INTEL_COM_DPDK_INFO")[vfs[1]]["vhost"] == {
        "net-mount": "/dev/vhost-net",
        "tun-mount": "/dev/net/tun",
    }


async def test_missing_vhost_net_makes_the_device_unhealthy_not_silently_incomplete(
    fake_host: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    vfs = add_pf_with_vfs(
        fake_host, "0000:01:00.0", "ens1", 1, vf_driver="vfio-pci", first_group=0, vf_netdevs=False
    )
    async with serve(fake_host, fake_kubelet, doc(pool("dpdk", {"needVhostNet": True}))):
        devices = await fake_kubelet.wait_for_devices("intel.com/dpdk", lambda d: len(d) == 1)
        assert devices[0].health == "Unhealthy"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await fake_kubelet.allocate("intel.com/dpdk", vfs)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def mellanox(host: FakeHost) -> list[str]:
    """A ConnectX PF with two VFs on mlx5_core; only the first VF has an RDMA device."""
    vfs = add_pf_with_vfs(
        host,
        "0000:3b:00.0",
        "ens1f0np0",
        2,
        vendor="15b3",
        device="1017",
        vf_device="1018",
        driver="mlx5_core",
        vf_driver="mlx5_core",
        numa=0,
    )
    host.add_rdma("0000:3b:00.0", "mlx5_0")
    host.add_rdma(vfs[0], "mlx5_2")
    host.add_rdma_cm()
    return vfs


async def test_rdma_vfs_get_their_char_devices_and_rdma_info(
    fake_host: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    vfs = mellanox(fake_host)
    document = doc(
        pool("rdma", {"vendors": ["15b3"], "isRdma": True}), pool("plain", {"vendors": ["15b3"]})
    )
    async with serve(fake_host, fake_kubelet, document):
        rdma = await fake_kubelet.wait_for_registration("intel.com/rdma")
        plain = await fake_kubelet.wait_for_registration("intel.com/plain")
        assert ids(rdma.devices) == [vfs[0]] and ids(plain.devices) == [vfs[1]]
        response = await fake_kubelet.allocate("intel.com/rdma", [vfs[0]])
        assert specs(response) == [
            ("/dev/infiniband/umad1", "/dev/infiniband/umad1", RW),
            ("/dev/infiniband/uverbs1", "/dev/infiniband/uverbs1", RW),
            ("/dev/infiniband/rdma_cm", "/dev/infiniband/rdma_cm", RW),
        ]
        assert info(response, "PCIDEVICE_INTEL_COM_RDMA_INFO")[vfs[0]] == {
            "generic": {"deviceID": vfs[0]},
            "rdma": {
                "rdma_cm": "/dev/infiniband/rdma_cm",
                "rdma_dev": "mlx5_2",
                "umad": "/dev/infiniband/umad1",
                "uverbs": "/dev/infiniband/uverbs1",
            },
        }
        path = devinfo_dir(fake_host) / f"intel.com-rdma-{vfs[0]}-device.json"
        assert json.loads(path.read_text()) == {
            "type": "pci",
            "version": "1.1.0",
            "pci": {"pci-address": vfs[0], "rdma-device": "mlx5_2"},
        }


async def test_rdma_nodes_only_for_the_selector_that_asks(
    fake_host: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    vfs = mellanox(fake_host)
    selectors = [{"isRdma": True, "pciAddresses": [vfs[1]]}, {"isRdma": False}]
    async with serve(fake_host, fake_kubelet, doc(pool("mixed", selectors))):
        await fake_kubelet.wait_for_registration("intel.com/mixed")
        response = await fake_kubelet.allocate("intel.com/mixed", [vfs[0]])
    assert specs(response) == []  # RDMA-capable, but matched by the selector without isRdma
    assert set(info(response, "PCIDEVICE_INTEL_COM_MIXED_INFO")[vfs[0]]) == {"generic"}
    rdma_file = devinfo_dir(fake_host) / f"intel.com-mixed-{vfs[0]}-device.json"
    assert json.loads(rdma_file.read_text())["pci"]["rdma-device"] == "mlx5_2"  # as upstream


async def test_additional_info_star_then_per_address_override(
    fake_host: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    vfs = add_pf_with_vfs(fake_host, "0000:00:00.0", "ens1", 2)
    extra = {"*": {"test": "test", "bla": "bla"}, vfs[1]: {"test": "test1"}}
    async with serve(fake_host, fake_kubelet, doc(pool("net", {}, additionalInfo=extra))):
        await fake_kubelet.wait_for_registration("intel.com/net")
        response = await fake_kubelet.allocate("intel.com/net", vfs)
    got = info(response, "PCIDEVICE_INTEL_COM_NET_INFO")
    assert got[vfs[0]]["extra"] == {"bla": "bla", "test": "test"}
    assert got[vfs[1]]["extra"] == {"bla": "bla", "test": "test1"}


async def test_empty_additional_info_still_adds_an_extra_entry(
    fake_host: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    vfs = add_pf_with_vfs(fake_host, "0000:00:00.0", "ens1", 1)
    async with serve(fake_host, fake_kubelet, doc(pool("net", {}, additionalInfo={}))):
        await fake_kubelet.wait_for_registration("intel.com/net")
        response = await fake_kubelet.allocate("intel.com/net", vfs)
    assert response.envs["PCIDEVICE_INTEL_COM_NET_INFO"] == (
        '{"0000:00:02.0":{"extra":{},"generic":{"deviceID":"0000:00:02.0"}}}'
    )


async def test_env_names_keep_hyphens_and_use_the_pool_prefix(
    fake_host: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    vfs = add_pf_with_vfs(fake_host, "0000:00:00.0", "ens1", 2)
    document = doc(
        pool("sriov-net_a", {"pciAddresses": [vfs[0]]}),
        pool("vf", {}, resourcePrefix="example.org"),
    )
    async with serve(fake_host, fake_kubelet, document):
        await fake_kubelet.wait_for_registration("intel.com/sriov-net_a")
        await fake_kubelet.wait_for_registration("example.org/vf")
        first = await fake_kubelet.allocate("intel.com/sriov-net_a", [vfs[0]])
        second = await fake_kubelet.allocate("example.org/vf", [vfs[1]])
    assert set(first.envs) == {
        "PCIDEVICE_INTEL_COM_SRIOV-NET_A",
        "PCIDEVICE_INTEL_COM_SRIOV-NET_A_INFO",
    }
    assert set(second.envs) == {"PCIDEVICE_EXAMPLE_ORG_VF", "PCIDEVICE_EXAMPLE_ORG_VF_INFO"}
    assert (devinfo_dir(fake_host) / f"example.org-vf-{vfs[1]}-device.json").exists()


async def test_allocate_reads_the_function_live(
    fake_host: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    vfs = add_pf_with_vfs(
        fake_host, "0000:00:00.0", "ens1", 1, vf_driver="vfio-pci", first_group=4, vf_netdevs=False
    )
    async with serve(fake_host, fake_kubelet, doc(pool("dpdk", {}))):
        await fake_kubelet.wait_for_registration("intel.com/dpdk")
        for _ in range(2):  # the second answer may be the kept one
            response = await fake_kubelet.allocate("intel.com/dpdk", vfs)
            assert "/dev/vfio/4" in [d.host_path for d in response.devices]
        fake_host.set_iommu_group(vfs[0], 9)  # regrouped after discovery; /dev/vfio/4 stays
        response = await fake_kubelet.allocate("intel.com/dpdk", vfs)
        assert "/dev/vfio/9" in [d.host_path for d in response.devices]
        fake_host.remove_pci(vfs[0])
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await fake_kubelet.allocate("intel.com/dpdk", vfs)
        assert "no longer exists" in (err.value.details() or "")


async def test_unknown_ids_are_rejected(fake_host: FakeHost, fake_kubelet: FakeKubelet) -> None:
    intel_node(fake_host)
    async with serve(fake_host, fake_kubelet, SECTION_7_4):
        await fake_kubelet.wait_for_registration("intel.com/sriov_net")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await fake_kubelet.allocate("intel.com/sriov_net", [VF[2]])  # another pool's VF
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_device_info_files_are_replaced_and_stale_ones_cleaned_at_start(
    fake_host: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    intel_node(fake_host)
    directory = devinfo_dir(fake_host)
    directory.mkdir()
    stale = {
        "intel.com-sriov_net-0000:03:02.0-device.json",
        "intel.com-sriov_dpdk-0000:af:00.1-device.json",
    }
    foreign = {
        "intel.com-sriov_net_other-0000:03:02.0-device.json",
        "nvidia.com-sriov_net-0000:03:02.0-device.json",
        "intel.com-sriov_net-notes.txt",
    }
    for name in stale | foreign:
        (directory / name).write_text("{}")
    async with serve(fake_host, fake_kubelet, SECTION_7_4):
        await fake_kubelet.wait_for_registration("intel.com/sriov_dpdk")
        await fake_kubelet.wait_until(
            lambda: set(os.listdir(directory)) == foreign, what="stale device-info files to go"
        )
        for _ in range(2):  # a second Allocate replaces the read-only file
            await fake_kubelet.allocate("intel.com/sriov_dpdk", [VF[3]])
        names = set(os.listdir(directory))
        assert foreign | {"intel.com-sriov_dpdk-0000:03:02.3-device.json"} <= names
        for name in names - foreign:  # ours: written now (Allocate or build-ahead), not stale
            assert (directory / name).read_text() != "{}"


async def test_device_info_write_failure_fails_allocate(
    fake_host: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    intel_node(fake_host)
    blocker = fake_host.root.parent / "not-a-dir"
    blocker.write_text("")
    async with serve(fake_host, fake_kubelet, SECTION_7_4, device_info_dir=str(blocker)):
        await fake_kubelet.wait_for_registration("intel.com/sriov_net")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await fake_kubelet.allocate("intel.com/sriov_net", [VF[0]])
        assert "device-info file" in (err.value.details() or "")


async def test_accelerator_pools_write_no_device_info(
    fake_host: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    fake_host.add_pci(
        "0000:af:00.0",
        vendor="8086",
        device="0d5c",
        driver="vfio-pci",
        class_code=0x120000,
        iommu_group=80,
        numa_node=1,
    )
    document = doc(pool("fec", {"devices": ["0d5c"]}, deviceType="accelerator"))
    async with serve(fake_host, fake_kubelet, document):
        await fake_kubelet.wait_for_registration("intel.com/fec")
        response = await fake_kubelet.allocate("intel.com/fec", ["0000:af:00.0"])
    assert specs(response) == [
        ("/dev/vfio/vfio", "/dev/vfio/vfio", RW),
        ("/dev/vfio/80", "/dev/vfio/80", RW),
    ]
    assert not devinfo_dir(fake_host).exists()


async def test_cdi_mode_names_devices_and_keeps_env_and_device_info(
    fake_host: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    intel_node(fake_host)
    cdi_dir = fake_host.root.parent / "cdi"
    async with run_plugin(
        SPEC,
        fake_host,
        fake_kubelet,
        config=SECTION_7_4,
        cdi_dir=str(cdi_dir),
        plugin_options=options(fake_host),
    ):
        await fake_kubelet.wait_for_registration("intel.com/sriov_dpdk")
        dpdk = await fake_kubelet.allocate("intel.com/sriov_dpdk", [VF[2]])
        net = await fake_kubelet.allocate("intel.com/sriov_net", [VF[0]])
    assert specs(dpdk) == []
    assert [d.name for d in dpdk.cdi_devices] == ["intel.com/sriov_dpdk=0000:03:02.2"]
    assert info(dpdk, "PCIDEVICE_INTEL_COM_SRIOV_DPDK_INFO")[VF[2]]["vfio"]["dev-mount"] == (
        "/dev/vfio/52"
    )
    assert list(net.cdi_devices) == [] and "PCIDEVICE_INTEL_COM_SRIOV_NET" in net.envs
    assert (devinfo_dir(fake_host) / f"intel.com-sriov_dpdk-{VF[2]}-device.json").exists()


async def test_a_repeated_allocate_follows_the_function_and_its_device_info_file(
    fake_host: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    """The answer is reused (``Allocator.reusable``) only while every sysfs entry it was read
    from and the device-info file it wrote are the same files."""
    vfs = mellanox(fake_host)
    async with serve(
        fake_host, fake_kubelet, doc(pool("rdma", {"vendors": ["15b3"], "isRdma": True}))
    ):
        await fake_kubelet.wait_for_registration("intel.com/rdma")
        first = await fake_kubelet.allocate("intel.com/rdma", [vfs[0]])
        assert await fake_kubelet.allocate("intel.com/rdma", [vfs[0]]) == first
        path = devinfo_dir(fake_host) / f"intel.com-rdma-{vfs[0]}-device.json"
        path.unlink()  # removed after the pod, by the CNI side or by hand
        assert await fake_kubelet.allocate("intel.com/rdma", [vfs[0]]) == first
        assert json.loads(path.read_text())["pci"]["rdma-device"] == "mlx5_2"

        # the VF's RDMA device comes back under another name, before any rescan
        fake_host.remove(f"/sys/bus/pci/devices/{vfs[0]}/infiniband/mlx5_2")
        fake_host.add_rdma(vfs[0], "mlx5_7")
        response = await fake_kubelet.allocate("intel.com/rdma", [vfs[0]])
        assert info(response, "PCIDEVICE_INTEL_COM_RDMA_INFO")[vfs[0]]["rdma"]["rdma_dev"] == (
            "mlx5_7"
        )
        assert json.loads(path.read_text())["pci"]["rdma-device"] == "mlx5_7"


async def test_device_info_files_are_written_ahead_for_every_vf(
    fake_host: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    """Answers are built ahead (``build_ahead``): each VF's device-info file is there and
    current before its first Allocate, which then is served from the cache."""
    vfs = mellanox(fake_host)
    document = doc(pool("rdma", {"vendors": ["15b3"], "isRdma": True}))
    async with serve(fake_host, fake_kubelet, document):
        await fake_kubelet.wait_for_registration("intel.com/rdma")
        path = devinfo_dir(fake_host) / f"intel.com-rdma-{vfs[0]}-device.json"
        await fake_kubelet.wait_until(path.exists, 10, "the device-info file written ahead")
        assert json.loads(path.read_text())["pci"]["rdma-device"] == "mlx5_2"
        response = await fake_kubelet.allocate("intel.com/rdma", [vfs[0]])
        assert ("/dev/infiniband/uverbs1", "/dev/infiniband/uverbs1", RW) in specs(response)
