"""One resource's socket lifecycle, registration, and the hand-over between instances.

An :class:`Endpoint` loops over *attempts*. One attempt: remove dead sockets of this resource
that no process serves (probe first) -> bind a fresh ``grpc.aio`` server (never over a live
socket) -> probe ourselves -> register -> watch for trouble -> stop the server (which unlinks
the socket) -> start over. Trouble is: our socket deleted or replaced, ``kubelet.sock``
recreated with a new inode (kubelet restart), our ListAndWatch stream ending (the kubelet never
re-dials), or the newer instance we stood by for going away.

Registering (``kubelet`` mode) is a loop of bounded ``Register`` calls, each on a fresh channel
that fails fast while ``kubelet.sock`` refuses (never one call waiting out gRPC's reconnect
back-off across a long kubelet outage); an attempt in flight is abandoned the moment our socket
is deleted (the restarted kubelet's start-up cleanup) or ``kubelet.sock`` is recreated.

Two instances of a plugin on one node (a DaemonSet rolling update with ``maxSurge``, a
rollback, an operator's manual ``devplugin run``): each socket's mtime is set to its instance's
start time, so every instance sees the same order. The newest live instance owns the resource:

* an instance registers only while no newer live socket of the resource exists, under an
  ``flock`` of the socket directory, so the kubelet's last registration is always the newest
  instance's (kubelets keep the last one);
* an older instance that sees a newer live socket *stands by*: it keeps any stream it has open
  (in Kubernetes 1.32 the end of *any* stream of a resource disconnects the current plugin) but
  sends no updates, and probes the newer socket;
* when the newer instance goes away (its socket removed, or dead after a SIGKILL), the
  survivor stops its server, which ends its old streams first, and registers again;
* when the older one goes away, a 1.32 kubelet disconnects the newer one (its stream ends) and
  it registers again at once; newer kubelets leave it alone.

:class:`KubeletWatch` turns inotify events on the socket directories (watchdog) plus a slow
fallback poll into a broadcast :class:`Signal` that every endpoint re-checks on.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import re
import socket
import time
from collections.abc import AsyncIterator, Hashable
from dataclasses import dataclass, field

import grpc

from ._aio import Backoff, Signal, cancel_and_wait
from ._errors import RegistrationError
from ._proto import deviceplugin_v1beta1_pb2 as pb
from ._proto import deviceplugin_v1beta1_pb2_grpc as pb_grpc
from ._proto import pluginregistration_v1_pb2_grpc as reg_grpc
from ._resource import ResourceRuntime
from ._server import DevicePluginService, WatcherRegistrationService, add_to_server

log = logging.getLogger("devplugin.endpoint")

__all__ = [
    "Endpoint",
    "EndpointConfig",
    "KubeletWatch",
    "probe_socket",
    "register_with_kubelet",
    "socket_is_live",
    "sweep_stale_sockets",
]

KUBELET_SOCKET = "kubelet.sock"
_GRPC_OPTIONS = [("grpc.max_send_message_length", 16 * 1024 * 1024)]
# Every channel gets its own subchannel pool: with gRPC's global pool a new channel to a socket
# that refused a moment ago inherits the old connection's reconnect back-off (up to 120 s) and
# fails without even trying, which is what kept registrations seconds late after an outage.
_CLIENT_OPTIONS = [("grpc.default_authority", "localhost"), ("grpc.use_local_subchannel_pool", 1)]
#: a dead socket younger than this may be one another instance is binding right now
_STALE_AGE = 1.0


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


async def probe_socket(path: str, timeout: float = 1.0) -> bool:
    """:func:`socket_is_live` without blocking the loop (a unix connect answers at once)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        async with asyncio.timeout(timeout):
            await asyncio.get_running_loop().sock_connect(sock, path)
        return True
    except (OSError, TimeoutError):
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

    async def start(self, *, inotify: bool = True) -> None:
        """Start polling, and the inotify watches unless ``inotify`` is False (then
        :meth:`watch_now` starts them: the watchdog import and its threads cost ~20 ms that
        a start-up may prefer to spend after Register)."""
        self._loop = asyncio.get_running_loop()
        if inotify:
            self._ensure_watches()
        self._task = self._loop.create_task(self._poll(), name="kubelet-watch-poll")

    def watch_now(self) -> None:
        """Start the inotify watches now and wake every subscriber, so that a change made
        before they existed is looked at."""
        self._ensure_watches()
        self.changed.fire()

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
    timeout: float = 12.0,
    wait_for_ready: bool = False,
) -> None:
    """One ``v1beta1.Registration/Register`` call on a fresh channel; raises
    :class:`RegistrationError`. Without ``wait_for_ready`` it fails at once while nothing
    listens on ``kubelet.sock``; ``timeout`` bounds the kubelet's dial back to us (10 s)."""
    request = pb.RegisterRequest(
        version="v1beta1", endpoint=endpoint, resource_name=resource, options=options
    )
    async with grpc.aio.insecure_channel(f"unix://{kubelet_socket}", options=_CLIENT_OPTIONS) as ch:
        try:
            await pb_grpc.RegistrationStub(ch).Register(
                request, timeout=timeout, wait_for_ready=wait_for_ready
            )
        except grpc.aio.AioRpcError as err:
            details = err.details() or ""
            # the kubelet could not dial us back (our socket vanished meanwhile): retryable
            unreachable = err.code() in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.StatusCode.CANCELLED,
            ) or ("dial" in details.lower())
            verb = "could not reach the kubelet for" if unreachable else "kubelet refused"
            raise RegistrationError(
                f"{verb} {resource}: {err.code().name}: {details}", refused=not unreachable
            ) from None


