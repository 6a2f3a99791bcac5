"""Small pure pieces: netlink link usability, device-info content, PF link reading."""

from __future__ import annotations

from pathlib import Path

from devplugin_plugins.sriov_net import build
from devplugin_plugins.sriov_net.config import SriovNetConfig
from devplugin_plugins.sriov_net.deviceinfo import DeviceInfoFiles
from devplugin_plugins.sriov_net.links import read_link
from devplugin_plugins.sriov_net.netlink import IFF_LOWER_UP, IFF_UP, LinkMonitor, link_usable

from devplugin_core import PluginContext, Scan
from devplugin_core.testing import FakeHost
from devplugin_core.toolkit import decode

from .helpers import PF, SECTION_7_4, VF, intel_node


def test_link_usability_from_operstate_and_flags() -> None:
    assert link_usable("UP", 0)
    assert link_usable("UNKNOWN", IFF_UP | IFF_LOWER_UP)
    assert not link_usable("UNKNOWN", IFF_UP)
    assert not link_usable("LOWERLAYERDOWN", IFF_UP)
    assert not link_usable("DOWN", IFF_UP | IFF_LOWER_UP)
    assert not link_usable("DORMANT", IFF_UP | IFF_LOWER_UP)


def test_device_info_content_is_byte_exact() -> None:
    assert DeviceInfoFiles.content("0000:03:02.2") == (
        b'{"type":"pci","version":"1.1.0","pci":{"pci-address":"0000:03:02.2"}}'
    )
    assert DeviceInfoFiles.content("0000:03:02.2", ["mlx5_2", "mlx5_3"]) == (
        b'{"type":"pci","version":"1.1.0","pci":{"pci-address":"0000:03:02.2",'
        b'"rdma-device":"mlx5_2,mlx5_3"}}'
    )
    files = DeviceInfoFiles("/d")
    assert files.path("intel.com/sriov", "0000:03:02.2") == (
        "/d/intel.com-sriov-0000:03:02.2-device.json"
    )


def test_pf_links_prefer_netlink_but_fall_back_to_sysfs(fake_host: FakeHost) -> None:
    intel_node(fake_host)
    host, monitor = fake_host.host, LinkMonitor()  # not subscribed: knows no link
    state = read_link(host, monitor, PF)
    assert (state.present, state.netdev, state.up, state.source) == (
        True,
        "enp3s0f0",
        True,
        "sysfs",
    )
    assert read_link(host, monitor, PF, "renamed0") == state  # a stale name: net/ is re-listed
    fake_host.set_link("enp3s0f0", False)
    assert read_link(host, monitor, PF, "enp3s0f0").down
    fake_host.remove_pci(PF)
    assert not read_link(host, monitor, PF, "enp3s0f0").present
    assert not read_link(host, monitor, "0000:99:00.0").present


def test_fingerprint_is_stable_until_the_host_changes(
    fake_host: FakeHost,
) -> None:
    intel_node(fake_host)
    plugin = build(decode(SriovNetConfig, SECTION_7_4).value, PluginContext(host=fake_host.host))
    scanner, host = plugin.scanner, fake_host.host

    def rescan() -> None:
        scanner.scan(Scan(host, plugin.resources))

    rescan()
    baseline = scanner.fingerprint(host)
    assert scanner.fingerprint(host) == baseline
    fake_host.bind(VF[0], "vfio-pci")  # rebinding changes it
    changed = scanner.fingerprint(host)
    assert changed != baseline
    rescan()
    settled = scanner.fingerprint(host)
    assert scanner.fingerprint(host) == settled
    fake_host.remove_netdev("enp3s0f0v1")  # a VF netdev moving into a pod is no change
    assert scanner.fingerprint(host) == settled


def test_stale_device_info_files_of_sfs_are_cleaned(tmp_path: Path) -> None:
    files = DeviceInfoFiles(str(tmp_path))
    files.write("nvidia.com/bf2_sf", "mlx5_core.sf.3", document={"type": "auxiliary"})
    files.write("intel.com/sriov", "0000:03:02.2")
    (tmp_path / "nvidia.com-bf2_sf-notes.txt").write_text("not ours")
    assert sorted(files.clean(["nvidia.com/bf2_sf", "intel.com/sriov"])) == [
        "intel.com-sriov-0000:03:02.2-device.json",
        "nvidia.com-bf2_sf-mlx5_core.sf.3-device.json",
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["nvidia.com-bf2_sf-notes.txt"]
