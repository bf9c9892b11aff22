"""How a simulator process run from the command line waits for its end (SIGTERM or Ctrl-C)."""

from __future__ import annotations

import asyncio
import contextlib
import signal

__all__ = ["until_terminated"]


async def until_terminated() -> None:
    """Return when the process gets SIGTERM or SIGINT (the tests and the demo stop simulators by PID)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
