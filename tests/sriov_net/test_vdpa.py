"""``vdpaType: vhost|virtio``: VFs with a vDPA device, end to end.

The fake host lays vDPA devices out as the kernel does (``FakeHost.add_vdpa``): ``vdpaN`` under
its VF, ``/sys/bus/vdpa/devices/vdpaN`` linking to it, its driver link (``vhost_vdpa`` or
``virtio_vdpa``), and for vhost a ``vhost-vdpa-M`` class device under it with its own number M
(``/dev/vhost-vdpa-M``); ``vdpa_node`` gives ``vdpa0`` the char device ``vhost-vdpa-7``.
"""

from __future__ import annotations

import json

import grpc
import pytest
from devplugin_plugins.sriov_net import SPEC
from devplugin_plugins.sriov_net.config import SriovNetConfig
from devplugin_plugins.sriov_net.vdpa import read_vdpa, vdpa_by_function

from devplugin_core import ConfigError
from devplugin_core.testing import FakeHost, FakeKubelet, run_plugin
from devplugin_core.toolkit import decode

from .helpers import (
    CX6DX_VF,
    devinfo_dir,
    discover,
    doc,
    ids,
    info,
    options,
    pool,
    serve,
    specs,
    vdpa_node,
)
from .test_discovery import D, table_a_host

VHOST = doc(
    pool(
        "ct6dx_vdpa_vhost",
        {"vendors": ["15b3"], "devices": ["101e"], "drivers": ["mlx5_core"], "vdpaType": "vhost"},
    ),
    pool("virtio", {"vdpaType": "virtio"}),
)
VH, VI = "intel.com/ct6dx_vdpa_vhost", "intel.com/virtio"


def test_vdpa_devices_are_read_from_sysfs(fake_host: FakeHost) -> None:
    """govdpa: the device's driver from /sys/bus/vdpa/devices/<name>/driver and the vhost
    char device's name from the vhost-vdpa* directory under it (GetVhostVdpaDevInPath)."""
    vdpa_node(fake_host)
    found = vdpa_by_function(fake_host.host)
    assert sorted(found) == CX6DX_VF[:2]
    vhost = found[CX6DX_VF[0]]
    assert (vhost.name, vhost.driver, vhost.kind, vhost.path) == (
        "vdpa0",
        "vhost_vdpa",
        "vhost",
        "/dev/vhost-vdpa-7",
    )
    assert found[CX6DX_VF[1]].kind == "virtio" and found[CX6DX_VF[1]].path == ""
    fake_host.remove("/dev/vhost-vdpa-7")
    missing = read_vdpa(fake_host.host, "vdpa0")
    assert missing is not None and missing.vhost == ""
    assert "has no /dev/vhost-vdpa-* node" in missing.state()


def test_pools_get_the_vfs_whose_vdpa_device_has_their_type(fake_host: FakeHost) -> None:
    """netDeviceProvider.GetFilteredDevices: keep devices whose GetVdpaDevice() is set and
    whose type (vhost_vdpa -> vhost, virtio_vdpa -> virtio) equals vdpaType; a VF without a
    vDPA device never matches."""
    vdpa_node(fake_host)
    found = discover(fake_host, VHOST)
    assert found.ids(VH) == [CX6DX_VF[0]]
    assert found.ids(VI) == [CX6DX_VF[1]]
    assert found.device(VH, CX6DX_VF[0]).payload.vdpa == "vdpa0"
    assert found.device(VH, CX6DX_VF[0]).attributes["vdpa"] == "vdpa0 (vhost)"
    assert found.why(CX6DX_VF[2]) == [
        f"matches no pool: {VH}: vdpaType 'vhost': the function has no vDPA device; "
        f"{VI}: vdpaType 'virtio': the function has no vDPA device"
    ]
    fake_host.remove_vdpa("vdpa1")
    fake_host.add_vdpa(CX6DX_VF[1], "none", name="vdpa1")  # unbound
    found = discover(fake_host, VHOST)
    assert found.ids(VI) == []
    assert "vdpaType 'virtio': vdpa1 is bound to no vDPA driver" in found.why(CX6DX_VF[1])[0]


