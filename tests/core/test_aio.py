"""The asyncio helpers shutdown relies on: cancellations are never lost."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging

import pytest

from devplugin_core._aio import Exclusive, ThreadBatcher, bounded, cancel_and_wait


async def test_cancellation_arriving_with_the_result_is_not_swallowed() -> None:
    # asyncio.wait_for on Python 3.11 returns the result here and the task runs on: a loop
    # task cancelled at shutdown would then never finish.
    loop = asyncio.get_running_loop()
    result: asyncio.Future[int] = loop.create_future()
    went_on = False

    async def loop_task() -> None:
        nonlocal went_on
        await bounded(asyncio.shield(result), 5)
        went_on = True

    task = asyncio.create_task(loop_task())
    await asyncio.sleep(0)
    result.set_result(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not went_on


async def test_exclusive_run_in_a_batch_is_cancellable_when_the_batch_completes() -> None:
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        batcher, job = ThreadBatcher(pool), Exclusive()
        finished = asyncio.Event()

        async def checker() -> None:
            while True:
                await job.run(batcher, 5, lambda: finished.is_set())
                await asyncio.sleep(0)

        task = asyncio.create_task(checker())
        for _ in range(50):  # cancel at many different points of the batch round trip
            await asyncio.sleep(0)
        await cancel_and_wait(task, grace=5)
        assert task.cancelled()


async def test_bounded_times_out() -> None:
    with pytest.raises(TimeoutError):
        await bounded(asyncio.sleep(5), 0.01)


async def test_cancel_and_wait_names_a_task_that_swallows_its_cancellation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def stubborn() -> None:
        with contextlib.suppress(asyncio.CancelledError):  # the bug being guarded against
            await asyncio.sleep(60)
        await asyncio.sleep(60)

    task = asyncio.create_task(stubborn(), name="stubborn-loop")
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR):
        await cancel_and_wait(task, grace=0.05)
    assert task.cancelled()
    assert any("stubborn-loop" in r.getMessage() for r in caplog.records)


async def test_a_batch_submitted_after_shutdown_fails_instead_of_hanging() -> None:
    pool = concurrent.futures.ThreadPoolExecutor(1)
    pool.shutdown()
    future = ThreadBatcher(pool).submit(lambda: 1)
    with pytest.raises(RuntimeError):
        await bounded(future, 5)
