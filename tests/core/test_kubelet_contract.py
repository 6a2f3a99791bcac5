"""The kubelet contract, through real gRPC channels on unix sockets (FakeKubelet)."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import time

import grpc
import pytest

from devplugin_core.testing import FakeKubelet, run_plugin
from devplugin_core.toolkit import extended_resource_name_error

from .gadget import PRE_START_CALLS, SPEC, add_gadgets, config

RES = "example.com/gadget"


def _sockets(directory: str) -> list[str]:
    return sorted(
        n
        for n in os.listdir(directory)
        if stat.S_ISSOCK(os.lstat(os.path.join(directory, n)).st_mode)
    )


async def test_serves_before_register_and_lists_devices(fake_host, fake_kubelet):
    ids = add_gadgets(fake_host, 4)
    async with run_plugin(SPEC, fake_host, fake_kubelet, config=config(RES)):
        conn = await fake_kubelet.wait_for_registration(RES)
        reg = fake_kubelet.registrations[0]
        assert reg.version == "v1beta1"
        assert reg.resource == RES
        assert "/" not in reg.endpoint and reg.endpoint.endswith(".sock")
        assert conn.options.get_preferred_allocation_available
        assert not conn.options.pre_start_required
        devices = await fake_kubelet.wait_for_devices(RES, lambda d: len(d) == 4)
        assert [d.ID for d in devices] == ids
        assert {d.health for d in devices} == {"Healthy"}
        assert [d.topology.nodes[0].ID for d in devices] == [0, 1, 0, 1]


async def test_topology_omitted_when_numa_unknown(fake_host, fake_kubelet):
    fake_host.add_pci(
        "0000:5e:00.0",
        vendor="abcd",
        device="0001",
        class_code=0x120000,
        driver="gadget",
        numa_node=None,
    )
    fake_host.add_dev("/dev/gadget0")
    async with run_plugin(SPEC, fake_host, fake_kubelet, config=config(RES)):
        devices = await fake_kubelet.wait_for_devices(RES, lambda d: len(d) == 1)
        assert not devices[0].HasField("topology")
        # the serialized message has no field 3 at all (not present-but-empty)
        assert b"\x1a" not in devices[0].SerializeToString()


async def test_allocate_returns_edits(fake_host, fake_kubelet):
    ids = add_gadgets(fake_host, 2)
    async with run_plugin(SPEC, fake_host, fake_kubelet, config=config(RES)):
        await fake_kubelet.wait_for_devices(RES, lambda d: len(d) == 2)
        reply = await fake_kubelet.allocate(RES, ids)
        assert [(d.host_path, d.container_path, d.permissions) for d in reply.devices] == [
            ("/dev/gadget0", "/dev/gadget0", "rw"),
            ("/dev/gadget1", "/dev/gadget1", "rw"),
        ]
        assert dict(reply.envs) == {"GADGETS": ",".join(ids)}


async def test_allocate_unknown_ids_is_invalid_argument(fake_host, fake_kubelet):
    add_gadgets(fake_host, 1)
    async with run_plugin(SPEC, fake_host, fake_kubelet, config=config(RES)):
        await fake_kubelet.wait_for_devices(RES, lambda d: len(d) == 1)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await fake_kubelet.allocate(RES, ["0000:5e:00.0", "nope-1", "nope-2"])
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "nope-1" in err.value.details() and "nope-2" in err.value.details()


async def test_allocate_unhealthy_is_failed_precondition(fake_host, fake_kubelet):
    ids = add_gadgets(fake_host, 2)
    fake_host.write(f"/sys/bus/pci/devices/{ids[1]}/gadget_ok", "0\n")
    async with run_plugin(SPEC, fake_host, fake_kubelet, config=config(RES)):
        await fake_kubelet.wait_for_devices(
            RES, lambda d: [x.health for x in d] == ["Healthy", "Unhealthy"]
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await fake_kubelet.allocate(RES, ids)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert ids[1] in err.value.details()


async def test_allocate_with_no_container_requests_is_never_empty(fake_host, fake_kubelet):
    from devplugin_core._proto import deviceplugin_v1beta1_pb2 as pb

    add_gadgets(fake_host, 1)
    async with run_plugin(SPEC, fake_host, fake_kubelet, config=config(RES)):
        conn = await fake_kubelet.wait_for_registration(RES)
        reply = await conn.stub.Allocate(pb.AllocateRequest(), timeout=5)
        assert len(reply.container_responses) == 1


async def test_preferred_allocation_packs_numa_and_honours_must_include(fake_host, fake_kubelet):
    ids = add_gadgets(fake_host, 4)  # NUMA 0: .0 .2   NUMA 1: .1 .3
    async with run_plugin(SPEC, fake_host, fake_kubelet, config=config(RES)):
        await fake_kubelet.wait_for_devices(RES, lambda d: len(d) == 4)
        assert await fake_kubelet.preferred(RES, ids, [ids[1]], 2) == [ids[1], ids[3]]
        assert await fake_kubelet.preferred(RES, ids, [], 2) in ([ids[0], ids[2]], [ids[1], ids[3]])
        # unknown IDs never come back, and there is never an error
        assert await fake_kubelet.preferred(RES, ["bogus"], [], 1) == []


async def test_prestart_advertised_and_called_only_when_implemented(fake_host, fake_kubelet):
    ids = add_gadgets(fake_host, 1)
    doc = {"resources": [{"name": RES, "preStart": True}, {"name": "example.com/plain"}]}
    PRE_START_CALLS.clear()
    async with run_plugin(SPEC, fake_host, fake_kubelet, config=doc):
        conn = await fake_kubelet.wait_for_registration(RES)
        plain = await fake_kubelet.wait_for_registration("example.com/plain")
        assert conn.options.pre_start_required
        assert not plain.options.pre_start_required
        await fake_kubelet.pre_start(RES, ids)
        assert [tuple(ids)] == PRE_START_CALLS
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await fake_kubelet.pre_start(RES, ["nope"])
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_one_socket_per_resource(fake_host, fake_kubelet):
    add_gadgets(fake_host, 2)
    doc = config("example.com/a", "example.com/b", "example.com/c")
    async with run_plugin(SPEC, fake_host, fake_kubelet, config=doc) as runtime:
        for name in ("example.com/a", "example.com/b", "example.com/c"):
            await fake_kubelet.wait_for_registration(name)
        ours = [s for s in _sockets(fake_kubelet.directory) if s != "kubelet.sock"]
        assert len(ours) == 3 and len({r.endpoint for r in fake_kubelet.registrations}) == 3
        # the kubelet records the registration before the plugin's Register call returns
        await fake_kubelet.wait_until(lambda: runtime.ready()[0], what="ready")
    assert _sockets(fake_kubelet.directory) == ["kubelet.sock"]  # removed on stop


async def test_reregisters_after_kubelet_restart(fake_host, fake_kubelet):
    add_gadgets(fake_host, 2)
    async with run_plugin(SPEC, fake_host, fake_kubelet, config=config(RES)) as runtime:
        await fake_kubelet.wait_for_registration(RES)
        for n in range(2, 5):
            await fake_kubelet.restart()
            await fake_kubelet.wait_for_registration(RES, count=n)
            await fake_kubelet.wait_for_devices(RES, lambda d: len(d) == 2)
        restarts = (
            runtime.registry.get_sample_value(
                "devplugin_kubelet_restarts_detected_total", {"reason": "socket_removed"}
            )
            or 0
        )
        restarts += (
            runtime.registry.get_sample_value(
                "devplugin_kubelet_restarts_detected_total", {"reason": "kubelet_restarted"}
            )
            or 0
        )
        assert restarts >= 3
        assert len([s for s in _sockets(fake_kubelet.directory) if s != "kubelet.sock"]) == 1


async def test_reregisters_when_stream_is_cancelled(fake_host, fake_kubelet):
    add_gadgets(fake_host, 1)
    async with run_plugin(SPEC, fake_host, fake_kubelet, config=config(RES), stream_grace=0.3):
        await fake_kubelet.wait_for_registration(RES)
        await fake_kubelet.cancel_stream(RES)
        conn = await fake_kubelet.wait_for_registration(RES, count=2)
        assert not conn.ended


async def test_registration_waits_for_kubelet_socket(fake_host, kubelet_dir):
    add_gadgets(fake_host, 1)
    kubelet = FakeKubelet(kubelet_dir)
    async with run_plugin(SPEC, fake_host, kubelet_dir, config=config(RES)) as runtime:
        await asyncio.sleep(0)  # the plugin serves and waits; the kubelet is not up yet
        assert not runtime.ready()[0]
        await kubelet.start()
        try:
            await kubelet.wait_for_registration(RES, timeout=15)
            assert kubelet.registration_count(RES) == 1  # first kubelet.sock is not a "restart"
        finally:
            await kubelet.stop()


async def test_stale_socket_is_removed_and_live_socket_never_stolen(fake_host, fake_kubelet):
    from devplugin_core._endpoint import socket_name

    add_gadgets(fake_host, 1)
    instance = "abc123"
    name = socket_name(RES, instance)
    stale = os.path.join(fake_kubelet.directory, name)
    s = socket.socket(socket.AF_UNIX)
    s.bind(stale)
    s.close()  # a socket file nobody listens on: stale
    async with run_plugin(SPEC, fake_host, fake_kubelet, config=config(RES), instance=instance):
        await fake_kubelet.wait_for_registration(RES)
        assert fake_kubelet.registrations[-1].endpoint == name

    live = socket.socket(socket.AF_UNIX)
    live.bind(stale)
    live.listen(1)  # now somebody else serves on exactly our name
    try:
        before = os.stat(stale).st_ino
        async with run_plugin(SPEC, fake_host, fake_kubelet, config=config(RES), instance=instance):
            await fake_kubelet.wait_for_registration(RES, count=2)
            assert fake_kubelet.registrations[-1].endpoint != name
            assert os.stat(stale).st_ino == before  # untouched
        assert os.path.exists(stale)
    finally:
        live.close()


async def test_two_instances_do_not_steal_each_other(fake_host, fake_kubelet):
    add_gadgets(fake_host, 1)
    async with run_plugin(SPEC, fake_host, fake_kubelet, config=config(RES)) as old:
        await fake_kubelet.wait_for_registration(RES)
        old_socket = old.endpoints[RES].path
        async with run_plugin(SPEC, fake_host, fake_kubelet, config=config(RES)) as new:
            await fake_kubelet.wait_for_registration(RES, count=2)
            assert new.endpoints[RES].path != old_socket
            assert os.path.exists(old_socket)
        # the newcomer left the old instance's socket alone (the old one may have restarted its
        # server under a new name when it took the resource back)
        await fake_kubelet.wait_until(
            lambda: os.path.exists(old.endpoints[RES].path), 5, "the old instance serving"
        )
        old_socket = old.endpoints[RES].path
    assert not os.path.exists(old_socket)


async def test_kubelet_refusal_is_retried_then_fatal(fake_host, fake_kubelet):
    from devplugin_core._endpoint import EndpointConfig

    add_gadgets(fake_host, 1)
    fake_kubelet.refuse[RES] = "resource name already taken"
    async with run_plugin(SPEC, fake_host, fake_kubelet, config=config(RES)) as runtime:
        endpoint = runtime.endpoints[RES]
        endpoint.config = EndpointConfig(**{**endpoint.config.__dict__, "max_refusals": 1})
        await fake_kubelet.wait_until(lambda: runtime._failed is not None, 20, "fatal error")
        assert "already taken" in str(runtime._failed)


async def test_watcher_mode_registration(fake_host, kubelet_dir):
    add_gadgets(fake_host, 2)
    kubelet = FakeKubelet(kubelet_dir, mode="watcher")
    async with kubelet, run_plugin(SPEC, fake_host, kubelet, config=config(RES)) as runtime:
        await kubelet.wait_for_devices(RES, lambda d: len(d) == 2)
        assert runtime.mode == "watcher"
        await kubelet.wait_until(lambda: runtime.ready()[0], 10, "ready")
        assert any(n.startswith("devplugin-") for n in os.listdir(kubelet.registry_dir))
        await kubelet.restart()  # wipes plugins_registry sockets too
        await kubelet.wait_for_registration(RES, count=2, timeout=15)


def test_socket_names_stay_short_and_distinct():
    from devplugin_core._endpoint import socket_name

    longest = "a" * 63 + "." + "b" * 180 + "/" + "n" * 63
    assert extended_resource_name_error(longest) is None
    name = socket_name(longest, "abcdef")
    assert len("/var/lib/kubelet/plugins_registry/" + name) < 100
    assert name.startswith("devplugin-") and name.endswith("-abcdef.sock")
    assert socket_name("x.com/aaaaaaaaaaaaaaaaaaaaaaaaaaaa1", "i") != socket_name(
        "x.com/aaaaaaaaaaaaaaaaaaaaaaaaaaaa2", "i"
    )
    deep = "/tmp/" + "d" * 60
    assert len(f"{deep}/{socket_name(longest, 'abcdef', deep)}") <= 100


async def test_restarts_leak_no_tasks_fds_or_threads(fake_host, fake_kubelet):
    import threading

    add_gadgets(fake_host, 2)

    def counts() -> tuple[int, int, int]:
        return (
            len(os.listdir("/proc/self/fd")),
            threading.active_count(),
            len(asyncio.all_tasks()),
        )

    async with run_plugin(SPEC, fake_host, fake_kubelet, config=config(RES, "example.com/b")):
        await fake_kubelet.wait_for_registration(RES)
        await fake_kubelet.wait_for_registration("example.com/b")
        seen = []
        for n in range(2, 14):
            await fake_kubelet.restart()
            await fake_kubelet.wait_for_registration(RES, count=n)
            await fake_kubelet.wait_for_registration("example.com/b", count=n)
            if n in (5, 13):
                seen.append(counts())
        # Eight restarts between the samples: a per-restart leak adds >= 8. A little slack
        # absorbs what is created lazily (a pool thread, a gRPC poller fd) on some runs.
        slack = (4, 2, 2)
        grown = [after - before for before, after in zip(seen[0], seen[1], strict=True)]
        assert all(g <= s for g, s in zip(grown, slack, strict=True)), (
            f"fds/threads/tasks grew: {seen}"
        )


def _bind(path: str, *, listen: bool = False, age: float = 10.0) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    if listen:
        s.listen(1)
    past = time.time() - age
    os.utime(path, (past, past))
    return s


@pytest.mark.parametrize("mode", ["kubelet", "watcher"])
async def test_dead_sockets_of_our_resources_are_removed_at_start(fake_host, kubelet_dir, mode):
    """What a SIGKILLed instance leaves (``devplugin-...-<instance>.sock`` files nobody serves)
    goes at start, in device-plugins/ and in watcher mode plugins_registry/ too; a live socket
    of ours, another plugin's dead one and one bound a moment ago stay."""
    from devplugin_core._endpoint import socket_name

    add_gadgets(fake_host, 1)
    kubelet = FakeKubelet(kubelet_dir, mode=mode)
    await kubelet.start()
    registry = kubelet.registry_dir
    dirs = [kubelet_dir] + ([registry] if mode == "watcher" else [])
    keep: list[socket.socket] = []
    dead, kept = [], []
    try:
        for directory in dirs:
            for instance in ("dead01", "dead02"):
                path = os.path.join(directory, socket_name(RES, instance, directory))
                _bind(path).close()
                dead.append(path)
            live = os.path.join(directory, socket_name(RES, "live01", directory))
            keep.append(_bind(live, listen=True))
            fresh = os.path.join(directory, socket_name(RES, "fresh1", directory))
            _bind(fresh, age=-5).close()  # just bound: maybe another instance mid-start
            other = os.path.join(directory, socket_name("example.com/other", "dead03", directory))
            _bind(other).close()
            kept += [live, fresh, other]
        async with run_plugin(SPEC, fake_host, kubelet, config=config(RES)):
            await kubelet.wait_for_registration(RES, timeout=15)
            assert not [p for p in dead if os.path.lexists(p)]
            assert all(os.path.lexists(p) for p in kept)
    finally:
        for s in keep:
            s.close()
        await kubelet.stop()
