"""StoreAndForwardQueue: every batch is on disk before it is sent, and leaves only when acked.

A batch gets its `seq` inside the same SQLite transaction that stores it, so seq is monotonic
across restarts and never reused. The queue has a byte bound (`max_queue_mb`): when a new batch
would exceed it, the oldest batches are dropped and counted (`dropped` is persisted and reported
upstream in every batch's health). The oldest `unacked_window` batches (the uplink's in-flight
window) are spared while anything newer can go instead: they may have been sent and stored with
their ack lost to a broken link, and dropping them would count as lost data that arrived; the
collector's watermark deletes them at the next connection, or they are resent and deduplicated.

One commit per interval: an ack only moves the in-memory watermark; the acked rows are deleted in
the transaction that stores the next batch (and at close). Nothing is lost by the delay: after a
crash, acked rows still on disk are deleted by the collector's watermark (the ack that answers the
Hello) or resent and deduplicated.

A store that fails (disk full, I/O error) changes nothing: the transaction is rolled back and the
in-memory counters are only updated after a commit, so they always describe what is on disk. The
batch waits in a bounded in-memory overflow and every later `put` (or `retry`) tries again, oldest
first; when the overflow is over its bound, its oldest batches are dropped and counted like the
queue's own drops. Overflow batches have no seq yet: a seq is given only to what is on disk.

Payloads are stored zlib-compressed (level 1: ~1 ms for a 90 KB batch, 2-3x smaller), which is
what the flash of a small gateway is spared most by; `peek` returns them as they were given. The
`bytes` figures and the byte bound count what is on disk. Rows stored by an agent from before
compression existed stay readable: they are those below the `compressed_from_seq` meta value.

The queue's random `epoch` is created with the database: if the state directory is wiped, seq
restarts at 1 under a new epoch and the collector does not mistake the new batches for duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import sqlite3
import time
import uuid
import zlib
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

from runtime.logs import RateLimitedLog
from runtime.schema import DatabaseSchema, SchemaPart
from runtime.sqlite import open_database

__all__ = ["QueueStats", "StoreAndForwardQueue", "storage_problem"]

log = logging.getLogger("twin.agent.queue")

# 1 KiB pages: a commit rewrites a handful of b-tree, freelist and header pages besides the payload,
# and at 4 KiB each they cost as much flash as a small batch. Applies to queues created from now on.
PAGE_SIZE = 1024
# Checkpoint the WAL every ~8 MiB instead of every 1000 pages: freed pages are reused by the next
# batches, so a rare checkpoint copies only the few pages that are live at that moment.
WAL_AUTOCHECKPOINT_PAGES = 8192
DEFAULT_OVERFLOW_BYTES = 8 * 1024 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY, created_ns INTEGER NOT NULL, payload BLOB NOT NULL);
"""
# The queue's tables and their versions (runtime/schema.py; register a Migration when a table changes).
QUEUE_DATABASE = DatabaseSchema("queue.sqlite", [SchemaPart("queue", _SCHEMA)])


def storage_problem(exc: BaseException) -> str:
    """A short operator-facing description of a failed write: "disk full" when it is one."""
    text = str(exc)
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "disk full"
    if isinstance(exc, sqlite3.Error) and "full" in text.lower():
        return "disk full"
    return f"storage error: {type(exc).__name__}: {text}"


@dataclass(frozen=True, slots=True)
class QueueStats:
    batches: int  # stored and not acked
    bytes: int
    dropped: int  # batches dropped: the oldest over the byte bound, or overflow that could not be stored
    next_seq: int
    summaries_total: int  # summaries ever stored in this queue (epoch): what the collector should have
    summaries_dropped: int = 0  # summaries of the dropped overflow batches
    overflow_batches: int = 0  # waiting in memory for the disk
    overflow_bytes: int = 0
    storage_error: str = ""  # "" while stores succeed; "disk full" or the error otherwise
    storage_error_since_ns: int = 0
    payload_bytes_stored: int = 0  # batch bytes (before compression) stored by this process


