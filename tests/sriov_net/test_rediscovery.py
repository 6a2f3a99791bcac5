"""Rediscovery without restarts: sriov_numvfs changes, rebinding, empty pools that grow, and VFs
that keep their pool while a pod holds their netdev / RDMA device."""

from __future__ import annotations

from typing import Any

from devplugin_plugins.sriov_net.discovery import VfInfo

from devplugin_core.testing import FakeHost, FakeKubelet, write_config

from .helpers import (
    PF,
    SECTION_7_4,
    VF,
    add_pf_with_vfs,
    default_route,
    devinfo_dir,
    discover,
    doc,
    ids,
    intel_node,
    pool,
    serve,
)

FAST: dict[str, Any] = {"numvfs_check_interval": 0.05}


async def test_empty_pool_is_served_and_grows_when_vfs_are_created(
    fake_host: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    fake_host.add_sriov_pf(
        PF, vendor="8086", device="1572", driver="i40e", totalvfs=8, numa_node=0, netdev="enp3s0f0"
    )
    document = doc(pool("vfs", {"pfNames": ["enp3s0f0"]}))
    async with serve(fake_host, fake_kubelet, document, **FAST):
        conn = await fake_kubelet.wait_for_registration("intel.com/vfs")
        assert conn.devices == []
        for index in range(2):  # echo 2 > sriov_numvfs
            fake_host.add_vf(PF, index, VF[index], device="154c", driver="iavf")
        devices = await fake_kubelet.wait_for_devices("intel.com/vfs", lambda d: len(d) == 2)
        assert ids(devices) == VF[:2]
        fake_host.remove_vfs(PF)  # echo 0 > sriov_numvfs
        await fake_kubelet.wait_for_devices("intel.com/vfs", lambda d: d == [])
        assert fake_kubelet.registration_count("intel.com/vfs") == 1  # never re-registered


async def test_changed_vf_count_is_picked_up(
    fake_host: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    intel_node(fake_host)
    async with serve(fake_host, fake_kubelet, SECTION_7_4, **FAST):
        await fake_kubelet.wait_for_registration("intel.com/sriov_net")
        fake_host.add_vf(PF, 4, "0000:03:02.4", device="154c", driver="iavf", netdev="enp3s0f0v4")
        devices = await fake_kubelet.wait_for_devices("intel.com/sriov_net", lambda d: len(d) == 3)
        assert ids(devices) == [*VF[:2], "0000:03:02.4"]
        assert fake_kubelet.registration_count("intel.com/sriov_net") == 1


async def test_rebinding_moves_a_vf_between_pools(
    fake_host: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    intel_node(fake_host)
    document = doc(pool("net", {"drivers": ["iavf"]}), pool("dpdk", {"drivers": ["vfio-pci"]}))
    async with serve(fake_host, fake_kubelet, document, **FAST):
        await fake_kubelet.wait_for_registration("intel.com/net")
        await fake_kubelet.wait_for_registration("intel.com/dpdk")
        fake_host.remove_netdev("enp3s0f0v1")
        fake_host.bind(VF[1], "vfio-pci")  # driverctl set-override 0000:03:02.1 vfio-pci
        fake_host.set_iommu_group(VF[1], 51)
        await fake_kubelet.wait_for_devices("intel.com/dpdk", lambda d: len(d) == 3)
        await fake_kubelet.wait_for_devices("intel.com/net", lambda d: ids(d) == [VF[0]])
        assert fake_kubelet.registration_count("intel.com/net") == 1


async def test_a_change_before_the_first_poll_is_not_missed(
    fake_host: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    intel_node(fake_host)
    async with serve(fake_host, fake_kubelet, SECTION_7_4, numvfs_check_interval=0.2) as runtime:
        await runtime.discover_once()
        fake_host.remove_vfs(PF)  # right after discovery, before any fingerprint poll
        await fake_kubelet.wait_for_devices("intel.com/sriov_net", lambda d: d == [])


async def test_periodic_rescan_catches_what_the_fingerprint_does_not(
    fake_host: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    intel_node(fake_host)
    async with serve(fake_host, fake_kubelet, SECTION_7_4, rescan_interval=0.05):
        await fake_kubelet.wait_for_registration("intel.com/sriov_net")
        default_route(fake_host, "enp3s0f0v0")  # a DHCP default route on a VF
        await fake_kubelet.wait_for_devices("intel.com/sriov_net", lambda d: ids(d) == [VF[1]])


def rdma_node(host: FakeHost) -> list[str]:
    vfs = add_pf_with_vfs(
        host,
        "0000:3b:00.0",
        "ibs1",
        2,
        vendor="15b3",
        device="101b",
        vf_device="101c",
        driver="mlx5_core",
        vf_driver="mlx5_core",
        link_type="infiniband",
    )
    host.add_rdma("0000:3b:00.0", "mlx5_0", link_layer="InfiniBand")
    for index, vf in enumerate(vfs):
        host.add_rdma(vf, f"mlx5_{index + 1}", link_layer="InfiniBand")
    host.add_rdma_cm()
    return vfs


def into_pod(host: FakeHost, vf: str, netdev: str) -> None:
    """What exclusive RDMA does when a pod gets the VF: netdev and RDMA device leave the host."""
    host.remove_netdev(netdev)
    host.remove(f"{host.pci[vf].path}/infiniband")


RDMA_POOLS = doc(pool("ib", {"linkTypes": ["infiniband"], "isRdma": True}), pool("rest", {}))


async def test_allocated_vfs_keep_their_pool(
    fake_host: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    vfs = rdma_node(fake_host)
    async with serve(fake_host, fake_kubelet, RDMA_POOLS) as runtime:
        conn = await fake_kubelet.wait_for_registration("intel.com/ib")
        assert ids(conn.devices) == vfs
        await fake_kubelet.allocate("intel.com/ib", [vfs[0]])
        into_pod(fake_host, vfs[0], "ibs1v0")
        await runtime.discover_once()
        await runtime.check_health_once("intel.com/ib")
        assert fake_kubelet.health("intel.com/ib") == dict.fromkeys(vfs, "Healthy")
        assert fake_kubelet.devices("intel.com/rest") == []


def test_after_a_restart_pod_held_vfs_inherit_link_type_and_rdma_from_the_pf(
    fake_host: FakeHost,
) -> None:
    vfs = rdma_node(fake_host)
    into_pod(fake_host, vfs[0], "ibs1v0")
    found = discover(fake_host, RDMA_POOLS)
    assert found.ids("intel.com/ib") == vfs
    assert found.device("intel.com/ib", vfs[0]).attributes["linkType"] == "infiniband"
    assert found.device("intel.com/ib", vfs[0]).payload_as(VfInfo).needs.rdma  # RDMA nodes


def test_vfio_bound_vfs_do_not_inherit_rdma(fake_host: FakeHost) -> None:
    vfs = rdma_node(fake_host)
    fake_host.remove_netdev("ibs1v1")
    fake_host.remove(f"{fake_host.pci[vfs[1]].path}/infiniband")
    fake_host.bind(vfs[1], "vfio-pci")
    found = discover(fake_host, RDMA_POOLS)
    assert found.ids("intel.com/ib") == [vfs[0]]
    assert found.ids("intel.com/rest") == [vfs[1]]


async def test_pod_held_vfs_keep_netdev_derived_attributes_seen_before(
    fake_host: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    vfs = rdma_node(fake_host)
    path = fake_host.pci[vfs[0]].path
    fake_host.write(f"{path}/infiniband/mlx5_1/ports/1/pkeys/0", "0x8002\n")
    document = doc(pool("tenant", {"pKeys": ["0x8002"]}), pool("rest", {}))
    async with serve(fake_host, fake_kubelet, document) as runtime:
        await fake_kubelet.wait_for_registration("intel.com/tenant")
        into_pod(fake_host, vfs[0], "ibs1v0")  # its pkey is no longer readable
        await runtime.discover_once()
        assert ids(fake_kubelet.devices("intel.com/tenant")) == [vfs[0]]


async def test_config_reload_adds_pools_without_cleaning_device_info_again(
    fake_host: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    intel_node(fake_host)
    first = doc(pool("net", {"drivers": ["iavf"]}))
    async with serve(fake_host, fake_kubelet, first) as runtime:
        await fake_kubelet.wait_for_registration("intel.com/net")
        await fake_kubelet.allocate("intel.com/net", [VF[0]])
        written = devinfo_dir(fake_host) / f"intel.com-net-{VF[0]}-device.json"
        assert written.exists()
        path = runtime.options.config_file
        assert path is not None
        write_config(
            path, doc(pool("net", {"drivers": ["iavf"]}), pool("dpdk", {"drivers": ["vfio-pci"]}))
        )
        assert await runtime.reload("test")
        conn = await fake_kubelet.wait_for_registration("intel.com/dpdk")
        assert ids(conn.devices) == VF[2:]
        await runtime.check_health_once("intel.com/net")
        assert written.exists()
        assert fake_kubelet.registration_count("intel.com/net") == 1
