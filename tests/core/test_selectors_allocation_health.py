"""Selector engine (upstream tables), preferred allocation, health hysteresis, pcidp, rdma."""

from __future__ import annotations

import pytest

from devplugin_core import ConfigError, Device, Observation, PreferredRequest, prefer_packed
from devplugin_core._hysteresis import HealthTracker
from devplugin_core._pcidp import additional_info, go_json, pcidevice_env, pcidevice_env_name
from devplugin_core.toolkit import (
    Candidate,
    Pool,
    Selector,
    assign,
    hex_id_warnings,
    match_flag,
    match_values,
    match_vf_ranges,
    parse_vf_range,
)

# Upstream table A (netDeviceProvider_test.go), without ddp/vdpa.
D = [
    Candidate(
        "0000:03:02.0",
        "8086",
        "abcd",
        "igb_uio",
        pf_name="eth0",
        pf_address="0000:86:00.0",
        link_type="ether",
    ),
    Candidate(
        "0000:03:02.1",
        "8086",
        "123a",
        "igb_uio",
        pf_name="eth0",
        pf_address="0000:86:00.1",
        link_type="infiniband",
        is_rdma=True,
    ),
    Candidate(
        "0000:03:02.2",
        "1111",
        "abcd",
        "igb_uio",
        pf_name="eth1",
        pf_address="0000:86:00.2",
        link_type="ether",
    ),
    Candidate(
        "0000:03:02.3",
        "2222",
        "2222",
        "iavf",
        pf_name="net0",
        pf_address="0000:86:00.3",
        link_type="ether",
    ),
    Candidate(
        "0000:03:02.4",
        "3333",
        "1024",
        "vfio-pci",
        pf_name="net0",
        pf_address="0000:86:00.4",
        link_type="fake",
        is_rdma=True,
    ),
]


def pick(selector: Selector) -> list[str]:
    return [c.address[-1] for c in D if selector.mismatch(c) is None]


@pytest.mark.parametrize(
    "selector,expected",
    [
        (Selector.of(match_values("vendors", "vendor", ["8086"])), ["0", "1"]),
        (Selector.of(match_values("devices", "device", ["abcd"])), ["0", "2"]),
        (Selector.of(match_values("drivers", "driver", ["igb_uio"])), ["0", "1", "2"]),
        (
            Selector.of(match_values("pciAddresses", "address", ["0000:03:02.0", "0000:03:02.3"])),
            ["0", "3"],
        ),
        (
            Selector.of(
                match_vf_ranges(
                    "pfNames", "pf_name", [parse_vf_range("net0"), parse_vf_range("eth1")]
                )
            ),
            ["2", "3", "4"],
        ),
        (
            Selector.of(
                match_vf_ranges(
                    "rootDevices",
                    "pf_address",
                    [parse_vf_range("0000:86:00.0"), parse_vf_range("0000:86:00.4")],
                )
            ),
            ["0", "4"],
        ),
        (Selector.of(match_values("linkTypes", "link_type", ["infiniband"])), ["1"]),
        (Selector.of(match_values("linkTypes", "link_type", ["infiniband", "fake"])), ["1", "4"]),
        (Selector.of(match_flag("isRdma", "is_rdma", True)), ["1", "4"]),
        (Selector.of(match_flag("isRdma", "is_rdma", False)), ["0", "1", "2", "3", "4"]),
        (
            Selector.of(
                match_values("vendors", "vendor", ["8086"]),
                match_values("drivers", "driver", ["igb_uio"]),
                match_values("linkTypes", "link_type", ["ether"]),
            ),
            ["0"],
        ),
        (Selector.of(match_values("vendors", "vendor", ["0x8086"])), []),
        (Selector.of(), ["0", "1", "2", "3", "4"]),
    ],
)
def test_upstream_selector_table(selector, expected):
    assert pick(selector) == expected


