"""End to end against the fake kubelet: what the kubelet receives for shared RDMA slots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import pytest
from devplugin_plugins.rdma_shared import SPEC, build
from devplugin_plugins.rdma_shared.config import RdmaSharedConfig
from devplugin_plugins.rdma_shared.preflight import ExclusiveNetnsModeError
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from devplugin_core import Observation, PluginContext
from devplugin_core.cli import main as cli
from devplugin_core.testing import (
    FakeHost,
    FakeKubelet,
    run_plugin,
    scan_once,
    snapshots_of,
    write_config,
)
from devplugin_core.toolkit import decode

from .helpers import IB, IBDEV, INTEL, NETDEV, NODES, RDMA_CM, ROCE0, ROCE1, config, resource

ROCE = "rdma/roce"
ETHER: dict[str, Any] = {"selectors": {"linkTypes": ["ether"]}}


def healthy(devices: list[Any]) -> bool:
    return bool(devices) and all(d.health == "Healthy" for d in devices)


def unhealthy(devices: list[Any]) -> bool:
    return bool(devices) and all(d.health == "Unhealthy" for d in devices)


def specs(response: Any) -> list[tuple[str, str, str]]:
    return [(d.host_path, d.container_path, d.permissions) for d in response.devices]


async def test_kubelet_gets_slots_and_allocation_grants_every_node_once(
    node: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    doc = config(
        resource("all", max_=8, selectors={"vendors": ["15b3"]}), resource("roce", **ETHER)
    )
    async with run_plugin(SPEC, node, fake_kubelet, config=doc):
        devices = await fake_kubelet.wait_for_devices("rdma/all", lambda d: len(d) == 8)
        assert [d.ID for d in devices] == [str(i) for i in range(8)]
        assert healthy(devices)
        assert not any(d.HasField("topology") for d in devices)  # NUMA 0 and 1 disagree
        response = await fake_kubelet.allocate("rdma/all", ["3", "5"])
        expected = [*NODES[ROCE0], *NODES[ROCE1], *NODES[IB], RDMA_CM]
        assert specs(response) == [(p, p, "rw") for p in expected]
        assert not response.envs and not response.mounts and not response.annotations
        roce = await fake_kubelet.wait_for_devices(ROCE, lambda d: len(d) == 4)
        assert healthy(roce)
        preferred = await fake_kubelet.preferred(ROCE, ["2", "1", "0", "3"], ["3"], 2)
        assert preferred == ["3", "2"]


async def test_numa_topology_reaches_the_kubelet(node: FakeHost, fake_kubelet: FakeKubelet) -> None:
    doc = config(resource("ib", selectors={"linkTypes": ["infiniband"]}))
    async with run_plugin(SPEC, node, fake_kubelet, config=doc):
        devices = await fake_kubelet.wait_for_devices("rdma/ib", lambda d: len(d) == 4)
        assert {tuple(n.ID for n in d.topology.nodes) for d in devices} == {(1,)}


async def test_zero_slots_registers_with_no_devices(
    node: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    doc = config(resource("none", max_=0, selectors={"vendors": ["15b3"]}))
    async with run_plugin(SPEC, node, fake_kubelet, config=doc):
        conn = await fake_kubelet.wait_for_registration("rdma/none")
        assert conn.devices == []


async def test_all_hcas_down_makes_slots_unhealthy_until_one_recovers(
    node: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    doc = config(resource("roce", **ETHER), healthCheckInterval=0.05)
    async with run_plugin(SPEC, node, fake_kubelet, config=doc) as runtime:
        await fake_kubelet.wait_for_devices(ROCE, lambda d: len(d) == 4 and healthy(d))
        rt = runtime.resources[ROCE]
        checker = rt.resource.health
        assert checker is not None
        node.set_port_state(IBDEV[ROCE0], 1, active=False)
        key = f"{ROCE0},{ROCE1}"
        assert checker.check(rt.devices) == {key: Observation.ok()}  # mlx5_1 still carries
        node.set_port_state(IBDEV[ROCE1], 1, active=False)
        await fake_kubelet.wait_for_devices(ROCE, unhealthy)
        reason = checker.check(rt.devices)[key].reason
        assert reason.startswith("all matched HCAs are down")
        assert ROCE0 in reason and ROCE1 in reason and "DOWN/Disabled" in reason
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await fake_kubelet.allocate(ROCE, ["0"])
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        node.set_port_state(IBDEV[ROCE0], 1, active=True)
        await fake_kubelet.wait_for_devices(ROCE, healthy)
        assert len((await fake_kubelet.allocate(ROCE, ["0"])).devices) == 5


async def test_roce_netdev_without_carrier_counts_as_down(
    node: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    doc = config(
        resource("roce0", selectors={"ifNames": [NETDEV[ROCE0]]}), healthCheckInterval=0.05
    )
    async with run_plugin(SPEC, node, fake_kubelet, config=doc):
        await fake_kubelet.wait_for_devices("rdma/roce0", healthy)
        node.set_link(NETDEV[ROCE0], False)
        await fake_kubelet.wait_for_devices("rdma/roce0", unhealthy)
        node.set_link(NETDEV[ROCE0], True)
        await fake_kubelet.wait_for_devices("rdma/roce0", healthy)


async def test_ipoib_netdev_down_does_not_fail_an_active_ib_hca(
    node: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    doc = config(resource("ib", selectors={"deviceIDs": ["101b"]}), healthCheckInterval=0.05)
    async with run_plugin(SPEC, node, fake_kubelet, config=doc) as runtime:
        await fake_kubelet.wait_for_devices("rdma/ib", healthy)
        node.set_link(NETDEV[IB], False)  # IPoIB down, InfiniBand port still ACTIVE
        for _ in range(3):
            await runtime.check_health_once("rdma/ib")
        assert healthy(fake_kubelet.devices("rdma/ib"))
        node.set_port_state(IBDEV[IB], 1, active=False)
        await fake_kubelet.wait_for_devices("rdma/ib", unhealthy)


async def test_hca_hot_removal_and_return_on_rescan(
    node: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    async with run_plugin(SPEC, node, fake_kubelet, config=config(resource("roce", **ETHER))) as rt:
        await fake_kubelet.wait_for_devices(ROCE, lambda d: len(d) == 4)
        node.remove_pci(ROCE1)
        assert await rt.discover_once()
        devices = await fake_kubelet.wait_for_devices(
            ROCE, lambda d: len(d) == 4 and d[0].HasField("topology")
        )
        assert {tuple(n.ID for n in d.topology.nodes) for d in devices} == {(0,)}  # only ROCE0
        assert specs(await fake_kubelet.allocate(ROCE, ["1"])) == [
            (p, p, "rw") for p in [*NODES[ROCE0], RDMA_CM]
        ]
        node.remove_pci(ROCE0)
        assert await rt.discover_once()
        await fake_kubelet.wait_for_devices(ROCE, lambda d: d == [])
        node.add_pci("0000:d8:00.0", vendor="15b3", device="1017", driver="mlx5_core", numa_node=1)
        node.add_netdev("0000:d8:00.0", "enp216s0f0np0")
        node.add_rdma("0000:d8:00.0", "mlx5_3")
        assert await rt.discover_once()
        await fake_kubelet.wait_for_devices(ROCE, lambda d: len(d) == 4 and healthy(d))
        response = await fake_kubelet.allocate(ROCE, ["0"])
        assert [d.host_path for d in response.devices] == [
            "/dev/infiniband/umad3",
            "/dev/infiniband/uverbs3",
            RDMA_CM,
        ]


async def test_large_rdma_hca_max_fits_the_kubelet(
    node: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    doc = config(resource("big", max_=100_000, selectors={"vendors": ["15b3"]}))
    async with run_plugin(SPEC, node, fake_kubelet, config=doc) as runtime:
        devices = await fake_kubelet.wait_for_devices("rdma/big", lambda d: len(d) == 100_000)
        assert devices[-1].ID == "99999"
        assert len((await fake_kubelet.allocate("rdma/big", ["99999"])).devices) == 8
        before = runtime.resources["rdma/big"].snapshot.version
        assert not await runtime.check_health_once("rdma/big")  # nothing changed, nothing sent
        assert await runtime.discover_once()
        assert runtime.resources["rdma/big"].snapshot.version == before


@pytest.mark.parametrize("mode", ["N", "0"])
async def test_exclusive_netns_mode_refuses_to_start(
    node: FakeHost, fake_kubelet: FakeKubelet, mode: str
) -> None:
    node.set_module_param("ib_core", "netns_mode", mode)
    with pytest.raises(ExclusiveNetnsModeError, match="SR-IOV network device plugin"):
        async with run_plugin(SPEC, node, fake_kubelet, config=config(resource("roce", **ETHER))):
            pass
    assert fake_kubelet.registrations == []


async def test_shared_netns_mode_starts(node: FakeHost, fake_kubelet: FakeKubelet) -> None:
    node.set_module_param("ib_core", "netns_mode", "Y")
    async with run_plugin(SPEC, node, fake_kubelet, config=config(resource("roce", **ETHER))):
        await fake_kubelet.wait_for_devices(ROCE, lambda d: len(d) == 4)
    assert node.host.read_attr("/sys/module/ib_core/parameters/netns_mode") == "Y"


def test_cli_run_exits_1_in_exclusive_mode(
    node: FakeHost, kubelet_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    node.set_module_param("ib_core", "netns_mode", "N")
    path = write_config(tmp_path / "config.json", config(resource("roce", **ETHER)))
    argv = ["run", "rdma-shared", "--config-file", path, "--host-root", str(node.root)]
    argv += ["--kubelet-dir", kubelet_dir, "--metrics-address", "", "--pod-resources-socket", ""]
    assert cli(argv) == 1
    assert "exclusive network namespace mode" in capsys.readouterr().err


def _labels(address: str, **extra: str) -> tuple[tuple[str, str], ...]:
    labels = {"device": IBDEV[address], "port": "1", "pci_address": address, **extra}
    return tuple(sorted(labels.items()))


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def test_metrics_report_ports_counters_and_slots(
    node: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    node.set_port_counter(IBDEV[ROCE0], 1, "port_xmit_data", 1000)
    node.set_port_counter(IBDEV[ROCE0], 1, "port_rcv_data", 250)
    node.set_port_counter(IBDEV[ROCE0], 1, "port_xmit_packets", 7)
    node.set_port_counter(IBDEV[ROCE0], 1, "port_rcv_packets", 3)
    node.set_port_state(IBDEV[IB], 1, active=False)
    doc = config(
        resource("roce", max_=10, **ETHER),
        resource("ib", max_=5, selectors={"deviceIDs": ["101b"]}),
    )
    async with run_plugin(SPEC, node, fake_kubelet, config=doc) as runtime:
        await fake_kubelet.wait_for_devices(ROCE, lambda d: len(d) == 10)
        text = generate_latest(runtime.registry).decode()
    samples = _samples(text)

    def port(name: str, address: str, **extra: str) -> float:
        return samples[(name, _labels(address, **extra))]

    assert port("devplugin_rdma_port_transmit_bytes_total", ROCE0) == 4000  # 4-byte words
    assert port("devplugin_rdma_port_receive_bytes_total", ROCE0) == 1000
    assert port("devplugin_rdma_port_transmit_packets_total", ROCE0) == 7
    assert port("devplugin_rdma_port_receive_packets_total", ROCE0) == 3
    assert port("devplugin_rdma_port_transmit_bytes_total", ROCE1) == 0
    assert port("devplugin_rdma_port_active", ROCE0) == 1
    assert port("devplugin_rdma_port_state", ROCE0) == 4
    assert port("devplugin_rdma_port_phys_state", ROCE0) == 5
    assert port("devplugin_rdma_port_active", IB) == 0
    assert port("devplugin_rdma_port_state", IB) == 1
    assert port("devplugin_rdma_port_info", ROCE1, link_layer="Ethernet") == 1
    assert port("devplugin_rdma_port_info", IB, link_layer="InfiniBand") == 1
    resources = {"rdma/roce": (10, 2), "rdma/ib": (5, 1)}
    for name, (slots, count) in resources.items():
        assert samples[("devplugin_rdma_resource_devices", (("resource", name),))] == slots
        assert samples[("devplugin_rdma_resource_hcas", (("resource", name),))] == count
    assert "node_infiniband" not in text
    assert INTEL not in text


class _Fixed:
    def __init__(self, collect: Any) -> None:
        self.collect = collect


def test_metrics_skip_missing_counters(node: FakeHost) -> None:
    node.remove(f"/sys/bus/pci/devices/{ROCE0}/infiniband/mlx5_0/ports/1/counters")
    cfg = decode(RdmaSharedConfig, config(resource("roce", **ETHER))).value
    plugin = build(cfg, PluginContext(host=node.host))
    snapshots = snapshots_of(scan_once(plugin, node))
    registry = CollectorRegistry()
    registry.register(_Fixed(lambda: plugin.collectors[0].collect(snapshots)))
    samples = _samples(generate_latest(registry).decode())
    xmit = [k for k in samples if k[0] == "devplugin_rdma_port_transmit_bytes_total"]
    assert [dict(k[1])["pci_address"] for k in xmit] == [ROCE1]
    assert ("devplugin_rdma_port_active", _labels(ROCE0)) in samples  # the port itself stays


def test_discover_cli_explains_rejections(
    node: FakeHost, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    node.remove("/dev/infiniband/uverbs1")
    doc = config(resource("roce", selectors={"vendors": ["15b3", "8086"], "linkTypes": ["ether"]}))
    path = write_config(tmp_path / "config.json", doc)
    argv = ["discover", "rdma-shared", "--config-file", path, "--host-root", str(node.root)]
    assert cli([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    (res,) = report["resources"]
    assert res["name"] == ROCE and len(res["devices"]) == 4
    assert res["devices"][0]["attributes"]["hcas"] == ROCE0
    reasons = {r["device"]: r["reason"] for r in report["not_advertised"]}
    assert "no RDMA device" in reasons[INTEL]
    assert "missing RDMA char device /dev/infiniband/uverbs1" in reasons[ROCE1]
    assert reasons[IB] == "linkTypes ['ether'] does not include 'infiniband'"
    assert cli(argv) == 0
    text = capsys.readouterr().out
    assert f"{INTEL} [{ROCE}]: no RDMA device" in text


async def test_demo_node_serves_and_allocates(
    fake_host: FakeHost, fake_kubelet: FakeKubelet, tmp_path: Path
) -> None:
    assert SPEC.demo is not None
    doc = SPEC.demo(fake_host)
    assert doc is not None
    path = write_config(tmp_path / "demo.json", dict(doc))
    assert cli(["validate", "rdma-shared", "--config-file", path]) == 0
    async with run_plugin(SPEC, fake_host, fake_kubelet, config=dict(doc)):
        for name, count in (("rdma/roce_shared", 63), ("rdma/ib_shared", 16)):
            devices = await fake_kubelet.wait_for_devices(name, healthy)
            assert len(devices) == count
            response = await fake_kubelet.allocate(name, [devices[0].ID])
            assert RDMA_CM in [d.host_path for d in response.devices]
    assert SPEC.demo(fake_host) == doc  # idempotent on a shared demo host
