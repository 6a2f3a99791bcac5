"""Two instances of a plugin on one node, as in a DaemonSet rolling update with surge.

The newcomer binds its own sockets (never the live ones of the old instance, even when both
would pick the same name) and registers; the kubelet drops the old connection. The old
instance must not take the resource back (two instances re-registering in turn would flap the
node's capacity and leak kubelet clients, kubernetes #124716): it stands by. On SIGTERM it
leaves cleanly: exit 0, its own sockets removed, the newcomer's untouched and still streaming.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from devplugin_core.testing import FakeKubelet

from .cases import Case
from .helpers import (
    HEALTHY,
    Node,
    PluginProcess,
    our_sockets,
    processes,
    serve,
    wait_registered,
)


async def served_by(kubelet: FakeKubelet, case: Case, which: Callable[[str], bool]) -> None:
    """Wait until the kubelet streams every resource from an endpoint ``which`` accepts (a
    registration is recorded before the kubelet has dialled back and swapped connections)."""

    def ok() -> bool:
        conns = [kubelet.connections.get(r) for r in case.resources]
        return all(c is not None and c.history and which(c.endpoint) for c in conns)

    await kubelet.wait_until(
        ok, timeout=30, what="the kubelet streaming from the expected instance"
    )


def _inodes(directory: str) -> dict[str, int]:
    return {name: os.stat(os.path.join(directory, name)).st_ino for name in our_sockets(directory)}


async def test_newcomer_never_steals_and_old_instance_stands_by(
    node: Node, fake_kubelet: FakeKubelet
) -> None:
    case = node.case
    directory = fake_kubelet.directory
    # Same instance id: the newcomer's first choice of socket name is the old one's live socket.
    async with serve(node, fake_kubelet, instance="0ld1n5") as old:
        await wait_registered(fake_kubelet, case, 1)
        old_sockets = _inodes(directory)
        assert sorted(old_sockets) == sorted(e.name for e in old.endpoints.values())
        async with serve(node, fake_kubelet, instance="0ld1n5") as new:
            await wait_registered(fake_kubelet, case, 2)
            new_names = {r: e.name for r, e in new.endpoints.items()}
            await served_by(fake_kubelet, case, lambda endpoint: endpoint in new_names.values())
            assert not set(new_names.values()) & set(old_sockets)
            after = _inodes(directory)
            assert {n: after[n] for n in old_sockets} == old_sockets  # untouched
            # the kubelet dropped the old connections; the old instance stands by
            await fake_kubelet.wait_until(
                lambda: not any(rt.registered for rt in old.resources.values()),
                timeout=20,
                what="the old instance standing by",
            )
            for resource in case.resources:
                assert fake_kubelet.registration_count(resource) == 2
                assert fake_kubelet.connections[resource].endpoint == new_names[resource]
            assert old._failed is None and new._failed is None
        # the newcomer went away (its sockets with it): the old instance takes over again
        await wait_registered(fake_kubelet, case, 3)
        await served_by(fake_kubelet, case, lambda endpoint: endpoint in old_sockets)
        for resource in case.resources:
            assert fake_kubelet.connections[resource].endpoint in old_sockets
    assert our_sockets(directory) == []


async def test_rolling_update_with_real_processes(
    node: Node, fake_kubelet: FakeKubelet, tmp_path: Path
) -> None:
    case = node.case
    directory = fake_kubelet.directory
    old = PluginProcess(node, directory, tmp_path / "old.log", tmp_path / "old.json").start()
    new = PluginProcess(node, directory, tmp_path / "new.log", tmp_path / "new.json")
    with processes(old, new):
        await wait_registered(fake_kubelet, case, 1, timeout=60)
        old_sockets = _inodes(directory)
        assert len(old_sockets) == len(case.resources)

        new.start()
        await wait_registered(fake_kubelet, case, 2, timeout=60)
        await served_by(fake_kubelet, case, lambda endpoint: endpoint not in old_sockets)
        new_sockets = {n: i for n, i in _inodes(directory).items() if n not in old_sockets}
        assert len(new_sockets) == len(case.resources)
        assert {n: _inodes(directory)[n] for n in old_sockets} == old_sockets
        for resource in case.resources:
            assert fake_kubelet.connections[resource].endpoint in new_sockets
        await fake_kubelet.wait_until(
            lambda: old.text().count("standing by until it goes away") >= len(case.resources),
            timeout=30,
            what=f"the old instance standing by (log: {old.log})",
        )

        assert await old.terminate() == 0, old.text()
        assert _inodes(directory) == new_sockets  # old sockets gone, the newcomer's untouched
        log = old.text()
        assert "Traceback" not in log, log
        assert "received SIGTERM, shutting down" in log
        for resource, count in case.expected.items():
            conn = fake_kubelet.connections[resource]
            assert not conn.ended and conn.endpoint in new_sockets
            assert fake_kubelet.registration_count(resource) == 2
            assert sum(d.health == HEALTHY for d in conn.devices) == count

        assert await new.terminate() == 0, new.text()
        assert our_sockets(directory) == []