def test_table_a_vdpa_rows(fake_host: FakeHost) -> None:
    """Reference table 7.3 A, vdpaType rows: d0, d1 vhost; d4 virtio."""
    table_a_host(fake_host)
    fake_host.add_vdpa(D[0], "vhost")
    fake_host.add_vdpa(D[1], "vhost")
    fake_host.add_vdpa(D[4], "virtio")
    found = discover(
        fake_host, doc(pool("vh", {"vdpaType": "vhost"}), pool("vi", {"vdpaType": "virtio"}))
    )
    assert found.ids("intel.com/vh") == [D[0], D[1]]
    assert found.ids("intel.com/vi") == [D[4]]


@pytest.mark.parametrize(
    ("selectors", "error"),
    [
        ({"isRdma": True, "vdpaType": "vhost"}, "selectors.vdpaType"),
        ([{"isRdma": True}, {"vdpaType": "vhost"}], None),  # split across objects: valid
        ([{}, {"vdpaType": "virtio", "isRdma": True}], "selectors[1].vdpaType"),
    ],
)
def test_isrdma_and_vdpatype_exclude_each_other_per_selector(
    selectors: object, error: str | None
) -> None:
    """netDeviceProvider.ValidConfig and its manager_test cases."""
    document = doc(pool("x", selectors))
    if error is None:
        decode(SriovNetConfig, document)
        return
    with pytest.raises(ConfigError) as raised:
        decode(SriovNetConfig, document)
    assert raised.value.field == f"resourceList[0].{error}"


def test_unknown_vdpa_type_is_a_warning() -> None:
    result = decode(SriovNetConfig, doc(pool("x", {"vdpaType": "vdpa"})))
    assert result.warnings == [
        "resourceList[0].selectors.vdpaType: 'vdpa' can never match (use 'vhost' or 'virtio')"
    ]


async def test_vhost_and_virtio_allocations(fake_host: FakeHost, fake_kubelet: FakeKubelet) -> None:
    """vdpaInfoProvider: vhost -> the char device (rw) and {"mount": path} from the first
    allocation on (upstream sets mount only once GetDeviceSpecs ran, after GetEnvs); virtio ->
    no node and an empty entry. Device-info files: netResourcePool.StoreDeviceInfoFile's vdpa
    form, path only for vhost."""
    vdpa_node(fake_host)
    async with serve(fake_host, fake_kubelet, VHOST):
        conn = await fake_kubelet.wait_for_registration(VH)
        assert ids(conn.devices) == [CX6DX_VF[0]]
        assert [n.ID for n in conn.devices[0].topology.nodes] == [1]
        reply = await fake_kubelet.allocate(VH, [CX6DX_VF[0]])
        assert specs(reply) == [("/dev/vhost-vdpa-7", "/dev/vhost-vdpa-7", "rw")]
        assert reply.envs["PCIDEVICE_INTEL_COM_CT6DX_VDPA_VHOST_INFO"] == (
            '{"0000:65:00.2":{"generic":{"deviceID":"0000:65:00.2"},'
            '"vdpa":{"mount":"/dev/vhost-vdpa-7"}}}'
        )
        path = devinfo_dir(fake_host) / f"intel.com-ct6dx_vdpa_vhost-{CX6DX_VF[0]}-device.json"
        assert path.read_text() == (
            '{"type":"vdpa","version":"1.1.0","vdpa":{"parent-device":"vdpa0","driver":"vhost",'
            '"path":"/dev/vhost-vdpa-7","pci-address":"0000:65:00.2"}}'
        )
        await fake_kubelet.wait_for_registration(VI)
        reply = await fake_kubelet.allocate(VI, [CX6DX_VF[1]])
        assert specs(reply) == []
        assert info(reply, "PCIDEVICE_INTEL_COM_VIRTIO_INFO") == {
            CX6DX_VF[1]: {"generic": {"deviceID": CX6DX_VF[1]}, "vdpa": {}}
        }
        path = devinfo_dir(fake_host) / f"intel.com-virtio-{CX6DX_VF[1]}-device.json"
        assert path.read_text() == (
            '{"type":"vdpa","version":"1.1.0","vdpa":{"parent-device":"vdpa1","driver":"virtio",'
            '"pci-address":"0000:65:00.3"}}'
        )


