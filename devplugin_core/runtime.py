"""The supervisor: runs one plugin against the kubelet until told to stop.

:class:`PluginRuntime` owns everything a plugin process does, on one asyncio loop:

* load and validate the config (exit 2 on errors), build the resources, run preflight checks;
* discover devices (worker thread, time-bounded) and run a first health check *before* serving,
  then keep both current: periodic rediscovery, cheap fingerprint polls, health loops;
* serve each resource on its own :class:`~devplugin_core._endpoint.Endpoint` (register,
  re-register after kubelet restarts or lost streams);
* hot-reload the config (file watch + SIGHUP): a valid config is applied as new snapshots and
  only added/removed resources start/stop endpoints; an invalid one is logged, counted and
  ignored;
* serve ``/metrics``, ``/healthz`` and ``/readyz``; poll the PodResources API;
* stop cleanly on SIGTERM/SIGINT (sockets removed). Any unexpected failure in a supervised task
  stops the runtime with that error (crash-only: the DaemonSet restarts the pod).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import json
import logging
import os
import random
import secrets
import signal
import time
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from prometheus_client import CollectorRegistry

from . import __version__
from ._aio import Exclusive, Signal, ThreadBatcher, cancel_and_wait, in_thread
from ._endpoint import Endpoint, EndpointConfig, KubeletWatch
from ._http import HttpServer
from ._quiet import Outcome, QuietJob, QuietTicks
from ._resource import EditsValidator, ResourceRuntime
from .api import (
    Discoverer,
    DiscoveryPass,
    HealthChecker,
    Observation,
    PluginContext,
    PluginSpec,
    Rejection,
    Resource,
    ResourceSet,
)
from .cdi import CdiWriter
from .config import ConfigDocument, decode, encode, load_document
from .errors import ConfigError, DevicePluginError, HostPathError
from .hostfs import HostFS
from .metrics import Metrics, ResourceView, SnapshotCollector
from .model import Device
from .podresources import PodResourcesPoller

log = logging.getLogger("devplugin.runtime")

__all__ = ["LoadedConfig", "PluginRuntime", "RuntimeOptions", "load_config"]

C = TypeVar("C")

DEFAULT_KUBELET_DIR = "/var/lib/kubelet/device-plugins"
DEFAULT_REGISTRY_DIR = "/var/lib/kubelet/plugins_registry"
DEFAULT_POD_RESOURCES_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"


@dataclass(frozen=True)
class RuntimeOptions:
    """Everything ``devplugin run`` can set (the CLI maps flags onto this)."""

    kubelet_dir: str = DEFAULT_KUBELET_DIR
    registry_dir: str = DEFAULT_REGISTRY_DIR
    registration_mode: str = "kubelet"
    host_root: str = "/"
    config_file: str | None = None
    metrics_address: str | None = None
    metrics_tls_cert: str | None = None
    metrics_tls_key: str | None = None
    cdi_dir: str | None = None
    pod_resources_socket: str | None = DEFAULT_POD_RESOURCES_SOCKET
    pod_resources_interval: float = 10.0
    plugin_options: Mapping[str, Any] = field(default_factory=dict)
    instance: str = field(default_factory=lambda: secrets.token_hex(3))
    discovery_timeout: float = 30.0
    kubelet_poll_interval: float = 5.0
    stream_grace: float = 0.25
    watch_config: bool = True
    handle_signals: bool = True

    def resolved_mode(self) -> str:
        """``auto`` picks the plugin watcher only when ``device-plugins/DEPRECATION`` exists,
        else ``kubelet``. No kubelet up to 1.32 writes it (its one writer, ``handler.go:
        GetPluginHandler``, is never called), so there ``auto`` means ``kubelet``."""
        if self.registration_mode != "auto":
            return self.registration_mode
        deprecated = os.path.exists(os.path.join(self.kubelet_dir, "DEPRECATION"))
        return "watcher" if deprecated else "kubelet"


@dataclass(frozen=True)
class LoadedConfig(Generic[C]):
    """A decoded config with where it came from and the warnings met."""

    config: C
    source: str
    digest: str
    warnings: tuple[str, ...]


def load_config(spec: PluginSpec[C], path: str | None) -> LoadedConfig[C]:
    """Read and decode the plugin's config; raises :class:`ConfigError` naming the file."""
    explicit = path is not None
    path = path or spec.default_config_file
    document: ConfigDocument | None = None
    if path and (explicit or os.path.exists(path) or not spec.config_optional):
        document = load_document(path)
    if document is None:
        data: Any = {}
        source, digest = "<built-in defaults>", ""
    else:
        data, source, digest = document.data, document.path, document.digest
    try:
        result = decode(spec.config_model, data)
    except ConfigError as err:
        raise err.with_source(source) from None
    return LoadedConfig(result.value, source, digest, tuple(result.warnings))


