"""Discovery: resource naming, pools files, SR-IOV, bridges, selectors, stickiness, payloads,
and zero-config families that follow the node."""

from __future__ import annotations

import logging

import pytest
from devplugin_plugins.rebel_npu import SPEC
from devplugin_plugins.rebel_npu.discovery import NpuInfo, parse_pools
from devplugin_plugins.rebel_npu.testing import add_ca25_card, add_sriov_npu, add_switch

from devplugin_core import HostFS, Scan
from devplugin_core.testing import FakeHost, FakeKubelet, run_plugin

from .helpers import ATOM, CA22, REBEL, built, config, discover, scanner


def reasons(scan: Scan, subject: str) -> list[str]:
    return [r.reason for r in scan.rejections if r.subject == subject]


def test_ca22_node(ca22: FakeHost) -> None:
    devices, _ = discover(ca22, built(ca22))
    assert [d.id for d in devices[ATOM]] == CA22
    assert REBEL not in devices  # zero-config: no REBEL card, no REBEL resource
    first, third = devices[ATOM][0], devices[ATOM][2]
    assert first.numa_nodes == (0,) and third.numa_nodes == (1,)
    assert [n.host_path for n in first.edits.device_nodes] == ["/dev/rbln0"]
    assert first.cdi_name == "rbln0"
    assert dict(first.attributes) == {
        "card": "RBLN-CA22",
        "family": "ATOM",
        "function": "pf",
        "npu": "rbln0",
        "numa": "0",
        "pciBridges": "0000:10:01.0,0000:11:00.0,0000:12:00.0",
        "driverVersion": "1.3.73",
    }
    info = first.payload_as(NpuInfo)
    assert (info.npu, info.index, info.card, info.family, info.pf) == (
        "rbln0",
        "0",
        "RBLN-CA22",
        "ATOM",
        "",
    )
    assert info.bridges == ("0000:10:01.0", "0000:11:00.0", "0000:12:00.0")
    assert [m.host_path for m in info.tools] == ["/usr/bin/rbln-stat"]  # no rbln-smi here


def test_families_go_to_their_resources(fake_host: FakeHost) -> None:
    fake_host.add_npu("0000:05:00.0", device="2030", numa_node=0, index=0)  # REBEL CR03
    fake_host.add_npu("0000:06:00.0", device="0010", numa_node=0, index=1)  # early ATOM
    fake_host.add_npu("0000:07:00.0", device="1120", numa_node=0, index=2)  # CA12
    fake_host.add_npu("0000:08:00.0", device="2130", numa_node=0, index=3)  # unknown REBEL
    fake_host.add_pci(
        "0000:09:00.0", vendor="abcd", device="0001", class_code=0x120000, driver="widget"
    )
    devices, scan = discover(fake_host, built(fake_host))
    assert [d.id for d in devices[ATOM]] == ["0000:06:00.0", "0000:07:00.0"]
    assert [d.id for d in devices[REBEL]] == ["0000:05:00.0", "0000:08:00.0"]
    assert devices[REBEL][1].attributes["card"] == "RBLN-CR13"
    assert reasons(scan, "0000:09:00.0")  # the foreign accelerator is explained, not served


def test_broken_pools_file_skips_only_that_device(
    fake_host: FakeHost, caplog: pytest.LogCaptureFixture
) -> None:
    fake_host.add_npu("0000:05:00.0", numa_node=0, index=0)
    fake_host.add_npu("0000:06:00.0", numa_node=0, index=1, pools="poolinfo - 0.1\n")
    fake_host.add_npu("0000:07:00.0", numa_node=0, index=2, pools="poolinfo - 0.1\n../etc 0\n")
    fake_host.add_npu("0000:08:00.0", numa_node=0, index=3)
    fake_host.write(f"{fake_host.pci['0000:08:00.0'].path}/pools", b"\xff\xfe\nrbln\xff 0\n")
    caplog.set_level(logging.WARNING)
    devices, scan = discover(fake_host, built(fake_host))
    assert [d.id for d in devices[ATOM]] == ["0000:05:00.0"]
    for address in ("0000:06:00.0", "0000:07:00.0", "0000:08:00.0"):
        pools = f"/sys/bus/pci/drivers/rebellions/{address}/pools"
        assert any(pools in r.message for r in caplog.records), address
        assert any(pools in reason for reason in reasons(scan, address))


def test_pools_parser() -> None:
    assert parse_pools("poolinfo - 0.1\nrbln12               0    4 1024  1\n") == "rbln12"
    for bad in ("", "poolinfo - 0.1", "poolinfo\n\n", "poolinfo\n/dev/sda 0\n", "x\nrbln\n"):
        with pytest.raises(ValueError):
            parse_pools(bad)


