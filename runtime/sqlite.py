"""Opening the SQLite files both daemons keep their durable state in, all the same way.

WAL lets readers (`twin-agent status`, the demo, the API) read while the daemon writes;
`synchronous=FULL` makes a commit survive a power cut, which is what "acked means stored" and
"queued means on disk" rest on; `busy_timeout` lets a CLI command and the daemon share a file.
The tables come from the file's `DatabaseSchema` (runtime/schema.py), which records their
versions and migrates an older file forward, in one transaction, before the connection is used.

SQLite creates its files 0644 minus the umask, whatever the umask allows; the files are set to
0666 minus the umask instead, like any other file the process creates. Under the collector's unit
(UMask=0007, setgid state directory) that makes them writable by the group, so operators in it can
change work orders with `twin-collector work-orders`.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Literal, TypeVar

import aiosqlite

from runtime.schema import DatabaseSchema, SchemaPart

__all__ = ["connect", "open_database", "run_on_connection"]

T = TypeVar("T")

BUSY_TIMEOUT_MS = 10_000
THREAD_JOIN_TIMEOUT_S = 5.0


async def connect(database: str | Path, **kwargs: object) -> aiosqlite.Connection:
    """`aiosqlite.connect`, but a connection that fails to open lets its worker thread finish first.

    When opening fails (a missing or unreadable file), aiosqlite stops its worker thread with a
    future nobody awaits; if the event loop closes before the thread gets to it (a short-lived
    loop, as in a metrics scrape), the thread dies with "Event loop is closed" (aiosqlite issue
    #241). Joining the thread here, as zigpy and others do, ends it while the loop still runs.
    """
    conn = aiosqlite.connect(database, **kwargs)  # type: ignore[arg-type]
    try:
        return await conn
    except BaseException:
        await asyncio.shield(asyncio.to_thread(conn._thread.join, THREAD_JOIN_TIMEOUT_S))
        raise


async def open_database(path: Path, schema: DatabaseSchema | str, *, autocommit: bool = False,
                        synchronous: Literal["FULL", "NORMAL"] = "FULL") -> aiosqlite.Connection:
    """Create the folder, create or migrate the tables, and return the open connection.

    `schema` is the file's DatabaseSchema; a plain script of CREATE statements counts as one part
    named after the file. `autocommit=True` leaves transactions to the caller (explicit
    BEGIN/COMMIT). `synchronous="NORMAL"` is for state that is rebuilt from the devices anyway (the
    agent's twin), to spare flash storage.
    """
    if isinstance(schema, str):
        schema = DatabaseSchema(path.name, [SchemaPart(path.stem, schema)])
    path.parent.mkdir(parents=True, exist_ok=True)
    db = await connect(path, isolation_level=None if autocommit else "DEFERRED")
    try:
        apply_umask(path)  # before WAL: SQLite gives the -wal and -shm files the database's mode
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute(f"PRAGMA synchronous={synchronous}")
        await db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        await db.execute("BEGIN IMMEDIATE")  # one writer migrates; a second opener waits, then finds it done
        try:
            await schema.apply(db)
        except BaseException:
            await db.execute("ROLLBACK")
            raise
        await db.execute("COMMIT")
    except BaseException:
        await db.close()
        raise
    apply_umask(path)
    return db


def process_umask() -> int:
    """This process's umask, read without changing it (os.umask would, for every thread)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def apply_umask(path: Path) -> None:
    """Give the database and its -wal/-shm files 0666 minus the umask, where this process owns them."""
    mode = 0o666 & ~process_umask()
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            st = file.stat()
            if st.st_uid == os.geteuid() and st.st_mode & 0o777 != mode:
                file.chmod(mode)
        except OSError:
            continue


async def run_on_connection(db: aiosqlite.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    """Run `work(conn)` on the connection's own thread, as one hop from the event loop.

    Each `await db.execute(...)` is a round trip between the event loop and aiosqlite's thread;
    a write of many statements (a group commit) done as one function costs one. aiosqlite offers
    no public call for this: `_execute` is the method every one of its own calls goes through.
    """
    return await db._execute(lambda: work(db._conn))
