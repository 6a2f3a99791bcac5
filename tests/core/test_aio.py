"""The asyncio helpers shutdown relies on: cancellations are never lost."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from devplugin_core._aio import bounded, cancel_and_wait


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
