"""Kubelet restarts and kubelet-side stream cancellation, with each real plugin serving.

A kubelet restart (``FakeKubelet.restart``) is what the real one does: every connection
dropped, every socket in the directory deleted, ``kubelet.sock`` recreated with a new inode.
After each one every resource must register again and stream its full device list, with one
server (one socket) per resource and nothing left behind; file descriptors, threads and asyncio
tasks must stop growing after a warm-up. ``make soak`` runs the same test with 100 restarts.
"""

from __future__ import annotations

import pytest

from devplugin_core.testing import FakeKubelet

from .conftest import RESTARTS
from .helpers import Node, Usage, floor, our_sockets, serve, usage, wait_registered, within

WARMUP = 5  # restarts before the baseline: pools and caches reach their working size


@pytest.mark.soak
async def test_consecutive_kubelet_restarts(node: Node, fake_kubelet: FakeKubelet) -> None:
    case = node.case
    resources = case.resources
    # sriov-net with its production link monitor (a netlink thread) to watch thread counts
    overrides = {"link_monitor": "netlink"} if case.name == "sriov-net" else {}
    async with serve(node, fake_kubelet, plugin_options=overrides) as runtime:
        await wait_registered(fake_kubelet, case, 1)
        await fake_kubelet.wait_until(lambda: case.settled(runtime), what="the plugin settled")
        samples: list[Usage] = []
        for n in range(1, RESTARTS + 1):
            await fake_kubelet.restart()
            await wait_registered(fake_kubelet, case, n + 1)
            sockets = our_sockets(fake_kubelet.directory)
            # one server per resource: one socket each, and it is the one the kubelet uses
            assert len(sockets) == len(resources), sockets
            assert sorted(fake_kubelet.connections[r].endpoint for r in resources) == sockets
            assert sorted(e.name for e in runtime.endpoints.values()) == sockets
            if WARMUP <= n < WARMUP + 5:
                samples.append(usage())
        # A leak grows with every restart; a channel still closing is gone a moment later.
        baseline = floor(samples)
        await fake_kubelet.wait_until(
            lambda: within(usage(), baseline),
            timeout=10,
            what=f"fds/threads/tasks back to {baseline} after {RESTARTS} restarts (now {usage()})",
        )
        for resource in resources:
            assert fake_kubelet.registration_count(resource) == RESTARTS + 1, resource
        assert runtime._failed is None
    assert our_sockets(fake_kubelet.directory) == []  # every socket removed on stop


async def test_stream_cancelled_by_the_kubelet_reregisters(
    node: Node, fake_kubelet: FakeKubelet
) -> None:
    case = node.case
    first, *others = case.resources
    async with serve(node, fake_kubelet) as runtime:
        await wait_registered(fake_kubelet, case, 1)
        await fake_kubelet.cancel_stream(first)  # the kubelet never re-dials: we must register
        await fake_kubelet.wait_for_registration(first, 2, timeout=20)
        await fake_kubelet.wait_for_devices(first, lambda d: len(d) == case.expected[first])
        for resource in others:  # the other resources' streams were left alone
            assert fake_kubelet.registration_count(resource) == 1
            assert not fake_kubelet.connections[resource].ended
        for resource in others:
            await fake_kubelet.cancel_stream(resource)
        for resource in others:
            await fake_kubelet.wait_for_registration(resource, 2, timeout=20)
        await wait_registered(fake_kubelet, case, 1)
        assert len(our_sockets(fake_kubelet.directory)) == len(case.resources)
        assert runtime._failed is None