async def test_allocate_reads_the_vhost_device_live(
    fake_host: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    """The vDPA device re-created with another char device number: Allocate hands out the
    current one; rebound to virtio_vdpa, Allocate refuses instead of giving a vhost pool's pod
    no vhost device (upstream's provider logs an error and returns no specs)."""
    vdpa_node(fake_host)
    async with serve(fake_host, fake_kubelet, VHOST):
        await fake_kubelet.wait_for_registration(VH)
        fake_host.remove_vdpa("vdpa0")
        fake_host.add_vdpa(CX6DX_VF[0], "vhost", name="vdpa0", vhost_index=12)
        reply = await fake_kubelet.allocate(VH, [CX6DX_VF[0]])
        assert specs(reply) == [("/dev/vhost-vdpa-12", "/dev/vhost-vdpa-12", "rw")]
        fake_host.remove_vdpa("vdpa0")
        fake_host.add_vdpa(CX6DX_VF[0], "virtio", name="vdpa0")
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await fake_kubelet.allocate(VH, [CX6DX_VF[0]])
        assert "wants a vhost vDPA device" in (raised.value.details() or "")


async def test_vanished_vdpa_device_is_unhealthy_and_rescanned_away(
    fake_host: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    vdpa_node(fake_host)
    async with serve(fake_host, fake_kubelet, VHOST) as rt:
        conn = await fake_kubelet.wait_for_registration(VH)
        fake_host.remove_vdpa("vdpa0")  # vdpa dev del vdpa0
        await rt.check_health_once(VH)
        await fake_kubelet.wait_until(
            lambda: any(
                [(d.ID, d.health) for d in h] == [(CX6DX_VF[0], "Unhealthy")] for h in conn.history
            ),
            what="the VF whose vDPA device vanished to turn Unhealthy",
        )
        await fake_kubelet.wait_for_devices(VH, lambda d: d == [])  # the rescan it asked for
        fake_host.add_vdpa(CX6DX_VF[0], "vhost", name="vdpa0")
        await rt.discover_once()
        await fake_kubelet.wait_for_devices(VH, lambda d: ids(d) == [CX6DX_VF[0]])


async def test_vdpa_device_created_at_run_time_is_picked_up(
    fake_host: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    """The fingerprint watches /sys/bus/vdpa (devices and driver bindings)."""
    vdpa_node(fake_host)
    async with serve(fake_host, fake_kubelet, VHOST, numvfs_check_interval=0.05):
        await fake_kubelet.wait_for_registration(VH)
        fake_host.add_vdpa(CX6DX_VF[2], "vhost", name="vdpa2")
        await fake_kubelet.wait_for_devices(VH, lambda d: ids(d) == [CX6DX_VF[0], CX6DX_VF[2]])
        fake_host.remove("/sys/bus/vdpa/drivers/virtio_vdpa/vdpa1")  # unbind ...
        fake_host.remove(f"{fake_host.pci[CX6DX_VF[1]].path}/vdpa1/driver")
        await fake_kubelet.wait_for_devices(VI, lambda d: d == [])


async def test_cdi_spec_carries_the_vhost_vdpa_node(
    fake_host: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    vdpa_node(fake_host)
    cdi_dir = fake_host.root.parent / "cdi"
    async with run_plugin(
        SPEC,
        fake_host,
        fake_kubelet,
        config=VHOST,
        cdi_dir=str(cdi_dir),
        plugin_options=options(fake_host),
    ):
        await fake_kubelet.wait_for_registration(VH)
        reply = await fake_kubelet.allocate(VH, [CX6DX_VF[0]])
    assert [d.name for d in reply.cdi_devices] == [f"{VH}={CX6DX_VF[0]}"]
    assert specs(reply) == []
    spec = next(json.loads(p.read_text()) for p in cdi_dir.glob("*.json") if "ct6dx" in p.name)
    assert spec["devices"] == [
        {
            "name": CX6DX_VF[0],
            "containerEdits": {
                "deviceNodes": [
                    {
                        "path": "/dev/vhost-vdpa-7",
                        "hostPath": "/dev/vhost-vdpa-7",
                        "permissions": "rw",
                    }
                ]
            },
        }
    ]
