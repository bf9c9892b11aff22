"""What the connector tests share: an `emit` that records readings, and running a connector as the daemon does."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence

from agent.connectors.base import Connector
from agent.model import Quality, Reading
from runtime.cancellation import cancel_and_wait

__all__ = ["WAIT_S", "Readings", "running"]

WAIT_S = 30.0


class Readings:
    """The connector's `emit`, keeping everything for the assertions."""

    def __init__(self) -> None:
        self.items: list[Reading] = []

    def __call__(self, batch: Sequence[Reading]) -> None:
        self.items.extend(batch)

    def mark(self) -> int:
        return len(self.items)

    def of(self, point: str, quality: Quality | None = None, since: int = 0, asset: str | None = None
           ) -> list[Reading]:
        return [r for r in self.items[since:] if r.point == point and (quality is None or r.quality is quality)
                and (asset is None or r.asset == asset)]

    def last(self, asset: str, point: str) -> Reading | None:
        return next((r for r in reversed(self.items) if r.asset == asset and r.point == point), None)

    async def wait(self, predicate: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                tail = [(r.asset, r.point, r.value, r.quality.name, r.reason) for r in self.items[-8:]]
                raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}; last readings: {tail}")
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running(connector: Connector, readings: Readings) -> AsyncIterator[None]:
    task = asyncio.create_task(connector.run(readings))
    try:
        yield
        assert not task.done(), f"run() must only return on cancellation: {task}"
    finally:
        await cancel_and_wait([task])  # as the daemon stops it
