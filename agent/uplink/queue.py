"""StoreAndForwardQueue: every batch is on disk before it is sent, and leaves only when acked.

A batch gets its `seq` inside the same SQLite transaction that stores it, so seq is monotonic
across restarts and never reused. The queue has a byte bound (`max_queue_mb`): when a new batch
would exceed it, the oldest batches are dropped and counted (`dropped` is persisted and reported
upstream in every batch's health). The oldest `unacked_window` batches (the uplink's in-flight
window) are spared while anything newer can go instead: they may have been sent and stored with
their ack lost to a broken link, and dropping them would count as lost data that arrived; the
collector's watermark deletes them at the next connection, or they are resent and deduplicated.

The queue's random `epoch` is created with the database: if the state directory is wiped, seq
restarts at 1 under a new epoch and the collector does not mistake the new batches for duplicates.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

from runtime.schema import DatabaseSchema, SchemaPart
from runtime.sqlite import open_database

__all__ = ["QueueStats", "StoreAndForwardQueue"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY, created_ns INTEGER NOT NULL, payload BLOB NOT NULL);
"""
# The queue's tables and their versions (runtime/schema.py; register a Migration when a table changes).
QUEUE_DATABASE = DatabaseSchema("queue.sqlite", [SchemaPart("queue", _SCHEMA)])


@dataclass(frozen=True, slots=True)
class QueueStats:
    batches: int
    bytes: int
    dropped: int
    next_seq: int
    summaries_total: int  # summaries ever stored in this queue (epoch): what the collector should have


class StoreAndForwardQueue:
    def __init__(self, path: Path, max_bytes: int, unacked_window: int = 0) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.path = path
        self.max_bytes = max_bytes
        self.unacked_window = unacked_window
        self.epoch = ""
        self._db: aiosqlite.Connection | None = None
        self._next_seq = 1
        self._dropped = 0
        self._summaries_total = 0
        self.last_interval_end_ns = 0  # of the newest batch ever stored, survives restarts
        self._bytes = 0
        self._count = 0
        self._lock = asyncio.Lock()
        self.changed = asyncio.Event()  # set when a batch is added

    async def open(self) -> None:
        db = self._db = await open_database(self.path, QUEUE_DATABASE)  # synchronous=FULL: queued means on disk
        meta = {k: v async for k, v in await db.execute("SELECT key, value FROM meta")}
        if "epoch" not in meta:
            meta["epoch"] = uuid.uuid4().hex
            await db.execute("INSERT INTO meta VALUES ('epoch', ?)", (meta["epoch"],))
        self.epoch = meta["epoch"]
        self._dropped = int(meta.get("dropped", 0))
        self._summaries_total = int(meta.get("summaries_total", 0))
        self.last_interval_end_ns = int(meta.get("last_interval_end_ns", 0))
        row = await (await db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0), MAX(seq) "
                                      "FROM batches")).fetchone()
        assert row is not None
        self._count, self._bytes = int(row[0]), int(row[1])
        self._next_seq = max(int(meta.get("next_seq", 1)), (row[2] or 0) + 1)
        await db.commit()

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("queue is not open")
        return self._db

    async def put(self, encode: Callable[[int], bytes], created_ns: int, summaries: int = 0,
                  interval_end_ns: int = 0) -> int:
        """Assign the next seq, encode the batch with it and store it durably; return the seq.

        `encode(seq)` returns the serialized batch: the seq is part of the payload, so it must
        be known before serializing. `summaries` feeds the persisted production counter that lets
        an operator (or a test) reconcile what the agent produced with what the collector stored.
        """
        async with self._lock:
            seq = self._next_seq
            payload = encode(seq)
            db = self.db
            await db.execute("INSERT INTO batches (seq, created_ns, payload) VALUES (?, ?, ?)",
                             (seq, created_ns, payload))
            self._next_seq = seq + 1
            self._summaries_total += summaries
            self.last_interval_end_ns = max(self.last_interval_end_ns, interval_end_ns)
            await db.executemany("INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE "
                                 "SET value = excluded.value",
                                 [("next_seq", str(self._next_seq)),
                                  ("summaries_total", str(self._summaries_total)),
                                  ("last_interval_end_ns", str(self.last_interval_end_ns))])
            self._bytes += len(payload)
            self._count += 1
            await self._enforce_bound()
            await db.commit()
        self.changed.set()
        return seq

    async def _enforce_bound(self) -> None:
        """Drop the oldest batches (never the newest) until the queue fits its byte bound, sparing
        the ones that may be in flight as long as there are others."""
        dropped = 0
        newest = self._next_seq - 1
        while self._bytes > self.max_bytes and self._count > 1:
            row = await (await self.db.execute(
                "SELECT seq, LENGTH(payload) FROM batches WHERE seq < ? ORDER BY seq LIMIT 1 OFFSET ?",
                (newest, self.unacked_window))).fetchone()
            if row is None:  # only the window and the newest are left: the byte bound wins
                row = await (await self.db.execute(
                    "SELECT seq, LENGTH(payload) FROM batches ORDER BY seq LIMIT 1")).fetchone()
            assert row is not None
            await self.db.execute("DELETE FROM batches WHERE seq = ?", (row[0],))
            self._bytes -= int(row[1])
            self._count -= 1
            dropped += 1
        if dropped:
            self._dropped += dropped
            await self.db.execute("INSERT INTO meta VALUES ('dropped', ?) ON CONFLICT (key) DO UPDATE "
                                  "SET value = excluded.value", (str(self._dropped),))

    async def peek(self, after_seq: int, limit: int) -> list[tuple[int, bytes]]:
        """The oldest stored batches with seq > after_seq, in seq order."""
        async with self._lock:
            cur = await self.db.execute(
                "SELECT seq, payload FROM batches WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit))
            return [(int(s), bytes(p)) for s, p in await cur.fetchall()]

    async def ack(self, seq: int) -> int:
        """Delete every batch with seq <= `seq` (acks are cumulative); return how many were deleted."""
        async with self._lock:
            cur = await self.db.execute(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM batches WHERE seq <= ?", (seq,))
            row = await cur.fetchone()
            assert row is not None
            if row[0]:
                await self.db.execute("DELETE FROM batches WHERE seq <= ?", (seq,))
                await self.db.commit()
                self._count -= int(row[0])
                self._bytes -= int(row[1])
            return int(row[0])

    def stats(self) -> QueueStats:
        return QueueStats(self._count, self._bytes, self._dropped, self._next_seq, self._summaries_total)
