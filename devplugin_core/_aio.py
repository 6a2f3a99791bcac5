"""Small asyncio helpers: a broadcast signal, bounded thread calls, backoff."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

log = logging.getLogger("devplugin")


class Signal:
    """A broadcast "something changed" with a generation counter; setting never blocks."""

    def __init__(self) -> None:
        self.generation = 0
        self._event = asyncio.Event()
        self._listeners: list[Callable[[], None]] = []

    def fire(self) -> None:
        self.generation += 1
        event, self._event = self._event, asyncio.Event()
        event.set()
        for listener in tuple(self._listeners):
            listener()

    @contextlib.contextmanager
    def forwarded_to(self, other: Signal) -> Iterator[None]:
        """While the context is open, firing this signal also fires ``other``."""
        self._listeners.append(other.fire)
        try:
            yield
        finally:
            self._listeners.remove(other.fire)

    async def wait(self, seen: int, timeout: float | None = None) -> int:
        """Wait until the generation passes ``seen`` (or ``timeout``); return the generation."""
        if self.generation <= seen:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    while self.generation <= seen:
                        await self._event.wait()
        return self.generation


async def in_thread(
    executor: concurrent.futures.Executor,
    timeout: float,
    fn: Callable[P, T],
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    """Run blocking ``fn`` in ``executor``; raise TimeoutError after ``timeout`` seconds.

    A call that times out keeps its thread until it returns: callers must not start another
    call of the same job while one is still running.
    """
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(executor, functools.partial(fn, *args, **kwargs))
    return await bounded(future, timeout)


async def bounded(awaitable: Awaitable[T], timeout: float | None) -> T:
    """Await ``awaitable`` for at most ``timeout`` seconds; TimeoutError after that.

    Use this, never ``asyncio.wait_for``: on Python 3.11 ``wait_for`` swallows a cancellation
    that arrives in the same loop iteration as the result, so a cancelled loop task keeps
    running and whoever awaits it (shutdown) waits forever.
    """
    async with asyncio.timeout(timeout):
        return await awaitable


async def cancel_and_wait(*tasks: asyncio.Future[Any] | None, grace: float = 10.0) -> None:
    """Cancel ``tasks`` and wait until they have finished; their results and errors are
    dropped, but a cancellation of the caller itself still propagates. A task still running
    ``grace`` seconds later swallowed its cancellation (a bug): it is named in an error and
    cancelled again, so shutdown never hangs silently."""
    pending = {t for t in tasks if t is not None and not t.done()}
    for task in pending:
        task.cancel()
    while pending:
        _, pending = await asyncio.wait(pending, timeout=grace)
        for task in pending:
            name = task.get_name() if isinstance(task, asyncio.Task) else repr(task)
            log.error("task %s ignored its cancellation for %gs; cancelling it again", name, grace)
            task.cancel()
    for finished in tasks:  # retrieve outcomes so asyncio does not log "never retrieved"
        if finished is not None and finished.done() and not finished.cancelled():
            finished.exception()


class Supervisor:
    """Named tasks of one runtime, crash-only: a supervised task that fails records the error
    and sets :attr:`stopped` (the process then exits and the DaemonSet restarts it)."""

    def __init__(self) -> None:
        self.tasks: dict[str, asyncio.Task[Any]] = {}
        self.failed: BaseException | None = None
        self.stopped = asyncio.Event()

    def spawn(self, name: str, coro: Coroutine[Any, Any, Any], *, supervised: bool = True) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self.tasks[name] = task

        def done(t: asyncio.Task[Any]) -> None:
            if self.tasks.get(name) is t:
                del self.tasks[name]
            error = None if t.cancelled() else t.exception()
            if error is not None and supervised:
                self.fail(name, error)

        task.add_done_callback(done)

    def fail(self, name: str, error: BaseException) -> None:
        if self.failed is None:
            log.error("%s failed: %s", name, error, exc_info=error)
            self.failed = error
        self.stopped.set()

    async def cancel(self, *names: str) -> None:
        """Cancel the named tasks (all when no name is given) and wait for them."""
        chosen = list(self.tasks) if not names else [n for n in names if n in self.tasks]
        await cancel_and_wait(*(self.tasks.pop(n) for n in chosen))


class Backoff:
    """Exponential backoff with jitter: ``initial`` doubling up to ``maximum`` seconds."""

    def __init__(self, initial: float = 0.5, maximum: float = 30.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self.failures = 0

    def reset(self) -> None:
        self.failures = 0

    def next_delay(self) -> float:
        delay: float = min(self.maximum, self.initial * (2**self.failures))
        self.failures += 1
        return float(delay * random.uniform(0.8, 1.2))


def spawn(coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
    """Create a named task."""
    return asyncio.get_running_loop().create_task(coro, name=name)
