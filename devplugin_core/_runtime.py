"""The supervisor: runs one plugin against the kubelet until told to stop.

:class:`PluginRuntime` wires the parts together on one asyncio loop and owns their lifecycle:

* :class:`~devplugin_core._reload.ConfigSource` loads the config (exit 2 on errors) and
  reloads it on file change or SIGHUP (a bad file keeps the running config);
* :class:`~devplugin_core._scan.Scanning` runs the plugin's one scanner and hands each result
  to :meth:`PluginRuntime._apply_scan`, which diffs the device trees: a resource that appears
  gets a :class:`~devplugin_core._resource.ResourceRuntime`, an
  :class:`~devplugin_core._endpoint.Endpoint` and health checks; one that disappears is
  stopped; the others get their new devices;
* :class:`~devplugin_core._health.HealthScheduler` runs every resource's checks;
* ``/metrics``, ``/healthz``, ``/readyz``, the PodResources poller and signals.

The first scan and health round finish before any endpoint registers. An unexpected failure
in a supervised task stops the runtime with that error (crash-only: the DaemonSet restarts it).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import logging
import os
import signal
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from prometheus_client import CollectorRegistry

from . import __version__
from ._aio import Signal, Supervisor, in_thread
from ._api import Plugin, PluginContext, PluginSpec, Rejection
from ._cdi import CdiWriter
from ._endpoint import Endpoint, EndpointConfig, KubeletWatch
from ._health import HealthScheduler
from ._hostfs import HostFS
from ._http import HttpServer, serve_http
from ._metrics import Metrics, PluginCollectors, ResourceView, SnapshotCollector
from ._podresources import PodResourcesPoller
from ._reload import ConfigSource, LoadedConfig, load_config
from ._resource import ResourceRuntime
from ._scan import Scanning, ScanResult

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
    instance: str = field(default_factory=lambda: os.urandom(3).hex())
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
        self.options = opts = options or RuntimeOptions()
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = Metrics(self.registry, spec.name, __version__)
        self.host = HostFS(opts.host_root)
        self.context = PluginContext(
            host=self.host, options=dict(opts.plugin_options), cdi_enabled=bool(opts.cdi_dir)
        )
        self.mode = opts.resolved_mode()
        self.endpoint_config = EndpointConfig(
            kubelet_dir=opts.kubelet_dir,
            mode=self.mode,
            registry_dir=opts.registry_dir,
            instance=opts.instance,
            stream_grace=opts.stream_grace,
        )
        self._alloc_pool = concurrent.futures.ThreadPoolExecutor(4, "devplugin-alloc")
        self._bg_pool = concurrent.futures.ThreadPoolExecutor(4, "devplugin-bg")
        self.config = ConfigSource(spec, opts.config_file, self.context, self.metrics)
        self.scanning = Scanning(
            self.host, self._bg_pool, self.metrics, opts.discovery_timeout, self._apply_scan
        )
        self.health = HealthScheduler(self.metrics, self.scanning.request)
        self.plugin: Plugin | None = None
        self.resources: dict[str, ResourceRuntime] = {}
        self.endpoints: dict[str, Endpoint] = {}
        self.rejections: list[Rejection] = []
        self.http: HttpServer | None = None
        self.podresources: PodResourcesPoller | None = None
        self.cdi = CdiWriter(opts.cdi_dir, spec.name) if opts.cdi_dir else None
        self.reloaded = Signal()
        self.discovered = self.scanning.done
        self._retired: list[Plugin] = []  # replaced builds, closed after the next good scan
        self._watch: KubeletWatch | None = None
        self._tasks = Supervisor()
        self._stopped = self._tasks.stopped
        self._started = False
        self.registry.register(SnapshotCollector(self._views))
        self.registry.register(PluginCollectors(self._collectors, self._views))

    @property
    def _failed(self) -> BaseException | None:
        return self._tasks.failed

    @property
    def loaded(self) -> LoadedConfig[C] | None:
        return self.config.loaded

    # -- lifecycle -----------------------------------------------------------------------------
    async def __aenter__(self) -> PluginRuntime[C]:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def load(self) -> tuple[LoadedConfig[C], Plugin]:
        """Load, decode and build the config (no I/O beyond reading the file)."""
        return self.config.load()

    async def prepare(self) -> None:
        """Load the config, scan and check health once; nothing is served yet (``discover``)."""
        _, plugin = await self.config.first()
        self.plugin = self.scanning.plugin = plugin
        await self.discover_once()
        await asyncio.gather(*(self.check_health_once(n) for n in list(self.resources)))

    async def start(self) -> None:
        """Load config, scan, check health, then serve every resource and start the loops."""
        loaded, plugin = await self.config.first()
        if self.spec.on_start is not None:
            await asyncio.to_thread(self.spec.on_start, loaded.config, self.context)
        self.plugin = self.scanning.plugin = plugin
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
                "host root %s is a fake host: files stand in for device nodes", self.host.root
            )
        await self._start_http()  # probes answer ("starting") while the first scan runs
        await self._refresh()
        self._watch = KubeletWatch(
            [self.options.kubelet_dir, self.endpoint_config.socket_dir],
            self.options.kubelet_poll_interval,
        )
        await self._watch.start(inotify=False)  # inotify once registered (_watch_soon)
        self._started = True
        for name in self.resources:
            self._serve(name)
        self._spawn("scanning", self.scanning.run())
        self._spawn("kubelet-watch", self._watch_soon(), supervised=False)
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
            self._spawn("config-watch", self.config.watch(lambda: self.reload("file changed")))
        if self.options.handle_signals:
            self._install_signals()
        self._spawn("gc-freeze", self._freeze_when_registered(), supervised=False)

    async def _watch_soon(self, limit: float = 1.0) -> None:
        """Start the kubelet-directory inotify watches once every resource has registered
        (at most ``limit`` seconds after serving starts), off the path to Register."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit):
                await asyncio.gather(*(e.registered.wait() for e in self.endpoints.values()))
        if self._watch is not None:
            self._watch.watch_now()

    async def _freeze_when_registered(self) -> None:
        """Everything built by then (modules, config, the first devices) lives until exit:
        keep the cyclic GC from re-walking it, so collections during Allocate stay short
        (p99). Done a second after serving starts, so that it never delays Register."""
        await asyncio.sleep(1.0)
        gc.collect()
        gc.freeze()

    async def stop(self) -> None:
        """Stop every task and endpoint (removing our sockets); idempotent."""
        if self._stopped.is_set() and not self._tasks.tasks:
            return
        self._stopped.set()
        if self.options.handle_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(sig)
        await self._tasks.cancel(*(f"endpoint:{n}" for n in self.endpoints))  # sockets first
        await self._tasks.cancel()
        await self.health.stop()
        if self._watch is not None:
            await self._watch.stop()
            self._watch = None
        if self.http is not None:
            await self.http.stop()
            self.http = None
        self._close([*self._retired, *([self.plugin] if self.plugin else [])])
        self._retired = []
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
        self._spawn("reload-sighup", self.reload("sighup"), supervised=False)

    def _spawn(self, name: str, coro: Any, *, supervised: bool = True) -> None:
        self._tasks.spawn(name, coro, supervised=supervised)

    def _close(self, plugins: Iterable[Plugin]) -> None:
        for plugin in plugins:
            if plugin.close is not None:
                try:
                    plugin.close()
                except Exception:
                    log.exception("closing the previous plugin build failed")

    # -- probes and metrics --------------------------------------------------------------------
    def ready(self) -> tuple[bool, str]:
        """(all resources registered, human-readable detail) for ``/readyz``."""
        if not self._started:
            return False, "starting"
        missing = sorted(n for n, rt in self.resources.items() if not rt.registered)
        if missing:
            return False, "not registered: " + ", ".join(missing)
        return True, f"{len(self.resources)} resources registered"

    def live(self) -> tuple[bool, str]:
        """``/healthz``: fails while a health check has hung past its bound."""
        hung = self.health.hung
        if hung:
            return False, "health check hung: " + ", ".join(hung)
        return True, "ok"

    def _views(self) -> list[ResourceView]:  # called in the scrape thread
        return [
            ResourceView(name, rt.snapshot) for name, rt in sorted(list(self.resources.items()))
        ]

    def _collectors(self) -> tuple[Any, ...]:
        plugin = self.plugin
        return plugin.collectors if plugin is not None else ()

    async def _start_http(self) -> None:
        self.http = await serve_http(
            self.options.metrics_address,
            self.spec.default_metrics_port,
            self.registry,
            self.ready,
            self.live,
            certfile=self.options.metrics_tls_cert,
            keyfile=self.options.metrics_tls_key,
        )
        if self.http is not None and self.http.ssl is not None:
            self._spawn("tls-watch", self.http.watch_tls())

    # -- scans: the tree diff ------------------------------------------------------------------
    async def discover_once(self) -> bool:
        """Run one scan now and apply it; False if it failed or timed out."""
        return await self.scanning.scan_now()

    async def check_health_once(self, name: str) -> bool:
        """Run one health check of ``name`` now; True if its snapshot changed."""
        return await self.health.check_once(name)

    async def _refresh(self) -> None:
        """Scan, check every resource's health once, and drop CDI specs of gone resources."""
        await self.discover_once()
        await asyncio.gather(*(self.check_health_once(n) for n in list(self.resources)))
        if self.cdi is not None:
            kinds = [rt.cdi for rt in self.resources.values() if rt.cdi]
            await in_thread(self._bg_pool, 30, self.cdi.cleanup, kinds)

    async def _apply_scan(self, result: ScanResult) -> None:
        """Diff the scanned tree against what is served (on the loop)."""
        if result.plugin is not self.plugin:
            return  # a reload replaced the build while this scan ran
        self.rejections = result.rejections
        configured = {r.name for r in result.plugin.resources}
        wanted = {n: s for n, s in result.tree.items() if n in configured or s.devices}
        for name in [n for n in self.resources if n not in wanted]:
            log.info("resource %s is gone (config or host); stopping its endpoint", name)
            await self._remove(name)
        changed = []
        for name, scanned in wanted.items():
            rt = self.resources.get(name)
            if rt is None:
                log.info("serving resource %s (%d devices)", name, len(scanned.devices))
                rt = ResourceRuntime(
                    scanned.resource,
                    self.host,
                    self.metrics,
                    self._alloc_pool,
                    cdi=self.cdi is not None,
                    rescan=self.scanning.request,
                )
                self.resources[name] = rt
                rt.set_devices(scanned.devices, scanned.invalid)
                self.health.add(rt)
                changed.append(name)
                if self._started and not self._stopped.is_set():
                    self._serve(name)
                continue
            if rt.resource is not scanned.resource:
                rt.replace_resource(scanned.resource)
                self.health.update(name)
            old_keys = rt.health_keys
            if rt.set_devices(scanned.devices, scanned.invalid):
                changed.append(name)
            if rt.health_keys - old_keys:
                self.health.wake(name)
        if self.cdi is not None and changed:
            await self._write_cdi(changed)
        if self._retired:
            retired, self._retired = self._retired, []
            await asyncio.to_thread(self._close, retired)

    def _serve(self, name: str) -> None:
        assert self._watch is not None
        endpoint = Endpoint(self.resources[name], self.endpoint_config, self._watch)
        self.endpoints[name] = endpoint
        self._spawn(f"endpoint:{name}", endpoint.run())
        self._spawn(f"answers:{name}", self.resources[name].keep_answers_built())

    async def _remove(self, name: str) -> None:
        await self._tasks.cancel(f"endpoint:{name}", f"answers:{name}")
        self.endpoints.pop(name, None)
        await self.health.remove(name)
        self.resources.pop(name, None)
        self.metrics.forget_resource(name)

    async def _write_cdi(self, names: Iterable[str]) -> None:
        assert self.cdi is not None
        jobs = [(rt.cdi, rt.cdi_devices()) for n in names if (rt := self.resources[n]).cdi]
        try:
            await in_thread(self._bg_pool, 30, self.cdi.write_all, jobs)
        except (OSError, TimeoutError) as err:
            log.error("cannot write CDI specs to %s: %s", self.options.cdi_dir, err)

    # -- config reload -------------------------------------------------------------------------
    async def reload(self, reason: str = "manual") -> bool:
        """Reload the config file; apply it if valid. True when a new config was applied."""
        got = await self.config.reload(reason)
        if got is None:
            return False
        _, plugin = got
        if self.plugin is not None:
            self._retired.append(self.plugin)
        self.plugin = self.scanning.plugin = plugin
        await self._refresh()
        self.reloaded.fire()
        return True
