"""Issue 11: a hot-removed HCA never fails Allocate of a shared resource that has others left.

Setup as reported from a real node: ``hca_shared_devices_a`` spans every ConnectX HCA
(``vendors``), ``hca_pf1`` only HCA 1 (``ifNames``). HCA 1 is hot-removed the way the kernel
does it (FakeHost.remove_pci: PCI function, class links and ``/dev/infiniband`` nodes).
"""

from __future__ import annotations

import asyncio
import os

import grpc
import pytest
from devplugin_plugins.rdma_shared import SPEC as SPEC_UNDER_TEST

from devplugin_core.testing import FakeHost, FakeKubelet, run_plugin

from .helpers import IB, IBDEV, NETDEV, NODES, RDMA_CM, ROCE0, ROCE1, config, resource

SHARED, PF1 = "rdma/hca_shared_devices_a", "rdma/hca_pf1"


def test_fake_hot_removal_matches_the_kernels_layout(node: FakeHost) -> None:
    """After ``device_del()`` of HCA 1 nothing of it is left in sysfs or /dev; the others and
    ``rdma_cm`` (a misc device of rdma_ucm) stay."""
    node.remove_pci(ROCE1)
    gone = [
        f"/sys/bus/pci/devices/{ROCE1}",
        f"/sys/class/net/{NETDEV[ROCE1]}",
        f"/sys/class/infiniband/{IBDEV[ROCE1]}",
        "/sys/class/infiniband_verbs/uverbs1",
        "/sys/class/infiniband_mad/umad1",
        *NODES[ROCE1],
    ]
    assert [p for p in gone if os.path.lexists(node.path(p))] == []
    kept = [
        f"/sys/bus/pci/devices/{ROCE0}",
        f"/sys/class/infiniband/{IBDEV[ROCE0]}",
        "/sys/class/infiniband_verbs/uverbs0",
        "/sys/class/infiniband_mad/issm2",
        *NODES[ROCE0],
        *NODES[IB],
        RDMA_CM,
    ]
    assert [p for p in kept if not node.path(p).exists()] == []


async def test_allocate_of_a_shared_slot_never_fails_during_a_hot_removal(
    node: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    doc = config(
        resource("hca_shared_devices_a", selectors={"vendors": ["15b3"], "deviceIDs": ["1017"]}),
        resource("hca_pf1", selectors={"ifNames": [NETDEV[ROCE1]]}),
        periodicUpdateInterval=300,  # only a triggered rescan can pick the removal up quickly
        healthCheckInterval=0.5,
    )
    async with run_plugin(SPEC_UNDER_TEST, node, fake_kubelet, config=doc) as runtime:
        await fake_kubelet.wait_for_devices(SHARED, lambda d: d[0].health == "Healthy")
        await fake_kubelet.wait_for_devices(PF1, lambda d: d[0].health == "Healthy")
        failures: list[str] = []
        answers: list[list[str]] = []
        stop = asyncio.Event()

        async def allocate_forever() -> None:
            while not stop.is_set():
                try:
                    reply = await fake_kubelet.allocate(SHARED, ["0"])
                    answers.append([d.host_path for d in reply.devices])
                except grpc.aio.AioRpcError as err:
                    failures.append(err.details() or "")
                await asyncio.sleep(0.005)

        task = asyncio.ensure_future(allocate_forever())
        await fake_kubelet.wait_until(lambda: len(answers) >= 3, 10, "allocations")
        node.remove_pci(ROCE1)
        # the rescan asked for by the first Allocate (or health check) that noticed: the slots
        # of the shared resource no longer name HCA 1, well before any periodic rescan
        await fake_kubelet.wait_until(
            lambda: all(ROCE1 not in p.name for p in runtime.resources[SHARED].devices[0].parts),
            3,
            "rescan without HCA 1",
        )
        count = len(answers)
        await fake_kubelet.wait_until(lambda: len(answers) >= count + 3, 10, "more allocations")
        stop.set()
        await task
        assert failures == []
        assert answers[0] == [*NODES[ROCE0], *NODES[ROCE1], RDMA_CM]
        assert answers[-1] == [*NODES[ROCE0], RDMA_CM]  # the pod gets the HCA that is left
        triggered = runtime.registry.get_sample_value("devplugin_rescans_triggered_total")
        assert triggered is not None and triggered >= 1
        # hca_pf1 had only HCA 1: Unhealthy, then (after the rescan) no slots at all
        await fake_kubelet.wait_for_devices(PF1, lambda d: not d or d[0].health == "Unhealthy")


async def test_an_allocate_racing_the_removal_leaves_the_hca_out_and_says_so(
    node: FakeHost, fake_kubelet: FakeKubelet, caplog: pytest.LogCaptureFixture
) -> None:
    doc = config(
        resource("hca_shared_devices_a", selectors={"vendors": ["15b3"], "deviceIDs": ["1017"]}),
        periodicUpdateInterval=300,
        healthCheckInterval=300,  # nothing but this Allocate notices the removal
    )
    async with run_plugin(SPEC_UNDER_TEST, node, fake_kubelet, config=doc) as runtime:
        await fake_kubelet.wait_for_devices(SHARED, lambda d: d[0].health == "Healthy")
        node.remove_pci(ROCE1)
        reply = await fake_kubelet.allocate(SHARED, ["0"])
        assert [d.host_path for d in reply.devices] == [*NODES[ROCE0], RDMA_CM]
        omitted = runtime.registry.get_sample_value(
            "devplugin_allocate_parts_omitted_total",
            {"resource": SHARED, "part": ROCE1, "reason": "vanished"},
        )
        assert omitted == 1
        assert any(
            ROCE1 in r.getMessage() and "leaves out" in r.getMessage() for r in caplog.records
        )
        await fake_kubelet.wait_until(
            lambda: len(runtime.resources[SHARED].devices[0].parts) == 1, 3, "rescan"
        )
