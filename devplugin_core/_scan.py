"""When and how the plugin's scanner runs; what one scan hands to the supervisor.

One :class:`Scanning` per runtime. A scan runs :meth:`Scanner.scan` in a worker thread with a
deadline, checks every device's host paths (:func:`~devplugin_core._paths.scan_checked`) and
takes the fingerprint baseline, all in that thread, then hands a :class:`ScanResult` to the
supervisor on the loop. Scans never overlap; a scan asked for while one runs is done once more
right after it.

=====================  ======================================================================
trigger                what happens
=====================  ======================================================================
start, reload          :meth:`Scanning.scan_now` (awaited by the supervisor)
every rescan_interval  full scan, skipped while the fingerprint is unchanged (at most
                       ``max_skipped_rescans`` in a row)
fingerprint changed    polled every ``fingerprint_interval``; a scan at once
:meth:`request`        a health check or an Allocate saw the host change: a scan within
                       ``TRIGGER_SPACING`` seconds (requests in between are merged)
=====================  ======================================================================
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field

from ._aio import Signal, in_thread
from ._api import Plugin, Rejection, Resource, Scan, Scanner
from ._hostfs import HostFS
from ._metrics import Metrics
from ._model import Device
from ._paths import scan_checked

log = logging.getLogger("devplugin.scan")

__all__ = ["ScanResult", "Scanning"]

#: minimum seconds between two triggered scans (a burst of Allocates asks once)
TRIGGER_SPACING = 0.25
FINGERPRINT_TIMEOUT = 10.0


@dataclass(frozen=True)
class ScannedResource:
    resource: Resource
    devices: list[Device]
    invalid: dict[str, str]  # device ID -> why its host paths were refused


@dataclass(frozen=True)
class ScanResult:
    """One finished scan: every served resource's devices, or the error that stopped it."""

    plugin: Plugin
    tree: dict[str, ScannedResource] = field(default_factory=dict)
    rejections: list[Rejection] = field(default_factory=list)
    problems: set[str] = field(default_factory=set)
    fingerprint: Hashable = None
    error: BaseException | None = None
    changed: bool = False  # the fingerprint moved while the scan ran


def _has_fingerprint(plugin: Plugin) -> bool:
    return type(plugin.scanner).fingerprint is not Scanner.fingerprint


