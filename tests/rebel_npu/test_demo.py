"""The ``devplugin demo`` hook: NPUs, an allocation with the rbln-stat mount, and NPUs bound to
vfio-pci for VMs."""

from __future__ import annotations

from devplugin_plugins.rebel_npu import SPEC

from devplugin_core.testing import FakeHost, FakeKubelet, run_plugin

from .helpers import ATOM, REBEL

ATOM_PT = "rebellions.ai/ATOM_PT"


async def test_demo_node_allocates_with_rbln_stat(
    fake_host: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    assert SPEC.demo is not None
    document = SPEC.demo(fake_host)
    assert document is not None
    async with run_plugin(SPEC, fake_host, fake_kubelet, config=dict(document)):
        devices = await fake_kubelet.wait_for_devices(ATOM, lambda d: len(d) == 4)
        assert {n.ID for d in devices for n in d.topology.nodes} == {0, 1}
        rebel = await fake_kubelet.wait_for_devices(REBEL, lambda d: len(d) == 1)
        ids = await fake_kubelet.preferred(ATOM, [d.ID for d in devices], [], 2)
        reply = await fake_kubelet.allocate(ATOM, ids)
        assert ("/usr/bin/rbln-stat", "/usr/bin/rbln-stat", True) in [
            (m.host_path, m.container_path, m.read_only) for m in reply.mounts
        ]
        assert ("/dev/rsd1", "/dev/rsd0") in [
            (d.host_path, d.container_path) for d in reply.devices
        ]
        reply = await fake_kubelet.allocate(REBEL, [rebel[0].ID])
        assert reply.envs["PCIDEVICE_REBELLIONS_AI_REBEL"] == rebel[0].ID
        vm = await fake_kubelet.wait_for_devices(ATOM_PT, lambda d: len(d) == 2)
        reply = await fake_kubelet.allocate(ATOM_PT, [vm[0].ID])  # two CA12 for VMs
        assert [d.host_path for d in reply.devices] == ["/dev/vfio/vfio", "/dev/vfio/80"]
        assert reply.envs["PCI_RESOURCE_REBELLIONS_AI_ATOM_PT"] == vm[0].ID
        assert list(reply.mounts) == []
