"""Discovery on the fake node: selectors, legacy devices, slot counts, char devices, NUMA."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from devplugin_plugins.rdma_shared import build
from devplugin_plugins.rdma_shared.config import RdmaSharedConfig

from devplugin_core import Device, PluginContext, scan_pci
from devplugin_core.testing import FakeHost, scan_once
from devplugin_core.toolkit import decode

from .helpers import (
    IB,
    INTEL,
    NETDEV,
    NODES,
    RDMA_CM,
    ROCE0,
    ROCE1,
    config,
    discover,
    hcas,
    node_paths,
    resource,
)

SELECTOR_CASES: list[tuple[dict[str, Any], list[str]]] = [
    ({"vendors": ["15b3"]}, [ROCE0, ROCE1, IB]),
    ({"vendors": ["8086"]}, []),  # the Intel NIC matches but has no RDMA device
    ({"vendors": ["15b3", "8086"]}, [ROCE0, ROCE1, IB]),
    ({"deviceIDs": ["1017"]}, [ROCE0, ROCE1]),
    ({"deviceIDs": ["101b"]}, [IB]),
    ({"drivers": ["mlx5_core"]}, [ROCE0, ROCE1, IB]),
    ({"drivers": ["ice"]}, []),
    ({"ifNames": ["enp59s0f0np0"]}, [ROCE0]),
    ({"ifNames": ["enp59s0f0np0", "ibp175s0"]}, [ROCE0, IB]),
    ({"linkTypes": ["ether"]}, [ROCE0, ROCE1]),
    ({"linkTypes": ["infiniband"]}, [IB]),
    ({"vendors": ["15b3"], "deviceIDs": ["1017"], "linkTypes": ["ether"]}, [ROCE0, ROCE1]),
    ({"vendors": ["15b3"], "drivers": ["mlx5_core"], "ifNames": ["enp134s0f0np0"]}, [ROCE1]),
    ({"deviceIDs": ["1017", "101b"], "linkTypes": ["infiniband"]}, [IB]),
    ({"deviceIDs": ["101b"], "linkTypes": ["ether"]}, []),  # AND across lists
    (
        {
            "vendors": ["15b3"],
            "deviceIDs": ["1017"],
            "drivers": ["mlx5_core"],
            "ifNames": ["enp59s0f0np0", "enp134s0f0np0"],
            "linkTypes": ["ether"],
        },
        [ROCE0, ROCE1],
    ),
]


@pytest.mark.parametrize("selectors, expected", SELECTOR_CASES)
def test_selectors_alone_and_combined(
    node: FakeHost, selectors: dict[str, Any], expected: list[str]
) -> None:
    devices, rejections = discover(node, config(resource(selectors=selectors)))
    slots = devices["rdma/r"]
    assert hcas(slots) == expected
    assert len(slots) == (4 if expected else 0)
    rejected = {r.subject for r in rejections}
    assert rejected == {ROCE0, ROCE1, IB, INTEL} - set(expected)  # each rejection explained
    assert INTEL in rejected


def test_legacy_devices_are_if_names(node: FakeHost) -> None:
    legacy = resource("legacy", devices=[NETDEV[ROCE1], NETDEV[IB], "ib9"])
    modern = resource("modern", selectors={"ifNames": [NETDEV[ROCE1], NETDEV[IB], "ib9"]})
    devices, _ = discover(node, config(legacy, modern))
    assert hcas(devices["rdma/legacy"]) == hcas(devices["rdma/modern"]) == [ROCE1, IB]
    assert node_paths(devices["rdma/legacy"]) == node_paths(devices["rdma/modern"])


def test_hca_may_serve_several_resources(node: FakeHost) -> None:
    devices, _ = discover(
        node,
        config(
            resource("all", selectors={"vendors": ["15b3"]}),
            resource("roce", selectors={"linkTypes": ["ether"]}),
        ),
    )
    assert hcas(devices["rdma/all"]) == [ROCE0, ROCE1, IB]
    assert hcas(devices["rdma/roce"]) == [ROCE0, ROCE1]


@pytest.mark.parametrize("count", [0, 1, 1000])
def test_rdma_hca_max_slots_with_upstream_ids(node: FakeHost, count: int) -> None:
    devices, _ = discover(node, config(resource(max_=count, selectors={"vendors": ["15b3"]})))
    slots = devices["rdma/r"]
    assert [d.id for d in slots] == [str(i) for i in range(count)]
    assert len({d.health_key for d in slots}) == min(count, 1)
    assert len({id(d.edits) for d in slots}) == min(count, 1)  # one shared edits object
    assert len({d.cdi_name for d in slots}) == min(count, 1)


def test_char_devices_of_every_hca_with_rdma_cm_once(node: FakeHost) -> None:
    devices, _ = discover(node, config(resource(selectors={"vendors": ["15b3"]})))
    edits = devices["rdma/r"][0].all_edits
    assert [n.host_path for n in edits.device_nodes] == [
        *NODES[ROCE0],
        *NODES[ROCE1],
        *NODES[IB],
        RDMA_CM,
    ]
    for n in edits.device_nodes:
        assert (n.container_path, n.permissions) == (n.host_path, "rw")


def test_roce_has_no_issm_and_ib_has_issm(node: FakeHost) -> None:
    devices, _ = discover(
        node,
        config(
            resource("eth", selectors={"linkTypes": ["ether"]}),
            resource("ib", selectors={"linkTypes": ["infiniband"]}),
        ),
    )
    assert not any("issm" in p for p in node_paths(devices["rdma/eth"]))
    assert "/dev/infiniband/issm2" in node_paths(devices["rdma/ib"])


@pytest.mark.parametrize(
    "selectors, numa",
    [
        ({"ifNames": ["enp59s0f0np0"]}, (0,)),
        ({"ifNames": ["enp134s0f0np0", "ibp175s0"]}, (1,)),  # both on node 1
        ({"linkTypes": ["ether"]}, ()),  # nodes 0 and 1 disagree: no topology
    ],
)
def test_numa_only_when_all_hcas_agree(
    node: FakeHost, selectors: dict[str, Any], numa: tuple[int, ...]
) -> None:
    devices, _ = discover(node, config(resource(selectors=selectors)))
    assert {d.numa_nodes for d in devices["rdma/r"]} == {numa}


def test_unknown_numa_and_exclude_topology_give_no_topology(node: FakeHost) -> None:
    node.write(f"/sys/bus/pci/devices/{ROCE1}/numa_node", "-1\n")
    devices, _ = discover(
        node,
        config(
            resource("unknown", selectors={"ifNames": [NETDEV[ROCE1]]}),
            resource("excluded", selectors={"ifNames": [NETDEV[ROCE0]]}, excludeTopology=True),
        ),
    )
    assert devices["rdma/unknown"][0].numa_nodes == ()
    assert devices["rdma/excluded"][0].numa_nodes == ()


def test_rejections_explain_each_candidate(node: FakeHost) -> None:
    _, rejections = discover(
        node, config(resource(selectors={"vendors": ["15b3", "8086"], "linkTypes": ["ether"]}))
    )
    reasons = {r.subject: r.reason for r in rejections}
    assert set(reasons) == {INTEL, IB}
    assert "no RDMA device" in reasons[INTEL]
    assert reasons[IB] == "linkTypes ['ether'] does not include 'infiniband'"
    assert {r.resource for r in rejections} == {"rdma/r"}


def test_empty_host_says_why(fake_host: FakeHost) -> None:
    devices, rejections = discover(fake_host, config(resource(selectors={"vendors": ["15b3"]})))
    assert devices["rdma/r"] == []
    assert [r.subject for r in rejections] == ["host"]
    assert "no PCI network functions" in rejections[0].reason


@pytest.mark.parametrize(
    "breakage, missing",
    [
        (lambda h: h.remove("/sys/class/infiniband_verbs/uverbs1"), "uverbs"),
        (lambda h: h.remove("/sys/class/infiniband_mad/umad1"), "umad"),
        (lambda h: h.remove("/dev/infiniband/uverbs1"), "/dev/infiniband/uverbs1"),
        (lambda h: h.remove("/dev/infiniband/umad1"), "/dev/infiniband/umad1"),
    ],
)
def test_missing_required_char_device_excludes_that_hca(
    node: FakeHost, breakage: Any, missing: str, caplog: pytest.LogCaptureFixture
) -> None:
    breakage(node)
    with caplog.at_level(logging.WARNING, "devplugin.rdma_shared"):
        devices, rejections = discover(node, config(resource(selectors={"linkTypes": ["ether"]})))
    assert hcas(devices["rdma/r"]) == [ROCE0]
    assert node_paths(devices["rdma/r"]) == [*NODES[ROCE0], RDMA_CM]
    reason = next(r.reason for r in rejections if r.subject == ROCE1)
    assert "missing RDMA char device" in reason and missing in reason
    lines = [r.getMessage() for r in caplog.records]
    assert any(ROCE1 in line and missing in line for line in lines), lines


def test_missing_rdma_cm_excludes_every_hca(
    node: FakeHost, caplog: pytest.LogCaptureFixture
) -> None:
    node.remove(RDMA_CM)
    with caplog.at_level(logging.WARNING, "devplugin.rdma_shared"):
        devices, rejections = discover(node, config(resource(selectors={"vendors": ["15b3"]})))
    assert devices["rdma/r"] == []
    assert all(RDMA_CM in r.reason for r in rejections if r.subject != INTEL)
    assert any(ROCE0 in r.getMessage() and RDMA_CM in r.getMessage() for r in caplog.records)


def test_missing_optional_issm_node_is_left_out(node: FakeHost) -> None:
    node.remove("/dev/infiniband/issm2")
    devices, _ = discover(node, config(resource(selectors={"linkTypes": ["infiniband"]})))
    assert node_paths(devices["rdma/r"]) == [
        "/dev/infiniband/umad2",
        "/dev/infiniband/uverbs2",
        RDMA_CM,
    ]


def test_problems_are_logged_once_per_change(
    node: FakeHost, caplog: pytest.LogCaptureFixture
) -> None:
    node.remove("/dev/infiniband/uverbs0")
    cfg = decode(RdmaSharedConfig, config(resource(selectors={"vendors": ["15b3"]}))).value
    plugin = build(cfg, PluginContext(host=node.host))
    with caplog.at_level(logging.INFO, "devplugin.rdma_shared"):
        for _ in range(3):
            scan_once(plugin, node)
        node.add_dev("/dev/infiniband/uverbs0")
        scan_once(plugin, node)
    excluded = [r for r in caplog.records if "excluded" in r.getMessage()]
    back = [r for r in caplog.records if "usable again" in r.getMessage()]
    assert len(excluded) == 1 and len(back) == 1


def test_slots_are_reused_while_nothing_changes(node: FakeHost) -> None:
    cfg = decode(RdmaSharedConfig, config(resource(max_=100_000, selectors={"vendors": ["15b3"]})))
    plugin = build(cfg.value, PluginContext(host=node.host))

    def slots() -> list[Device]:
        ((_, devices),) = scan_once(plugin, node).tree.values()
        return devices

    first = slots()
    assert len(first) == 100_000
    again = slots()
    assert all(a is b for a, b in zip(again, first, strict=True))
    node.remove_pci(ROCE1)
    changed = slots()
    assert changed[0] is not first[0] and hcas(changed) == [ROCE0, IB]


def test_one_pci_scan_per_pass_for_all_resources(node: FakeHost, monkeypatch: Any) -> None:
    import devplugin_plugins.rdma_shared.inventory as inventory

    calls = []
    real = scan_pci

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(inventory, "scan_pci", counting)
    entries = [resource(f"r{i}", selectors={"vendors": ["15b3"]}) for i in range(5)]
    discover(node, config(*entries))
    assert len(calls) == 1


def test_fingerprint_changes_on_hotplug(node: FakeHost) -> None:
    cfg = decode(RdmaSharedConfig, config(resource(selectors={"vendors": ["15b3"]}))).value
    scanner = build(cfg, PluginContext(host=node.host)).scanner
    before = scanner.fingerprint(node.host)
    assert scanner.fingerprint(node.host) == before
    node.remove_pci(IB)
    assert scanner.fingerprint(node.host) != before


def test_functions_no_resource_selects_are_refused_without_reading_their_rdma_devices(
    node: FakeHost, caplog: pytest.LogCaptureFixture
) -> None:
    # ROCE0's uverbs class entry is gone: read, it would be excluded with a warning. No
    # resource selects it (deviceIDs), so its netdevs and RDMA devices are not read at all: it
    # is refused by the filter that refuses it, as a full read would refuse it, and quietly.
    node.remove("/sys/class/infiniband_verbs/uverbs0")
    with caplog.at_level(logging.WARNING, "devplugin.rdma_shared"):
        devices, rejections = discover(
            node,
            config(
                resource("ib", selectors={"deviceIDs": ["101b"]}),
                resource("eth", selectors={"deviceIDs": ["101b"], "linkTypes": ["ether"]}),
            ),
        )
    assert hcas(devices["rdma/ib"]) == [IB] and devices["rdma/eth"] == []
    reasons = {(r.resource, r.subject): r.reason for r in rejections}
    assert reasons[("rdma/ib", ROCE0)] == "deviceIDs ['101b'] does not include '1017'"
    assert reasons[("rdma/eth", ROCE0)] == "deviceIDs ['101b'] does not include '1017'"
    assert reasons[("rdma/eth", IB)] == "linkTypes ['ether'] does not include 'infiniband'"
    assert not [r for r in caplog.records if ROCE0 in r.getMessage()]
    # selected again, its problem shows
    _, rejections = discover(node, config(resource(selectors={"deviceIDs": ["1017"]})))
    assert "missing RDMA char device(s) uverbs" in {r.subject: r.reason for r in rejections}[ROCE0]
