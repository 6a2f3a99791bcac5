"""Start-up paths of the endpoint (issue 14): the socket-directory lock that orders instances'
registrations (issue 10) is shared by one instance's own resources, and the kubelet-directory
inotify watches start after Register."""

from __future__ import annotations

import asyncio
from pathlib import Path

from devplugin_core._endpoint import _directory_lock


async def test_one_instances_endpoints_share_the_lock_another_instance_waits(tmp_path) -> None:
    directory = str(tmp_path)
    order: list[str] = []
    inside = asyncio.Event()
    leave = asyncio.Event()

    async def endpoint(name: str, owner: str) -> None:
        async with _directory_lock(directory, 5.0, owner) as locked:
            assert locked
            order.append(f"{name} in")
            if name == "a2":
                inside.set()
            if owner == "A":
                await leave.wait()
            order.append(f"{name} out")

    a1 = asyncio.ensure_future(endpoint("a1", "A"))
    a2 = asyncio.ensure_future(endpoint("a2", "A"))
    await asyncio.wait_for(inside.wait(), 5)  # both of A's endpoints are in at once
    other = asyncio.ensure_future(endpoint("b", "B"))  # another instance: flock conflict
    await asyncio.sleep(0.2)
    assert "b in" not in order
    leave.set()
    await asyncio.wait_for(asyncio.gather(a1, a2, other), 5)
    assert order.index("b in") > max(order.index("a1 out"), order.index("a2 out"))


async def test_a_watch_started_without_inotify_wakes_subscribers_when_it_starts(tmp_path) -> None:
    """Start-up defers the inotify watches until every resource registered; starting them
    wakes every subscriber (a change made meanwhile is looked at), and from then on a change
    in the directory is seen at once, not at the next poll."""
    from devplugin_core._endpoint import KubeletWatch

    watch = KubeletWatch([str(tmp_path)], poll_interval=60.0)
    await watch.start(inotify=False)
    try:
        seen = watch.changed.generation
        watch.watch_now()
        assert watch.changed.generation > seen
        seen = watch.changed.generation
        (tmp_path / "kubelet.sock").write_text("")
        assert await watch.changed.wait(seen, timeout=5.0) > seen
    finally:
        await watch.stop()


async def test_register_backs_off_while_a_stale_kubelet_socket_refuses(fake_host):
    """A kubelet that is down leaves its socket file behind: Register is refused. The retries
    back off (0.25 s growing to 2 s, not four calls a second for as long as the kubelet is
    down), and a kubelet that comes back is registered with at once (its new socket wakes
    the endpoint)."""
    import socket
    import time

    from prometheus_client import CollectorRegistry

    from devplugin_core.testing import FakeKubelet, run_plugin, short_tempdir

    from .gadget import SPEC, add_gadgets, config

    kubelet_dir = Path(short_tempdir()) / "device-plugins"  # unix socket paths are short
    kubelet_dir.mkdir()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(kubelet_dir / "kubelet.sock"))  # bound, never listening: refused
    stale.close()
    add_gadgets(fake_host, 1)
    registry = CollectorRegistry()
    async with run_plugin(
        SPEC, fake_host, str(kubelet_dir), config=config("example.com/gadget"), registry=registry
    ):
        await asyncio.sleep(4.0)
        refused = registry.get_sample_value(
            "devplugin_registrations_total",
            {"resource": "example.com/gadget", "result": "error"},
        )
        assert refused is not None and 2 <= refused <= 11  # 16 at a steady 0.25 s
        kubelet = FakeKubelet(str(kubelet_dir))
        started = time.monotonic()
        await kubelet.start()
        try:
            await kubelet.wait_for_registration("example.com/gadget", timeout=5)
            assert time.monotonic() - started < 1.5  # woken by the new socket, not the 2 s
        finally:
            await kubelet.stop()