@dataclass(slots=True)
class _Pending:
    encode: Callable[[int], bytes]
    created_ns: int
    summaries: int
    interval_end_ns: int
    size: int = 0  # of the last encoding attempt; 0 until one was made


@dataclass(slots=True)
class _Counters:
    """What the meta table says; replaced as a whole after each successful commit."""

    next_seq: int = 1
    dropped: int = 0
    summaries_total: int = 0
    summaries_dropped: int = 0
    last_interval_end_ns: int = 0


class StoreAndForwardQueue:
    def __init__(self, path: Path, max_bytes: int, unacked_window: int = 0,
                 max_overflow_bytes: int = DEFAULT_OVERFLOW_BYTES, compress: bool = True) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.path = path
        self.compress = compress
        self._compressed_from = 0  # rows with seq >= this are compressed; 0 = none
        self.max_bytes = max_bytes
        self.unacked_window = unacked_window
        self.max_overflow_bytes = max_overflow_bytes
        self.epoch = ""
        self._db: aiosqlite.Connection | None = None
        self._meta = _Counters()
        self._rows: OrderedDict[int, int] = OrderedDict()  # seq -> payload bytes, of every row on disk
        self._acked = 0  # cumulative ack; rows up to it are deleted with the next commit
        self._unacked_bytes = 0
        self._unacked_count = 0
        self._overflow: deque[_Pending] = deque()
        self._overflow_dropped = 0  # counted in memory while the disk refuses; persisted with the next commit
        self._overflow_summaries_dropped = 0
        self.storage_error = ""
        self.storage_error_since_ns = 0
        self.payload_bytes_stored = 0
        self._drop_log = RateLimitedLog(log, 60.0)
        self._lock = asyncio.Lock()
        self.changed = asyncio.Event()  # set when a batch is added

    @property
    def last_interval_end_ns(self) -> int:
        """Of the newest batch ever stored; survives restarts."""
        return self._meta.last_interval_end_ns

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():  # the page size is fixed when the database is first written
            conn = sqlite3.connect(self.path)
            try:
                conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
                conn.execute("PRAGMA journal_mode=WAL")  # writes the header, and with it the page size
            finally:
                conn.close()
        db = self._db = await open_database(self.path, QUEUE_DATABASE)  # synchronous=FULL: queued means on disk
        await db.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
        meta = {k: v async for k, v in await db.execute("SELECT key, value FROM meta")}
        if "epoch" not in meta:
            meta["epoch"] = uuid.uuid4().hex
            await db.execute("INSERT INTO meta VALUES ('epoch', ?)", (meta["epoch"],))
        self.epoch = meta["epoch"]
        rows = await (await db.execute("SELECT seq, LENGTH(payload) FROM batches ORDER BY seq")).fetchall()
        self._rows = OrderedDict((int(s), int(n)) for s, n in rows)
        self._unacked_bytes, self._unacked_count = sum(self._rows.values()), len(self._rows)
        self._meta = _Counters(
            next_seq=max(int(meta.get("next_seq", 1)), max(self._rows, default=0) + 1),
            dropped=int(meta.get("dropped", 0)),
            summaries_total=int(meta.get("summaries_total", 0)),
            summaries_dropped=int(meta.get("summaries_dropped", 0)),
            last_interval_end_ns=int(meta.get("last_interval_end_ns", 0)),
        )
        self._compressed_from = int(meta.get("compressed_from_seq", 0))
        if self.compress and not self._compressed_from:  # from the next batch on, for good
            self._compressed_from = self._meta.next_seq
            await db.execute("INSERT INTO meta VALUES ('compressed_from_seq', ?)", (str(self._compressed_from),))
        await db.commit()

    async def close(self) -> None:
        """Store what the overflow still holds if the disk lets us, delete acked rows, close."""
        if self._db is None:
            return
        async with self._lock:
            try:
                await self._commit_pending()
            except (sqlite3.Error, OSError) as exc:
                log.error("queue: %d batches in memory could not be stored at shutdown (%s); they are lost",
                          len(self._overflow), storage_problem(exc))
        await self._db.close()
        self._db = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("queue is not open")
        return self._db

    async def put(self, encode: Callable[[int], bytes], created_ns: int, summaries: int = 0,
                  interval_end_ns: int = 0) -> int | None:
        """Store a new batch (after any older ones waiting in the overflow); return its seq.

        `encode(seq)` returns the serialized batch: the seq is part of the payload, so it must be
        known before serializing. `summaries` feeds the persisted production counter that lets an
        operator (or a test) reconcile what the agent produced with what the collector stored.
        Returns None when the disk refused the write: the batch waits in the in-memory overflow.
        """
        async with self._lock:
            self._overflow.append(_Pending(encode, created_ns, summaries, interval_end_ns))
            await self._try_store()
            return None if self._overflow else self._meta.next_seq - 1

    async def retry(self) -> bool:
        """Try again to store the overflow; True when nothing waits in memory any more."""
        async with self._lock:
            if self._overflow:
                await self._try_store()
            return not self._overflow

    async def _try_store(self) -> None:
        try:
            stored = await self._commit_pending()
        except (sqlite3.Error, OSError) as exc:
            problem = storage_problem(exc)
            if not self.storage_error:
                self.storage_error_since_ns = time.time_ns()
                log.error("queue: cannot store batches (%s); keeping up to %.0f KiB in memory and retrying",
                          problem, self.max_overflow_bytes / 1024)
            self.storage_error = problem
            self._bound_overflow()
            return
        if self.storage_error:
            log.warning("queue: storing again after %.0fs of %s", (time.time_ns() - self.storage_error_since_ns) / 1e9,
                        self.storage_error)
            self.storage_error, self.storage_error_since_ns = "", 0
        if stored:
            self.changed.set()

    def _bound_overflow(self) -> None:
        """Drop the oldest overflow batches beyond the memory bound (never the newest), counted."""
        for p in self._overflow:
            if not p.size:  # not encoded yet: the store failed before it got to this one
                p.size = len(p.encode(0))
        total = sum(p.size for p in self._overflow)
        while len(self._overflow) > 1 and total > self.max_overflow_bytes:
            gone = self._overflow.popleft()
            total -= gone.size
            self._overflow_dropped += 1
            self._overflow_summaries_dropped += gone.summaries
            self._drop_log.warning("overflow", f"queue: dropped a batch of {gone.summaries} summaries held in memory "
                                               f"({self._meta.dropped + self._overflow_dropped} dropped so far)")

    async def _commit_pending(self) -> int:
        """One transaction: delete acked rows, insert the overflow in order, enforce the byte bound,
        update the counters. In-memory state changes only after the commit; returns rows stored."""
        db = self.db
        meta = _Counters(self._meta.next_seq, self._meta.dropped + self._overflow_dropped,
                         self._meta.summaries_total,
                         self._meta.summaries_dropped + self._overflow_summaries_dropped,
                         self._meta.last_interval_end_ns)
        rows = OrderedDict((s, n) for s, n in self._rows.items() if s > self._acked)
        deleted_acked = len(rows) != len(self._rows)
        inserted: list[tuple[int, int]] = []
        try:
            if deleted_acked:
                await db.execute("DELETE FROM batches WHERE seq <= ?", (self._acked,))
            for p in self._overflow:
                raw = p.encode(meta.next_seq)
                payload = self._pack(meta.next_seq, raw)
                p.size = len(payload)
                await db.execute("INSERT INTO batches (seq, created_ns, payload) VALUES (?, ?, ?)",
                                 (meta.next_seq, p.created_ns, payload))
                rows[meta.next_seq] = len(payload)
                inserted.append((meta.next_seq, len(raw)))
                meta.next_seq += 1
                meta.summaries_total += p.summaries
                meta.last_interval_end_ns = max(meta.last_interval_end_ns, p.interval_end_ns)
            victims = self._over_bound(rows)
            if victims:
                await db.executemany("DELETE FROM batches WHERE seq = ?", [(s,) for s in victims])
                for s in victims:
                    del rows[s]
                meta.dropped += len(victims)
            if inserted or victims or meta.dropped != self._meta.dropped:
                await db.executemany(
                    "INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    [("next_seq", str(meta.next_seq)), ("dropped", str(meta.dropped)),
                     ("summaries_total", str(meta.summaries_total)),
                     ("summaries_dropped", str(meta.summaries_dropped)),
                     ("last_interval_end_ns", str(meta.last_interval_end_ns))])
            if db.in_transaction:
                await db.commit()
        except BaseException:
            with contextlib.suppress(sqlite3.Error, OSError):
                await db.rollback()
            raise
        self._meta = meta
        self._rows = rows
        self._unacked_bytes, self._unacked_count = sum(rows.values()), len(rows)
        self._overflow.clear()
        self._overflow_dropped = self._overflow_summaries_dropped = 0
        self.payload_bytes_stored += sum(n for _, n in inserted)
        if victims:
            log.warning("queue over %.1f MiB: dropped the %d oldest batches (%d dropped so far)",
                        self.max_bytes / 2**20, len(victims), meta.dropped)
        return len(inserted)

    def _over_bound(self, rows: OrderedDict[int, int]) -> list[int]:
        """The oldest batches (never the newest) to drop so the queue fits its byte bound, sparing
        the ones that may be in flight as long as there are others."""
        total = sum(rows.values())
        if total <= self.max_bytes:
            return []
        order = list(rows)
        newest = order[-1]
        candidates = order[self.unacked_window:-1] + order[:min(self.unacked_window, len(order) - 1)]
        victims = []
        for seq in candidates:
            if total <= self.max_bytes or seq == newest:
                break
            victims.append(seq)
            total -= rows[seq]
        return victims

    async def peek(self, after_seq: int, limit: int) -> list[tuple[int, bytes]]:
        """The oldest stored, unacked batches with seq > after_seq, in seq order."""
        async with self._lock:
            cur = await self.db.execute("SELECT seq, payload FROM batches WHERE seq > ? ORDER BY seq LIMIT ?",
                                        (max(after_seq, self._acked), limit))
            return [(int(s), self._unpack(int(s), bytes(p))) for s, p in await cur.fetchall()]

    def _pack(self, seq: int, payload: bytes) -> bytes:
        return zlib.compress(payload, 1) if self._compressed_from and seq >= self._compressed_from else payload

    def _unpack(self, seq: int, stored: bytes) -> bytes:
        return zlib.decompress(stored) if self._compressed_from and seq >= self._compressed_from else stored

    async def ack(self, seq: int) -> int:
        """Acks are cumulative: every batch with seq <= `seq` is delivered. Return how many became
        acked; their rows are deleted with the next commit."""
        async with self._lock:
            if seq <= self._acked:
                return 0
            newly = 0
            for s, size in self._rows.items():  # in seq order; acked rows not yet deleted come first
                if s > seq:
                    break
                if s > self._acked:
                    newly += 1
                    self._unacked_bytes -= size
            self._acked = seq
            self._unacked_count -= newly
            return newly

    def stats(self) -> QueueStats:
        m = self._meta
        return QueueStats(
            batches=self._unacked_count, bytes=self._unacked_bytes, dropped=m.dropped + self._overflow_dropped,
            next_seq=m.next_seq, summaries_total=m.summaries_total,
            summaries_dropped=m.summaries_dropped + self._overflow_summaries_dropped,
            overflow_batches=len(self._overflow), overflow_bytes=sum(p.size for p in self._overflow),
            storage_error=self.storage_error, storage_error_since_ns=self.storage_error_since_ns,
            payload_bytes_stored=self.payload_bytes_stored,
        )
