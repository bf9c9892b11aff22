"""Opening the state database named by `[state]`: the one place that picks a backend."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from collector.state.database import PostgresLocation, StateDatabase, StateLocation, parse_location
from collector.state.embedded import SqliteState
from collector.state.postgres import PostgresState
from runtime.schema import DatabaseSchema

__all__ = ["open_state", "read_now"]


def open_state(location: StateLocation | str, schema: DatabaseSchema, *,
               read_only: bool = False) -> StateDatabase:
    """The state database at `location` (not opened yet: call `open()`).

    `read_only`: for a reader beside the collector (a metrics scrape, a test): it creates nothing,
    opens an SQLite file read-only and keeps one PostgreSQL connection.
    """
    location = parse_location(location)
    if isinstance(location, PostgresLocation):
        return PostgresState(location, schema, read_only=read_only)
    return SqliteState(location, schema, read_only=read_only)


def read_now(location: StateLocation | str,
             queries: Sequence[tuple[str, Sequence[Any]]]) -> list[list[tuple[Any, ...]]]:
    """The rows of each query (`?` placeholders), read in one snapshot, from synchronous code.

    For callers outside the collector's event loop (a metrics scrape thread, a test): a connection
    of its own is opened and closed here, on a thread and event loop of its own.
    """
    async def read() -> list[list[tuple[Any, ...]]]:
        db = open_state(location, DatabaseSchema("state reader"), read_only=True)
        await db.open()
        try:
            async with db.reading() as conn:
                return [await conn.fetchall(sql, args) for sql, args in queries]
        finally:
            await db.close()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, read()).result()
