"""When health checks run: one scheduler, one thread per resource, one watchdog.

Every resource with a :class:`~devplugin_core._api.HealthChecker` gets its own thread that runs
``check`` on the checker's interval (ticks aligned to multiples of it, shifted by a per-process
phase) and whenever something asks for a check now: ``watch()`` calling ``wake``, a scan that
brought new devices, a reload, :meth:`HealthScheduler.check_once`. A check that hangs blocks
only its own thread, so other resources keep their schedule.

The loop is only woken when a round matters. A round that finds everything healthy while the
resource is fully healthy is counted in its thread and dropped; any bad observation, any
recovering key, a ``rescan`` flag, an error or an explicit request is handed to the loop.

The watchdog thread sleeps until the earliest running check's deadline. A check still running
past ``timeout`` marks every device it covers Unhealthy (log line, ``devplugin_health_check_hung``
naming the checker); past ``hang_bound`` it fails ``/healthz`` so that the kubelet restarts us.

=====================  ======================================================================
event                  effect
=====================  ======================================================================
tick, all healthy      counted in the resource's thread; the loop is not woken
tick, a problem        observations applied on the loop (hysteresis, snapshot, rescan flag)
check > timeout        watchdog: that resource's devices Unhealthy, hung gauge 1
check > hang_bound     watchdog: ``/healthz`` answers 503 until the check returns
=====================  ======================================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ._aio import cancel_and_wait
from ._api import HealthChecker, Observation
from ._metrics import Metrics
from ._model import Device
from ._resource import ResourceRuntime

log = logging.getLogger("devplugin.health")

__all__ = ["HealthScheduler"]


@dataclass
class _Round:
    """One finished check, handed to the loop."""

    devices: tuple[Device, ...]
    observations: Mapping[str, Observation]
    result: str  # ok / error / timeout
    duration: float


class _ResourceThread:
    """The thread that runs one resource's checks."""

    def __init__(self, scheduler: HealthScheduler, rt: ResourceRuntime) -> None:
        self.scheduler = scheduler
        self.rt = rt
        self.name = rt.name
        self.wake = threading.Event()
        self.stopped = False
        self.started_at: float | None = None  # monotonic start of the running check
        self.checker: HealthChecker | None = None  # the checker of the running check
        self.reported_hung = False
        self.reported_fatal = False
        self.waiters: list[asyncio.Future[bool]] = []  # check_once callers of the next round
        self.thread = threading.Thread(target=self._main, name=f"health:{rt.name}", daemon=True)

    # -- in the thread -------------------------------------------------------------------------
    def _wait_for_turn(self, checker: HealthChecker | None) -> None:
        timeout: float | None = None
        if checker is not None and checker.interval > 0:
            since = time.monotonic() - self.scheduler.phase
            timeout = checker.interval - since % checker.interval
        self.wake.wait(timeout)
        self.wake.clear()

    def _main(self) -> None:
        while not self.stopped:
            self._wait_for_turn(self.rt.resource.health)
            checker = self.rt.resource.health
            if self.stopped:
                return
            with self.scheduler.lock:
                waiters, self.waiters = self.waiters, []
            if checker is None or not self.rt.devices:
                self.scheduler.deliver(self, None, waiters)
                continue
            self.scheduler.deliver(self, self._run(checker), waiters)

    def _run(self, checker: HealthChecker) -> _Round:
        devices = self.rt.devices
        with self.scheduler.lock:
            self.checker, self.started_at = checker, time.monotonic()
            self.scheduler.watchdog_wake.set()
        start = self.started_at
        try:
            observations = dict(checker.check(devices))
            result = "ok"
        except Exception as err:
            log.warning("%s: health check failed: %s", self.name, err, exc_info=err)
            observations = _all_bad(devices, f"health check failed: {err}")
            result = "error"
        duration = time.monotonic() - start
        if duration > checker.timeout:
            result = "timeout"
            if not self.reported_hung:  # watchdog did not get to it: still one bad round
                observations = _all_bad(devices, f"health check ran {duration:.1f}s")
        with self.scheduler.lock:
            self.started_at = None
        return _Round(devices, observations, result, duration)