def test_vf_ranges_table_b():
    items = [parse_vf_range(t) for t in ("ens0", "ens2f0#1", "ens2f1#0,3-5,7")]
    sel = Selector.of(match_vf_ranges("pfNames", "pf_name", items))

    def ok(pf: str, index: int | None) -> bool:
        return sel.mismatch(Candidate("0000:00:00.1", pf_name=pf, vf_index=index)) is None

    assert ok("ens0", None) and ok("ENS0", 3)
    assert not ok("eth0", None)
    assert ok("ens2f0", 1) and not ok("ens2f0", 0) and not ok("ens2f0", None)
    assert [i for i in range(8) if ok("ens2f1", i)] == [0, 3, 4, 5, 7]


@pytest.mark.parametrize(
    "text,why",
    [
        ("eth0#", "empty VF index list"),
        ("eth0#1#2", "more than one"),
        ("#1", "missing PF"),
        ("eth0#a", "invalid VF index range"),
        ("eth0#1-2-3", "invalid"),
        ("eth0#5-2", "reversed"),
        ("eth0#99999", "larger than"),
        ("", "empty PF"),
    ],
)
def test_vf_range_errors(text, why):
    with pytest.raises(ConfigError, match=why) as err:
        parse_vf_range(text, "resourceList[0].selectors.pfNames[0]")
    assert err.value.field == "resourceList[0].selectors.pfNames[0]"


def test_first_pool_and_first_selector_win_and_rejections_explain():
    pools = [
        Pool("a", (Selector.of(match_values("drivers", "driver", ["iavf"])),)),
        Pool(
            "b",
            (
                Selector.of(match_values("vendors", "vendor", ["none"])),
                Selector.of(match_values("vendors", "vendor", ["8086", "2222"])),
            ),
        ),
        Pool("c", (Selector.of(),)),
    ]
    result = assign(D, pools)
    assert result.addresses("a") == ["0000:03:02.3"]
    assert [(c.address, i) for c, i in result.members["b"]] == [
        ("0000:03:02.0", 1),
        ("0000:03:02.1", 1),
    ]
    assert result.addresses("c") == ["0000:03:02.2", "0000:03:02.4"]
    only = assign(D[:1], pools[:1])
    assert only.rejections["0000:03:02.0"] == ["a: drivers ['iavf'] does not include 'igb_uio'"]


def test_hex_id_warnings():
    assert hex_id_warnings(["15b3", "0x15b3", "15B3"], "vendors") == [
        "vendors[1]: '0x15b3' can never match: sysfs IDs are 4 lower-case hex digits without 0x",
        "vendors[2]: '15B3' can never match: sysfs IDs are 4 lower-case hex digits without 0x",
    ]


def devs(spec: str) -> list[Device]:
    """'a0 b0 c1' -> devices a,b on NUMA 0 and c on NUMA 1; '-' = unknown NUMA."""
    out = []
    for token in spec.split():
        numa = () if token[1] == "-" else (int(token[1]),)
        out.append(Device(token[0], numa))
    return out


def prefer(available: str, must: str, size: int) -> list[str]:
    avail = devs(available)
    by_id = {d.id: d for d in avail}
    request = PreferredRequest("r", tuple(avail), tuple(by_id[m] for m in must), size)
    return prefer_packed(request, levels=[lambda d: d.numa_nodes or None])


@pytest.mark.parametrize(
    "available,must,size,expected",
    [
        ("a0 b0 c1 d1 e1", "", 2, ["a", "b"]),  # smallest NUMA node that fits
        ("a0 b0 c1 d1 e1", "", 3, ["c", "d", "e"]),
        ("a0 b0 c1 d1 e1", "c", 2, ["c", "d"]),  # stay with the must-include device
        ("a0 b0 c1 d1 e1", "a", 3, ["a", "b", "c"]),  # node 0 too small: largest other next
        ("a0 b0 c1 d1 e1", "", 4, ["a", "c", "d", "e"]),
        ("a0 b- c-", "", 2, ["a", "b"]),  # unknown NUMA used last
        ("a0 b0", "ab", 1, ["a", "b"]),  # must-include always kept
        ("a0 b0", "", 5, ["a", "b"]),  # not enough: everything
    ],
)
def test_prefer_packed(available, must, size, expected):
    assert prefer(available, must, size) == expected


