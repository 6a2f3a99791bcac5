"""One resource's socket lifecycle, and detection of kubelet restarts.

An :class:`Endpoint` loops over *attempts*. One attempt: probe the socket path (never steal a
live socket) -> bind a fresh ``grpc.aio`` server -> probe ourselves -> register (``Register`` on
``kubelet.sock``, or wait for the plugin watcher's ``NotifyRegistrationStatus``) -> watch for
trouble -> stop the server (which unlinks the socket) -> start over. Trouble is: our socket
deleted or replaced, ``kubelet.sock`` recreated with a new inode (kubelet restart), or our
ListAndWatch stream ending with no new one within a grace period (the kubelet never re-dials).

Two instances on one node (a rolling update with surge) each register; a kubelet that drops the
older connection for the newer registration ends our stream. Re-registering then would take the
resource back, the other instance would do the same three seconds later, and so on: so when a
*newer* instance of this resource serves a live socket in our directory, the endpoint stands by
instead, and registers again only once that socket goes away (or the kubelet restarts).

:class:`KubeletWatch` turns inotify events on the socket directories (watchdog) plus a slow
fallback poll into a broadcast :class:`Signal` that every endpoint re-checks on.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import re
import socket
import time
from dataclasses import dataclass

import grpc

from ._aio import Backoff, Signal, cancel_and_wait
from ._errors import RegistrationError
from ._proto import deviceplugin_v1beta1_pb2 as pb
from ._proto import deviceplugin_v1beta1_pb2_grpc as pb_grpc
from ._proto import pluginregistration_v1_pb2_grpc as reg_grpc
from ._resource import ResourceRuntime
from ._server import DevicePluginService, WatcherRegistrationService

log = logging.getLogger("devplugin.endpoint")

__all__ = ["Endpoint", "EndpointConfig", "KubeletWatch", "register_with_kubelet", "socket_is_live"]

KUBELET_SOCKET = "kubelet.sock"
_GRPC_OPTIONS = [("grpc.max_send_message_length", 16 * 1024 * 1024)]
_CLIENT_OPTIONS = [("grpc.default_authority", "localhost")]


def _inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def socket_is_live(path: str, timeout: float = 1.0) -> bool:
    """True if something accepts connections on the unix socket ``path`` (blocking, short)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        return True
    except OSError:
        return False
    finally:
        sock.close()


class KubeletWatch:
    """Broadcasts a :class:`Signal` on any change in the watched directories.

    inotify (watchdog) gives sub-second reaction; a poll every ``poll_interval`` seconds covers
    missed events and directories that appear later. Subscribers re-check what they care about.
    """

    def __init__(self, directories: list[str], poll_interval: float = 5.0) -> None:
        self.directories = sorted(set(directories))
        self.poll_interval = poll_interval
        self.changed = Signal()
        self._observer: object | None = None
        self._watched: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._ensure_watches()
        self._task = self._loop.create_task(self._poll(), name="kubelet-watch-poll")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        observer = self._observer
        if observer is not None:
            observer.stop()  # type: ignore[attr-defined]
            await asyncio.to_thread(observer.join, 2.0)  # type: ignore[attr-defined]
            self._observer = None

    def _notify_threadsafe(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.changed.fire)

    def _ensure_watches(self) -> None:
        missing = [d for d in self.directories if d not in self._watched and os.path.isdir(d)]
        if not missing:
            return
        try:
            from watchdog.events import FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:  # pragma: no cover - watchdog is a dependency
            return
        watch = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: object) -> None:
                watch._notify_threadsafe()

        if self._observer is None:
            observer = Observer()
            observer.daemon = True
            observer.start()
            self._observer = observer
        for directory in missing:
            try:
                self._observer.schedule(Handler(), directory, recursive=False)  # type: ignore[attr-defined]
                self._watched.add(directory)
            except OSError as err:
                log.warning("cannot watch %s (%s); relying on polling", directory, err)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            self._ensure_watches()
            self.changed.fire()