class HealthScheduler:
    """Runs every resource's health checks; owned by the event loop (see module docstring)."""

    def __init__(
        self,
        metrics: Metrics,
        rescan: Callable[[str], None],
        changed: Callable[[str], None] = lambda name: None,
    ) -> None:
        self.metrics = metrics
        self.rescan = rescan
        self.changed = changed  # called on the loop after a round changed a snapshot
        self.phase = random.uniform(0, 1)
        self.lock = threading.Lock()
        self.watchdog_wake = threading.Event()
        self._threads: dict[str, _ResourceThread] = {}
        self._watches: dict[str, tuple[HealthChecker, asyncio.Task[None]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = False
        self._watchdog: threading.Thread | None = None

    # -- loop side -----------------------------------------------------------------------------
    def add(self, rt: ResourceRuntime) -> None:
        """Start checking ``rt`` (its first check runs at once)."""
        self._loop = asyncio.get_running_loop()
        if self._watchdog is None:
            self._watchdog = threading.Thread(
                target=self._watchdog_main, name="health-watchdog", daemon=True
            )
            self._watchdog.start()
        thread = _ResourceThread(self, rt)
        self._threads[rt.name] = thread
        thread.thread.start()
        self.update(rt.name)
        thread.wake.set()

    def update(self, name: str) -> None:
        """The resource's Resource object may have changed (reload): restart its watch()."""
        thread = self._threads.get(name)
        if thread is None:
            return
        checker = thread.rt.resource.health
        current = self._watches.get(name)
        if current is not None and current[0] is checker:
            return
        if current is not None:
            current[1].cancel()
            del self._watches[name]
        if checker is not None:
            task = asyncio.get_running_loop().create_task(
                self._run_watch(thread, checker), name=f"health-watch:{name}"
            )
            self._watches[name] = (checker, task)
        thread.wake.set()

    def wake(self, name: str) -> None:
        """Check ``name`` now (thread-safe)."""
        thread = self._threads.get(name)
        if thread is not None:
            thread.wake.set()

    async def remove(self, name: str) -> None:
        thread = self._threads.pop(name, None)
        watch = self._watches.pop(name, None)
        if watch is not None:
            await cancel_and_wait(watch[1])
        if thread is not None:
            thread.stopped = True
            thread.wake.set()
            self._forget_hung(thread)

    async def stop(self) -> None:
        for name in list(self._threads):
            await self.remove(name)
        self._stopped = True
        self.watchdog_wake.set()

    async def check_once(self, name: str) -> bool:
        """Run one check of ``name`` now and apply it; True if its snapshot changed. Returns
        False at once without a checker or devices, and after the check's timeout if its
        thread is still busy (the watchdog handles a hung check)."""
        thread = self._threads.get(name)
        checker = thread.rt.resource.health if thread is not None else None
        if thread is None or checker is None or not thread.rt.devices:
            return False
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        with self.lock:
            thread.waiters.append(future)
        thread.wake.set()
        try:
            async with asyncio.timeout(checker.timeout + 0.5):
                return await asyncio.shield(future)
        except TimeoutError:
            return False

    @property
    def hung(self) -> list[str]:
        """Resources whose check has run past its hang bound (``/healthz`` fails)."""
        return sorted(t.name for t in self._threads.values() if t.reported_fatal)

    async def _run_watch(self, thread: _ResourceThread, checker: HealthChecker) -> None:
        rt = thread.rt
        try:
            await checker.watch(lambda: rt.devices, thread.wake.set)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: health event source failed; falling back to polling", rt.name)

    def _apply(
        self, thread: _ResourceThread, rnd: _Round | None, waiters: list[asyncio.Future[bool]]
    ) -> None:
        changed = False
        if rnd is not None and self._threads.get(thread.name) is thread:
            rt = thread.rt
            self._count(thread.name, rnd)
            if thread.reported_hung:
                self._forget_hung(thread)
                log.info(
                    "%s: the hung health check returned after %.1fs", thread.name, rnd.duration
                )
            # devices the check saw that are still current (a scan may have replaced some)
            changed = rt.observe(rnd.observations)
            flagged = [k for k, o in rnd.observations.items() if o.rescan]
            if flagged:
                self.rescan(f"{thread.name}: health check saw {flagged[0]} change on the host")
            if changed:
                self.changed(thread.name)
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(changed)

    def _on_hung(self, thread: _ResourceThread, checker: HealthChecker, elapsed: float) -> None:
        if self._threads.get(thread.name) is not thread:
            return
        kind = type(checker).__name__
        log.error(
            "%s: health check %s still running after %.1fs (timeout %gs); devices Unhealthy",
            thread.name,
            kind,
            elapsed,
            checker.timeout,
        )
        self.metrics.health_checks.labels(thread.name, "timeout").inc()
        self.metrics.health_hung.labels(thread.name, kind).set(1)
        reason = f"health check {kind} hung (no answer for {elapsed:.0f}s)"
        if thread.rt.observe(_all_bad(thread.rt.devices, reason)):
            self.changed(thread.name)

    def _on_fatal(self, thread: _ResourceThread, checker: HealthChecker) -> None:
        log.critical(
            "%s: health check %s hung for over %gs: /healthz fails so the kubelet restarts us",
            thread.name,
            type(checker).__name__,
            checker.hang_bound,
        )

    def _forget_hung(self, thread: _ResourceThread) -> None:
        if thread.reported_hung and thread.checker is not None:
            with contextlib.suppress(KeyError):
                self.metrics.health_hung.labels(thread.name, type(thread.checker).__name__).set(0)
        thread.reported_hung = thread.reported_fatal = False

    def _count(self, name: str, rnd: _Round) -> None:
        self.metrics.health_checks.labels(name, rnd.result).inc()
        self.metrics.health_duration.labels(name).observe(rnd.duration)

    # -- thread side ---------------------------------------------------------------------------
    def deliver(
        self, thread: _ResourceThread, rnd: _Round | None, waiters: list[asyncio.Future[bool]]
    ) -> None:
        """Called in a resource thread after a round: drop it or hand it to the loop."""
        quiet = (
            rnd is not None
            and not waiters
            and rnd.result == "ok"
            and not thread.reported_hung
            and thread.rt.tracker.all_healthy
            and all(o.healthy and not o.rescan for o in rnd.observations.values())
        )
        if rnd is None and not waiters:
            return
        if quiet:
            assert rnd is not None
            self._count(thread.name, rnd)
            return
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # loop closed: shutting down
            loop.call_soon_threadsafe(self._apply, thread, rnd, waiters)

    def _watchdog_main(self) -> None:
        while not self._stopped:
            now = time.monotonic()
            deadline: float | None = None
            with self.lock:
                running = [
                    (t, t.checker, t.started_at)
                    for t in self._threads.values()
                    if t.started_at is not None and t.checker is not None
                ]
            for thread, checker, started in running:
                assert checker is not None and started is not None
                elapsed = now - started
                if not thread.reported_hung:
                    if elapsed >= checker.timeout:
                        thread.reported_hung = True
                        self._call(self._on_hung, thread, checker, elapsed)
                    else:
                        deadline = _earliest(deadline, started + checker.timeout)
                if thread.reported_hung and not thread.reported_fatal:
                    if elapsed >= checker.hang_bound:
                        thread.reported_fatal = True
                        self._call(self._on_fatal, thread, checker)
                    else:
                        deadline = _earliest(deadline, started + checker.hang_bound)
            timeout = None if deadline is None else max(0.01, deadline - time.monotonic())
            self.watchdog_wake.wait(timeout)
            self.watchdog_wake.clear()

    def _call(self, fn: Callable[..., None], *args: object) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(fn, *args)


def _earliest(a: float | None, b: float) -> float:
    return b if a is None else min(a, b)


def _all_bad(devices: Sequence[Device], reason: str) -> dict[str, Observation]:
    return {d.health_key: Observation.bad(reason) for d in devices}