@dataclass(frozen=True)
class EndpointConfig:
    """Where and how endpoints serve and register."""

    kubelet_dir: str
    mode: str = "kubelet"  # or "watcher"
    registry_dir: str = "/var/lib/kubelet/plugins_registry"
    instance: str = "0"
    stream_grace: float = 0.25
    stream_timeout: float = 30.0
    register_timeout: float = 12.0  # one Register call: the kubelet dials back for up to 10 s
    retry_interval: float = 0.25  # between refused Register calls (backs off to 2 s)
    standby_probe: float = 0.5  # how often a standing-by instance probes the newer socket
    stop_grace: float = 1.0
    max_refusals: int = 5
    #: orders instances of a plugin (socket mtimes): the one started last is the newest
    started_ns: int = field(default_factory=time.time_ns)

    @property
    def socket_dir(self) -> str:
        return self.registry_dir if self.mode == "watcher" else self.kubelet_dir

    @property
    def kubelet_socket(self) -> str:
        return os.path.join(self.kubelet_dir, KUBELET_SOCKET)

    @property
    def sweep_dirs(self) -> tuple[str, ...]:
        """Where stale sockets of ours may lie (watcher mode: both directories)."""
        if self.mode == "watcher":
            return (self.registry_dir, self.kubelet_dir)
        return (self.kubelet_dir,)


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


def _digest(name: str) -> str | None:
    match = _SOCKET_NAME.match(name)
    return match["digest"] if match else None


