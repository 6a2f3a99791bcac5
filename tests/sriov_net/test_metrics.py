"""Plugin metrics: pool sizes and health, PF link state, VF info and sysfs VF counters."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from devplugin_core.testing import FakeHost, FakeKubelet

from .helpers import PF, SECTION_7_4, VF, intel_node, serve

NET, DPDK = "intel.com/sriov_net", "intel.com/sriov_dpdk"


async def test_pool_pf_and_vf_metrics(fake_host: FakeHost, fake_kubelet: FakeKubelet) -> None:
    intel_node(fake_host)
    stats = f"{fake_host.pci[PF].path}/sriov/0/stats"
    fake_host.write(f"{stats}/rx_bytes", "1234\n")
    fake_host.write(f"{stats}/tx_packets", "56\n")
    fake_host.write(f"{stats}/tx_errors", "2\n")
    fake_host.write(f"{stats}/rx_vlan_tagged", "9\n")  # not one of ours: ignored
    fake_host.write(f"{fake_host.pci[PF].path}/sriov/1/stats/rx_bytes", "garbage\n")
    registry = CollectorRegistry()
    async with serve(fake_host, fake_kubelet, SECTION_7_4, registry=registry) as runtime:
        await fake_kubelet.wait_for_registration(DPDK)

        def value(name: str, **labels: str) -> float | None:
            return registry.get_sample_value(name, labels)

        assert value("devplugin_sriov_pool_vfs", resource=NET) == 2
        assert value("devplugin_sriov_pool_vfs", resource="intel.com/sriov_all") == 0
        assert value("devplugin_sriov_pool_vfs_healthy", resource=DPDK) == 2
        assert value("devplugin_sriov_pf_link_up", pf=PF, netdev="enp3s0f0") == 1
        assert value("devplugin_sriov_pf_vfs_enabled", pf=PF) == 4
        assert (
            value(
                "devplugin_sriov_vf_info",
                resource=DPDK,
                device=VF[2],
                pf=PF,
                vf="2",
                driver="vfio-pci",
                numa_node="1",
            )
            == 1
        )
        vf0 = {"resource": NET, "device": VF[0], "pf": PF, "vf": "0"}
        assert value("devplugin_sriov_vf_receive_bytes_total", **vf0) == 1234
        assert value("devplugin_sriov_vf_transmit_packets_total", **vf0) == 56
        assert value("devplugin_sriov_vf_transmit_errors_total", **vf0) == 2
        vf1 = {**vf0, "device": VF[1], "vf": "1"}
        assert value("devplugin_sriov_vf_receive_bytes_total", **vf1) is None

        fake_host.set_link("enp3s0f0", False)
        await runtime.check_health_once(NET)
        assert value("devplugin_sriov_pf_link_up", pf=PF, netdev="enp3s0f0") == 0
        assert value("devplugin_sriov_pool_vfs_healthy", resource=NET) == 0
        assert value("devplugin_sriov_pool_vfs_healthy", resource=DPDK) == 2  # not checked yet
        assert value("devplugin_devices", resource=NET, health="unhealthy") == 2  # framework's

        fake_host.set_link("enp3s0f0", True)  # healthy pool VFs are the advertised ones:
        await runtime.check_health_once(NET)  # one good check does not recover them yet
        assert value("devplugin_sriov_pf_link_up", pf=PF, netdev="enp3s0f0") == 1
        assert value("devplugin_sriov_pool_vfs_healthy", resource=NET) == 0
        await runtime.check_health_once(NET)
        assert value("devplugin_sriov_pool_vfs_healthy", resource=NET) == 2