async def register_with_kubelet(
    kubelet_socket: str,
    resource: str,
    endpoint: str,
    options: pb.DevicePluginOptions,
    timeout: float = 30.0,
) -> None:
    """Call ``v1beta1.Registration/Register``; raises :class:`RegistrationError`."""
    request = pb.RegisterRequest(
        version="v1beta1", endpoint=endpoint, resource_name=resource, options=options
    )
    async with grpc.aio.insecure_channel(f"unix://{kubelet_socket}", options=_CLIENT_OPTIONS) as ch:
        try:
            await pb_grpc.RegistrationStub(ch).Register(
                request, timeout=timeout, wait_for_ready=True
            )
        except grpc.aio.AioRpcError as err:
            unreachable = err.code() in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.StatusCode.CANCELLED,
            )
            verb = "could not reach the kubelet for" if unreachable else "kubelet refused"
            raise RegistrationError(
                f"{verb} {resource}: {err.code().name}: {err.details()}", refused=not unreachable
            ) from None


@dataclass(frozen=True)
class EndpointConfig:
    """Where and how endpoints serve and register."""

    kubelet_dir: str
    mode: str = "kubelet"  # or "watcher"
    registry_dir: str = "/var/lib/kubelet/plugins_registry"
    instance: str = "0"
    stream_grace: float = 3.0
    stream_timeout: float = 30.0
    register_timeout: float = 30.0
    stop_grace: float = 1.0
    max_refusals: int = 5

    @property
    def socket_dir(self) -> str:
        return self.registry_dir if self.mode == "watcher" else self.kubelet_dir

    @property
    def kubelet_socket(self) -> str:
        return os.path.join(self.kubelet_dir, KUBELET_SOCKET)


MAX_SOCKET_PATH = 100  # the kernel's limit is 107 bytes (sun_path minus the NUL)


def socket_name(resource: str, instance: str, directory: str = "") -> str:
    """A socket file name for ``resource``: readable, unique per instance, always short.

    ``devplugin-<stem>-<hash8>-<instance>.sock``: the stem is cut to 24 characters (55 in all),
    and shorter still when ``directory`` is long, so the full path stays under the unix socket
    limit for any valid resource name (the hash keeps names distinct).
    """
    import hashlib
    import re

    digest = hashlib.sha256(resource.encode()).hexdigest()[:8]
    fixed = len(f"devplugin--{digest}-{instance}.sock") + len(directory) + 1
    room = max(0, min(24, MAX_SOCKET_PATH - fixed))
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", resource.replace("/", "_"))[:room]
    return f"devplugin-{stem}-{digest}-{instance}.sock"


_SOCKET_NAME = re.compile(r"^devplugin-.*-(?P<digest>[0-9a-f]{8})-(?P<instance>[^-/]+)\.sock$")