@dataclass(frozen=True)
class _PassResult:
    """What one discovery pass (in a worker thread) hands back to the loop."""

    results: dict[str, tuple[list[Device], dict[str, str]] | BaseException]
    rejections: list[Rejection]
    problems: set[str]
    fingerprints: dict[str, Hashable]


class PluginRuntime(Generic[C]):
    """Runs ``spec`` with ``options``. Use ``async with`` or :meth:`start`/:meth:`stop`."""

    def __init__(
        self,
        spec: PluginSpec[C],
        options: RuntimeOptions | None = None,
        *,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.spec = spec
        self.options = options or RuntimeOptions()
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = Metrics(self.registry, spec.name, __version__)
        self.host = HostFS(self.options.host_root)
        self.context = PluginContext(
            host=self.host,
            options=dict(self.options.plugin_options),
            cdi_enabled=bool(self.options.cdi_dir),
        )
        self.mode = self.options.resolved_mode()
        self.endpoint_config = EndpointConfig(
            kubelet_dir=self.options.kubelet_dir,
            mode=self.mode,
            registry_dir=self.options.registry_dir,
            instance=self.options.instance,
            stream_grace=self.options.stream_grace,
        )
        self.resources: dict[str, ResourceRuntime] = {}
        self.endpoints: dict[str, Endpoint] = {}
        self.rejections: list[Rejection] = []
        self.loaded: LoadedConfig[C] | None = None
        self.resource_set: ResourceSet | None = None
        self.http: HttpServer | None = None
        self.podresources: PodResourcesPoller | None = None
        self.cdi = CdiWriter(self.options.cdi_dir, spec.name) if self.options.cdi_dir else None
        self.reloaded = Signal()
        self.discovered = Signal()
        self._alloc_pool = concurrent.futures.ThreadPoolExecutor(4, "devplugin-alloc")
        self._bg_pool = concurrent.futures.ThreadPoolExecutor(4, "devplugin-bg")
        self._discovery = Exclusive()
        self._health_batch = ThreadBatcher(self._bg_pool)
        self._tick_phase = random.uniform(0, 1)
        self._quiet = QuietTicks(self._tick_phase)
        self._fingerprint_job = Exclusive()
        self._watch: KubeletWatch | None = None
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._resource_tasks: dict[str, list[asyncio.Task[Any]]] = {}
        self._failed: BaseException | None = None
        self._stopped = asyncio.Event()
        self._started = False
        self._path_problems: set[str] = set()
        self._fingerprints: dict[str, Hashable] = {}
        self._plugin_collectors: tuple[Any, ...] = ()
        self._reload_lock = asyncio.Lock()
        self._attempted_digest = ""
        self.registry.register(SnapshotCollector(self._views))

    # ------------------------------------------------------------------------------------------
    # lifecycle
    async def __aenter__(self) -> PluginRuntime[C]:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def load(self) -> tuple[LoadedConfig[C], ResourceSet]:
        """Load, decode and build the config (no I/O beyond reading the file)."""
        loaded = load_config(self.spec, self.options.config_file)
        try:
            resource_set = self.spec.resources(loaded.config, self.context)
        except ConfigError as err:
            raise err.with_source(loaded.source) if not err.source else err from None
        return loaded, resource_set

    async def start(self) -> None:
        """Load config, discover, check health, then serve every resource and start the loops."""
        loaded, resource_set = self.load()
        for warning in loaded.warnings:
            log.warning("config %s: %s", loaded.source, warning)
        if self.spec.preflight is not None:
            await asyncio.to_thread(self.spec.preflight, loaded.config, self.context)
        if self.spec.on_start is not None:
            await asyncio.to_thread(self.spec.on_start, loaded.config, self.context)
        self.loaded, self.resource_set = loaded, resource_set
        log.info(
            "%s %s starting: config %s, host root %s, registration mode %s",
            self.spec.name,
            __version__,
            loaded.source,
            self.host.root,
            self.mode,
        )
        if self.host.fake:
            log.warning(
                "host root %s is a fake host: regular files stand in for device nodes",
                self.host.root,
            )
        log.info("effective config: %s", json.dumps(encode(loaded.config), sort_keys=True))
        self.metrics.config_reloads.labels("ok").inc()
        self.metrics.config_last_success.set(time.time())
        self.metrics.config_valid.set(1)
        self._set_collectors(resource_set.collectors)
        for resource in resource_set.resources:
            self.resources[resource.name] = self._new_resource(resource)
        await self._start_http()  # probes answer ("starting") while discovery runs
        await self._refresh()
        self._watch = KubeletWatch(
            [self.options.kubelet_dir, self.endpoint_config.socket_dir],
            self.options.kubelet_poll_interval,
        )
        await self._watch.start()
        for name in self.resources:
            self._start_resource(name)
        self._spawn("rediscover", self._rediscover_loop())
        self._spawn("fingerprint", self._fingerprint_loop())
        if self.options.pod_resources_socket:
            self.podresources = PodResourcesPoller(
                self.options.pod_resources_socket,
                lambda: set(self.resources),
                self.metrics,
                self.options.pod_resources_interval,
            )
            self.registry.register(self.podresources)
            self._spawn("podresources", self.podresources.run())
        if self.options.watch_config and loaded.digest:
            self._spawn("config-watch", self._config_watch_loop(loaded.source))
        if self.options.handle_signals:
            self._install_signals()
        self._started = True

    async def stop(self) -> None:
        """Stop every task and endpoint (removing our sockets); idempotent."""
        if self._stopped.is_set() and not self._tasks and not self._resource_tasks:
            return
        self._stopped.set()
        if self.options.handle_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(sig)
        await asyncio.gather(*(self._stop_resource(n) for n in list(self._resource_tasks)))
        tasks = list(self._tasks.values())
        self._tasks.clear()
        await cancel_and_wait(*tasks)
        if self._watch is not None:
            await self._watch.stop()
            self._watch = None
        if self.http is not None:
            await self.http.stop()
            self.http = None
        self._quiet.stop()
        self._alloc_pool.shutdown(wait=False, cancel_futures=True)
        self._bg_pool.shutdown(wait=False, cancel_futures=True)
        log.info("%s stopped", self.spec.name)

    async def run(self) -> None:
        """Start, serve until SIGTERM/SIGINT or a fatal error, then stop. Re-raises the error."""
        try:
            await self.start()
            await self._stopped.wait()
        finally:
            await self.stop()
        if self._failed is not None:
            raise self._failed

    def request_stop(self) -> None:
        self._stopped.set()

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)

    def _on_stop_signal(self, sig: signal.Signals) -> None:
        log.info("received %s, shutting down", sig.name)
        self._stopped.set()

    def _on_sighup(self) -> None:
        log.info("received SIGHUP, reloading the config (and the metrics TLS certificate)")
        if self.http is not None:
            self.http.reload_tls()
        self._spawn(f"reload-{time.monotonic()}", self.reload("sighup"), supervised=False)

    def _spawn(self, name: str, coro: Any, *, supervised: bool = True) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks[name] = task

        def done(t: asyncio.Task[Any]) -> None:
            if self._tasks.get(name) is t:
                del self._tasks[name]
            if t.cancelled():
                return
            error = t.exception()
            if error is not None and supervised:
                self._fail(name, error)

        task.add_done_callback(done)
        return task

    def _fail(self, name: str, error: BaseException) -> None:
        if self._failed is None:
            log.error("%s failed: %s", name, error, exc_info=error)
            self._failed = error
        self._stopped.set()

    # ------------------------------------------------------------------------------------------
    # resources and endpoints
    def _new_resource(self, resource: Resource) -> ResourceRuntime:
        return ResourceRuntime(
            resource, self.host, self.metrics, self._alloc_pool, cdi=self.cdi is not None
        )

    def _start_resource(self, name: str) -> None:
        rt = self.resources[name]
        assert self._watch is not None
        endpoint = Endpoint(rt, self.endpoint_config, self._watch)
        self.endpoints[name] = endpoint
        tasks = [
            self._spawn(f"endpoint:{name}", endpoint.run()),
            self._spawn(f"health:{name}", self._health_loop(name)),
        ]
        self._resource_tasks[name] = tasks

    async def _stop_resource(self, name: str) -> None:
        await cancel_and_wait(*self._resource_tasks.pop(name, []))
        self.endpoints.pop(name, None)

    def ready(self) -> tuple[bool, str]:
        """(all resources registered, human-readable detail) for ``/readyz``."""
        if not self._started:
            return False, "starting"
        missing = sorted(n for n, rt in self.resources.items() if not rt.registered)
        if missing:
            return False, "not registered: " + ", ".join(missing)
        return True, f"{len(self.resources)} resources registered"

    def _views(self) -> Iterable[ResourceView]:
        return [ResourceView(name, rt.snapshot) for name, rt in sorted(self.resources.items())]

    def _set_collectors(self, collectors: Sequence[Any]) -> None:
        for collector in self._plugin_collectors:
            with contextlib.suppress(KeyError):
                self.registry.unregister(collector)
        for collector in collectors:
            self.registry.register(collector)
        self._plugin_collectors = tuple(collectors)

    async def _start_http(self) -> None:
        address = self.options.metrics_address
        if address is None:
            port = self.spec.default_metrics_port
            address = f":{port}" if port else ""
        if not address:
            return
        try:
            self.http = HttpServer(
                address,
                self.registry,
                self.ready,
                certfile=self.options.metrics_tls_cert,
                keyfile=self.options.metrics_tls_key,
            )
            await self.http.start()
        except ValueError as err:
            raise DevicePluginError(f"metrics endpoint: {err}") from None
        except OSError as err:
            raise DevicePluginError(
                f"cannot serve metrics on {address!r}: {err.strerror or err}"
            ) from None
        if self.http.ssl is not None:
            self._spawn("tls-watch", self._tls_watch_loop())

    async def _tls_watch_loop(self) -> None:
        """Pick up rotated certificates (cert-manager, kubelet-style rotation) within a minute."""
        while True:
            await asyncio.sleep(60)
            if self.http is not None:
                self.http.reload_tls(only_if_changed=True)

    # ------------------------------------------------------------------------------------------
    # discovery
    async def _refresh(self) -> None:
        """Discover, check every resource's health once, and drop CDI specs of gone resources."""
        await self.discover_once()
        await asyncio.gather(*(self.check_health_once(n) for n in self.resources))
        if self.cdi is not None:
            kinds = [rt.cdi for rt in self.resources.values() if rt.cdi]
            await in_thread(self._bg_pool, 30, self.cdi.cleanup, kinds)

    def _validated(
        self,
        resource: Resource,
        devices: Sequence[Device],
        problems: set[str],
        invalid: dict[str, str],
    ) -> list[Device]:
        """Devices whose edits pass the host-path rules; the rest are advertised Unhealthy."""
        validator = EditsValidator(self.host, resource)
        verdicts: dict[int, str | None] = {}
        refused: dict[str, list[str]] = {}  # problem -> device IDs (one log line per problem)
        out = []
        for device in devices:
            edits = device.edits
            if edits.device_nodes or edits.mounts:
                key = id(edits)
                if key not in verdicts:
                    try:
                        validator.validate(edits)
                        verdicts[key] = None
                    except HostPathError as err:
                        verdicts[key] = str(err)
                problem = verdicts[key]
                if problem is not None:
                    refused.setdefault(problem, []).append(device.id)
                    invalid[device.id] = problem
                    device = dataclasses.replace(device, healthy=False)
            out.append(device)
        for problem, ids in refused.items():
            shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
            noun = "device" if len(ids) == 1 else f"{len(ids)} devices"
            problems.add(f"{resource.name}: {noun} {shown} advertised Unhealthy: {problem}")
        return out

    def _discover_blocking(self, resources: dict[str, Resource]) -> _PassResult:
        scan = DiscoveryPass(self.host)
        results: dict[str, tuple[list[Device], dict[str, str]] | BaseException] = {}
        problems: set[str] = set()
        for name, resource in resources.items():
            try:
                devices = list(resource.discoverer.discover(scan))
                invalid: dict[str, str] = {}
                results[name] = (self._validated(resource, devices, problems, invalid), invalid)
            except Exception as err:  # a plugin bug must not stop the other resources
                log.exception("%s: discovery failed", name)
                results[name] = err
        # The baseline for the cheap fingerprint polls is taken right after the scan, in the same
        # thread (fingerprints may depend on what discovery found, e.g. which PFs to watch), so a
        # change after this pass is noticed at the next poll.
        prints = self._fingerprint_blocking(resources)
        return _PassResult(results, scan.rejections, problems, prints)

    async def discover_once(self) -> bool:
        """Run one discovery pass for every resource; returns False if it could not run."""
        if self._discovery.busy:
            log.warning("discovery still running from a previous pass; skipping this one")
            return False
        resources = {name: rt.resource for name, rt in self.resources.items()}
        start = time.monotonic()
        try:
            result = await self._discovery.run(
                self._bg_pool,
                self.options.discovery_timeout,
                lambda: self._discover_blocking(resources),
            )
        except TimeoutError:
            log.error(
                "discovery did not finish within %.0fs; keeping the previous devices",
                self.options.discovery_timeout,
            )
            for name in resources:
                self.metrics.discovery_errors.labels(name, "timeout").inc()
            return False
        self.metrics.discovery_duration.observe(time.monotonic() - start)
        results, rejections, problems = result.results, result.rejections, result.problems
        self._fingerprints = result.fingerprints
        for message in sorted(problems - self._path_problems):
            log.error("%s", message)
        self._path_problems = problems
        self.rejections = rejections
        changed = []
        for name, value in results.items():
            rt = self.resources.get(name)
            if rt is None:
                continue
            if isinstance(value, BaseException):
                self.metrics.discovery_errors.labels(name, "error").inc()
                continue
            devices, rt.invalid = value
            old_keys = {d.health_key for d in rt.devices}
            if rt.set_devices(devices):
                changed.append(name)
            if {d.health_key for d in rt.devices} - old_keys and self._started:
                self._spawn(
                    f"health-now:{name}:{time.monotonic()}",
                    self.check_health_once(name),
                    supervised=False,
                )
        if self.cdi is not None and changed:
            await self._write_cdi(changed)
        self.discovered.fire()
        return True

    async def _write_cdi(self, names: Iterable[str]) -> None:
        cdi = self.cdi
        assert cdi is not None
        jobs = []
        for name in names:
            rt = self.resources[name]
            if rt.cdi is not None:
                jobs.append((rt.cdi, [d for d in rt.devices if d.id not in rt.invalid]))

        def write_all() -> None:
            for kind, devices in jobs:
                cdi.write(kind, devices)

        try:
            await in_thread(self._bg_pool, 30, write_all)
        except (OSError, TimeoutError) as err:
            log.error("cannot write CDI specs to %s: %s", self.options.cdi_dir, err)

    async def _rediscover_loop(self) -> None:
        skipped = 0
        while True:
            interval = self.resource_set.rediscover_interval if self.resource_set else 60.0
            if interval <= 0:
                await self.reloaded.wait(self.reloaded.generation)
                continue
            seen = self.reloaded.generation
            await self.reloaded.wait(seen, timeout=interval)
            if self.reloaded.generation != seen:
                continue
            limit = self.resource_set.max_skipped_rescans if self.resource_set else 0
            if skipped < limit and await self._fingerprints_unchanged():
                skipped += 1
                self.metrics.rescans_skipped.inc()
                continue
            skipped = 0
            await self.discover_once()

    async def _fingerprints_unchanged(self) -> bool:
        """True when every resource has a fingerprint and none changed since the last scan
        (a full periodic rescan would then only re-read what is known not to have moved)."""
        resources = {name: rt.resource for name, rt in self.resources.items()}
        if not resources or not all(_has_fingerprint(r) for r in resources.values()):
            return False
        prints = await self._take_fingerprints(resources)
        return bool(prints) and prints == self._fingerprints

    async def _take_fingerprints(
        self, resources: dict[str, Resource]
    ) -> dict[str, Hashable] | None:
        """The fingerprints of ``resources``, taken in a worker thread; None while another
        take is still running or when this one times out."""
        if self._fingerprint_job.busy:
            return None
        try:
            return await self._fingerprint_job.run(
                self._bg_pool, 10, functools.partial(self._fingerprint_blocking, resources)
            )
        except TimeoutError:
            log.warning("fingerprint check timed out")
            return None

    def _fingerprint_blocking(self, resources: dict[str, Resource]) -> dict[str, Hashable]:
        out: dict[str, Hashable] = {}
        for name, resource in resources.items():
            if not _has_fingerprint(resource):
                continue
            try:
                out[name] = resource.discoverer.fingerprint(self.host)
            except Exception as err:
                out[name] = f"error: {err}"
        return out

    async def _fingerprint_loop(self) -> None:
        while True:
            interval = self.resource_set.fingerprint_interval if self.resource_set else 5.0
            await self.reloaded.wait(self.reloaded.generation, timeout=max(interval, 0.05))
            resources = {name: rt.resource for name, rt in self.resources.items()}
            if not any(_has_fingerprint(r) for r in resources.values()):
                continue
            prints = await self._take_fingerprints(resources)
            if prints is not None and prints != self._fingerprints:
                log.info("host changed (fingerprint); rediscovering")
                await self.discover_once()  # takes a new fingerprint baseline

    # ------------------------------------------------------------------------------------------
    # health
    async def check_health_once(self, name: str) -> bool:
        """Run one health check of ``name`` now; returns True if its snapshot changed."""
        rt = self.resources.get(name)
        if rt is None:
            return False
        checker = rt.resource.health
        if checker is None or not rt.devices:
            return False
        if rt.health_job.busy:
            return False
        devices = rt.devices
        start = time.monotonic()
        outcome: Outcome
        try:
            outcome = await rt.health_job.run(
                self._health_batch, checker.timeout, lambda: rt.run_check(devices)
            )
        except Exception as err:  # TimeoutError included
            outcome = err
        return self._apply_health(name, rt, devices, outcome, time.monotonic() - start)

    def _apply_health(
        self,
        name: str,
        rt: ResourceRuntime,
        devices: Sequence[Device],
        outcome: Outcome,
        duration: float,
    ) -> bool:
        """Count one finished check and apply its observations; True if the snapshot changed."""
        checker = rt.resource.health
        timeout = checker.timeout if checker is not None else 0.0
        if isinstance(outcome, TimeoutError):
            result = "timeout"
            log.warning("%s: health check timed out after %.1fs", name, timeout)
            observations = _all_bad(devices, f"health check timed out after {timeout:g}s")
        elif isinstance(outcome, BaseException):
            result = "error"
            log.warning("%s: health check failed: %s", name, outcome, exc_info=outcome)
            observations = _all_bad(devices, f"health check failed: {outcome}")
        else:
            result, observations = "ok", dict(outcome)
        self.metrics.health_checks.labels(name, result).inc()
        self.metrics.health_duration.labels(name).observe(duration)
        if rt is not self.resources.get(name):
            return False
        return rt.observe(observations)

    async def _quiet_until_needed(
        self, name: str, rt: ResourceRuntime, checker: HealthChecker, wake: Signal, seen: int
    ) -> str:
        """Hand ``name``'s interval checks to the quiet thread until: a check finds a problem
        (applied; returns "problem"), the thread stops finishing checks (a hung check: devices
        marked bad; "hung"), or ``wake`` fires for a watch event or a reload ("woken")."""
        loop = asyncio.get_running_loop()
        handed: list[tuple[Outcome, float]] = []
        ok_count = self.metrics.health_checks.labels(name, "ok")
        durations = self.metrics.health_duration.labels(name)

        def hand_over(outcome: Outcome, duration: float) -> None:  # in the quiet thread
            handed.append((outcome, duration))
            with contextlib.suppress(RuntimeError):  # the loop has closed: shutting down
                loop.call_soon_threadsafe(wake.fire)

        def record_ok(duration: float) -> None:  # in the quiet thread
            ok_count.inc()
            durations.observe(duration)

        job = self._quiet.add(
            QuietJob(name, lambda: rt.run_check(rt.devices), checker.interval, hand_over, record_ok)
        )
        why = "woken"
        try:
            with self.reloaded.forwarded_to(wake):
                while not handed:
                    if await wake.wait(seen, timeout=checker.timeout) > seen:
                        break
                    if self._quiet.overdue(job, checker.timeout):
                        why = "hung"
                        break
        finally:
            self._quiet.remove(job)
        if handed:
            outcome, duration = handed[0]
            self._apply_health(name, rt, rt.devices, outcome, duration)
            return "problem"
        if why == "hung":
            self._apply_health(name, rt, rt.devices, TimeoutError(), checker.timeout)
        return why

    def _may_go_quiet(self, rt: ResourceRuntime, checker: HealthChecker) -> bool:
        return (
            checker.interval > 0
            and rt.tracker.all_healthy
            and not rt.health_job.busy
            and not self._quiet.stuck(checker.timeout)
        )

    async def _health_loop(self, name: str) -> None:
        rt = self.resources[name]
        wake = Signal()
        watcher: asyncio.Task[None] | None = None
        watched: object = None
        try:
            while True:
                checker = rt.resource.health
                if checker is not watched:
                    if watcher is not None:
                        await cancel_and_wait(watcher)
                        watcher = None
                    watched = checker
                    if checker is not None:
                        watcher = asyncio.get_running_loop().create_task(
                            self._run_watch(name, checker, wake), name=f"health-watch:{name}"
                        )
                if checker is None:
                    await self.reloaded.wait(self.reloaded.generation)
                    continue
                seen = wake.generation
                await self.check_health_once(name)
                if self._may_go_quiet(rt, checker):
                    # Steady state: the ticks run in the quiet thread and the loop sleeps until
                    # a check finds a problem, a check hangs, or an event or reload wakes it.
                    why = await self._quiet_until_needed(name, rt, checker, wake, seen)
                    if why == "woken":
                        continue  # check now, as after any wake
                    seen = wake.generation  # the problem is applied: next check on the tick
                timeout = None
                if checker.interval > 0:
                    # Ticks fall on multiples of the interval (shifted by a per-process phase so
                    # plugins on one node do not all wake at once), so the checks of resources
                    # with the same interval run in one loop iteration and share one handoff.
                    since = time.monotonic() - self._tick_phase
                    timeout = checker.interval - since % checker.interval
                with self.reloaded.forwarded_to(wake):
                    await wake.wait(seen, timeout=timeout)
        finally:
            await cancel_and_wait(watcher)

    async def _run_watch(self, name: str, checker: Any, wake: Signal) -> None:
        rt = self.resources[name]
        try:
            await checker.watch(lambda: rt.devices, wake.fire)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: health event source failed; falling back to polling", name)

    # ------------------------------------------------------------------------------------------
    # config reload
    async def reload(self, reason: str = "manual") -> bool:
        """Reload the config file; apply it if valid. Returns True when a new config was applied."""
        async with self._reload_lock:
            if self.loaded is not None and self.loaded.digest and not self._config_changed():
                return False
            try:
                loaded, resource_set = self.load()
                if self.spec.preflight is not None:
                    await asyncio.to_thread(self.spec.preflight, loaded.config, self.context)
            except DevicePluginError as err:
                self.metrics.config_reloads.labels("failed").inc()
                self.metrics.config_valid.set(0)
                log.error(
                    "config reload (%s) rejected, keeping the running config: %s", reason, err
                )
                return False
            self.metrics.config_valid.set(1)
            if self.loaded is not None and loaded.digest == self.loaded.digest:
                return False
            for warning in loaded.warnings:
                log.warning("config %s: %s", loaded.source, warning)
            await self._apply(loaded, resource_set)
            self.metrics.config_reloads.labels("ok").inc()
            self.metrics.config_last_success.set(time.time())
            log.info(
                "config reloaded (%s); effective config: %s",
                reason,
                json.dumps(encode(loaded.config), sort_keys=True),
            )
            return True

    def _config_changed(self) -> bool:
        """Cheap check before a reload: did the file's bytes change since the last load?"""
        import hashlib

        assert self.loaded is not None
        try:
            with open(self.loaded.source, "rb") as fh:
                digest = hashlib.sha256(fh.read()).hexdigest()
        except OSError:
            return True  # let the full load report the problem
        last = self._attempted_digest or self.loaded.digest
        self._attempted_digest = digest
        return digest != last

    async def _apply(self, loaded: LoadedConfig[C], resource_set: ResourceSet) -> None:
        new = {r.name: r for r in resource_set.resources}
        removed = [n for n in self.resources if n not in new]
        added = [n for n in new if n not in self.resources]
        for name in removed:
            log.info("resource %s removed by the new config; stopping its endpoint", name)
            await self._stop_resource(name)
            del self.resources[name]
            self.metrics.forget_resource(name)
        for name, resource in new.items():
            if name in self.resources:
                self.resources[name].replace_resource(resource)
        for name in added:
            log.info("resource %s added by the new config", name)
            self.resources[name] = self._new_resource(resource=new[name])
        self.loaded, self.resource_set = loaded, resource_set
        self._set_collectors(resource_set.collectors)
        await self._refresh()
        for name in added:
            if self._started and not self._stopped.is_set():
                self._start_resource(name)
        self.reloaded.fire()

    async def _config_watch_loop(self, path: str) -> None:
        from .config_watch import ConfigWatch

        async with ConfigWatch(path) as watch:
            async for _ in watch.changes():
                await self.reload("file changed")


def _has_fingerprint(resource: Resource) -> bool:
    """The resource's discoverer overrides :meth:`Discoverer.fingerprint`."""
    return type(resource.discoverer).fingerprint is not Discoverer.fingerprint


def _all_bad(devices: Sequence[Device], reason: str) -> dict[str, Observation]:
    return {d.health_key: Observation.bad(reason) for d in devices}