def test_sriov_vfs_replace_their_pf(fake_host: FakeHost) -> None:
    add_sriov_npu(fake_host, "0000:31:00.0", ["0000:31:00.1", "0000:31:00.2"], numa=1)
    fake_host.add_npu("0000:32:00.0", device="1250", numa_node=1, index=9)  # no SR-IOV
    devices, scan = discover(fake_host, built(fake_host))
    atom = devices[ATOM]
    assert [d.id for d in atom] == ["0000:31:00.1", "0000:31:00.2", "0000:32:00.0"]
    vf = atom[0]
    assert vf.attributes["function"] == "vf" and vf.attributes["pf"] == "0000:31:00.0"
    assert vf.payload_as(NpuInfo).pf == "0000:31:00.0"
    assert vf.attributes["card"] == "RBLN-CA25" and vf.numa_nodes == (1,)
    assert [n.host_path for n in vf.edits.device_nodes] == ["/dev/rbln1"]
    assert any("SR-IOV enabled" in r for r in reasons(scan, "0000:31:00.0"))


def test_ca25_bridges_come_from_the_resolved_path(fake_host: FakeHost) -> None:
    dies = add_ca25_card(fake_host, 0x40, 0, numa=0)
    devices, _ = discover(fake_host, built(fake_host))
    chains = {d.id: d.payload_as(NpuInfo).bridges for d in devices[ATOM]}
    assert sorted(chains) == dies
    for chain in chains.values():
        # root port, host switch up/down, card switch up, card switch down
        assert len(chain) == 5
        assert chain[:4] == chains[dies[0]][:4]
    assert len({c[4] for c in chains.values()}) == 4


def test_non_bridge_parents_are_not_bridges(fake_host: FakeHost) -> None:
    fake_host.add_pci("0000:50:00.0", vendor="8086", device="0001", class_code=0x088000)
    fake_host.add_npu("0000:51:00.0", numa_node=0, parents=["0000:50:00.0"], index=0)
    devices, _ = discover(fake_host, built(fake_host))
    assert "pciBridges" not in devices[ATOM][0].attributes
    assert devices[ATOM][0].payload_as(NpuInfo).bridges == ()


def test_selectors_and_exclude_topology(ca22: FakeHost) -> None:
    document = {
        "resourceList": [
            {
                "resourceName": "first",
                "selectors": {"pciAddresses": ["0000:23:00.0"]},
                "excludeTopology": True,
            },
            {"resourceName": "rest", "selectors": {"vendors": ["1eff"], "drivers": ["rebellions"]}},
        ]
    }
    devices, _ = discover(ca22, built(ca22, document))
    first = devices["rebellions.ai/first"]
    assert [d.id for d in first] == ["0000:23:00.0"] and first[0].numa_nodes == ()
    assert [d.id for d in devices["rebellions.ai/rest"]] == [
        "0000:13:00.0",
        "0000:14:00.0",
        "0000:24:00.0",
    ]  # a device joins one pool only


def test_other_drivers_are_not_served(ca22: FakeHost) -> None:
    ca22.bind("0000:14:00.0", "vfio-pci")
    document = {"resourceList": [{"resourceName": "ATOM", "selectors": {"vendors": ["1eff"]}}]}
    devices, scan = discover(ca22, built(ca22, document))
    assert "0000:14:00.0" not in [d.id for d in devices[ATOM]]
    assert any("bound to vfio-pci" in r for r in reasons(scan, "0000:14:00.0"))


def test_unbound_device_stays_advertised_until_it_vanishes(ca22: FakeHost) -> None:
    plugin = built(ca22)
    discover(ca22, plugin)
    ca22.unbind("0000:14:00.0")
    devices, _ = discover(ca22, plugin)
    assert "0000:14:00.0" in [d.id for d in devices[ATOM]]  # kept: health reports it
    ca22.remove_pci("0000:14:00.0")
    devices, _ = discover(ca22, plugin)
    assert "0000:14:00.0" not in [d.id for d in devices[ATOM]]


