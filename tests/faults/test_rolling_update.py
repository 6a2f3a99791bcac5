"""Two instances of a plugin on one node: a DaemonSet rolling update with ``maxSurge``, a
rolled-back release, an operator's manual ``devplugin run``.

Run against both kubelet client models (``FakeKubelet(clients=...)``): Kubernetes 1.32, where
the end of *any* stream of a resource disconnects the current plugin, and newer kubelets that
track a client per socket. While both instances live, the newer one is the kubelet's endpoint
and the older one stands by sending no ListAndWatch updates; whichever exits (SIGTERM, or a
SIGKILL that leaves its sockets behind), within 2 s the survivor is the endpoint again, every
healthy device is Healthy and Allocate works.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from devplugin_core._runtime import PluginRuntime
from devplugin_core.testing import FakeKubelet

from .cases import Case
from .helpers import HEALTHY, Node, PluginProcess, our_sockets, processes, serve

#: the bound the issue sets for the survivor to be the kubelet's endpoint again
TAKEOVER = 2.0
ROLLING_UPDATES = 20


def names(runtime: PluginRuntime[Any]) -> set[str]:
    return {e.name for e in runtime.endpoints.values()}


async def serving(kubelet: FakeKubelet, case: Case, sockets: set[str], timeout: float) -> float:
    """Wait until every resource's endpoint is one of ``sockets`` with all its devices Healthy,
    then check Allocate goes through (with the kubelet's own checks); returns the wait."""
    started = time.monotonic()

    def ok() -> bool:
        for resource, count in case.expected.items():
            conn = kubelet.connections.get(resource)
            if conn is None or conn.endpoint not in sockets or kubelet.healthy(resource) != count:
                return False
        return True

    await kubelet.wait_until(ok, timeout, f"the kubelet served by {sorted(sockets)}")
    took = time.monotonic() - started
    for resource in case.resources:
        device = next(i for i, h in kubelet.health(resource).items() if h == HEALTHY)
        await kubelet.allocate(resource, [device], kubelet_checks=True)
    return took


async def takes_over(kubelet: FakeKubelet, case: Case, sockets: set[str]) -> float:
    took = await serving(kubelet, case, sockets, timeout=TAKEOVER + 10)
    print(f"{case.name} [{kubelet.client_model}]: the survivor took over in {took:.3f}s")
    assert took <= TAKEOVER, f"the survivor took {took:.2f}s to be the kubelet's endpoint"
    return took


async def standing_by(kubelet: FakeKubelet, runtime: PluginRuntime[Any]) -> None:
    await kubelet.wait_until(
        lambda: all(e.standing_by for e in runtime.endpoints.values()),
        timeout=20,
        what="the older instance standing by",
    )


@contextlib.asynccontextmanager
async def instances(node: Node, kubelet: FakeKubelet) -> AsyncIterator[list[Any]]:
    """Start and stop in-process instances at will; whatever still runs stops at the end."""
    stacks: list[contextlib.AsyncExitStack] = []

    async def start() -> tuple[PluginRuntime[Any], contextlib.AsyncExitStack]:
        stack = contextlib.AsyncExitStack()
        stacks.append(stack)
        runtime = await stack.enter_async_context(serve(node, kubelet))
        return runtime, stack

    try:
        yield [start]
    finally:
        for stack in stacks:
            await stack.aclose()


async def test_newer_instance_is_the_endpoint_older_one_sends_nothing(
    node: Node, kubelet: FakeKubelet
) -> None:
    case = node.case
    async with instances(node, kubelet) as (start,):
        old, _ = await start()
        await serving(kubelet, case, names(old), 30)
        new, _ = await start()
        await serving(kubelet, case, names(new), 30)
        await standing_by(kubelet, old)
        assert not set(names(new)) & set(names(old))
        assert set(our_sockets(kubelet.directory)) == names(old) | names(new)
        older = [c for c in kubelet.running if c.endpoint in names(old)]
        sent = {id(c): len(c.history) for c in older}
        fault = case.fault
        fault.inject(node.host)
        try:
            await kubelet.wait_until(
                lambda: (
                    {kubelet.health(fault.resource)[d] for d in fault.affected} == {"Unhealthy"}
                ),
                timeout=30,
                what="the fault reported by the newer instance",
            )
            assert {id(c): len(c.history) for c in older} == sent  # not a word from the older
            assert kubelet.connections[fault.resource].endpoint in names(new)
        finally:
            fault.heal(node.host)
        await serving(kubelet, case, names(new), 30)
        assert old._failed is None and new._failed is None


@pytest.mark.parametrize("exits", ["newer", "older"])
async def test_survivor_takes_over(node: Node, kubelet: FakeKubelet, exits: str) -> None:
    case = node.case
    async with instances(node, kubelet) as (start,):
        old, old_stack = await start()
        await serving(kubelet, case, names(old), 30)
        new, new_stack = await start()
        await serving(kubelet, case, names(new), 30)
        await standing_by(kubelet, old)
        leaving, staying = (new_stack, old) if exits == "newer" else (old_stack, new)
        await leaving.aclose()  # what SIGTERM does
        await takes_over(kubelet, case, names(staying))
        assert set(our_sockets(kubelet.directory)) == names(staying)
        assert staying._failed is None


async def test_alternating_rolling_updates(node: Node, kubelet: FakeKubelet) -> None:
    """Each round starts a newer instance; even rounds the older one exits (a rolling update),
    odd rounds the newer one does (a rolled-back release)."""
    case = node.case
    async with instances(node, kubelet) as (start,):
        current, current_stack = await start()
        await serving(kubelet, case, names(current), 30)
        worst = 0.0
        for n in range(ROLLING_UPDATES):
            new, new_stack = await start()
            await serving(kubelet, case, names(new), 30)
            await standing_by(kubelet, current)
            if n % 2 == 0:
                await current_stack.aclose()
                current, current_stack = new, new_stack
            else:
                await new_stack.aclose()
            worst = max(worst, await takes_over(kubelet, case, names(current)))
            assert set(our_sockets(kubelet.directory)) == names(current)
        print(f"{case.name} [{kubelet.client_model}]: worst take-over {worst:.3f}s")


async def test_instances_started_together(node: Node, kubelet: FakeKubelet) -> None:
    """Two instances started 50 ms apart: the registration order must still be theirs (the
    newer registers last), or the kubelet would keep the one that stands by."""
    case = node.case
    async with instances(node, kubelet) as (start,):

        async def later() -> tuple[PluginRuntime[Any], contextlib.AsyncExitStack]:
            await asyncio.sleep(0.05)
            return await start()

        (old, old_stack), (new, _) = await asyncio.gather(start(), later())
        assert old.endpoint_config.started_ns < new.endpoint_config.started_ns
        await serving(kubelet, case, names(new), 30)
        await standing_by(kubelet, old)
        await old_stack.aclose()
        await takes_over(kubelet, case, names(new))


def _dead_sockets(directory: str, sockets: set[str]) -> set[str]:
    from devplugin_core._endpoint import socket_is_live

    return {n for n in sockets if not socket_is_live(os.path.join(directory, n))}


async def test_real_processes_sigterm_either_and_sigkill_newer(
    node: Node, kubelet: FakeKubelet, tmp_path: Path
) -> None:
    """``devplugin run`` processes: the newer one SIGTERMed (exit 0, its sockets removed, the
    older one takes over), then a newer one again with the older one SIGTERMed, then a newer
    one SIGKILLed (its sockets stay behind, dead; the survivor takes over and removes them)."""
    case = node.case
    directory = kubelet.directory

    def proc(name: str) -> PluginProcess:
        return PluginProcess(node, directory, tmp_path / f"{name}.log", tmp_path / f"{name}.json")

    first, second, third, fourth = proc("first"), proc("second"), proc("third"), proc("fourth")

    async def start(p: PluginProcess, before: set[str]) -> set[str]:
        p.start()
        await kubelet.wait_until(
            lambda: len(set(our_sockets(directory)) - before) == len(case.resources),
            timeout=60,
            what=f"the sockets of a new instance (log: {p.log})",
        )
        sockets = set(our_sockets(directory)) - before
        await serving(kubelet, case, sockets, 60)
        return sockets

    with processes(first, second, third, fourth):
        first_sockets = await start(first, set())
        await start(second, first_sockets)
        await kubelet.wait_until(
            lambda: first.text().count("standing by until it goes away") >= len(case.resources),
            timeout=30,
            what=f"the older instance standing by (log: {first.log})",
        )
        assert await second.terminate() == 0, second.text()
        await takes_over(kubelet, case, first_sockets)
        assert set(our_sockets(directory)) == first_sockets
        assert "Traceback" not in second.text(), second.text()

        third_sockets = await start(third, first_sockets)
        assert await first.terminate() == 0, first.text()
        await takes_over(kubelet, case, third_sockets)
        assert set(our_sockets(directory)) == third_sockets

        fourth_sockets = await start(fourth, third_sockets)
        assert fourth.process is not None
        fourth.kill()  # SIGKILL: no clean-up, the sockets stay
        assert _dead_sockets(directory, fourth_sockets) == fourth_sockets
        await takes_over(kubelet, case, third_sockets)
        # the survivor re-registered after sweeping the dead instance's sockets
        await kubelet.wait_until(
            lambda: set(our_sockets(directory)) == third_sockets,
            timeout=10,
            what="the dead instance's sockets removed",
        )
        assert await third.terminate() == 0, third.text()
        assert our_sockets(directory) == []
