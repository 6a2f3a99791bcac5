"""Health: PF link down or PCI function gone => Unhealthy; recovery; the netlink path through
real veth links in a network namespace named like the fake PF netdevs."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from devplugin_core.testing import FakeHost, FakeKubelet

from .helpers import PF, SECTION_7_4, VF, add_pf_with_vfs, doc, intel_node, pool, serve

NET, DPDK = "intel.com/sriov_net", "intel.com/sriov_dpdk"


def all_health(kubelet: FakeKubelet, resource: str, state: str) -> bool:
    health = kubelet.health(resource)
    return bool(health) and set(health.values()) == {state}


async def test_pf_link_down_marks_its_vfs_unhealthy_and_recovers(
    fake_host: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    intel_node(fake_host)
    other = add_pf_with_vfs(fake_host, "0000:81:00.0", "ens2f0", 2, numa=1, vf_driver="ixgbevf")
    document = {
        "resourceList": [*SECTION_7_4["resourceList"][:2], pool("other", {"pfNames": ["ens2f0"]})]
    }
    async with serve(fake_host, fake_kubelet, document, health_interval=0.05):
        await fake_kubelet.wait_for_registration(NET)
        await fake_kubelet.wait_for_registration("intel.com/other")
        fake_host.set_link("enp3s0f0", False)
        await fake_kubelet.wait_until(
            lambda: (
                all_health(fake_kubelet, NET, "Unhealthy")
                and all_health(fake_kubelet, DPDK, "Unhealthy")
            ),
            what="VFs of the downed PF to turn Unhealthy",
        )
        assert fake_kubelet.health("intel.com/other") == dict.fromkeys(other, "Healthy")
        fake_host.set_link("enp3s0f0", True)
        await fake_kubelet.wait_until(
            lambda: (
                all_health(fake_kubelet, NET, "Healthy")
                and all_health(fake_kubelet, DPDK, "Healthy")
            ),
            what="recovery",
        )


async def test_vf_netdev_leaving_the_host_is_not_a_fault(
    fake_host: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    intel_node(fake_host)
    async with serve(fake_host, fake_kubelet, SECTION_7_4) as runtime:
        await fake_kubelet.wait_for_registration(NET)
        fake_host.set_link("enp3s0f0v0", False)
        fake_host.remove_netdev("enp3s0f0v0")  # moved into a pod's namespace
        await runtime.check_health_once(NET)
        await runtime.discover_once()
        await runtime.check_health_once(NET)
        assert fake_kubelet.health(NET) == {VF[0]: "Healthy", VF[1]: "Healthy"}


async def test_vanished_function_is_unhealthy_then_leaves_and_rejoins(
    fake_host: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    intel_node(fake_host)
    async with serve(fake_host, fake_kubelet, SECTION_7_4) as runtime:
        conn = await fake_kubelet.wait_for_registration(DPDK)
        fake_host.remove_pci(VF[3])
        await runtime.check_health_once(DPDK)
        unhealthy = {VF[2]: "Healthy", VF[3]: "Unhealthy"}
        await fake_kubelet.wait_until(  # the check saw it gone: Unhealthy at once ...
            lambda: any({d.ID: d.health for d in h} == unhealthy for h in conn.history)
        )
        # ... and the rescan it asked for removes it (no rescan interval or poll involved)
        await fake_kubelet.wait_until(lambda: fake_kubelet.health(DPDK) == {VF[2]: "Healthy"})
        fake_host.add_vf(PF, 3, VF[3], device="154c", driver="vfio-pci", iommu_group=53)
        await runtime.discover_once()
        await fake_kubelet.wait_until(
            lambda: fake_kubelet.health(DPDK) == {VF[2]: "Healthy", VF[3]: "Healthy"}
        )


async def test_vanished_pf_makes_its_vfs_unhealthy(
    fake_host: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    intel_node(fake_host)
    async with serve(fake_host, fake_kubelet, SECTION_7_4) as runtime:
        await fake_kubelet.wait_for_registration(NET)
        fake_host.remove_pci(PF)
        await runtime.check_health_once(NET)
        await fake_kubelet.wait_until(lambda: all_health(fake_kubelet, NET, "Unhealthy"))
        rt = runtime.resources[NET]
        assert rt.tracker.reason(VF[0]) == f"PF {PF} vanished"


async def test_health_checks_can_be_switched_off_per_pool(
    fake_host: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    intel_node(fake_host)
    document = doc(
        pool("net", {"drivers": ["iavf"]}, checkHealthOnPf=False),
        pool("dpdk", {"drivers": ["vfio-pci"]}, checkHealthOnDeviceExist=False),
    )
    async with serve(fake_host, fake_kubelet, document) as runtime:
        await fake_kubelet.wait_for_registration("intel.com/net")
        await fake_kubelet.wait_for_registration("intel.com/dpdk")
        fake_host.set_link("enp3s0f0", False)
        fake_host.remove_pci(VF[3])
        for name in ("intel.com/net", "intel.com/dpdk"):
            await runtime.check_health_once(name)
        assert all_health(fake_kubelet, "intel.com/net", "Healthy")
        await fake_kubelet.wait_until(  # PF down still counts for dpdk; the vanished VF doesn't
            lambda: (
                runtime.resources["intel.com/dpdk"].tracker.reason(VF[3])
                == f"PF {PF} (enp3s0f0) link is down"
            )
        )


async def test_unreadable_link_state_counts_as_up(
    fake_host: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    intel_node(fake_host)
    path = fake_host.pci[PF].path
    fake_host.write(f"{path}/net/enp3s0f0/operstate", "unknown\n")
    fake_host.remove(f"{path}/net/enp3s0f0/carrier")
    async with serve(fake_host, fake_kubelet, SECTION_7_4) as runtime:
        await fake_kubelet.wait_for_registration(NET)
        await runtime.check_health_once(NET)
        assert all_health(fake_kubelet, NET, "Healthy")
        fake_host.write(f"{path}/net/enp3s0f0/carrier", "0\n")
        await runtime.check_health_once(NET)
        await fake_kubelet.wait_until(lambda: all_health(fake_kubelet, NET, "Unhealthy"))


async def test_missing_netns_falls_back_to_sysfs_polling(
    fake_host: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    intel_node(fake_host)
    async with serve(
        fake_host,
        fake_kubelet,
        SECTION_7_4,
        link_monitor="netlink",
        netlink_netns="/nonexistent/netns",
        health_interval=0.05,
    ):
        await fake_kubelet.wait_for_registration(NET)
        fake_host.set_link("enp3s0f0", False)
        await fake_kubelet.wait_until(lambda: all_health(fake_kubelet, NET, "Unhealthy"))


# -- the netlink path, with real links ------------------------------------------------------------
def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh network namespace (removed afterwards); skips without root or ``ip``."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create a network namespace")
    if shutil.which("ip") is None:
        pytest.skip("needs the ip tool (iproute2)")
    name = f"sriovt-{secrets.token_hex(4)}"
    try:
        _ip("netns", "add", name)
    except subprocess.CalledProcessError as err:
        pytest.skip(f"cannot create a network namespace: {err.stderr.strip()}")
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


def veth(ns: str, name: str) -> str:
    """A veth pair ``name``/``<name>p`` in ``ns``, both up; returns the peer's name."""
    peer = f"{name}p"
    _ip("-n", ns, "link", "add", name, "type", "veth", "peer", "name", peer)
    _ip("-n", ns, "link", "set", peer, "up")
    _ip("-n", ns, "link", "set", name, "up")
    return peer


