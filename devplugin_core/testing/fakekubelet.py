"""FakeKubelet: the kubelet's side of the device plugin API, over real unix sockets.

It behaves like ``pkg/kubelet/cm/devicemanager``: it serves ``v1beta1.Registration`` on
``<dir>/kubelet.sock``; on ``Register`` it checks the version and the resource name, dials the
plugin's socket back, calls ``GetDevicePluginOptions`` and then consumes ``ListAndWatch`` in the
background, recording every device list. A newer registration of the same resource replaces the
older connection. When a stream ends the resource is marked unhealthy and never re-dialled.
``allocate``/``preferred``/``pre_start`` send one container request per call and read ``[0]``,
as the kubelet does. :meth:`restart` wipes the sockets and recreates ``kubelet.sock`` (new inode).

In ``watcher`` mode it instead scans a plugins_registry directory the way the plugin watcher
does (``GetInfo`` with a 1 s deadline, then ``NotifyRegistrationStatus``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import grpc

from .._aio import bounded, cancel_and_wait
from .._model import extended_resource_name_error
from .._proto import deviceplugin_v1beta1_pb2 as pb
from .._proto import deviceplugin_v1beta1_pb2_grpc as pb_grpc
from .._proto import pluginregistration_v1_pb2 as reg_pb
from .._proto import pluginregistration_v1_pb2_grpc as reg_grpc

__all__ = ["FakeKubelet", "PluginConnection", "Registration"]

_OPTIONS = [("grpc.default_authority", "localhost")]


@dataclass(frozen=True)
class Registration:
    """One Register call (or one watcher registration) as the kubelet saw it."""

    resource: str
    endpoint: str
    version: str
    options: pb.DevicePluginOptions | None
    at: float


@dataclass
class PluginConnection:
    """The kubelet's client for one registered resource."""

    resource: str
    endpoint: str
    channel: grpc.aio.Channel
    stub: pb_grpc.DevicePluginStub
    options: pb.DevicePluginOptions
    history: list[list[pb.Device]] = field(default_factory=list)
    stream: grpc.aio.UnaryStreamCall | None = None
    task: asyncio.Task[None] | None = None
    ended: bool = False
    end_reason: str = ""

    @property
    def devices(self) -> list[pb.Device]:
        return self.history[-1] if self.history else []


class _RegistrationService(pb_grpc.RegistrationServicer):  # type: ignore[misc]
    def __init__(self, kubelet: FakeKubelet) -> None:
        self.kubelet = kubelet

    async def Register(
        self, request: pb.RegisterRequest, context: grpc.aio.ServicerContext
    ) -> pb.Empty:
        error = await self.kubelet._register(request)
        if error:
            await context.abort(grpc.StatusCode.UNKNOWN, error)
        return pb.Empty()


