"""Stopping tasks reliably on Python 3.11.

`asyncio.wait_for` there returns the awaited result instead of raising when a cancellation arrives
in the same loop iteration as the result, and pymodbus and asyncua use it for every request. The
cancelled task then carries on with its cancellation pending: `Task.cancelling()` stays above zero
while nothing raises. Long-running loops call `raise_if_cancelling()` once per turn, and owners stop
tasks with `cancel_and_wait()`, which cancels again whatever is still running.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

__all__ = ["cancel_and_wait", "raise_if_cancelling"]

log = logging.getLogger("twin.cancellation")


def raise_if_cancelling() -> None:
    """Raise CancelledError if the current task was cancelled and something swallowed it."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def cancel_and_wait(tasks: Sequence[asyncio.Task[None]], recancel_after_s: float = 1.0) -> None:
    """Cancel `tasks` and wait until all have ended, cancelling again any that are still running."""
    pending = set(tasks)
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=recancel_after_s)
        if pending:
            log.warning("%d task(s) ignored a cancellation; cancelling again", len(pending))
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved: a task that failed meanwhile was already logged by its owner
