"""When health checks run: one scheduler, one checking thread (more only while a check hangs),
one watchdog.

Every resource with a :class:`~devplugin_core._api.HealthChecker` runs ``check`` on the
checker's interval (ticks aligned to multiples of it, shifted by a per-process phase) and
whenever something asks for a check now: ``watch()`` calling ``wake``, a scan that brought new
devices, a reload, :meth:`HealthScheduler.check_once`. The checks run one after the other in
one thread (a :class:`_Runner`: sequential checks share warm caches and never fight over the
GIL). When one hangs, the watchdog moves the other resources to a new thread, so they keep their
schedule; the hung one keeps the old thread until its check returns.

The loop is only woken when a round matters. A round that finds everything healthy while the
resource is fully healthy is counted in its thread and dropped; any bad observation, any
recovering key, a ``rescan`` flag, an error or an explicit request is handed to the loop.

The watchdog thread looks at the running checks every half of the shortest ``timeout`` (it is
not woken per check, so a quiet node pays for one wake-up a second or less). A check still running
past ``timeout`` marks every device it covers Unhealthy (log line, ``devplugin_health_check_hung``
naming the checker); past ``hang_bound`` it fails ``/healthz`` so that the kubelet restarts us.

=====================  ======================================================================
event                  effect
=====================  ======================================================================
tick, all healthy      counted in the checking thread; the loop is not woken
tick, a problem        observations applied on the loop (hysteresis, snapshot, rescan flag)
check > timeout        watchdog: that resource's devices Unhealthy, hung gauge 1, the other
                       resources moved to a new checking thread
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


class _Slot:
    """One resource's health state, run by a :class:`_Runner`."""

    def __init__(self, scheduler: HealthScheduler, rt: ResourceRuntime) -> None:
        self.scheduler = scheduler
        self.rt = rt
        self.name = rt.name
        self.runner: _Runner | None = None
        self.requested = True  # the first check runs at once
        self.next_due: float | None = None
        self.stopped = False
        self.started_at: float | None = None  # monotonic start of the running check
        self.checker: HealthChecker | None = None  # the checker of the running check
        self.reported_hung = False
        self.reported_fatal = False
        self.waiters: list[asyncio.Future[bool]] = []  # check_once callers of the next round
        # bound once: a quiet round only bumps these
        self.ok_count = scheduler.metrics.health_checks.labels(rt.name, "ok")
        self.durations = scheduler.metrics.health_duration.labels(rt.name)

    def request(self) -> None:
        """Check at once (thread-safe)."""
        self.requested = True
        runner = self.runner
        if runner is not None:
            runner.wake.set()

    def due(self, now: float) -> float | None:
        """Seconds until this slot's next tick (0: now), None when it has no schedule."""
        if self.requested:
            return 0.0
        checker = self.rt.resource.health
        if checker is None or checker.interval <= 0:
            return None
        if self.next_due is None:
            self.next_due = self._next_tick(now, checker.interval)
        return max(0.0, self.next_due - now)

    def _next_tick(self, now: float, interval: float) -> float:
        # ticks on multiples of the interval, shifted by the process's phase
        since = now - self.scheduler.phase
        return now + interval - since % interval

    def run(self) -> _Round | None:
        self.requested = False
        checker = self.rt.resource.health
        now = time.monotonic()
        if checker is not None and checker.interval > 0:
            self.next_due = self._next_tick(now, checker.interval)
        if checker is None or not self.rt.devices:
            return None
        devices = self.rt.devices
        with self.scheduler.lock:
            self.checker, self.started_at = checker, now
        try:
            observations = dict(checker.check(devices))
            result = "ok"
        except Exception as err:
            log.warning("%s: health check failed: %s", self.name, err, exc_info=err)
            observations = _all_bad(devices, f"health check failed: {err}")
            result = "error"
        duration = time.monotonic() - now
        if duration > checker.timeout:
            result = "timeout"
            if not self.reported_hung:  # watchdog did not get to it: still one bad round
                observations = _all_bad(devices, f"health check ran {duration:.1f}s")
        with self.scheduler.lock:
            self.started_at = None
        return _Round(devices, observations, result, duration)