class FakeKubelet:
    """A fake kubelet on ``directory`` (keep it short: unix socket paths max out near 107 bytes)."""

    def __init__(
        self,
        directory: str,
        *,
        mode: str = "kubelet",
        registry_dir: str | None = None,
        scan_interval: float = 0.1,
    ) -> None:
        self.directory = directory
        self.mode = mode
        self.registry_dir = registry_dir or os.path.join(
            os.path.dirname(directory), "plugins_registry"
        )
        self.scan_interval = scan_interval
        self.socket_path = os.path.join(directory, "kubelet.sock")
        self.registrations: list[Registration] = []
        self.connections: dict[str, PluginConnection] = {}
        self.refuse: dict[str, str] = {}
        self.restarts = 0
        self._server: grpc.aio.Server | None = None
        self._scanner: asyncio.Task[None] | None = None
        self._watched: dict[str, float] = {}
        self._changed = asyncio.Event()

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        os.makedirs(self.directory, exist_ok=True)
        if self.mode == "watcher":
            os.makedirs(self.registry_dir, exist_ok=True)
            self._scanner = asyncio.get_running_loop().create_task(self._scan_registry())
            return
        server = grpc.aio.server()
        pb_grpc.add_RegistrationServicer_to_server(_RegistrationService(self), server)
        server.add_insecure_port(f"unix://{self.socket_path}")
        await server.start()
        self._server = server

    async def stop(self) -> None:
        if self._scanner is not None:
            await cancel_and_wait(self._scanner)
            self._scanner = None
        for conn in list(self.connections.values()):
            await self._disconnect(conn, "kubelet stopped")
        self.connections.clear()
        if self._server is not None:
            await self._server.stop(0)
            self._server = None

    async def restart(self) -> None:
        """Like a kubelet restart: drop every connection, delete every socket in the directory
        (checkpoint and other files stay), and listen on a new ``kubelet.sock``."""
        await self.stop()
        self._watched.clear()
        for directory in {self.directory, self.registry_dir}:
            if not os.path.isdir(directory):
                continue
            for name in os.listdir(directory):
                path = os.path.join(directory, name)
                with contextlib.suppress(FileNotFoundError):
                    if stat.S_ISSOCK(os.lstat(path).st_mode):
                        os.unlink(path)
        self.restarts += 1
        await self.start()

    async def __aenter__(self) -> FakeKubelet:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- registration --------------------------------------------------------------------------
    async def _register(self, request: pb.RegisterRequest) -> str | None:
        if request.version != "v1beta1":
            return (
                f"requested API version {request.version!r} is not supported by kubelet. "
                "Supported version is 'v1beta1'"
            )
        reason = extended_resource_name_error(request.resource_name)
        if reason:
            return f"the ResourceName {request.resource_name!r} is invalid: {reason}"
        if request.resource_name in self.refuse:
            return self.refuse[request.resource_name]
        if "/" in request.endpoint or not request.endpoint:
            return (
                f"endpoint must be a file name in the device-plugin directory: {request.endpoint!r}"
            )
        self.registrations.append(
            Registration(
                request.resource_name,
                request.endpoint,
                request.version,
                request.options,
                time.time(),
            )
        )
        path = os.path.join(self.directory, request.endpoint)
        try:
            await self._connect(request.resource_name, path)
        except grpc.aio.AioRpcError as err:
            return f"failed to dial device plugin: {err.code().name}: {err.details()}"
        return None

    async def _connect(self, resource: str, path: str) -> PluginConnection:
        channel = grpc.aio.insecure_channel(f"unix://{path}", options=_OPTIONS)
        try:
            await bounded(channel.channel_ready(), 10)
            stub = pb_grpc.DevicePluginStub(channel)
            options = await stub.GetDevicePluginOptions(pb.Empty(), timeout=10)
        except (grpc.aio.AioRpcError, TimeoutError) as err:
            await channel.close()
            if isinstance(err, TimeoutError):
                raise grpc.aio.AioRpcError(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    grpc.aio.Metadata(),
                    grpc.aio.Metadata(),
                    "dial timed out",
                ) from None
            raise
        old = self.connections.get(resource)
        conn = PluginConnection(resource, os.path.basename(path), channel, stub, options)
        self.connections[resource] = conn
        conn.task = asyncio.get_running_loop().create_task(self._consume(conn))
        if old is not None:
            await self._disconnect(old, "replaced by a new registration")
        self._notify()
        return conn

    async def _consume(self, conn: PluginConnection) -> None:
        try:
            conn.stream = conn.stub.ListAndWatch(pb.Empty())
            async for response in conn.stream:
                conn.history.append(list(response.devices))
                self._notify()
            conn.end_reason = "stream ended"
        except asyncio.CancelledError:
            conn.end_reason = conn.end_reason or "cancelled"
        except grpc.aio.AioRpcError as err:
            conn.end_reason = f"{err.code().name}: {err.details()}"
        finally:
            conn.ended = True
            self._notify()

    async def _disconnect(self, conn: PluginConnection, reason: str) -> None:
        conn.end_reason = conn.end_reason or reason
        if conn.stream is not None:
            conn.stream.cancel()
        if conn.task is not None:
            await cancel_and_wait(conn.task)
        await conn.channel.close()
        conn.ended = True
        if self.connections.get(conn.resource) is conn:
            del self.connections[conn.resource]
        self._notify()

    async def cancel_stream(self, resource: str) -> None:
        """End the resource's ListAndWatch from the kubelet side (the kubelet won't re-dial)."""
        conn = self.connections[resource]
        conn.end_reason = "cancelled by the kubelet side"
        await self._disconnect(conn, conn.end_reason)

    # -- plugin watcher mode -------------------------------------------------------------------
    async def _scan_registry(self) -> None:
        while True:
            try:
                names = sorted(os.listdir(self.registry_dir))
            except FileNotFoundError:
                names = []
            present = set()
            for name in names:
                path = os.path.join(self.registry_dir, name)
                if name.startswith(".") or not _is_socket(path):
                    continue
                present.add(path)
                inode = os.lstat(path).st_ino
                if self._watched.get(path) == inode:
                    continue
                self._watched[path] = inode
                asyncio.get_running_loop().create_task(self._watcher_register(path))
            for path in list(self._watched):
                if path not in present:
                    del self._watched[path]
                    for conn in list(self.connections.values()):
                        if os.path.join(self.registry_dir, conn.endpoint) == path:
                            await self._disconnect(conn, "socket removed (deregistered)")
            await asyncio.sleep(self.scan_interval)

    async def _watcher_register(self, path: str) -> None:
        channel = grpc.aio.insecure_channel(f"unix://{path}", options=_OPTIONS)
        try:
            stub = reg_grpc.RegistrationStub(channel)
            info = await stub.GetInfo(reg_pb.InfoRequest(), timeout=1)
            error = ""
            if info.type != "DevicePlugin":
                error = f"unsupported plugin type {info.type!r}"
            elif "v1beta1" not in info.supported_versions:
                error = "v1beta1 not supported"
            elif reason := extended_resource_name_error(info.name):
                error = f"invalid resource name {info.name!r}: {reason}"
            elif info.name in self.refuse:
                error = self.refuse[info.name]
            if not error:
                self.registrations.append(
                    Registration(info.name, os.path.basename(path), "v1beta1", None, time.time())
                )
                endpoint = info.endpoint or path
                try:
                    await self._connect(info.name, endpoint)
                except grpc.aio.AioRpcError as err:
                    error = f"failed to dial: {err.details()}"
            await stub.NotifyRegistrationStatus(
                reg_pb.RegistrationStatus(plugin_registered=not error, error=error), timeout=5
            )
        except grpc.aio.AioRpcError:
            self._watched.pop(path, None)
        finally:
            await channel.close()

    # -- what tests use ------------------------------------------------------------------------
    def _notify(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    async def wait_until(
        self, predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition"
    ) -> None:
        """Wait until ``predicate()`` holds (re-checked on every kubelet event)."""
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    event = self._changed
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.2):
                            await event.wait()
        except TimeoutError:
            raise AssertionError(
                f"fake kubelet: timed out after {timeout}s waiting for {what}"
            ) from None

    def registration_count(self, resource: str) -> int:
        return sum(1 for r in self.registrations if r.resource == resource)

    async def wait_for_registration(
        self, resource: str, count: int = 1, timeout: float = 10.0
    ) -> PluginConnection:
        """Wait for the ``count``-th registration of ``resource`` and its first device list."""
        await self.wait_until(
            lambda: (
                self.registration_count(resource) >= count
                and resource in self.connections
                and bool(self.connections[resource].history)
            ),
            timeout,
            f"registration #{count} of {resource}",
        )
        return self.connections[resource]

    async def wait_for_devices(
        self,
        resource: str,
        predicate: Callable[[list[pb.Device]], bool] = lambda d: True,
        timeout: float = 10.0,
    ) -> list[pb.Device]:
        """Wait until the latest device list of ``resource`` satisfies ``predicate``."""

        def ok() -> bool:
            conn = self.connections.get(resource)
            return conn is not None and bool(conn.history) and predicate(conn.devices)

        await self.wait_until(ok, timeout, f"devices of {resource}")
        return self.connections[resource].devices

    def devices(self, resource: str) -> list[pb.Device]:
        conn = self.connections.get(resource)
        return conn.devices if conn else []

    def health(self, resource: str) -> dict[str, str]:
        """Device ID -> health string, as the kubelet would count them."""
        return {d.ID: d.health for d in self.devices(resource)}

    async def _conn(self, resource: str, timeout: float = 10.0) -> PluginConnection:
        """The live connection of ``resource``; like the kubelet, an RPC to a resource waits
        for its registration (up to ``timeout``) instead of racing it."""
        if resource not in self.connections:
            try:
                await self.wait_until(lambda: resource in self.connections, timeout, resource)
            except AssertionError:
                raise AssertionError(
                    f"{resource} is not registered with the fake kubelet (waited {timeout:g}s)"
                ) from None
        return self.connections[resource]

    async def options(self, resource: str) -> pb.DevicePluginOptions:
        conn = await self._conn(resource)
        options: pb.DevicePluginOptions = await conn.stub.GetDevicePluginOptions(
            pb.Empty(), timeout=10
        )
        return options

    async def allocate(
        self, resource: str, ids: Sequence[str], timeout: float = 10.0
    ) -> pb.ContainerAllocateResponse:
        """Allocate one container's devices; returns ``container_responses[0]`` like the kubelet
        (an empty list of responses is an error, as in the kubelet)."""
        conn = await self._conn(resource)
        reply = await conn.stub.Allocate(
            pb.AllocateRequest(
                container_requests=[pb.ContainerAllocateRequest(devices_ids=list(ids))]
            ),
            timeout=timeout,
        )
        if not reply.container_responses:
            raise AssertionError("no containers return in allocation response")
        first: pb.ContainerAllocateResponse = reply.container_responses[0]
        return first

    async def preferred(
        self,
        resource: str,
        available: Sequence[str],
        must_include: Sequence[str],
        size: int,
        timeout: float = 10.0,
    ) -> list[str]:
        conn = await self._conn(resource)
        reply = await conn.stub.GetPreferredAllocation(
            pb.PreferredAllocationRequest(
                container_requests=[
                    pb.ContainerPreferredAllocationRequest(
                        available_deviceIDs=list(available),
                        must_include_deviceIDs=list(must_include),
                        allocation_size=size,
                    )
                ]
            ),
            timeout=timeout,
        )
        return list(reply.container_responses[0].deviceIDs)

    async def pre_start(self, resource: str, ids: Sequence[str], timeout: float = 30.0) -> None:
        conn = await self._conn(resource)
        await conn.stub.PreStartContainer(
            pb.PreStartContainerRequest(devices_ids=list(ids)), timeout=timeout
        )


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.lstat(path).st_mode)
    except OSError:
        return False
