"""A crashing task is restarted and its repeated crash does not flood the log."""

from __future__ import annotations

import asyncio
import logging

import pytest

from agent.daemon import supervise


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

    with caplog.at_level(logging.INFO, logger="twin.agent"):
        asyncio.run(scenario())
    crash_lines = [r for r in caplog.records if "crashed" in r.getMessage()]
    assert runs >= 50, "restarted after every crash"
    assert len(crash_lines) == 1 and crash_lines[0].exc_info, "one line with the traceback, not fifty"
