"""``ddpProfiles``: the DDP package of Intel E810/700 NICs, read as upstream does.

Devlink's ``fw.app.name`` first (one ``DEVLINK_CMD_INFO_GET`` dump over generic netlink through
pyroute2, in a bounded worker thread), ``ddptool`` only when it is on the PATH. This host has
no devlink hardware: the dump is tested with pyroute2-encoded replies through a fake socket,
the real socket path against this kernel, and ddptool with a script on the PATH.
"""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from devplugin_plugins.sriov_net.ddp import (
    DdpError,
    DdpProfiles,
    DdpTimeout,
    SystemDdp,
    parse_devlink_info,
)
from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST
from pyroute2.netlink.devlink import DEVLINK_NAMES, devlinkcmd

from devplugin_core.testing import FakeHost, FakeKubelet

from .helpers import FakeDdp, add_pf_with_vfs, discover, doc, ids, pool, serve
from .test_discovery import ALL_OF_FIRST, TABLE_C, table_c_host

ICE, ICE_VF = "0000:86:00.0", "0000:86:02.0"
PPPOE = "E710 PPPoE and PPPoL2TPv2"


def devlink_reply(device: str, versions: dict[str, str], kind: str = "RUNNING") -> Any:
    """One DEVLINK_CMD_INFO_GET reply as the kernel sends it, through pyroute2's codec."""
    msg = devlinkcmd()
    msg["cmd"] = DEVLINK_NAMES["DEVLINK_CMD_INFO_GET"]
    msg["version"] = 1
    msg["attrs"] = [
        ("DEVLINK_ATTR_BUS_NAME", "pci"),
        ("DEVLINK_ATTR_DEV_NAME", device),
        ("DEVLINK_ATTR_INFO_DRIVER_NAME", "ice"),
        *(
            (
                f"DEVLINK_ATTR_INFO_VERSION_{kind}",
                {
                    "attrs": [
                        ("DEVLINK_ATTR_INFO_VERSION_NAME", name),
                        ("DEVLINK_ATTR_INFO_VERSION_VALUE", value),
                    ]
                },
            )
            for name, value in versions.items()
        ),
    ]
    msg.encode()
    decoded = devlinkcmd(msg.data)
    decoded.decode()
    return decoded


class FakeSocket:
    """Stands in for pyroute2's DevlinkSocket: bind, one request, close."""

    def __init__(self, replies: list[Any], block: threading.Event | None = None) -> None:
        self.replies = replies
        self.block = block
        self.requests: list[Any] = []
        self.closed = False
        self.prid = 42

    def bind(self) -> None:
        pass

    def nlm_request(self, msg: Any, msg_type: int, msg_flags: int) -> list[Any]:
        self.requests.append((msg["cmd"], msg_type, msg_flags))
        if self.block is not None:
            self.block.wait(5)
        return self.replies

    def close(self) -> None:
        self.closed = True


def test_devlink_info_dump_is_parsed_like_upstream() -> None:
    """utils.DevlinkGetDDPProfiles: the value of the fw.app.name key of the device's info
    (a running version wins over a stored or fixed one)."""
    replies = [
        devlink_reply(ICE, {"fw.mgmt": "7.3.4", "fw.app.name": "ICE OS Default Package"}),
        devlink_reply("0000:af:00.0", {"fw.psid.api": "2.0"}),  # mlx5: no DDP
        devlink_reply("0000:3b:00.0", {"fw.app.name": "stored only"}, kind="STORED"),
    ]
    assert parse_devlink_info(replies) == {
        ICE: "ICE OS Default Package",
        "0000:3b:00.0": "stored only",
    }


def test_one_dump_over_a_socket_in_a_worker_thread() -> None:
    sock = FakeSocket([devlink_reply(ICE, {"fw.app.name": PPPOE})])
    source = SystemDdp(socket_factory=lambda: sock, ddptool_path=lambda: None)
    assert source.devlink_app_names() == {ICE: PPPOE}
    assert sock.requests == [
        (DEVLINK_NAMES["DEVLINK_CMD_INFO_GET"], 42, NLM_F_REQUEST | NLM_F_DUMP)
    ]
    assert sock.closed


def test_devlink_is_bounded_in_time() -> None:
    release = threading.Event()
    source = SystemDdp(
        timeout=0.05,
        socket_factory=lambda: FakeSocket([], block=release),
        ddptool_path=lambda: None,
    )
    started = time.monotonic()
    with pytest.raises(DdpError, match=r"did not answer within 0\.05s"):
        source.devlink_app_names()
    assert time.monotonic() - started < 1
    with pytest.raises(DdpError, match="has not answered"):  # no second stuck thread
        source.devlink_app_names()
    release.set()


