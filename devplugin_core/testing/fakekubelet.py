"""FakeKubelet: the kubelet's side of the device plugin API, over real unix sockets.

It follows ``pkg/kubelet/cm/devicemanager`` (Kubernetes 1.32) rule by rule, naming the Go
function each part copies:

* ``server.go: Start`` -> ``CleanupPluginDirectory``: on start every socket in the directory
  (ours and ``kubelet.sock`` too; the checkpoint and other files stay) is deleted, then
  ``v1beta1.Registration`` listens on ``<dir>/kubelet.sock``.
* ``server.go: Register`` checks the version and the resource name, then ``handler.go:
  connectClient`` registers a client, dials the plugin's socket (``client.go: Connect``: 10 s,
  blocking) and ``manager.go: PluginConnected`` calls ``GetDevicePluginOptions`` and points the
  resource's endpoint (the one Allocate and PreStartContainer use) at that plugin. Register
  answers only after all of that.
* ``handler.go: runClient`` runs ``client.go: Run`` (consume ``ListAndWatch``; every response
  goes to ``manager.go: PluginListAndWatchReceiver``, which replaces the resource's device list,
  whichever client it came from). When the stream ends, ``runClient`` disconnects the client
  ``getClient`` returns (``client.go: Disconnect`` closes its channel) and ``manager.go:
  PluginDisconnected`` marks every device of the resource unhealthy and stops the endpoint.
  The kubelet never re-dials: the plugin must register again.

Which client ``getClient`` returns is the constructor's ``clients`` option:

* ``"single"`` (Kubernetes 1.32, the default): one current client per resource. A newer
  registration replaces ``clients[resource]`` but the older client's ``Run`` keeps reading the
  older stream (its updates still rewrite the devices); when *any* stream of the resource ends,
  the *current* client is disconnected and the resource goes unhealthy.
* ``"per-socket"`` (upstream master since late 2025, kubernetes #135437): a list of clients per
  resource keyed by socket path; a stream that ends disconnects only its own client, and only
  the disconnect of the client the endpoint points at marks the resource unhealthy.

``allocate``/``preferred``/``pre_start`` go to the resource's endpoint, send one container
request per call and read ``[0]``, as the kubelet does; Allocate is refused, as in
``manager.go: devicesToAllocate``, while the resource has no healthy device.
:meth:`restart` is a kubelet restart (connections dropped, then a start: cleanup and a new
``kubelet.sock``, new inode); :meth:`stop` with ``stale_socket=True`` leaves a dead
``kubelet.sock`` behind like a killed kubelet.

In ``watcher`` mode it instead scans a plugins_registry directory the way the plugin watcher
does (``GetInfo`` with a 1 s deadline, then ``NotifyRegistrationStatus``; a removed socket is
``handler.go: DeRegisterPlugin``). The plugin watcher never cleans that directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
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

__all__ = ["CLIENT_MODELS", "FakeKubelet", "PluginConnection", "Registration"]

# a fresh connection per dial, like the kubelet's own grpc.DialContext (no shared back-off)
_OPTIONS = [("grpc.default_authority", "localhost"), ("grpc.use_local_subchannel_pool", 1)]
HEALTHY = "Healthy"
#: ``single``: Kubernetes 1.32's one current client per resource; ``per-socket``: newer kubelets.
CLIENT_MODELS = ("single", "per-socket")


@dataclass(frozen=True)
class Registration:
    """One Register call (or one watcher registration) as the kubelet saw it."""

    resource: str
    endpoint: str
    version: str
    options: pb.DevicePluginOptions | None
    at: float


@dataclass(eq=False)
class PluginConnection:
    """The kubelet's client for one registered plugin socket (``client.go: client``)."""

    resource: str
    endpoint: str
    socket_path: str
    channel: grpc.aio.Channel | None = None
    stub: pb_grpc.DevicePluginStub | None = None
    options: pb.DevicePluginOptions = field(default_factory=pb.DevicePluginOptions)
    history: list[list[pb.Device]] = field(default_factory=list)
    stream: grpc.aio.UnaryStreamCall | None = None
    task: asyncio.Task[None] | None = None
    ended: bool = False
    end_reason: str = ""
    connected_at: float = 0.0

    @property
    def devices(self) -> list[pb.Device]:
        """The latest device list received on this client's own stream."""
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
    """A fake kubelet on ``directory`` (keep it short: unix socket paths max out near 107 bytes).

    ``clients``: ``"single"`` (Kubernetes 1.32) or ``"per-socket"`` (newer kubelets); see the
    module docstring.
    """

    def __init__(
        self,
        directory: str,
        *,
        mode: str = "kubelet",
        registry_dir: str | None = None,
        scan_interval: float = 0.1,
        clients: str = "single",
    ) -> None:
        if clients not in CLIENT_MODELS:
            raise ValueError(f"clients must be one of {CLIENT_MODELS}, not {clients!r}")
        self.directory = directory
        self.mode = mode
        self.client_model = clients
        self.registry_dir = registry_dir or os.path.join(
            os.path.dirname(directory), "plugins_registry"
        )
        self.scan_interval = scan_interval
        self.socket_path = os.path.join(directory, "kubelet.sock")
        self.registrations: list[Registration] = []
        #: resource -> the client the resource's endpoint points at (``PluginConnected``);
        #: removed when ``PluginDisconnected`` stops the endpoint.
        self.connections: dict[str, PluginConnection] = {}
        #: resource -> the clients ``handler.go`` keeps (one at most in the ``single`` model).
        self.clients: dict[str, list[PluginConnection]] = {}
        #: every client whose ``Run`` is still reading its stream (current or not).
        self.running: set[PluginConnection] = set()
        self.refuse: dict[str, str] = {}
        self.restarts = 0
        self.started_at = 0.0
        self.cleaned: list[str] = []  # socket names the last start-up cleanup deleted
        self._devices: dict[str, list[pb.Device]] = {}
        self._marked_unhealthy: set[str] = set()
        self._server: grpc.aio.Server | None = None
        self._scanner: asyncio.Task[None] | None = None
        self._watched: dict[str, float] = {}
        self._changed = asyncio.Event()
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        """``server.go: Start``: clean the socket directory, then serve ``kubelet.sock``."""
        os.makedirs(self.directory, exist_ok=True)
        self._stopping = False
        self._devices.clear()  # a new kubelet process: nothing registered yet
        self._marked_unhealthy.clear()
        self.cleaned = self._cleanup_plugin_directory(self.directory)
        self.started_at = time.monotonic()
        if self.mode == "watcher":
            os.makedirs(self.registry_dir, exist_ok=True)
            self._scanner = asyncio.get_running_loop().create_task(self._scan_registry())
            return
        server = grpc.aio.server()
        pb_grpc.add_RegistrationServicer_to_server(_RegistrationService(self), server)
        server.add_insecure_port(f"unix://{self.socket_path}")
        await server.start()
        self._server = server
        self._notify()

    @staticmethod
    def _cleanup_plugin_directory(directory: str) -> list[str]:
        """``manager.go: CleanupPluginDirectory``: remove every socket (not directories, not
        other files such as the checkpoint)."""
        removed = []
        for name in sorted(os.listdir(directory)):
            path = os.path.join(directory, name)
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISSOCK(os.lstat(path).st_mode):
                    os.unlink(path)
                    removed.append(name)
        return removed

    async def stop(self, *, stale_socket: bool = False) -> None:
        """``server.go: Stop``: disconnect every client and stop serving. ``stale_socket``
        leaves a dead ``kubelet.sock`` (nobody listening), as a killed kubelet does."""
        self._stopping = True
        if self._scanner is not None:
            await cancel_and_wait(self._scanner)
            self._scanner = None
        for conn in list(self.running) + [c for cs in self.clients.values() for c in cs]:
            await self._close(conn, "kubelet stopped")
        await cancel_and_wait(*self._tasks)
        self._tasks.clear()
        self.running.clear()
        self.clients.clear()
        self.connections.clear()
        if self._server is not None:
            await self._server.stop(0)
            self._server = None
        if stale_socket and self.mode != "watcher":
            dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            with contextlib.suppress(OSError):
                os.unlink(self.socket_path)
            dead.bind(self.socket_path)  # bound, never listening: connect() is refused
            dead.close()
        self._notify()

    async def restart(self, downtime: float = 0.0) -> None:
        """Like a kubelet restart: drop every connection, stay down ``downtime`` seconds, then
        start (which deletes every socket in the directory and listens on a new
        ``kubelet.sock``)."""
        await self.stop(stale_socket=downtime > 0)
        self._watched.clear()
        if downtime:
            await asyncio.sleep(downtime)
        self.restarts += 1
        await self.start()

    async def __aenter__(self) -> FakeKubelet:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- registration (server.go / handler.go) -------------------------------------------------
    async def _register(self, request: pb.RegisterRequest) -> str | None:
        """``server.go: Register``."""
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
            await self._connect_client(request.resource_name, path)
        except grpc.aio.AioRpcError as err:
            return f"failed to dial device plugin: {err.code().name}: {err.details()}"
        return None

    def _register_client(self, name: str, conn: PluginConnection) -> None:
        """``handler.go: registerClient``: replace (single) or append (per-socket)."""
        if self.client_model == "single":
            self.clients[name] = [conn]
        else:
            self.clients.setdefault(name, []).append(conn)

    def _deregister_client(self, name: str, socket_path: str) -> None:
        """``handler.go: deregisterClient``: 1.32 deletes whatever client is current; the
        per-socket model removes the first client with that socket path."""
        clients = self.clients.get(name, [])
        if self.client_model == "single":
            clients.clear()
        else:
            for i, conn in enumerate(clients):
                if conn.socket_path == socket_path:
                    del clients[i]
                    break
        if not clients:
            self.clients.pop(name, None)

    def _get_client(self, name: str, socket_path: str) -> PluginConnection | None:
        """``handler.go: getClient``: 1.32 returns the current client whatever its socket; the
        per-socket model the first one with ``socket_path``."""
        clients = self.clients.get(name, [])
        if self.client_model == "single":
            return clients[0] if clients else None
        return next((c for c in clients if c.socket_path == socket_path), None)

    async def _connect_client(self, name: str, path: str) -> PluginConnection:
        """``handler.go: connectClient``: register the client, ``Connect`` (dial, then
        ``PluginConnected``), then ``runClient`` in the background."""
        conn = PluginConnection(name, os.path.basename(path), path)
        self._register_client(name, conn)
        try:
            await self._dial(conn)
            await self._plugin_connected(name, conn)
        except grpc.aio.AioRpcError:
            self._deregister_client(name, path)
            if conn.channel is not None:
                await conn.channel.close()
            raise
        self.running.add(conn)
        task = asyncio.get_running_loop().create_task(self._run_client(conn))
        conn.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._notify()
        return conn

    @staticmethod
    async def _dial(conn: PluginConnection) -> None:
        """``client.go: dial``: a blocking dial with a 10 s deadline."""
        channel = grpc.aio.insecure_channel(f"unix://{conn.socket_path}", options=_OPTIONS)
        conn.channel = channel
        try:
            await bounded(channel.channel_ready(), 10)
        except TimeoutError:
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.aio.Metadata(),
                grpc.aio.Metadata(),
                "dial timed out (10s)",
            ) from None
        conn.stub = pb_grpc.DevicePluginStub(channel)

    async def _plugin_connected(self, name: str, conn: PluginConnection) -> None:
        """``manager.go: PluginConnected``: read the options and point the endpoint here."""
        assert conn.stub is not None
        conn.options = await conn.stub.GetDevicePluginOptions(pb.Empty(), timeout=10)
        conn.connected_at = time.monotonic()
        self.connections[name] = conn

    async def _run_client(self, conn: PluginConnection) -> None:
        """``handler.go: runClient``: ``client.go: Run`` until the stream ends, then disconnect
        the client ``getClient`` names."""
        assert conn.stub is not None
        try:
            conn.stream = conn.stub.ListAndWatch(pb.Empty())
            async for response in conn.stream:
                conn.history.append(list(response.devices))
                self._list_and_watch_receiver(conn.resource, list(response.devices))
            conn.end_reason = conn.end_reason or "stream ended"
        except asyncio.CancelledError:
            conn.end_reason = conn.end_reason or "cancelled"
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
        except grpc.aio.AioRpcError as err:
            conn.end_reason = conn.end_reason or f"{err.code().name}: {err.details()}"
        finally:
            conn.ended = True
            self.running.discard(conn)
            self._notify()
        if self._stopping:
            return
        current = self._get_client(conn.resource, conn.socket_path)
        if current is not None:
            await self._disconnect_client(conn.resource, current)

    async def _disconnect_client(self, name: str, conn: PluginConnection) -> None:
        """``handler.go: disconnectClient``: deregister, then ``client.go: Disconnect`` (close
        the channel, ``PluginDisconnected``)."""
        self._deregister_client(name, conn.socket_path)
        await self._close(conn, "disconnected by the kubelet")
        self._plugin_disconnected(name, conn)

    @staticmethod
    async def _close(conn: PluginConnection, reason: str) -> None:
        conn.end_reason = conn.end_reason or reason
        if conn.stream is not None:
            conn.stream.cancel()
        if conn.channel is not None:
            await conn.channel.close()

    def _plugin_disconnected(self, name: str, conn: PluginConnection) -> None:
        """``manager.go: PluginDisconnected``: mark every device unhealthy, stop the endpoint.
        1.32 does it whichever client disconnected; the per-socket model only when it is the
        one the endpoint points at."""
        endpoint = self.connections.get(name)
        if endpoint is None:
            return
        if self.client_model == "per-socket" and endpoint.socket_path != conn.socket_path:
            return
        self._marked_unhealthy.add(name)  # markResourceUnhealthy
        del self.connections[name]
        self._notify()

    def _list_and_watch_receiver(self, name: str, devices: list[pb.Device]) -> None:
        """``manager.go: PluginListAndWatchReceiver``: the resource's devices are replaced."""
        self._devices[name] = devices
        self._marked_unhealthy.discard(name)
        self._notify()

    async def cancel_stream(self, resource: str) -> None:
        """End the ListAndWatch stream of the resource's endpoint from the kubelet side (what
        follows is ``runClient``'s; the kubelet won't re-dial)."""
        conn = self.connections[resource]
        conn.end_reason = "cancelled by the kubelet side"
        if conn.stream is not None:
            conn.stream.cancel()
        await self.wait_until(lambda: conn.ended, 10, "the cancelled stream to end")

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
                task = asyncio.get_running_loop().create_task(self._watcher_register(path))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            for path in list(self._watched):
                if path not in present:
                    del self._watched[path]
                    await self._deregister_plugin(path)
            await asyncio.sleep(self.scan_interval)

    async def _deregister_plugin(self, path: str) -> None:
        """``handler.go: DeRegisterPlugin`` for a removed registration socket."""
        for name, clients in list(self.clients.items()):
            if not any(c.socket_path == path for c in clients):
                continue
            client = self._get_client(name, path)
            if client is not None:
                await self._disconnect_client(name, client)

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
                    await self._connect_client(info.name, endpoint)
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
                f"fake kubelet: timed out after {timeout}s waiting for {what} ({self._state()})"
            ) from None

    def _state(self) -> str:
        """What the kubelet holds, for failure messages."""
        conns = {r: (c.endpoint, len(c.history), c.ended) for r, c in self.connections.items()}
        clients = {r: [c.endpoint for c in cs] for r, cs in self.clients.items()}
        return (
            f"endpoints {conns}, clients {clients}, {len(self.running)} streams, "
            f"registrations {[(r.resource, r.endpoint) for r in self.registrations[-4:]]}"
        )

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
        """Wait until ``resource`` is connected and the kubelet's device list of it (see
        :meth:`devices`) satisfies ``predicate``."""

        def ok() -> bool:
            return (
                resource in self.connections
                and resource in self._devices
                and predicate(self.devices(resource))
            )

        await self.wait_until(ok, timeout, f"devices of {resource}")
        return self.devices(resource)

    def devices(self, resource: str) -> list[pb.Device]:
        """The resource's devices as the kubelet holds them: the latest list any client sent
        (``PluginListAndWatchReceiver``), all Unhealthy after ``PluginDisconnected`` until the
        next list arrives."""
        devices = self._devices.get(resource, [])
        if resource not in self._marked_unhealthy:
            return list(devices)
        marked = []
        for device in devices:
            copy = pb.Device()
            copy.CopyFrom(device)
            copy.health = "Unhealthy"
            marked.append(copy)
        return marked

    def health(self, resource: str) -> dict[str, str]:
        """Device ID -> health string, as the kubelet would count them."""
        return {d.ID: d.health for d in self.devices(resource)}

    def healthy(self, resource: str) -> int:
        """How many devices of ``resource`` the kubelet counts as allocatable."""
        if resource not in self.connections:
            return 0
        return sum(d.health == HEALTHY for d in self.devices(resource))

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

    async def _stub(self, resource: str) -> pb_grpc.DevicePluginStub:
        conn = await self._conn(resource)
        assert conn.stub is not None
        return conn.stub

    async def options(self, resource: str) -> pb.DevicePluginOptions:
        stub = await self._stub(resource)
        options: pb.DevicePluginOptions = await stub.GetDevicePluginOptions(pb.Empty(), timeout=10)
        return options

    async def allocate(
        self,
        resource: str,
        ids: Sequence[str],
        timeout: float = 10.0,
        *,
        kubelet_checks: bool = False,
    ) -> pb.ContainerAllocateResponse:
        """Allocate one container's devices; returns ``container_responses[0]`` like the kubelet
        (an empty list of responses is an error, as in the kubelet). ``kubelet_checks``: refuse
        as ``manager.go: devicesToAllocate`` does while the resource has no healthy device or
        an ID is not healthy (off by default, so tests can probe the plugin's own checks)."""
        stub = await self._stub(resource)
        if kubelet_checks:
            health = self.health(resource)
            if HEALTHY not in health.values():
                raise AssertionError(
                    f"no healthy devices present; cannot allocate unhealthy devices {resource}"
                )
            if any(health.get(i) != HEALTHY for i in ids):
                raise AssertionError(f"requested devices of {resource} are not healthy: {ids}")
        reply = await stub.Allocate(
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
        stub = await self._stub(resource)
        reply = await stub.GetPreferredAllocation(
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
        stub = await self._stub(resource)
        await stub.PreStartContainer(
            pb.PreStartContainerRequest(devices_ids=list(ids)), timeout=timeout
        )


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.lstat(path).st_mode)
    except OSError:
        return False