def test_fingerprint_follows_bound_functions_vfs_and_tools(fake_host: FakeHost) -> None:
    fake_host.add_npu("0000:05:00.0", numa_node=0, index=0)
    fake_host.add_npu("0000:06:00.0", numa_node=0, index=1)
    plugin = built(fake_host)
    host: HostFS = fake_host.host
    discover(fake_host, plugin)
    before = scanner(plugin).fingerprint(host)
    fake_host.unbind("0000:06:00.0")
    assert scanner(plugin).fingerprint(host) != before  # a rescan, which keeps it advertised
    fake_host.bind("0000:06:00.0", "rebellions")
    assert scanner(plugin).fingerprint(host) == before
    fake_host.add_npu("0000:07:00.0", numa_node=0, index=2)
    assert scanner(plugin).fingerprint(host) != before
    discover(fake_host, plugin)
    settled = scanner(plugin).fingerprint(host)
    fake_host.remove("/usr/bin/rbln-stat")
    assert scanner(plugin).fingerprint(host) == settled  # this host had no rbln-stat anyway
    fake_host.write("/usr/bin/rbln-stat", "x")
    assert scanner(plugin).fingerprint(host) != settled


def test_enabling_sriov_changes_the_fingerprint(fake_host: FakeHost) -> None:
    add_sriov_npu(fake_host, "0000:31:00.0", [], numa=0)  # capable, SR-IOV not enabled yet
    plugin = built(fake_host)
    devices, _ = discover(fake_host, plugin)
    assert [d.id for d in devices[ATOM]] == ["0000:31:00.0"]
    before = scanner(plugin).fingerprint(fake_host.host)
    fake_host.set_numvfs("0000:31:00.0", 2)
    assert scanner(plugin).fingerprint(fake_host.host) != before


# -- zero-config families follow the node; configured pools are served while empty -------------
CR03 = "0000:e3:00.0"


async def test_zero_config_atom_only_node_registers_no_rebel(
    ca22: FakeHost, lock_file: str, fake_kubelet: FakeKubelet
) -> None:
    async with run_plugin(
        SPEC, ca22, fake_kubelet, config=config(lock_file, rsdGroups="off")
    ) as rt:
        await fake_kubelet.wait_for_devices(ATOM, lambda d: len(d) == 4)
        assert rt.ready() == (True, "1 resources registered")
        assert [r.resource for r in fake_kubelet.registrations] == [ATOM]
        assert REBEL not in fake_kubelet.connections


async def test_zero_config_family_appearing_later_is_served_after_a_rescan(
    ca22: FakeHost, lock_file: str, fake_kubelet: FakeKubelet
) -> None:
    async with run_plugin(
        SPEC, ca22, fake_kubelet, config=config(lock_file, rsdGroups="off")
    ) as rt:
        await fake_kubelet.wait_for_devices(ATOM, lambda d: len(d) == 4)
        assert REBEL not in rt.resources
        chain = add_switch(ca22, 0xE0, 1, numa=1)[0]
        ca22.add_npu(CR03, device="2030", numa_node=1, parents=chain, index=4)  # hot-plugged
        assert await rt.discover_once()
        devices = await fake_kubelet.wait_for_devices(REBEL, lambda d: len(d) == 1)
        assert devices[0].ID == CR03 and devices[0].health == "Healthy"
        reply = await fake_kubelet.allocate(REBEL, [CR03])
        assert [d.host_path for d in reply.devices] == ["/dev/rbln4"]
        assert reply.envs["PCIDEVICE_REBELLIONS_AI_REBEL"] == CR03
        assert fake_kubelet.registration_count(ATOM) == 1  # ATOM's endpoint is untouched
        ca22.remove_pci(CR03)  # the card goes away: so does its resource
        assert await rt.discover_once()
        assert REBEL not in rt.resources
        await fake_kubelet.wait_until(
            lambda: REBEL not in fake_kubelet.connections or fake_kubelet.connections[REBEL].ended,
            what="REBEL endpoint stopped",
        )
        assert len(fake_kubelet.devices(ATOM)) == 4


async def test_configured_empty_pool_is_still_registered(
    ca22: FakeHost, lock_file: str, fake_kubelet: FakeKubelet
) -> None:
    document = config(
        lock_file,
        rsdGroups="off",
        resourceList=[
            {"resourceName": "ATOM", "selectors": {"vendors": ["1eff"], "devices": ["1220"]}},
            {"resourceName": "REBEL", "selectors": {"vendors": ["1eff"], "devices": ["2030"]}},
        ],
    )
    async with run_plugin(SPEC, ca22, fake_kubelet, config=document) as rt:
        await fake_kubelet.wait_for_devices(ATOM, lambda d: len(d) == 4)
        connection = await fake_kubelet.wait_for_registration(REBEL)
        assert connection.devices == []  # served while empty, as documented
        assert await rt.discover_once()
        assert REBEL in rt.resources and not fake_kubelet.connections[REBEL].ended
