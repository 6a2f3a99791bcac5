"""Default-route detection from procfs."""

from __future__ import annotations

from pathlib import Path

from devplugin_plugins.sriov_net.routes import default_route_netdevs

from devplugin_core import HostFS
from devplugin_core.testing import FakeHost

from .helpers import ROUTE_HEADER


def test_ipv4_table_needs_up_default_with_zero_mask(fake_host: FakeHost) -> None:
    fake_host.write(
        "/proc/net/route",
        ROUTE_HEADER
        + (
            "eno1\t00000000\t0102A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"
            "eno2\t00000000\t0102A8C0\t0002\t0\t0\t100\t00000000\t0\t0\t0\n"  # not RTF_UP
            "eno3\t0002A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n"
            "garbage line\n"
        ),
    )
    assert default_route_netdevs(fake_host.host) == {"eno1"}


def test_a_fake_host_without_tables_has_no_default_routes(fake_host: FakeHost) -> None:
    assert default_route_netdevs(fake_host.host) == frozenset()


def test_a_host_root_without_proc_reads_the_plugins_own_proc(tmp_path: Path) -> None:
    (tmp_path / "sys").mkdir()
    own = default_route_netdevs(HostFS("/"))
    assert default_route_netdevs(HostFS(tmp_path, fake=False)) == own