def test_the_real_devlink_socket_on_this_host() -> None:
    """pyroute2's DevlinkSocket for real: on a kernel without devlink the family lookup fails
    and says so; with devlink, a dump of this host's instances comes back."""
    try:
        names = SystemDdp(ddptool_path=lambda: None).devlink_app_names()
    except DdpError as err:
        assert "devlink unavailable" in str(err)
    else:
        assert isinstance(names, dict)


@pytest.fixture
def ddptool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ``ddptool`` on the PATH answering like the real one (``-l -a -j -s <pci>``): the
    JSON of utils/ddp.go's example for known addresses, exit 8 (no profile) otherwise."""
    tool = tmp_path / "bin" / "ddptool"
    tool.parent.mkdir()
    table = json.dumps({ICE_VF: "GTPv1-C/U IPv4/IPv6 payload", "0000:00:00.9": "sleep"})
    tool.write_text(
        f"""#!/usr/bin/env python3
import json, sys, time
table = {table}
address = sys.argv[sys.argv.index("-s") + 1]
assert sys.argv[1:5] == ["-l", "-a", "-j", "-s"], sys.argv
name = table.get(address)
if name == "sleep":
    time.sleep(5)
if name is None:
    sys.exit(8)
print(json.dumps({{"DDPInventory": {{"device": "1592", "address": address,
      "DDPpackage": {{"track_id": "80000008", "version": "1.0.3.0", "name": name}}}}}}))
"""
    )
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tool.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    return tool


def test_ddptool_fallback_only_when_on_the_path(ddptool: Path) -> None:
    """utils.GetDDPProfiles: `ddptool -l -a -j -s <pci>` -> DDPInventory.DDPpackage.name;
    exit code 8 (ddpNoDDPProfile) means no package."""
    source = SystemDdp(timeout=1.0)
    assert source.ddptool(ICE_VF) == "GTPv1-C/U IPv4/IPv6 payload"
    assert source.ddptool("0000:86:02.1") == ""
    with pytest.raises(DdpError, match=r"ddptool did not answer within 1s"):
        source.ddptool("0000:00:00.9")
    assert SystemDdp(ddptool_path=lambda: None).ddptool(ICE_VF) is None


def test_lookup_order_devlink_vf_then_pf_then_ddptool(fake_host: FakeHost) -> None:
    """pciNetDevice.GetDDPProfiles: if the PF's devlink info has fw.app.name, the VF's own
    value, else the PF's; otherwise ddptool on the VF. Devlink is dumped once per scan."""
    fake_host.set_devlink_info(ICE, fw_app_name=PPPOE)
    fake_host.set_devlink_info("0000:86:02.1", fw_app_name="VF's own")
    source = FakeDdp(fake_host, ddptool={"0000:3b:02.0": "GTP"})
    profiles = DdpProfiles(source)
    assert profiles.lookup(ICE_VF, ICE).profile == PPPOE
    assert profiles.lookup("0000:86:02.1", ICE).profile == "VF's own"
    assert profiles.lookup(ICE).profile == PPPOE  # a PF pooled whole asks about itself
    assert profiles.lookup("0000:3b:02.0", "0000:3b:00.0").profile == "GTP"
    missing = profiles.lookup("0000:3b:02.1", "0000:3b:00.0")
    assert missing.profile is None
    assert missing.why == (
        "devlink info of pci/0000:3b:00.0 has no fw.app.name; ddptool reports no DDP package"
    )
    assert source.dumps == 1
    assert source.tool_calls == ["0000:3b:02.0", "0000:3b:02.1"]


def ice_node(host: FakeHost) -> list[str]:
    vfs = add_pf_with_vfs(host, ICE, "ens5f0", 3, device="1592", vf_device="1889", driver="ice")
    host.set_devlink_info(ICE, fw_app_name=PPPOE, fw_mgmt="7.3.4")
    add_pf_with_vfs(host, "0000:3b:00.0", "ens1f0", 1, driver="i40e")  # no DDP
    return vfs