async def sweep_stale_sockets(directory: str, digests: set[str], keep: str = "") -> list[str]:
    """Remove sockets of the resources ``digests`` in ``directory`` that nobody serves.

    Only ``devplugin-...-<digest>-<instance>.sock`` files of those resources are looked at
    (never another plugin's), each is probed by connecting first (never a live one), and one
    touched in the last second is left alone (another instance may be binding it). Returns the
    names removed.
    """
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    removed = []
    for name in sorted(names):
        if name == keep or _digest(name) not in digests:
            continue
        path = os.path.join(directory, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        # mtime: a socket being bound is fresh; ours get their start time once they listen
        if not _is_socket_mode(st.st_mode) or time.time() - st.st_mtime < _STALE_AGE:
            continue
        if await probe_socket(path):
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
            removed.append(name)
            log.info("removed %s: a dead socket of this plugin (no process serves it)", path)
    return removed


def _is_socket_mode(mode: int) -> bool:
    import stat

    return stat.S_ISSOCK(mode)


class _SharedLock:
    """This process's ``flock`` on one socket directory, shared by its endpoints."""

    def __init__(self) -> None:
        self.users = 0
        self.fd = -1
        self.taken: asyncio.Future[bool] | None = None


_DIRECTORY_LOCKS: dict[tuple[str, Hashable], _SharedLock] = {}


def _release(lock: _SharedLock) -> None:
    if lock.fd >= 0:
        os.close(lock.fd)  # releases the flock
        lock.fd = -1


async def _flock(lock: _SharedLock, directory: str, wait: float) -> bool:
    try:
        lock.fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return False
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(lock.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                log.warning("%s stayed locked for %.0fs; registering anyway", directory, wait)
                return False
            await asyncio.sleep(0.02)
        except OSError:
            return False


@contextlib.asynccontextmanager
async def _directory_lock(
    directory: str, wait: float, owner: Hashable = None
) -> AsyncIterator[bool]:
    """``flock`` the directory (shared by every instance on the node) for up to ``wait``
    seconds, polling so the loop never blocks; yields whether it got the lock. The lock
    orders instances against each other: the endpoints of one instance (``owner``: its other
    resources) share one hold and register side by side."""
    key = (directory, owner)
    lock = _DIRECTORY_LOCKS.setdefault(key, _SharedLock())
    lock.users += 1
    try:
        if lock.taken is None:
            lock.taken = asyncio.ensure_future(_flock(lock, directory, wait))
        yield await asyncio.shield(lock.taken)
    finally:
        lock.users -= 1
        if lock.users == 0:
            del _DIRECTORY_LOCKS[key]
            taken = lock.taken
            if taken is not None and not taken.done():
                taken.cancel()
                taken.add_done_callback(lambda _: _release(lock))
            else:
                _release(lock)


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
        self.digest = _digest(self.name) or ""
        self.registered = asyncio.Event()
        self.standing_by: str | None = None  # the newer instance's socket we yield to
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
            if reason in ("kubelet_restarted", "socket_removed", "stream_ended", "newer_gone"):
                if reason != "newer_gone":
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
        for directory in self.config.sweep_dirs:
            await sweep_stale_sockets(directory, {self.digest}, keep=self.name)
        if not os.path.lexists(self.path):
            return
        if await probe_socket(self.path):
            # Someone serves on our exact name: never steal it, pick another name.
            log.warning(
                "%s: %s is served by another process; using a new socket name",
                self.rt.name,
                self.path,
            )
            self.name = socket_name(self.rt.name, os.urandom(3).hex(), self.config.socket_dir)
            self.path = os.path.join(self.config.socket_dir, self.name)
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def _newer_instance(self) -> str | None:
        """The live socket of another instance serving this resource that started after ours
        (socket mtime = instance start time, then the name breaks ties), or ``None``."""
        try:
            own_stat = os.stat(self.path)
            names = os.listdir(self.config.socket_dir)
        except OSError:
            return None
        own_key = (own_stat.st_mtime_ns, self.name)
        newer = []
        for name in names:
            if name == self.name or _digest(name) != self.digest:
                continue
            path = os.path.join(self.config.socket_dir, name)
            try:
                st = os.stat(path)
            except OSError:
                continue
            if (st.st_mtime_ns, name) > own_key:
                newer.append(((st.st_mtime_ns, name), path))
        for _, path in sorted(newer, reverse=True):
            if await probe_socket(path):
                return path
        return None

    def _on_watcher_status(self, registered: bool, error: str) -> None:
        self._watcher_status.put_nowait((registered, error))

    async def _attempt(self) -> str:
        await self._prepare_path()
        server = grpc.aio.server(options=_GRPC_OPTIONS)
        closing = asyncio.Event()
        quiet = asyncio.Event()
        add_to_server(DevicePluginService(self.rt, closing, quiet), server)
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
        own_inode: int | None = None
        try:
            own_inode = _inode(self.path)
            started = self.config.started_ns
            with contextlib.suppress(OSError):
                os.utime(self.path, ns=(started, started))  # orders the instances
            await self._self_probe()
            if self.config.mode == "watcher":
                return await self._serve_watcher(own_inode, quiet)
            return await self._serve_kubelet(own_inode, quiet)
        finally:
            self._set_registered(False)
            self.standing_by = None
            closing.set()  # end our ListAndWatch streams; in-flight unary calls get the grace
            await asyncio.shield(server.stop(self.config.stop_grace))
            if own_inode is not None and _inode(self.path) == own_inode:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)

    async def _self_probe(self) -> None:
        async with grpc.aio.insecure_channel(f"unix://{self.path}", options=_CLIENT_OPTIONS) as ch:
            await pb_grpc.DevicePluginStub(ch).GetDevicePluginOptions(pb.Empty(), timeout=5)

    def _socket_trouble(self, own_inode: int | None, kubelet_inode: int | None) -> str | None:
        if _inode(self.path) != own_inode:
            log.warning("%s: socket %s was removed (kubelet restart?)", self.rt.name, self.path)
            return "socket_removed"
        if kubelet_inode is not None:
            current = _inode(self.config.kubelet_socket)
            if current is not None and current != kubelet_inode:
                log.warning("%s: kubelet.sock was recreated (kubelet restart)", self.rt.name)
                return "kubelet_restarted"
        return None

    async def _serve_kubelet(self, own_inode: int | None, quiet: asyncio.Event) -> str:
        announced = False
        refused = 0  # Register calls refused in a row (a stale kubelet.sock, kubelet down)
        seen = self.watch.changed.generation
        while True:
            trouble = self._socket_trouble(own_inode, None)
            if trouble:
                return trouble
            kubelet_inode = _inode(self.config.kubelet_socket)
            if kubelet_inode is None:
                if not announced:
                    log.info("%s: waiting for %s", self.rt.name, self.config.kubelet_socket)
                    announced = True
                seen = await self.watch.changed.wait(seen, timeout=1.0)
                continue
            owner = (self.config.instance, self.config.started_ns)
            async with _directory_lock(
                self.config.socket_dir, self.config.register_timeout + 2, owner
            ):
                newer = await self._newer_instance()
                outcome = None if newer else await self._register_once(own_inode, kubelet_inode)
            if newer is not None:
                return await self._stand_by(newer, own_inode, kubelet_inode, quiet)
            if outcome == "registered":
                break
            if outcome != "unreachable":
                assert outcome is not None
                return outcome
            refused += 1
            if refused == 20:
                log.warning(
                    "%s: %s refuses connections (kubelet down?); retrying, and at once "
                    "when the kubelet directory changes",
                    self.rt.name,
                    self.config.kubelet_socket,
                )
            # back off to 2 s: a restarted kubelet recreates its socket, which wakes us at once
            delay = min(self.config.retry_interval * 2 ** min(refused // 4, 3), 2.0)
            seen = await self.watch.changed.wait(seen, timeout=delay)
        self.metrics.registrations.labels(self.rt.name, "success").inc()
        self.metrics.last_registration.labels(self.rt.name).set(time.time())
        log.info("%s: registered with the kubelet as %s", self.rt.name, self.name)
        self._set_registered(True)
        return await self._watch_for_trouble(own_inode, kubelet_inode, quiet)

    async def _register_once(self, own_inode: int | None, kubelet_inode: int) -> str:
        """One bounded Register call, abandoned if our socket or ``kubelet.sock`` changes
        meanwhile. Returns ``registered``, ``unreachable`` or a restart reason; raises
        :class:`RegistrationError` when the kubelet refuses."""
        options = pb.DevicePluginOptions(
            pre_start_required=self.rt.resource.allocator.pre_start_required,
            get_preferred_allocation_available=True,
        )
        register = asyncio.ensure_future(
            register_with_kubelet(
                self.config.kubelet_socket,
                self.rt.name,
                self.name,
                options,
                timeout=self.config.register_timeout,
            )
        )
        trouble = asyncio.ensure_future(self._wait_for_socket_trouble(own_inode, kubelet_inode))
        try:
            await asyncio.wait({register, trouble}, return_when=asyncio.FIRST_COMPLETED)
            if not register.done():
                log.warning("%s: abandoning a Register call in flight", self.rt.name)
                return trouble.result()
            try:
                register.result()
            except RegistrationError as err:
                self.metrics.registrations.labels(self.rt.name, "error").inc()
                if err.refused:
                    raise
                log.debug("%s: %s", self.rt.name, err)
                return self._socket_trouble(own_inode, kubelet_inode) or "unreachable"
            return "registered"
        finally:
            await cancel_and_wait(register, trouble)

    async def _wait_for_socket_trouble(self, own_inode: int | None, kubelet_inode: int) -> str:
        seen = self.watch.changed.generation
        while True:
            trouble = self._socket_trouble(own_inode, kubelet_inode)
            if trouble:
                return trouble
            seen = await self.watch.changed.wait(seen, timeout=0.5)

    async def _stand_by(
        self,
        newer: str,
        own_inode: int | None,
        kubelet_inode: int | None,
        quiet: asyncio.Event,
    ) -> str:
        """A newer instance serves this resource: send nothing (keep any stream open) until
        it goes away, then restart (which ends our old streams before registering again)."""
        rt = self.rt
        quiet.set()
        self._set_registered(False)
        self.standing_by = newer
        log.warning(
            "%s: a newer instance serves this resource on %s: standing by until it goes away",
            rt.name,
            newer,
        )
        seen = self.watch.changed.generation
        while True:
            trouble = self._socket_trouble(own_inode, kubelet_inode)
            if trouble:
                return trouble
            if not await probe_socket(newer):
                if os.path.lexists(newer):
                    # it served a moment ago, so it is not being bound: its process died
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(newer)
                        log.info("%s: removed %s: its instance died", rt.name, newer)
                successor = await self._newer_instance()
                if successor is None:
                    log.warning(
                        "%s: the newer instance on %s went away: registering again",
                        rt.name,
                        newer,
                    )
                    return "newer_gone"
                newer = self.standing_by = successor
                log.info("%s: now standing by for %s", rt.name, newer)
            seen = await self.watch.changed.wait(seen, timeout=self.config.standby_probe)

    async def _serve_watcher(self, own_inode: int | None, quiet: asyncio.Event) -> str:
        log.info("%s: serving %s for the kubelet plugin watcher", self.rt.name, self.path)
        status_task = asyncio.ensure_future(self._watcher_status.get())
        trouble_task = asyncio.ensure_future(
            self._watch_for_trouble(own_inode, None, quiet, active=False)
        )
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
                    if not quiet.is_set():
                        self._set_registered(True)
                    await cancel_and_wait(trouble_task)
                    trouble_task = asyncio.ensure_future(
                        self._watch_for_trouble(own_inode, None, quiet)
                    )
                else:
                    self.metrics.registrations.labels(self.rt.name, "error").inc()
                    raise RegistrationError(f"plugin watcher refused {self.rt.name}: {error}")
                status_task = asyncio.ensure_future(self._watcher_status.get())
        finally:
            await cancel_and_wait(status_task, trouble_task)

    async def _watch_for_trouble(
        self,
        own_inode: int | None,
        kubelet_inode: int | None,
        quiet: asyncio.Event,
        *,
        active: bool = True,
    ) -> str:
        """Return the reason the endpoint must restart. ``active``: registration done, so
        stream expectations apply. A newer instance appearing makes us stand by."""
        rt = self.rt
        wake = Signal()
        with self.watch.changed.forwarded_to(wake), rt.streams_changed.forwarded_to(wake):
            registered_at = time.monotonic()
            had_stream = rt.streams > 0
            zero_since: float | None = None if had_stream else registered_at
            seen = wake.generation
            while True:
                trouble = self._socket_trouble(own_inode, kubelet_inode)
                if trouble:
                    return trouble
                newer = await self._newer_instance()
                if newer is not None:
                    return await self._stand_by(newer, own_inode, kubelet_inode, quiet)
                now = time.monotonic()
                if rt.streams > 0:
                    had_stream = True
                    zero_since = None
                elif zero_since is None:
                    zero_since = now
                timeout: float | None = None
                if active and zero_since is not None:
                    if had_stream:
                        timeout = zero_since + self.config.stream_grace - now
                        if timeout <= 0:
                            log.warning("%s: ListAndWatch stream ended", rt.name)
                            return "stream_ended"
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
