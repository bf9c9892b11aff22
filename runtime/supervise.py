"""`supervise`: keep a long-running task alive, so one bug cannot stop a daemon.

Both daemons run every long-lived piece (a connector, the summarizer, the uplink, the ITSM
forwarder) as its own task inside `supervise`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

__all__ = ["CRASH_LOG_INTERVAL_S", "RESTART_PAUSE_S", "supervise"]

log = logging.getLogger("twin.supervise")

RESTART_PAUSE_S = 5.0
CRASH_LOG_INTERVAL_S = 60.0


async def supervise(name: str, factory: Callable[[], Awaitable[None]], pause_s: float = RESTART_PAUSE_S) -> None:
    """Run `factory()` forever: a crash is logged and the task restarted after a pause.

    The first crash of a kind is logged with its traceback; the same crash again is one line at
    most every CRASH_LOG_INTERVAL_S with a count, so a persistent bug cannot flood the journal.
    """
    last_kind, last_logged, repeats = "", 0.0, 0
    while True:
        try:
            await factory()
            log.warning("%s: stopped unexpectedly; restarting in %.0fs", name, pause_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            kind = f"{type(exc).__name__}: {exc}"
            now = time.monotonic()
            if kind != last_kind:
                log.exception("%s: crashed; restarting in %.0fs", name, pause_s)
                last_kind, last_logged, repeats = kind, now, 0
            elif now - last_logged >= CRASH_LOG_INTERVAL_S:
                log.error("%s: crashed again (%d times since the last report): %s", name, repeats + 1, kind)
                last_logged, repeats = now, 0
            else:
                repeats += 1
        await asyncio.sleep(pause_s)
