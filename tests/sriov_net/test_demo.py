"""SPEC.demo: the simulated node shows every pool and an allocation with its env vars."""

from __future__ import annotations

from devplugin_plugins.sriov_net import SPEC

from devplugin_core.testing import FakeHost, FakeKubelet

from .helpers import ids, info, serve


async def test_demo_node_serves_every_pool(fake_host: FakeHost, fake_kubelet: FakeKubelet) -> None:
    assert SPEC.demo is not None
    document = SPEC.demo(fake_host)
    assert document is not None
    async with serve(fake_host, fake_kubelet, document) as runtime:
        net = await fake_kubelet.wait_for_registration("intel.com/intel_sriov_netdevice")
        dpdk = await fake_kubelet.wait_for_registration("intel.com/intel_sriov_dpdk")
        rdma = await fake_kubelet.wait_for_registration("nvidia.com/mlnx_sriov_rdma")
        assert ids(net.devices) == ["0000:3b:02.0", "0000:3b:02.1"]
        assert ids(dpdk.devices) == ["0000:3b:02.2", "0000:3b:02.3"]
        assert ids(rdma.devices) == ["0000:5e:00.2", "0000:5e:00.3"]
        assert any(
            r.subject == "0000:01:00.0" and "default route" in r.reason for r in runtime.rejections
        )
        reply = await fake_kubelet.allocate("intel.com/intel_sriov_dpdk", ["0000:3b:02.2"])
        assert [d.host_path for d in reply.devices] == [
            "/dev/vfio/vfio",
            "/dev/vfio/62",
            "/dev/vhost-net",
            "/dev/net/tun",
        ]
        reply = await fake_kubelet.allocate("nvidia.com/mlnx_sriov_rdma", ["0000:5e:00.3"])
        entry = info(reply, "PCIDEVICE_NVIDIA_COM_MLNX_SRIOV_RDMA_INFO")["0000:5e:00.3"]
        assert entry["extra"] == {"fabric": "roce"}
        assert entry["rdma"]["rdma_dev"] == "mlx5_3"


def test_default_device_info_dir_stays_under_a_fake_root(fake_host: FakeHost) -> None:
    from devplugin_plugins.sriov_net import build
    from devplugin_plugins.sriov_net.config import SriovNetConfig

    from devplugin_core import PluginContext
    from devplugin_core.toolkit import decode

    assert SPEC.demo is not None
    document = SPEC.demo(fake_host)
    plugin = build(decode(SriovNetConfig, document).value, PluginContext(host=fake_host.host))
    allocator = plugin.resources[0].allocator
    directory = allocator.device_info.directory  # type: ignore[attr-defined]
    assert directory == str(fake_host.root / "var/run/k8s.cni.cncf.io/devinfo/dp")
