"""Steady-state health ticks that do not wake the event loop.

While every device of a resource is healthy, its interval checks run in one background thread
shared by all resources of the process, on the same aligned ticks as the loop would use. A tick
that finds nothing wrong only updates the check metrics (thread-safe); the first bad
observation, or a check that raises, is handed to the event loop, which takes the resource back
and ticks it itself until its devices have recovered. The loop keeps a slow watchdog (see
:meth:`QuietTicks.overdue`) for a check that hangs in the thread.

Idle, this turns two loop wake-ups and two thread handoffs per tick into one thread wake-up.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .api import Observation
from .health import shared_health_round

Outcome = Mapping[str, Observation] | BaseException

__all__ = ["Outcome", "QuietJob", "QuietTicks"]


@dataclass(eq=False)
class QuietJob:
    """One resource's checks while it is quiet."""

    name: str
    check: Callable[[], Mapping[str, Observation]]
    interval: float
    #: called in the thread with the first outcome the loop must act on; must be thread-safe
    hand_over: Callable[[Outcome, float], None]
    #: called in the thread after a check that found nothing wrong, with its duration
    record_ok: Callable[[float], None]
    next_at: float = 0.0
    last_done: float = 0.0  # set by QuietTicks.add, then after every finished check
    running_since: float | None = None
    active: bool = True


class QuietTicks:
    """Runs :class:`QuietJob` checks on interval multiples (shifted by ``phase``) in one thread."""

    def __init__(self, phase: float, name: str = "devplugin-health") -> None:
        self.phase = phase
        self._name = name
        self._jobs: dict[str, QuietJob] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self.running: QuietJob | None = None

    def next_tick(self, interval: float, now: float) -> float:
        """The first tick of ``interval`` strictly after ``now``."""
        return now + interval - (now - self.phase) % interval

    def add(self, job: QuietJob) -> QuietJob:
        with self._cond:
            if self._stopped:
                raise RuntimeError("quiet health ticks stopped")
            job.next_at = self.next_tick(job.interval, time.monotonic())
            job.last_done = time.monotonic()
            self._jobs[job.name] = job
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify()
        return job

    def remove(self, job: QuietJob) -> None:
        with self._cond:
            job.active = False
            if self._jobs.get(job.name) is job:
                del self._jobs[job.name]

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._jobs.clear()
            self._cond.notify()

    def stuck(self, timeout: float) -> bool:
        """A check has been running in the thread for longer than ``timeout`` seconds."""
        running = self.running
        since = running.running_since if running is not None else None
        return since is not None and time.monotonic() - since > timeout

    @staticmethod
    def overdue(job: QuietJob, timeout: float) -> bool:
        """``job`` has gone ``interval + timeout`` seconds without a finished check (its own
        check or another job's hangs in the thread)."""
        return time.monotonic() - job.last_done > job.interval + timeout

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopped:
                        return
                    now = time.monotonic()
                    due = [j for j in self._jobs.values() if j.next_at <= now]
                    if due:
                        break
                    wait = min((j.next_at for j in self._jobs.values()), default=now + 3600) - now
                    self._cond.wait(max(wait, 0.001))
                for job in due:
                    job.next_at = self.next_tick(job.interval, now)
            with shared_health_round():
                for job in due:
                    if job.active:
                        self._tick(job)

    def _tick(self, job: QuietJob) -> None:
        start = time.monotonic()
        job.running_since = start
        self.running = job
        outcome: Outcome
        try:
            outcome = job.check()
        except Exception as err:
            outcome = err
        finally:
            self.running = None
            job.running_since = None
        done = time.monotonic()
        job.last_done = done
        if not job.active:
            return
        if isinstance(outcome, BaseException) or any(not o.healthy for o in outcome.values()):
            self.remove(job)
            job.hand_over(outcome, done - start)
        else:
            job.record_ok(done - start)