def test_ddp_pools_and_why_a_device_does_not_match(fake_host: FakeHost) -> None:
    """Reference table 7.3 A: ddpProfiles ['E710 PPPoE and PPPoL2TPv2'] selects the devices
    running that package; one whose package cannot be read never matches."""
    vfs = ice_node(fake_host)
    source = FakeDdp(fake_host)
    document = doc(
        pool("pppoe", {"ddpProfiles": [PPPOE]}),
        pool("gtp", {"ddpProfiles": ["GTPv1-C/U IPv4/IPv6 payload"]}),
    )
    found = discover(fake_host, document, ddp_source=source)
    assert found.ids("intel.com/pppoe") == vfs
    assert found.device("intel.com/pppoe", vfs[0]).attributes["ddpProfile"] == PPPOE
    assert found.why("0000:3b:02.0") == [
        "matches no pool: intel.com/pppoe: ddpProfiles ['E710 PPPoE and PPPoL2TPv2']: no DDP "
        "profile could be read (devlink info of pci/0000:3b:00.0 has no fw.app.name; ddptool "
        "is not on the PATH); intel.com/gtp: ddpProfiles ['GTPv1-C/U IPv4/IPv6 payload']: no "
        "DDP profile could be read (devlink info of pci/0000:3b:00.0 has no fw.app.name; "
        "ddptool is not on the PATH)"
    ]
    assert source.dumps == 1
    broken = FakeDdp(fake_host, broken="devlink unavailable: no devlink family")
    found = discover(fake_host, document, ddp_source=broken)
    assert found.ids("intel.com/pppoe") == []
    assert (
        "(devlink unavailable: no devlink family; ddptool is not on the PATH)"
        in (found.why(vfs[0])[0])
    )


def test_ddp_is_read_only_when_a_selector_reaches_it(fake_host: FakeHost) -> None:
    """ddpProfiles sits after vendors..linkTypes: devices rejected earlier are never asked
    about, and a config without ddpProfiles never dumps devlink."""
    ice_node(fake_host)
    source = FakeDdp(fake_host)
    discover(
        fake_host, doc(pool("p", {"vendors": ["15b3"], "ddpProfiles": [PPPOE]})), ddp_source=source
    )
    assert source.dumps == 0
    discover(fake_host, doc(pool("p", {"drivers": ["iavf"]})), ddp_source=source)
    assert source.dumps == 0


def test_table_c_ddp_column(fake_host: FakeHost) -> None:
    """Reference table 7.3 C: one object with every selector, ddpProfiles ['GTP'] included,
    selects 0000:03:02.0 only."""
    table_c_host(fake_host)
    profiles = ["GTP", "PPPoE", "GTP", "PPPoE"]
    for (_, _, pf, _, _), name in zip(TABLE_C, profiles, strict=True):
        fake_host.set_devlink_info(pf, fw_app_name=name)
    found = discover(
        fake_host,
        doc(pool("p", {**ALL_OF_FIRST, "ddpProfiles": ["GTP"]})),
        ddp_source=FakeDdp(fake_host),
    )
    assert found.ids("intel.com/p") == ["0000:03:02.0"]


async def test_ddp_pool_end_to_end(fake_host: FakeHost, fake_kubelet: FakeKubelet) -> None:
    vfs = ice_node(fake_host)
    source = FakeDdp(fake_host)
    document = doc(pool("pppoe", {"ddpProfiles": [PPPOE], "drivers": ["iavf"]}))
    async with serve(fake_host, fake_kubelet, document, ddp_source=source):
        conn = await fake_kubelet.wait_for_registration("intel.com/pppoe")
        assert ids(conn.devices) == vfs
        reply = await fake_kubelet.allocate("intel.com/pppoe", [vfs[1]])
        assert reply.envs["PCIDEVICE_INTEL_COM_PPPOE"] == vfs[1]


def test_a_ddptool_timeout_is_not_repeated_for_every_device_of_the_scan() -> None:
    """Each read is bounded; after one timeout ddptool is not run again in that scan, so a
    hung tool costs one bound per scan, not one per VF (the scan itself has a deadline)."""

    class Hung:
        calls = 0

        def devlink_app_names(self) -> dict[str, str]:
            raise DdpError("devlink unavailable: no family")

        def ddptool(self, address: str) -> str | None:
            self.calls += 1
            raise DdpTimeout("ddptool did not answer within 3s")

    source = Hung()
    profiles = DdpProfiles(source)
    first = profiles.lookup("0000:86:02.0", ICE)
    later = profiles.lookup("0000:86:02.1", ICE)
    assert first.profile is None and later.profile is None
    assert later.why == (
        "devlink unavailable: no family; ddptool did not answer within 3s (not run again in "
        "this scan)"
    )
    assert source.calls == 1