class _Runner:
    """A thread running the checks of its slots one after the other, each on its own tick.

    Normally one runner serves every resource (sequential checks share warm caches and never
    fight over the GIL). When a check hangs, the watchdog moves the runner's other slots to a
    new runner; the stuck one keeps only the hung slot and, once its check returns, hands that
    slot back to the current runner and ends.
    """

    def __init__(self, scheduler: HealthScheduler) -> None:
        self.scheduler = scheduler
        self.slots: list[_Slot] = []
        self.wake = threading.Event()
        self.running: _Slot | None = None
        self.thread = threading.Thread(target=self._main, name="devplugin-health", daemon=True)

    def _main(self) -> None:
        scheduler = self.scheduler
        while not scheduler._stopped:
            self.wake.clear()
            now = time.monotonic()
            with scheduler.lock:
                slots = list(self.slots)
                if not slots and scheduler.runner is not self:
                    return
            dues = [(slot, due) for slot in slots if (due := slot.due(now)) is not None]
            ready = [slot for slot, due in dues if due == 0.0]
            if not ready:
                self.wake.wait(min(due for _, due in dues) if dues else None)
                continue
            for slot in ready:
                if slot.runner is not self or slot.stopped:
                    continue
                with scheduler.lock:
                    waiters, slot.waiters = slot.waiters, []
                    self.running = slot
                rnd = slot.run()
                self.running = None
                scheduler.deliver(slot, rnd, waiters)
            if scheduler.runner is not self:
                scheduler.hand_back(self)
                return


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
        self.runner: _Runner | None = None  # the runner new and healthy resources use
        self._threads: dict[str, _Slot] = {}
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
        slot = _Slot(self, rt)
        with self.lock:
            self._threads[rt.name] = slot
            runner = self.runner
            if runner is None:
                runner = self.runner = _Runner(self)
                runner.thread.start()
            slot.runner = runner
            runner.slots.append(slot)
        self.watchdog_wake.set()
        self.update(rt.name)
        slot.request()

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
        thread.request()

    def wake(self, name: str) -> None:
        """Check ``name`` now (thread-safe)."""
        thread = self._threads.get(name)
        if thread is not None:
            thread.request()

    async def remove(self, name: str) -> None:
        with self.lock:
            thread = self._threads.pop(name, None)
            if thread is not None:
                thread.stopped = True
                if thread.runner is not None and thread in thread.runner.slots:
                    thread.runner.slots.remove(thread)
        watch = self._watches.pop(name, None)
        if watch is not None:
            await cancel_and_wait(watch[1])
        if thread is not None:
            if thread.runner is not None:
                thread.runner.wake.set()
            self._forget_hung(thread)

    async def stop(self) -> None:
        for name in list(self._threads):
            await self.remove(name)
        self._stopped = True
        self.watchdog_wake.set()
        if self.runner is not None:
            self.runner.wake.set()

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
        thread.request()
        try:
            async with asyncio.timeout(checker.timeout + 0.5):
                return await asyncio.shield(future)
        except TimeoutError:
            return False

    @property
    def hung(self) -> list[str]:
        """Resources whose check has run past its hang bound (``/healthz`` fails)."""
        return sorted(t.name for t in self._threads.values() if t.reported_fatal)

    async def _run_watch(self, thread: _Slot, checker: HealthChecker) -> None:
        rt = thread.rt
        try:
            await checker.watch(lambda: rt.devices, thread.request)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: health event source failed; falling back to polling", rt.name)

    def _apply(
        self, thread: _Slot, rnd: _Round | None, waiters: list[asyncio.Future[bool]]
    ) -> None:
        changed = False
        if rnd is not None and self._threads.get(thread.name) is thread:
            rt = thread.rt
            self._count(thread, rnd)
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

    def _on_hung(self, thread: _Slot, checker: HealthChecker, elapsed: float) -> None:
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

    def _on_fatal(self, thread: _Slot, checker: HealthChecker) -> None:
        log.critical(
            "%s: health check %s hung for over %gs: /healthz fails so the kubelet restarts us",
            thread.name,
            type(checker).__name__,
            checker.hang_bound,
        )

    def _forget_hung(self, thread: _Slot) -> None:
        if thread.reported_hung and thread.checker is not None:
            with contextlib.suppress(KeyError):
                self.metrics.health_hung.labels(thread.name, type(thread.checker).__name__).set(0)
        thread.reported_hung = thread.reported_fatal = False

    def _count(self, slot: _Slot, rnd: _Round) -> None:
        """Count one finished round (thread-safe: quiet rounds are counted in the runner)."""
        ok = rnd.result == "ok"
        (slot.ok_count if ok else self.metrics.health_checks.labels(slot.name, rnd.result)).inc()
        slot.durations.observe(rnd.duration)

    # -- thread side ---------------------------------------------------------------------------
    def deliver(
        self, thread: _Slot, rnd: _Round | None, waiters: list[asyncio.Future[bool]]
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
            self._count(thread, rnd)
            return
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # loop closed: shutting down
            loop.call_soon_threadsafe(self._apply, thread, rnd, waiters)

    def _watchdog_main(self) -> None:
        while not self._stopped:
            now = time.monotonic()
            with self.lock:
                threads = list(self._threads.values())
                running = [
                    (t, t.checker, t.started_at)
                    for t in threads
                    if t.started_at is not None and t.checker is not None
                ]
            for thread, checker, started in running:
                assert checker is not None and started is not None
                elapsed = now - started
                if not thread.reported_hung and elapsed >= checker.timeout:
                    thread.reported_hung = True
                    self._isolate(thread)
                    self._call(self._on_hung, thread, checker, elapsed)
                hung_long = elapsed >= checker.hang_bound
                if thread.reported_hung and not thread.reported_fatal and hung_long:
                    thread.reported_fatal = True
                    self._call(self._on_fatal, thread, checker)
            timeouts = [
                t.rt.resource.health.timeout for t in threads if t.rt.resource.health is not None
            ]
            self.watchdog_wake.wait(max(0.05, min(timeouts) / 2) if timeouts else None)
            self.watchdog_wake.clear()

    def _isolate(self, hung: _Slot) -> None:
        """Move every other slot of the hung slot's runner to a fresh runner (watchdog)."""
        with self.lock:
            stuck = hung.runner
            if stuck is None:
                return
            others = [s for s in stuck.slots if s is not hung]
            fresh = _Runner(self)
            for slot in others:
                slot.runner = fresh
            fresh.slots = others
            stuck.slots = [hung]
            if self.runner is stuck:
                self.runner = fresh
        fresh.thread.start()
        log.warning(
            "%s: health check hung; the other resources' checks go on in a new thread", hung.name
        )

    def hand_back(self, runner: _Runner) -> None:
        """A runner that is no longer the current one gives its slots back (its thread ends)."""
        with self.lock:
            current = self.runner
            if current is None or current is runner:
                return
            for slot in runner.slots:
                slot.runner = current
                current.slots.append(slot)
            runner.slots = []
        current.wake.set()

    def _call(self, fn: Callable[..., None], *args: object) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(fn, *args)


def _all_bad(devices: Sequence[Device], reason: str) -> dict[str, Observation]:
    return {d.health_key: Observation.bad(reason) for d in devices}
