"""Issue 13: what a vendor's first hour ran into, each pinned."""

from __future__ import annotations

import pytest

import devplugin_core as dp
from devplugin_core.testing import FakeHost


class _Checker(dp.HealthChecker):
    def check(self, devices):  # type: ignore[no-untyped-def]
        return {}


def test_a_negative_health_interval_is_refused_when_the_plugin_is_built() -> None:
    checker = _Checker()
    checker.interval = -1
    with pytest.raises(dp.ConfigError, match="interval") as err:
        dp.Resource("acme.com/widget", health=checker)
    assert "-1" in str(err.value)


def test_a_negative_rescan_interval_is_refused() -> None:
    class Nothing(dp.Scanner):
        def scan(self, scan: dp.Scan) -> None:
            pass

    with pytest.raises(dp.ConfigError, match="rescan_interval"):
        dp.Plugin(Nothing(), rescan_interval=-5)


def test_a_mount_without_an_allow_list_says_so_at_the_first_scan(fake_host: FakeHost) -> None:
    from devplugin_core._paths import scan_checked

    fake_host.write("/lib/firmware/acme/fw.bin", "x")
    resource = dp.Resource("acme.com/widget")
    device = dp.Device("w0", edits=dp.ContainerEdits(mounts=[dp.Mount("/lib/firmware/acme")]))
    devices, invalid, _ = scan_checked(fake_host.host, resource, [device])
    assert not devices[0].healthy
    assert "allow-list is empty" in invalid["w0"] and "mount_allowlist" in invalid["w0"]


def test_pci_class_spelling_and_numa_nodes_agree(fake_host: FakeHost) -> None:
    fake_host.add_pci("0000:3b:00.0", vendor="abcd", device="0001", class_code=0x12, numa_node=1)
    fake_host.add_pci("0000:3b:00.1", vendor="abcd", device="0001", class_code=0x120000)
    for classes in ([0x12], [0x120000]):
        found = dp.scan_pci(fake_host.host, classes=classes, rdma=False).devices
        assert sorted(found) == ["0000:3b:00.0", "0000:3b:00.1"]
    found = dp.scan_pci(fake_host.host, rdma=False).devices
    assert found["0000:3b:00.0"].numa_nodes == (1,)
    assert found["0000:3b:00.1"].numa_nodes == ()


def test_payload_is_typed(fake_host: FakeHost) -> None:
    device = dp.Device("w0", payload=("not", "a widget"))
    with pytest.raises(TypeError, match="w0"):
        device.payload_as(int)


async def test_close_runs_when_a_reload_replaces_the_build_and_at_exit(
    fake_host: FakeHost, fake_kubelet, tmp_path
) -> None:
    import os
    from dataclasses import dataclass

    from devplugin_core.testing import run_plugin, write_config

    closed: list[int] = []

    @dataclass(frozen=True)
    class Config:
        generation: int = dp.option("generation", default=0)

    class Nothing(dp.Scanner):
        def scan(self, scan: dp.Scan) -> None:
            scan.add(resource, dp.Device("d0"))

    resource = dp.Resource("acme.com/widget")

    def build(config: Config, ctx: dp.PluginContext) -> dp.Plugin:
        return dp.Plugin(Nothing(), (resource,), close=lambda: closed.append(config.generation))

    spec = dp.PluginSpec("closing", "test", Config, build)
    path = write_config(os.path.join(tmp_path, "c.json"), {"generation": 1})
    async with run_plugin(spec, fake_host, fake_kubelet, config=path, watch_config=False) as rt:
        await fake_kubelet.wait_for_devices(resource.name, lambda d: len(d) == 1)
        write_config(path, {"generation": 2})
        assert await rt.reload()
        assert closed == [1]
    assert closed == [1, 2]