class Endpoint:
    """Serves and registers one resource until cancelled; restarts itself on trouble."""

    def __init__(
        self,
        rt: ResourceRuntime,
        config: EndpointConfig,
        watch: KubeletWatch,
    ) -> None:
        self.rt = rt
        self.config = config
        self.watch = watch
        self.name = socket_name(rt.name, config.instance, config.socket_dir)
        self.path = os.path.join(config.socket_dir, self.name)
        self.registered = asyncio.Event()
        self.stopping = False
        self._watcher_status: asyncio.Queue[tuple[bool, str]] = asyncio.Queue()
        self.attempts = 0

    @property
    def metrics(self):  # type: ignore[no-untyped-def]
        return self.rt.metrics

    def _set_registered(self, value: bool) -> None:
        self.rt.registered = value
        if value:
            self.registered.set()
        else:
            self.registered.clear()
        self.metrics.registered.labels(self.rt.name, self.config.mode).set(1 if value else 0)

    async def run(self) -> None:
        backoff = Backoff()
        refusals = 0
        while True:
            self.attempts += 1
            started = time.monotonic()
            try:
                reason = await self._attempt()
                refusals = 0
            except RegistrationError as err:
                reason = "register_failed"
                log.error("%s: %s", self.rt.name, err)
                if err.refused:
                    refusals += 1
                    if refusals >= self.config.max_refusals:
                        raise
            except (OSError, RuntimeError, grpc.aio.AioRpcError) as err:
                reason = "serve_failed"
                log.error("%s: endpoint failed: %s", self.rt.name, err)
            self.metrics.server_restarts.labels(self.rt.name, reason).inc()
            if reason in ("kubelet_restarted", "socket_removed", "stream_ended"):
                self.metrics.kubelet_restarts.labels(reason).inc()
                backoff.reset()
                delay = 0.0
            else:
                if time.monotonic() - started > 60:
                    backoff.reset()
                delay = backoff.next_delay()
            log.info("%s: restarting endpoint (%s) in %.1fs", self.rt.name, reason, delay)
            if delay:
                await asyncio.sleep(delay)

    async def _prepare_path(self) -> None:
        os.makedirs(self.config.socket_dir, exist_ok=True)
        if not os.path.lexists(self.path):
            return
        if await asyncio.to_thread(socket_is_live, self.path):
            # Someone serves on our exact name: never steal it, pick another name.
            import secrets

            log.warning(
                "%s: %s is served by another process; using a new socket name",
                self.rt.name,
                self.path,
            )
            self.name = socket_name(self.rt.name, secrets.token_hex(3), self.config.socket_dir)
            self.path = os.path.join(self.config.socket_dir, self.name)
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def _newer_instance(self) -> str | None:
        """The live socket of another instance serving this resource, bound after ours (or
        ``None``): the instance a kubelet dropped our stream for."""
        own = _SOCKET_NAME.match(self.name)
        try:
            own_stat = os.stat(self.path)
            names = os.listdir(self.config.socket_dir)
        except OSError:
            return None
        if own is None:
            return None
        newer = []
        for name in names:
            match = _SOCKET_NAME.match(name)
            if name == self.name or match is None or match["digest"] != own["digest"]:
                continue
            path = os.path.join(self.config.socket_dir, name)
            try:
                st = os.stat(path)
            except OSError:
                continue
            if (st.st_mtime_ns, name) > (own_stat.st_mtime_ns, self.name):
                newer.append(path)
        for path in sorted(newer):
            if await asyncio.to_thread(socket_is_live, path):
                return path
        return None

    def _on_watcher_status(self, registered: bool, error: str) -> None:
        self._watcher_status.put_nowait((registered, error))

    async def _attempt(self) -> str:
        await self._prepare_path()
        server = grpc.aio.server(options=_GRPC_OPTIONS)
        closing = asyncio.Event()
        pb_grpc.add_DevicePluginServicer_to_server(DevicePluginService(self.rt, closing), server)
        if self.config.mode == "watcher":
            reg_grpc.add_RegistrationServicer_to_server(
                WatcherRegistrationService(self.rt.name, self.path, self._on_watcher_status), server
            )
        old_umask = os.umask(0o077)
        try:
            if server.add_insecure_port(f"unix://{self.path}") == 0:
                raise OSError(errno.EADDRINUSE, f"cannot bind {self.path}")
        finally:
            os.umask(old_umask)
        await server.start()
        try:
            own_inode = _inode(self.path)
            await self._self_probe()
            if self.config.mode == "watcher":
                return await self._serve_watcher(own_inode)
            return await self._serve_kubelet(own_inode)
        finally:
            self._set_registered(False)
            closing.set()  # end our ListAndWatch streams; in-flight unary calls get the grace
            await asyncio.shield(server.stop(self.config.stop_grace))
            if own_inode is not None and _inode(self.path) == own_inode:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)

    async def _self_probe(self) -> None:
        async with grpc.aio.insecure_channel(f"unix://{self.path}", options=_CLIENT_OPTIONS) as ch:
            await pb_grpc.DevicePluginStub(ch).GetDevicePluginOptions(pb.Empty(), timeout=5)

    async def _wait_for_kubelet(self) -> int:
        seen = self.watch.changed.generation
        announced = False
        while True:
            inode = _inode(self.config.kubelet_socket)
            if inode is not None:
                return inode
            if not announced:
                log.info("%s: waiting for %s", self.rt.name, self.config.kubelet_socket)
                announced = True
            seen = await self.watch.changed.wait(seen, timeout=1.0)

    async def _serve_kubelet(self, own_inode: int | None) -> str:
        kubelet_inode = await self._wait_for_kubelet()
        options = pb.DevicePluginOptions(
            pre_start_required=self.rt.resource.allocator.pre_start_required,
            get_preferred_allocation_available=True,
        )
        try:
            await register_with_kubelet(
                self.config.kubelet_socket,
                self.rt.name,
                self.name,
                options,
                timeout=self.config.register_timeout,
            )
        except RegistrationError:
            self.metrics.registrations.labels(self.rt.name, "error").inc()
            raise
        self.metrics.registrations.labels(self.rt.name, "success").inc()
        self.metrics.last_registration.labels(self.rt.name).set(time.time())
        log.info("%s: registered with the kubelet as %s", self.rt.name, self.name)
        self._set_registered(True)
        return await self._watch_for_trouble(own_inode, kubelet_inode)

    async def _serve_watcher(self, own_inode: int | None) -> str:
        log.info("%s: serving %s for the kubelet plugin watcher", self.rt.name, self.path)
        status_task = asyncio.ensure_future(self._watcher_status.get())
        trouble_task = asyncio.ensure_future(self._watch_for_trouble(own_inode, None, active=False))
        try:
            while True:
                done, _ = await asyncio.wait(
                    {status_task, trouble_task}, return_when=asyncio.FIRST_COMPLETED
                )
                if trouble_task in done:
                    return trouble_task.result()
                registered, error = status_task.result()
                if registered:
                    self.metrics.registrations.labels(self.rt.name, "success").inc()
                    self.metrics.last_registration.labels(self.rt.name).set(time.time())
                    log.info("%s: registered through the plugin watcher", self.rt.name)
                    self._set_registered(True)
                    await cancel_and_wait(trouble_task)
                    trouble_task = asyncio.ensure_future(self._watch_for_trouble(own_inode, None))
                else:
                    self.metrics.registrations.labels(self.rt.name, "error").inc()
                    raise RegistrationError(f"plugin watcher refused {self.rt.name}: {error}")
                status_task = asyncio.ensure_future(self._watcher_status.get())
        finally:
            await cancel_and_wait(status_task, trouble_task)

    async def _watch_for_trouble(
        self, own_inode: int | None, kubelet_inode: int | None, *, active: bool = True
    ) -> str:
        """Return the reason the endpoint must restart. ``active``: registration done, so
        stream expectations apply."""
        rt = self.rt
        wake = Signal()
        with self.watch.changed.forwarded_to(wake), rt.streams_changed.forwarded_to(wake):
            registered_at = time.monotonic()
            had_stream = rt.streams > 0
            zero_since: float | None = None if had_stream else registered_at
            standing_by: str | None = None  # the newer instance's socket we yield to
            seen = wake.generation
            while True:
                if _inode(self.path) != own_inode:
                    log.warning("%s: socket %s was removed (kubelet restart?)", rt.name, self.path)
                    return "socket_removed"
                if kubelet_inode is not None:
                    current = _inode(self.config.kubelet_socket)
                    if current is not None and current != kubelet_inode:
                        log.warning("%s: kubelet.sock was recreated (kubelet restart)", rt.name)
                        return "kubelet_restarted"
                now = time.monotonic()
                if rt.streams > 0:
                    had_stream = True
                    zero_since = None
                    if standing_by is not None:
                        standing_by = None
                        self._set_registered(True)
                elif zero_since is None:
                    zero_since = now
                timeout: float | None = None
                if active and zero_since is not None:
                    if had_stream:
                        timeout = zero_since + self.config.stream_grace - now
                        if timeout <= 0:
                            newer = await self._newer_instance()
                            if newer is None:
                                log.warning(
                                    "%s: ListAndWatch stream ended and none reopened", rt.name
                                )
                                return "stream_ended"
                            if newer != standing_by:
                                log.warning(
                                    "%s: ListAndWatch stream ended; a newer instance serves "
                                    "this resource on %s: standing by until it goes away",
                                    rt.name,
                                    newer,
                                )
                                standing_by = newer
                                self._set_registered(False)
                            timeout = None  # re-checked on directory changes and polls
                    else:
                        timeout = registered_at + self.config.stream_timeout - now
                        if timeout <= 0:
                            log.warning(
                                "%s: no ListAndWatch stream %.0fs after registering",
                                rt.name,
                                self.config.stream_timeout,
                            )
                            return "no_stream"
                seen = await wake.wait(seen, timeout=timeout)
