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
    call of the same job while one is still running (see :class:`Exclusive`).
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


class ThreadBatcher:
    """Runs the blocking calls submitted during one event-loop iteration as a single job in a
    worker thread: one thread handoff per tick instead of one per call (health checks of
    resources with the same interval fall due together). Each call keeps its own result or
    exception; a call that hangs delays the others of its batch (their callers time out too).
    """

    def __init__(self, executor: concurrent.futures.Executor) -> None:
        self.executor = executor
        self._pending: list[tuple[Callable[[], Any], asyncio.Future[Any]]] = []

    def submit(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((fn, future))
        return future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        loop = asyncio.get_running_loop()

        def work() -> list[tuple[bool, Any]]:
            out: list[tuple[bool, Any]] = []
            for fn, _ in batch:
                try:
                    out.append((True, fn()))
                except Exception as err:
                    out.append((False, err))
            return out

        def deliver(done: asyncio.Future[list[tuple[bool, Any]]]) -> None:
            if done.cancelled():  # the executor shut down
                for _, future in batch:
                    future.cancel()
                return
            error = done.exception()
            for index, (_, future) in enumerate(batch):
                if future.done():
                    continue
                if error is not None:
                    future.set_exception(error)
                    continue
                ok, value = done.result()[index]
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

        try:
            loop.run_in_executor(self.executor, work).add_done_callback(deliver)
        except RuntimeError as err:  # the executor has shut down: fail the batch, never strand it
            for _, future in batch:
                if not future.done():
                    future.set_exception(err)


class Exclusive:
    """Runs at most one instance of a threaded job at a time; callers skip while busy."""

    def __init__(self) -> None:
        self._busy: asyncio.Future[Any] | None = None

    @property
    def busy(self) -> bool:
        return self._busy is not None and not self._busy.done()

    async def run(
        self,
        executor: concurrent.futures.Executor | ThreadBatcher,
        timeout: float,
        fn: Callable[[], T],
    ) -> T:
        """Run ``fn`` in ``executor`` (or as part of a batch) and wait up to ``timeout``."""
        if self.busy:
            raise RuntimeError("previous run still in progress")
        if isinstance(executor, ThreadBatcher):
            future: asyncio.Future[T] = executor.submit(fn)
        else:
            future = asyncio.get_running_loop().run_in_executor(executor, fn)
        self._busy = future
        return await bounded(asyncio.shield(future), timeout)


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