async def test_netlink_link_events_reach_the_kubelet(
    netns: str, fake_host: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    intel_node(fake_host)
    peer = veth(netns, "enp3s0f0")  # named like the fake PF netdev; sysfs keeps saying "up"
    async with serve(
        fake_host,
        fake_kubelet,
        SECTION_7_4,
        link_monitor="netlink",
        netlink_netns=netns,
        health_interval=1.0,
    ) as runtime:
        await fake_kubelet.wait_for_registration(NET)
        monitor = runtime.resources[NET].resource.health.monitor  # type: ignore[union-attr]
        await fake_kubelet.wait_until(
            lambda: monitor.state("enp3s0f0") is True, what="netlink dump"
        )
        assert all_health(fake_kubelet, NET, "Healthy")

        _ip("-n", netns, "link", "set", "enp3s0f0", "down")  # administratively down
        await fake_kubelet.wait_until(
            lambda: (
                all_health(fake_kubelet, NET, "Unhealthy")
                and all_health(fake_kubelet, DPDK, "Unhealthy")
            ),
            what="link-down event",
        )
        assert runtime.resources[NET].tracker.reason(VF[0]) == f"PF {PF} (enp3s0f0) link is down"

        _ip("-n", netns, "link", "set", "enp3s0f0", "up")
        await fake_kubelet.wait_until(
            lambda: all_health(fake_kubelet, NET, "Healthy"), what="recovery after link-up"
        )

        _ip("-n", netns, "link", "set", peer, "down")  # carrier lost: LOWERLAYERDOWN
        await fake_kubelet.wait_until(
            lambda: all_health(fake_kubelet, NET, "Unhealthy"), what="carrier loss"
        )
        _ip("-n", netns, "link", "set", peer, "up")
        await fake_kubelet.wait_until(
            lambda: all_health(fake_kubelet, NET, "Healthy"), what="carrier back"
        )


async def test_links_netlink_does_not_know_are_read_from_sysfs(
    netns: str, fake_host: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    intel_node(fake_host)
    veth(netns, "unrelated0")
    async with serve(
        fake_host,
        fake_kubelet,
        SECTION_7_4,
        link_monitor="netlink",
        netlink_netns=netns,
        health_interval=0.05,
    ) as runtime:
        await fake_kubelet.wait_for_registration(NET)
        monitor = runtime.resources[NET].resource.health.monitor  # type: ignore[union-attr]
        await fake_kubelet.wait_until(lambda: monitor.active, what="netlink dump")
        assert monitor.state("enp3s0f0") is None
        fake_host.set_link("enp3s0f0", False)
        await fake_kubelet.wait_until(lambda: all_health(fake_kubelet, NET, "Unhealthy"))


async def test_renamed_pf_link_is_followed(
    netns: str, fake_host: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    intel_node(fake_host)
    veth(netns, "tmpname0")
    async with serve(
        fake_host,
        fake_kubelet,
        SECTION_7_4,
        link_monitor="netlink",
        netlink_netns=netns,
        health_interval=1.0,
    ) as runtime:
        await fake_kubelet.wait_for_registration(NET)
        monitor = runtime.resources[NET].resource.health.monitor  # type: ignore[union-attr]
        await fake_kubelet.wait_until(lambda: monitor.state("tmpname0") is True)
        _ip("-n", netns, "link", "set", "tmpname0", "down")
        _ip("-n", netns, "link", "set", "tmpname0", "name", "enp3s0f0")
        await fake_kubelet.wait_until(
            lambda: monitor.state("enp3s0f0") is False and monitor.state("tmpname0") is None,
            what="rename event",
        )
        await fake_kubelet.wait_until(lambda: all_health(fake_kubelet, NET, "Unhealthy"))