class Scanning:
    """Runs scans and hands results to ``apply`` (a coroutine run on the loop)."""

    def __init__(
        self,
        host: HostFS,
        pool: concurrent.futures.Executor,
        metrics: Metrics,
        timeout: float,
        apply: Callable[[ScanResult], Awaitable[None]],
    ) -> None:
        self.host = host
        self.pool = pool
        self.metrics = metrics
        self.timeout = timeout
        self.apply = apply
        self.plugin: Plugin | None = None
        self.fingerprint: Hashable = None
        self.done = Signal()  # fired after every applied scan
        self._lock = asyncio.Lock()
        self._requested = Signal()
        self._running: asyncio.Future[ScanResult] | None = None
        self._last_trigger = 0.0
        self._pending = False
        self._followup = False
        self._problems: set[str] = set()

    # -- one scan ------------------------------------------------------------------------------
    def _scan_blocking(self, plugin: Plugin) -> ScanResult:
        # The fingerprint is taken in this thread right before and right after the scan; the
        # one after is the baseline. If they differ, the host may have changed while the scan
        # read it (the change would be in the baseline but not in the devices, and go unnoticed
        # until a full rescan), so one more scan follows at once (see scan_now).
        before = self._take_blocking(plugin)
        scan = Scan(self.host, plugin.resources)
        try:
            plugin.scanner.scan(scan)
        except Exception as err:  # a plugin bug: keep serving what we had
            log.exception("scan failed; keeping the previous devices")
            return ScanResult(plugin, error=err)
        tree: dict[str, ScannedResource] = {}
        problems: set[str] = set()
        for name, (resource, devices) in scan.tree.items():
            checked, invalid, refused = scan_checked(self.host, resource, devices)
            tree[name] = ScannedResource(resource, checked, invalid)
            for problem, ids in refused.items():
                shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
                noun = "device" if len(ids) == 1 else f"{len(ids)} devices"
                problems.add(f"{name}: {noun} {shown} advertised Unhealthy: {problem}")
        after = self._take_blocking(plugin)
        return ScanResult(plugin, tree, scan.rejections, problems, after, changed=before != after)

    def _take_blocking(self, plugin: Plugin) -> Hashable:
        if not _has_fingerprint(plugin):
            return None
        try:
            return plugin.scanner.fingerprint(self.host)
        except Exception as err:
            return f"error: {err}"

    async def scan_now(self, plugin: Plugin | None = None) -> bool:
        """Scan (with ``plugin``, default the current one) and apply; False if it failed."""
        async with self._lock:
            plugin = plugin or self.plugin
            assert plugin is not None
            start = time.monotonic()
            if self._running is not None and not self._running.done():
                log.warning("the previous scan is still running; waiting for it")
                await self._running
            loop = asyncio.get_running_loop()
            self._running = future = loop.run_in_executor(self.pool, self._scan_blocking, plugin)
            try:
                async with asyncio.timeout(self.timeout):
                    result = await asyncio.shield(future)
            except TimeoutError:
                log.error(
                    "scan did not finish within %.0fs; keeping the previous devices", self.timeout
                )
                self.metrics.discovery_errors.labels("", "timeout").inc()
                return False
            self.metrics.discovery_duration.observe(time.monotonic() - start)
            if result.error is not None:
                self.metrics.discovery_errors.labels("", "error").inc()
                return False
            for message in sorted(result.problems - self._problems):
                log.error("%s", message)
            self._problems = result.problems
            self.fingerprint = result.fingerprint
            await self.apply(result)
            self.done.fire()
            # one follow-up scan, never a chain (a fingerprint that reads the scanner's own
            # state differs at the first scan; one that is not stable must not loop)
            if result.changed and not self._followup:
                self._followup = True
                self.request("the host changed while the scan ran")
            else:
                self._followup = False
            return True

    def request(self, reason: str) -> None:
        """Ask for a scan soon (from the loop): the host changed under a device."""
        if not self._pending:
            log.info("rescanning: %s", reason)
        self._pending = True
        self._requested.fire()

    # -- the loops -----------------------------------------------------------------------------
    async def run(self) -> None:
        """Periodic, fingerprint-driven and requested scans until cancelled."""
        await asyncio.gather(self._periodic(), self._fingerprints(), self._triggered())

    async def _triggered(self) -> None:
        # a request made before the loops started (e.g. by the first scan) still counts
        seen = self._requested.generation - (1 if self._pending else 0)
        while True:
            seen = await self._requested.wait(seen)
            wait = self._last_trigger + TRIGGER_SPACING - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            seen = self._requested.generation
            self._pending = False
            self._last_trigger = time.monotonic()
            self.metrics.rescans_triggered.inc()
            await self.scan_now()

    async def _periodic(self) -> None:
        skipped = 0
        while True:
            plugin = self.plugin
            interval = plugin.rescan_interval if plugin else 60.0
            seen = self.done.generation
            if interval <= 0:
                await self.done.wait(seen)
                continue
            if await self.done.wait(seen, timeout=interval) != seen:
                continue  # something else scanned meanwhile: the interval starts again
            if plugin is not None and skipped < plugin.max_skipped_rescans:
                current = await self._take(plugin)
                if current is not None and current == self.fingerprint:
                    skipped += 1
                    self.metrics.rescans_skipped.inc()
                    continue
            skipped = 0
            await self.scan_now()

    async def _fingerprints(self) -> None:
        while True:
            plugin = self.plugin
            interval = max(plugin.fingerprint_interval if plugin else 5.0, 0.05)
            seen = self.done.generation
            if await self.done.wait(seen, timeout=interval) != seen:
                continue  # a scan just took a fresh baseline (and settings may have changed)
            plugin = self.plugin
            if plugin is None or plugin.fingerprint_interval <= 0:
                continue
            current = await self._take(plugin)
            if current is not None and current != self.fingerprint and plugin is self.plugin:
                log.info("host changed (fingerprint); rescanning")
                await self.scan_now()

    async def _take(self, plugin: Plugin) -> Hashable:
        """The current fingerprint (worker thread), or None when it has none or timed out."""
        if not _has_fingerprint(plugin):
            return None
        try:
            return await in_thread(self.pool, FINGERPRINT_TIMEOUT, self._take_blocking, plugin)
        except TimeoutError:
            log.warning("fingerprint check timed out")
            return None
