"""The embedded state database: one SQLite file, one collector.

One aiosqlite connection (runtime/sqlite.py: WAL, synchronous=FULL, busy timeout) shared by the
collector's tasks through a lock: a transaction is BEGIN IMMEDIATE ... COMMIT with the lock held,
so transactions run one at a time and nothing can conflict; `lock`, `try_lock` and the row-lock
fragments have nothing left to do. Another process on the same file (`twin-collector work-orders`)
waits on SQLite's own write lock (busy timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from collector.state.database import StateConnection
from collector.state.dialect import SQLITE
from runtime.schema import DatabaseSchema
from runtime.sqlite import BUSY_TIMEOUT_MS, connect, open_database, run_on_connection

__all__ = ["SqliteConnection", "SqliteState"]

T = TypeVar("T")


class SqliteConnection:
    """The shared aiosqlite connection, as a StateConnection."""

    dialect = SQLITE

    def __init__(self, db: aiosqlite.Connection, lock: asyncio.Lock | None = None) -> None:
        self.db = db
        self._lock = lock  # set in a claim: each statement takes the lock and commits by itself

    @contextlib.asynccontextmanager
    async def _turn(self) -> AsyncIterator[None]:
        if self._lock is None:
            yield
            return
        async with self._lock:
            yield

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        async with self._turn():
            cur = await self.db.execute(sql, args)
            return int(cur.rowcount or 0)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        if self._lock is None:
            await self.db.executemany(sql, rows)
            return
        async with self._lock:  # in a claim: one transaction (one disk sync), not one per row
            await self.db.execute("BEGIN IMMEDIATE")
            try:
                await self.db.executemany(sql, rows)
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    await self.db.execute("ROLLBACK")
                raise
            await self.db.execute("COMMIT")

    async def fetchall(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        async with self._turn():
            return [tuple(r) for r in await self.db.execute_fetchall(sql, args)]

    async def fetchone(self, sql: str, args: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        rows = await self.fetchall(sql, args)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, args: Sequence[Any] = ()) -> Any:
        row = await self.fetchone(sql, args)
        return row[0] if row else None

    async def run_script(self, writes: Sequence[tuple[str, Sequence[Sequence[Any]]]],
                         reads: Sequence[tuple[str, Sequence[Any]]] = ()) -> list[list[tuple[Any, ...]]]:
        def work(conn: sqlite3.Connection) -> list[list[tuple[Any, ...]]]:
            for sql, rows in writes:
                conn.executemany(sql, rows)
            return [[tuple(r) for r in conn.execute(sql, args).fetchall()] for sql, args in reads]

        if self._lock is None:  # inside the caller's transaction: one call to the database thread
            return await run_on_connection(self.db, work)

        def atomic(conn: sqlite3.Connection) -> list[list[tuple[Any, ...]]]:
            conn.execute("BEGIN IMMEDIATE")
            try:
                out = work(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return out

        async with self._lock:  # in a claim: a transaction of its own
            return await run_on_connection(self.db, atomic)

    async def lock(self, keys: Iterable[str]) -> None:
        return None  # the transaction holds the database's write lock already

    async def try_lock(self, key: str) -> bool:
        return True


class SqliteState:
    """A StateDatabase in one SQLite file."""

    dialect = SQLITE

    def __init__(self, path: Path, schema: DatabaseSchema, *, read_only: bool = False) -> None:
        self.path = Path(path)
        self.schema = schema
        self.read_only = read_only
        self.location = str(self.path)
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        """Open the file, creating or migrating its tables (runtime/schema.py, one transaction).
        Read-only: the file must exist; nothing is created or changed."""
        if self.read_only:
            self._db = await connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
            await self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            return
        self._db = await open_database(self.path, self.schema, autocommit=True)

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError(f"state database {self.location} is not open")
        return self._db

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[StateConnection]:
        async with self._lock:
            db = self.db
            await db.execute("BEGIN IMMEDIATE")
            try:
                yield SqliteConnection(db)
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    await db.execute("ROLLBACK")
                raise
            await db.execute("COMMIT")

    @contextlib.asynccontextmanager
    async def reading(self) -> AsyncIterator[StateConnection]:
        """Reads between transactions: never another task's uncommitted writes on the shared connection."""
        async with self._lock:
            yield SqliteConnection(self.db)

    @contextlib.asynccontextmanager
    async def claim(self) -> AsyncIterator[StateConnection]:
        """One collector per file: nothing to hold; each statement commits on its own."""
        yield SqliteConnection(self.db, self._lock)

    async def run(self, work: Callable[[StateConnection], Awaitable[T]]) -> T:
        async with self.transaction() as conn:
            return await work(conn)

    def is_transient(self, exc: BaseException) -> bool:
        if not isinstance(exc, sqlite3.OperationalError):
            return False
        text = str(exc).lower()
        return any(word in text for word in ("locked", "busy", "disk", "full", "i/o", "unable to open"))
