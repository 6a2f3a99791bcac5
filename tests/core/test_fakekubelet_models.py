"""The FakeKubelet's rules, each pinned against the kubelet function it copies (Kubernetes 1.32
``pkg/kubelet/cm/devicemanager``), with bare stub plugins so only the kubelet side is tested.

``single`` is 1.32 (``handler.go`` keeps one current client per resource); ``per-socket`` is
upstream master since kubernetes #135437 (a list of clients keyed by socket path).
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator

import grpc
import pytest

from devplugin_core._endpoint import register_with_kubelet
from devplugin_core._proto import deviceplugin_v1beta1_pb2 as pb
from devplugin_core._proto import deviceplugin_v1beta1_pb2_grpc as pb_grpc
from devplugin_core.testing import FakeKubelet

RES = "example.com/stub"
IDS = ("a", "b")


class StubPlugin(pb_grpc.DevicePluginServicer):  # type: ignore[misc]
    """A device plugin reduced to what the kubelet sees: a socket, a stream it can feed or end,
    and Allocate answers naming the stub."""

    def __init__(self, directory: str, name: str) -> None:
        self.name = name
        self.path = os.path.join(directory, f"{name}.sock")
        self.health = dict.fromkeys(IDS, "Healthy")
        self.changed = asyncio.Event()
        self.end = asyncio.Event()
        self.allocations = 0
        self.server: grpc.aio.Server | None = None

    async def start(self) -> StubPlugin:
        self.server = grpc.aio.server()
        pb_grpc.add_DevicePluginServicer_to_server(self, self.server)
        self.server.add_insecure_port(f"unix://{self.path}")
        await self.server.start()
        return self

    async def stop(self) -> None:
        self.end.set()
        if self.server is not None:
            await self.server.stop(0)

    async def register(self, kubelet: FakeKubelet) -> None:
        await register_with_kubelet(
            kubelet.socket_path, RES, os.path.basename(self.path), pb.DevicePluginOptions()
        )

    def set_health(self, device: str, health: str) -> None:
        self.health[device] = health
        self.changed.set()

    async def GetDevicePluginOptions(self, request, context):  # type: ignore[no-untyped-def]
        return pb.DevicePluginOptions()

    async def ListAndWatch(self, request, context) -> AsyncIterator[pb.ListAndWatchResponse]:  # type: ignore[no-untyped-def]
        while not self.end.is_set():
            devices = [pb.Device(ID=i, health=h) for i, h in self.health.items()]
            yield pb.ListAndWatchResponse(devices=devices)
            self.changed.clear()
            changed = asyncio.ensure_future(self.changed.wait())
            ended = asyncio.ensure_future(self.end.wait())
            await asyncio.wait({changed, ended}, return_when=asyncio.FIRST_COMPLETED)
            changed.cancel()
            ended.cancel()

    async def Allocate(self, request, context):  # type: ignore[no-untyped-def]
        self.allocations += 1
        return pb.AllocateResponse(
            container_responses=[pb.ContainerAllocateResponse(envs={"BY": self.name})]
        )


async def _two(kubelet: FakeKubelet) -> tuple[StubPlugin, StubPlugin]:
    old = await StubPlugin(kubelet.directory, "old").start()
    await old.register(kubelet)
    await kubelet.wait_for_registration(RES)
    new = await StubPlugin(kubelet.directory, "new").start()
    await new.register(kubelet)
    await kubelet.wait_for_registration(RES, 2)
    return old, new


async def test_start_cleans_every_socket_and_keeps_other_files(kubelet_dir: str) -> None:
    """``server.go: Start`` -> ``manager.go: CleanupPluginDirectory``: every socket in the
    directory goes (a stale ``kubelet.sock`` too), the checkpoint and directories stay."""
    for name in ("kubelet.sock", "devplugin-x-0.sock", "other.sock"):
        s = socket.socket(socket.AF_UNIX)
        s.bind(os.path.join(kubelet_dir, name))
        s.close()
    with open(os.path.join(kubelet_dir, "kubelet_internal_checkpoint"), "w") as fh:
        fh.write("{}")
    os.mkdir(os.path.join(kubelet_dir, "subdir"))
    kubelet = FakeKubelet(kubelet_dir)
    await kubelet.start()
    try:
        assert kubelet.cleaned == ["devplugin-x-0.sock", "kubelet.sock", "other.sock"]
        assert sorted(os.listdir(kubelet_dir)) == [
            "kubelet.sock",
            "kubelet_internal_checkpoint",
            "subdir",
        ]
        await kubelet.restart(downtime=0.1)  # a restart is a start: it cleans again
        assert "kubelet.sock" in kubelet.cleaned
    finally:
        await kubelet.stop()


async def test_stop_can_leave_a_dead_kubelet_socket(kubelet_dir: str) -> None:
    """A killed kubelet leaves ``kubelet.sock`` behind; connecting to it is refused."""
    kubelet = FakeKubelet(kubelet_dir)
    await kubelet.start()
    await kubelet.stop(stale_socket=True)
    s = socket.socket(socket.AF_UNIX)
    with pytest.raises(ConnectionRefusedError):
        s.connect(kubelet.socket_path)
    s.close()


async def test_newer_registration_takes_the_endpoint_older_stream_still_counts(
    kubelet: FakeKubelet,
) -> None:
    """``handler.go: connectClient`` -> ``client.go: Connect`` -> ``manager.go:
    PluginConnected``: the newest registration is the endpoint Allocate uses; the older
    client's ``client.go: Run`` keeps reading its stream and every update still goes through
    ``manager.go: PluginListAndWatchReceiver`` (both models)."""
    old, new = await _two(kubelet)
    try:
        assert kubelet.connections[RES].endpoint == "new.sock"
        reply = await kubelet.allocate(RES, ["a"], kubelet_checks=True)
        assert reply.envs["BY"] == "new"
        assert {c.endpoint for c in kubelet.running} == {"old.sock", "new.sock"}
        clients = [c.endpoint for c in kubelet.clients[RES]]
        if kubelet.client_model == "single":
            assert clients == ["new.sock"]  # registerClient replaced clients[resource]
        else:
            assert clients == ["old.sock", "new.sock"]
        old.set_health("a", "Unhealthy")  # the older stream rewrites the resource's devices
        await kubelet.wait_until(lambda: kubelet.health(RES)["a"] == "Unhealthy")
        new.set_health("b", "Unhealthy")
        await kubelet.wait_until(lambda: kubelet.health(RES) == {"a": "Healthy", "b": "Unhealthy"})
    finally:
        await old.stop()
        await new.stop()


async def test_older_stream_ending(kubelet: FakeKubelet) -> None:
    """``handler.go: runClient``: when the older stream ends, 1.32's ``getClient`` returns the
    *current* client, ``client.go: Disconnect`` closes it (the newer stream ends too) and
    ``manager.go: PluginDisconnected`` marks every device unhealthy and stops the endpoint.
    The per-socket model disconnects only the older client: the newer one stays the endpoint."""
    old, new = await _two(kubelet)
    newer = kubelet.connections[RES]
    try:
        await old.stop()
        if kubelet.client_model == "single":
            await kubelet.wait_until(lambda: newer.ended, what="the newer client disconnected")
            assert RES not in kubelet.connections and RES not in kubelet.clients
            assert set(kubelet.health(RES).values()) == {"Unhealthy"}
            assert kubelet.healthy(RES) == 0
            assert new.allocations == 0
        else:
            await kubelet.wait_until(lambda: len(kubelet.running) == 1)
            assert kubelet.connections[RES] is newer and not newer.ended
            assert [c.endpoint for c in kubelet.clients[RES]] == ["new.sock"]
            assert kubelet.healthy(RES) == 2
            assert (await kubelet.allocate(RES, ["b"], kubelet_checks=True)).envs["BY"] == "new"
    finally:
        await new.stop()


async def test_newer_stream_ending(kubelet: FakeKubelet) -> None:
    """The endpoint's own stream ends: in both models ``runClient`` disconnects it and
    ``PluginDisconnected`` marks the resource unhealthy. 1.32 leaves the older client running
    but unknown to ``getClient`` (its end later changes nothing); the per-socket model still
    lists it, so its end later disconnects it again (already unhealthy). The kubelet never
    re-dials: only a new registration brings the resource back."""
    old, new = await _two(kubelet)
    try:
        await new.stop()
        await kubelet.wait_until(lambda: RES not in kubelet.connections)
        assert set(kubelet.health(RES).values()) == {"Unhealthy"}
        assert {c.endpoint for c in kubelet.running} == {"old.sock"}
        expected = [] if kubelet.client_model == "single" else ["old.sock"]
        assert [c.endpoint for c in kubelet.clients.get(RES, [])] == expected
        old.set_health("b", "Unhealthy")  # an older update still rewrites the devices...
        await kubelet.wait_until(lambda: kubelet.health(RES) == {"a": "Healthy", "b": "Unhealthy"})
        assert RES not in kubelet.connections  # ...but the endpoint stays stopped
        await old.register(kubelet)  # the old plugin's second registration: a second client
        await kubelet.wait_for_registration(RES, 3)
        assert (await kubelet.allocate(RES, ["a"], kubelet_checks=True)).envs["BY"] == "old"
    finally:
        await old.stop()


async def test_allocate_with_kubelet_checks_refuses_without_healthy_devices(
    kubelet: FakeKubelet,
) -> None:
    """``manager.go: devicesToAllocate``: "no healthy devices present" before any RPC."""
    plugin = await StubPlugin(kubelet.directory, "one").start()
    try:
        await plugin.register(kubelet)
        await kubelet.wait_for_registration(RES)
        plugin.set_health("a", "Unhealthy")
        plugin.set_health("b", "Unhealthy")
        await kubelet.wait_until(lambda: kubelet.healthy(RES) == 0)
        with pytest.raises(AssertionError, match="no healthy devices present"):
            await kubelet.allocate(RES, ["a"], kubelet_checks=True)
        assert plugin.allocations == 0
    finally:
        await plugin.stop()


async def test_register_names_a_missing_socket_fails_after_the_dial_timeout(
    kubelet_dir: str,
) -> None:
    """``client.go: dial`` blocks up to 10 s on a socket that is not there; ``server.go:
    Register`` then answers with the dial error (what a Register naming a socket the start-up
    cleanup deleted gets)."""
    kubelet = FakeKubelet(kubelet_dir)
    await kubelet.start()
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(Exception, match="dial"):
            await register_with_kubelet(
                kubelet.socket_path, RES, "gone.sock", pb.DevicePluginOptions(), timeout=20
            )
        assert loop.time() - started >= 9.5
        assert RES not in kubelet.clients
    finally:
        await kubelet.stop()
