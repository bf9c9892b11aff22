"""The seam between the collector's components and the database that holds their state.

Components (fleet twin, work orders, history, ITSM outbox, annotations) declare their tables as a
`SchemaPart` of the state database's `DatabaseSchema` (runtime/schema.py: the one owner of schemas,
versions and migrations) and talk to a `StateConnection`; which database is behind it (SQLite, one collector;
PostgreSQL, several collectors) is chosen once, by `[state] url`, in `open_state`. No component
asks which one it has: what differs is in the connection's `dialect` (a few SQL fragments) and in
four operations whose meaning is the same on both:

- `transaction()`: a unit of work, all or nothing. SQLite runs one at a time (BEGIN IMMEDIATE on
  the collector's one connection); PostgreSQL runs many at once (a connection pool, READ
  COMMITTED), so a transaction that reads what it will change takes locks: `lock(keys)` (an
  exclusive lock per key until the transaction ends, taken in sorted order so two transactions
  never wait for each other) and `dialect.for_update` on the rows it reads.
- `run(work)`: `work` in a transaction, run again (fresh transaction) when the database aborted it
  for a conflict with another collector's (deadlock, serialization failure, unique violation).
- `reading()`: reads that see committed data only, as one consistent snapshot.
- `claim()`: rows picked with `dialect.skip_locked` stay held by this collector while it does
  slow I/O with them (an HTTP POST, an InfluxDB write), and any other collector passes them over.
  SQLite has one collector per file, so there a claim holds nothing and each statement commits
  by itself (the write lock is never held across I/O).

`try_lock(key)` is the same lock without waiting: a periodic job that one collector of several
should run at a time takes it and skips its round when another holds it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from collector.state.dialect import Dialect

__all__ = ["PostgresLocation", "StateConnection", "StateDatabase", "StateLocation", "parse_location"]

T = TypeVar("T")


class StateConnection(Protocol):
    """One connection inside a transaction, a read or a claim. `?` placeholders, tuples out."""

    dialect: Dialect

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        """Run one statement; the number of rows it changed."""
        ...

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...

    async def fetchall(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    async def fetchone(self, sql: str, args: Sequence[Any] = ()) -> tuple[Any, ...] | None: ...

    async def fetchval(self, sql: str, args: Sequence[Any] = ()) -> Any:
        """The first column of the first row, None when there is no row."""
        ...

    async def run_script(self, writes: Sequence[tuple[str, Sequence[Sequence[Any]]]],
                         reads: Sequence[tuple[str, Sequence[Any]]] = ()) -> list[list[tuple[Any, ...]]]:
        """Each write (sql, rows) as executemany, in order, then each read (sql, args): the rows of
        each read. Sent together: one call to SQLite's thread (a group commit's round is one script)."""
        ...

    async def lock(self, keys: Iterable[str]) -> None:
        """Hold an exclusive lock on each key until the transaction ends (sorted, so no deadlock
        among transactions that lock this way)."""
        ...

    async def try_lock(self, key: str) -> bool:
        """Take the lock on `key` if nobody holds it; False (without waiting) otherwise."""
        ...


class StateDatabase(Protocol):
    dialect: Dialect
    location: str  # for messages; never holds a password

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    def transaction(self) -> contextlib.AbstractAsyncContextManager[StateConnection]: ...

    def reading(self) -> contextlib.AbstractAsyncContextManager[StateConnection]: ...

    def claim(self) -> contextlib.AbstractAsyncContextManager[StateConnection]: ...

    async def run(self, work: Callable[[StateConnection], Awaitable[T]]) -> T: ...

    def is_transient(self, exc: BaseException) -> bool:
        """An error of the database rather than of the data (down, busy, full, conflict): retrying
        the same work later can succeed."""
        ...


@dataclass(frozen=True)
class PostgresLocation:
    """A PostgreSQL state database shared by collectors."""

    url: str
    password: str = field(default="", repr=False)
    pool_size: int = 10
    connect_timeout_s: float = 10.0
    statement_timeout_s: float = 60.0

    @property
    def display(self) -> str:
        """The URL without a password in it."""
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        netloc = parts.netloc.rsplit("@", 1)[1]
        user = parts.username or ""
        return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


StateLocation = Path | PostgresLocation


def parse_location(location: StateLocation | str) -> StateLocation:
    """A `postgresql://` URL or a SQLite file path."""
    if isinstance(location, str):
        if location.startswith(("postgresql://", "postgres://")):
            return PostgresLocation(location)
        return Path(location)
    return location