def test_prefer_spread_round_robins_inside_the_numa_node():
    avail = [Device(f"v{i}", (0,), attributes={"pf": "p0" if i < 4 else "p1"}) for i in range(8)]
    request = PreferredRequest("r", tuple(avail), (), 4)
    ids = prefer_packed(
        request, levels=[lambda d: d.numa_nodes or None], spread=lambda d: d.attributes["pf"]
    )
    assert sorted(ids) == ["v0", "v1", "v4", "v5"]


def test_health_tracker_hysteresis():
    t = HealthTracker(recover_after=2)
    assert t.observe({}, ["a", "b"]) == []
    changes = t.observe({"a": Observation.bad("link down")}, ["a", "b"])
    assert [(c.key, c.healthy, c.reason) for c in changes] == [("a", False, "link down")]
    assert t.observe({"a": Observation.ok()}, ["a", "b"]) == []
    assert not t.is_healthy("a")
    assert t.observe({"a": Observation.bad("again")}, ["a", "b"]) == []  # streak reset
    assert t.observe({}, ["a", "b"]) == []
    assert [c.healthy for c in t.observe({}, ["a", "b"])] == [True]
    t.observe({"b": Observation.bad("x")}, ["a", "b"])
    t.observe({}, ["a"])  # b vanished: forgotten
    assert t.is_healthy("b")
    t.observe({"b": Observation.bad("x")}, ["a", "b"])
    t.forget({"a"})  # discovery dropped b: forgotten without counting as a good round
    assert t.is_healthy("b") and t.unhealthy_keys() == {}


def test_pcidevice_env_matches_upstream_bytes():
    info = {
        "0000:03:02.2": {
            "generic": {"deviceID": "0000:03:02.2"},
            "vfio": {"mount": "/dev/vfio/vfio", "dev-mount": "/dev/vfio/52"},
        },
        "0000:03:02.3": {
            "vfio": {"mount": "/dev/vfio/vfio", "dev-mount": "/dev/vfio/53"},
            "generic": {"deviceID": "0000:03:02.3"},
        },
    }
    env = pcidevice_env("intel.com", "intel_sriov_dpdk", ["0000:03:02.2", "0000:03:02.3"], info)
    assert env == {
        "PCIDEVICE_INTEL_COM_INTEL_SRIOV_DPDK": "0000:03:02.2,0000:03:02.3",
        "PCIDEVICE_INTEL_COM_INTEL_SRIOV_DPDK_INFO": (
            '{"0000:03:02.2":{"generic":{"deviceID":"0000:03:02.2"},"vfio":{"dev-mount":'
            '"/dev/vfio/52","mount":"/dev/vfio/vfio"}},"0000:03:02.3":{"generic":{"deviceID":'
            '"0000:03:02.3"},"vfio":{"dev-mount":"/dev/vfio/53","mount":"/dev/vfio/vfio"}}}'
        ),
    }
    assert pcidevice_env_name("intel.com", "sriov-net") == "PCIDEVICE_INTEL_COM_SRIOV-NET"
    kinds = pcidevice_env("rebellions.ai", "ATOM", ["x"], {}, extra_kinds=("PCI_RESOURCE",))
    assert kinds["PCI_RESOURCE_REBELLIONS_AI_ATOM"] == "x"
    assert go_json({"b": "<&>", "a": 1}) == '{"a":1,"b":"\\u003c\\u0026\\u003e"}'
    table = {"*": {"test": "test", "bla": "bla"}, "0000:00:00.1": {"test": "test1"}}
    assert additional_info(table, "0000:00:00.1") == {"test": "test1", "bla": "bla"}


def test_prefer_spread_also_without_numa():
    avail = [Device(f"v{i}", attributes={"pf": "p0" if i < 4 else "p1"}) for i in range(8)]
    request = PreferredRequest("r", tuple(avail), (), 2)
    ids = prefer_packed(
        request, levels=[lambda d: d.numa_nodes or None], spread=lambda d: d.attributes["pf"]
    )
    assert ids == ["v0", "v4"]
