"""Group commit: the agent streams that are ready share one sink write and one fleet-twin commit.

A stream hands over its group of batches (already encoded for the sink) with `submit` and waits.
Two stages run behind it:

    submit ──> sink stage: up to `writers` writes at once, each taking everything waiting
               (at most `max_records` records) as one write
           ──> commit stage: one commit at a time, taking every item whose sink write is done
           ──> submit returns: the item is in the sink AND committed (an ack may be sent)

While one commit runs, the next one's items gather; under load each disk sync and each
database-thread call is shared by many agents, with no timer and no added wait when the load is
light (a lone item goes through at once). The stages are callables, so where the data goes
(SQLite or InfluxDB sink, SQLite or another state store) is not this module's business.

A stage that raises fails every item it was given: each waiting `submit` raises that exception.
An item's stream that goes away meanwhile does not stop the item: it is stored, and the agent's
resend is recognised as a duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["GroupCommitter", "Pending"]

T = TypeVar("T")


@dataclass(eq=False, slots=True)
class Pending(Generic[T]):
    item: T
    records: int
    done: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class GroupCommitter(Generic[T]):
    def __init__(self, write: Callable[[Sequence[T]], Awaitable[None]],
                 commit: Callable[[Sequence[T]], Awaitable[None]], *, writers: int = 1,
                 max_records: int = 50_000) -> None:
        self._write = write
        self._commit = commit
        self.writers = writers
        self.max_records = max_records
        self._to_write: deque[Pending[T]] = deque()
        self._to_commit: deque[Pending[T]] = deque()
        self._write_wanted = asyncio.Event()
        self._commit_wanted = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.writes = 0
        self.commits = 0
        self.items = 0

    @property
    def queued(self) -> int:
        """Items waiting to be written or committed."""
        return len(self._to_write) + len(self._to_commit)

    async def submit(self, item: T, records: int) -> None:
        """Return once `item` is written and committed; raise what a stage raised for it."""
        if not self._tasks:
            self._start()
        pending = Pending(item, records)
        # A stream cancelled meanwhile never looks at the outcome; retrieve it so asyncio does not
        # report an exception that nobody retrieved.
        pending.done.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._to_write.append(pending)
        self._write_wanted.set()
        await asyncio.shield(pending.done)  # a cancelled stream leaves its item to finish

    def _start(self) -> None:
        self._tasks = [asyncio.create_task(self._writer(), name=f"group-commit-writer-{i}")
                       for i in range(self.writers)]
        self._tasks.append(asyncio.create_task(self._committer(), name="group-commit"))

    async def close(self) -> None:
        """Stop the stages; items not yet committed fail with CancelledError."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for pending in (*self._to_write, *self._to_commit):
            if not pending.done.done():
                pending.done.cancel()
        self._to_write.clear()
        self._to_commit.clear()

    def _take(self, queue: deque[Pending[T]], limit: int) -> list[Pending[T]]:
        taken = [queue.popleft()]
        records = taken[0].records
        while queue and records + queue[0].records <= limit:
            records += queue[0].records
            taken.append(queue.popleft())
        return taken

    async def _writer(self) -> None:
        while True:
            while not self._to_write:
                self._write_wanted.clear()
                await self._write_wanted.wait()
            taken = self._take(self._to_write, self.max_records)
            if self._to_write:
                self._write_wanted.set()  # more for another writer
            if not await self._run(self._write, taken):
                continue
            self.writes += 1
            self._to_commit.extend(taken)
            self._commit_wanted.set()

    async def _committer(self) -> None:
        while True:
            while not self._to_commit:
                self._commit_wanted.clear()
                await self._commit_wanted.wait()
            taken = list(self._to_commit)
            self._to_commit.clear()
            if await self._run(self._commit, taken):
                self.commits += 1
                self.items += len(taken)
                for pending in taken:
                    if not pending.done.done():
                        pending.done.set_result(None)

    @staticmethod
    async def _run(stage: Callable[[Sequence[T]], Awaitable[None]], taken: list[Pending[T]]) -> bool:
        try:
            await stage([p.item for p in taken])
        except asyncio.CancelledError:
            for p in taken:
                if not p.done.done():
                    p.done.cancel()
            raise
        except BaseException as exc:  # the stage failed these items; the stages themselves go on
            for p in taken:
                if not p.done.done():
                    p.done.set_exception(exc)
            return False
        return True
