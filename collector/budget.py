"""A byte budget shared by tasks: how much data they may hold at once, waited for in turn.

asyncio's semaphores count units, not sizes; the collector's stream readers hold messages of very
different sizes and must stop reading, together, once what they hold (received, not yet stored)
reaches the budget. Waiters are served first come, first served, so one large message is not
starved by many small ones. A request larger than the whole budget is granted the whole budget
(alone), so it can never wait forever.
"""

from __future__ import annotations

import asyncio
from collections import deque

__all__ = ["ByteBudget"]


class ByteBudget:
    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self.used = 0
        self.peak = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    async def acquire(self, size: int) -> int:
        """Wait until `size` bytes (at most the capacity) fit; return the amount granted."""
        size = min(max(size, 0), self.capacity)
        if not self._waiters and self.used + size <= self.capacity:
            self._grant(size)
            return size
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (size, waiter)
        self._waiters.append(entry)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(size)  # granted just as the wait was cancelled: give it back
            else:
                if entry in self._waiters:
                    self._waiters.remove(entry)
                self._wake()  # the next in line may fit now that this one stopped waiting
            raise
        return size

    @property
    def waiting(self) -> int:
        """Acquirers waiting for room."""
        return len(self._waiters)

    def release(self, size: int) -> None:
        self.used -= size
        self._wake()

    def _grant(self, size: int) -> None:
        self.used += size
        self.peak = max(self.peak, self.used)

    def _wake(self) -> None:
        while self._waiters and self.used + self._waiters[0][0] <= self.capacity:
            size, waiter = self._waiters.popleft()
            if waiter.done():
                continue
            self._grant(size)
            waiter.set_result(None)
