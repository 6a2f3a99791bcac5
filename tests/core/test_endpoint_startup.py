"""Start-up paths of the endpoint (issue 14): the socket-directory lock that orders instances'
registrations (issue 10) is shared by one instance's own resources, and the kubelet-directory
inotify watches start after Register."""

from __future__ import annotations

import asyncio

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
