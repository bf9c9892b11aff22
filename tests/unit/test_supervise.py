"""A crashing task is restarted and its repeated crash does not flood the log."""

from __future__ import annotations

import asyncio
import logging

import pytest

from runtime.cancellation import cancel_and_wait, raise_if_cancelling
from runtime.supervise import supervise


def test_restarts_and_rate_limits_repeated_crash_logs(caplog: pytest.LogCaptureFixture) -> None:
    runs = 0
    fifty = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs >= 50:
            fifty.set()
        raise RuntimeError("device table corrupt")

    async def scenario() -> None:
        task = asyncio.create_task(supervise("source test", flaky, pause_s=0.001))
        await fifty.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with caplog.at_level(logging.INFO, logger="twin.supervise"):
        asyncio.run(scenario())
    crash_lines = [r for r in caplog.records if "crashed" in r.getMessage()]
    assert runs >= 50, "restarted after every crash"
    assert len(crash_lines) == 1 and crash_lines[0].exc_info, "one line with the traceback, not fifty"


def test_cancel_and_wait_ends_a_task_that_swallowed_its_cancellation() -> None:
    """On Python 3.11 `asyncio.wait_for` returns the result instead of raising when the cancellation
    and the result arrive together; a daemon that cancels once would then wait forever at shutdown."""
    inners: list[asyncio.Future[int]] = []

    async def polling() -> None:
        while True:
            inner: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            inners.append(inner)
            await asyncio.wait_for(inner, 10)

    async def scenario() -> asyncio.Task[None]:
        task = asyncio.create_task(polling())
        await asyncio.sleep(0.01)
        inners[-1].set_result(1)  # the answer and the cancellation in the same loop iteration
        await cancel_and_wait([task], recancel_after_s=0.05)
        return task

    task = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert task.cancelled()


def test_a_loop_that_checks_raise_if_cancelling_stops_even_inside_a_task_group() -> None:
    """A TaskGroup cancels its children once; a child whose cancellation was swallowed must notice
    by itself, or the group (and the daemon stopping it) waits forever."""
    inners: list[asyncio.Future[int]] = []

    async def polling() -> None:
        while True:
            raise_if_cancelling()
            inner: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            inners.append(inner)
            await asyncio.wait_for(inner, 10)
            await asyncio.sleep(0.01)

    async def connector() -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(polling())

    async def scenario() -> asyncio.Task[None]:
        task = asyncio.create_task(connector())
        await asyncio.sleep(0.01)
        inners[-1].set_result(1)
        await cancel_and_wait([task], recancel_after_s=0.05)
        return task

    task = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert task.cancelled()
