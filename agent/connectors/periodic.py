"""The poll loop of connectors that read on a fixed schedule (SNMP devices, Prometheus targets).

A slow cycle skips the slots it missed instead of bursting to catch up (a device that answers
slowly must not be hit harder), and a cycle that raises is the connector's to count and log: the
loop itself never ends, so one surprise cannot stop a source for good. The first cycles of many
devices are spread over a short, bounded time, so that start-up load is spread without delaying a
slow-interval device's first reading by a fraction of its interval.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable

__all__ = ["START_SPREAD_S", "first_due", "run_periodic"]

START_SPREAD_S = 1.0  # the first cycles are spread over at most this long, whatever the interval


def first_due(rng: random.Random, interval_s: float) -> float:
    """When (monotonic) the first cycle is due: now, plus a spread of at most START_SPREAD_S."""
    return time.monotonic() + rng.uniform(0, min(0.1 * interval_s, START_SPREAD_S))


async def run_periodic(cycle: Callable[[], Awaitable[float | None]], interval_s: float, due: float,
                       on_crash: Callable[[], None]) -> None:
    """Run `cycle()` every `interval_s` from `due` (monotonic), forever.

    `cycle` may return the delay before the next cycle (a backoff), None for the interval. When it
    raises, `on_crash()` is called inside the except block (so it can log the traceback) and the
    schedule goes on.
    """
    while True:
        wait = due - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        delay = interval_s
        try:
            asked = await cycle()
            if asked is not None:
                delay = asked
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug or a surprise: the connector counts and logs it, the schedule goes on
            on_crash()
        due += delay
        if due < time.monotonic():  # a slow cycle: skip the missed slots, never burst
            due = time.monotonic() + delay
