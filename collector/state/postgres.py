"""The shared state database: PostgreSQL (asyncpg), for several collectors.

A pool of connections per collector; transactions are READ COMMITTED and run concurrently, within
and across collectors, so the components take the locks their read-modify-writes need (see
collector/state/database.py): `lock(keys)` and `try_lock(key)` are transaction-scoped advisory
locks in this project's own lock space, `dialect.for_update` and `dialect.skip_locked` row locks.
Reads (`reading`) are a REPEATABLE READ, READ ONLY transaction: one snapshot for several queries.

Why asyncpg: the collector is asyncio throughout, and asyncpg is asyncio-native, speaks the binary
protocol (no text conversion of every value), caches prepared statements per connection and sends
`executemany` as one pipeline; it needs no libpq. A PgBouncer in transaction mode in front needs
`statement_cache_size = 0`, which `[state]` does not expose yet: connect the collectors directly.

The schema (runtime/schema.py: the parts the components register) is created in one transaction
under an advisory lock, so collectors starting together do not race on CREATE ... IF NOT EXISTS. The
CREATE statements are the schema: a table an earlier version created gets the columns it lacks from
them (ADD COLUMN), which is what every migration so far does; the parts' migrations themselves bring
SQLite files forward (they also move data only SQLite files had). The parts' versions are recorded in
`schema_versions` as in SQLite, and a database written by a newer release is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from collector.state.database import PostgresLocation, StateConnection
from collector.state.dialect import POSTGRESQL, postgres_ddl, postgres_placeholders
from runtime.errors import ConfigError
from runtime.extras import import_feature
from runtime.schema import VERSIONS_TABLE, DatabaseSchema

if TYPE_CHECKING:
    import asyncpg

__all__ = ["LOCK_SPACE", "PostgresConnection", "PostgresState", "require_asyncpg"]

log = logging.getLogger("twin.collector.state")

T = TypeVar("T")

LOCK_SPACE = 0x7477696E  # "twin": the first key of every advisory lock this project takes
SCHEMA_LOCK = "schema"
CONFLICT_ATTEMPTS = 5
# SQLSTATE classes of a database that is down, busy, out of resources or shutting down; with the
# conflicts below, retrying the same work later can succeed.
TRANSIENT_CLASSES = ("08", "53", "57", "58", "40", "55")
CONFLICT_STATES = {"40001", "40P01", "23505"}  # serialization failure, deadlock, unique violation


def require_asyncpg(key: str = "state.url") -> Any:
    """asyncpg, or an error naming the `postgres` extra (runtime/extras.py)."""
    return import_feature("asyncpg", f"{key} (a PostgreSQL state database)")


def _statements(script: str) -> list[str]:
    """The statements of a script of CREATE statements, comments removed (as runtime/schema.py)."""
    return [s.strip() for s in re.sub(r"--[^\n]*", "", script).split(";") if s.strip()]


_CREATE_TABLE = re.compile(r"CREATE\s+TABLE\s+IF\s+NOT\s+EXISTS\s+(\w+)\s*\((.*)\)\s*$", re.IGNORECASE | re.DOTALL)
_CONSTRAINTS = ("PRIMARY", "UNIQUE", "CHECK", "FOREIGN", "CONSTRAINT")


def table_columns(statement: str) -> tuple[str, list[tuple[str, str]]] | None:
    """(table, [(column, definition)]) of a CREATE TABLE statement; None for other statements."""
    m = _CREATE_TABLE.match(statement.strip())
    if m is None:
        return None
    items, depth, current = [], 0, ""
    for ch in m.group(2):
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            items.append(current.strip())
            current = ""
        else:
            current += ch
    items.append(current.strip())
    columns = [(item.split()[0], item) for item in items if item and item.split()[0].upper() not in _CONSTRAINTS]
    return m.group(1), columns


@functools.lru_cache(maxsize=512)
def _sql(sql: str) -> str:
    return postgres_placeholders(sql)


async def _nothing_to_reset(conn: asyncpg.Connection) -> None:
    """A connection goes back to the pool as it came: every transaction has ended (advisory locks are
    transaction-scoped), and nothing here LISTENs, SETs or leaves a cursor open. asyncpg's default
    reset would cost a round trip and a transaction of its own per use."""


def _rowcount(status: str) -> int:
    """'UPDATE 3' / 'INSERT 0 1' / 'DELETE 0' -> the number at the end (0 for other commands)."""
    last = status.rsplit(" ", 1)[-1] if status else ""
    return int(last) if last.isdigit() else 0


class PostgresConnection:
    """A pooled asyncpg connection, as a StateConnection."""

    dialect = POSTGRESQL

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        return _rowcount(await self.conn.execute(_sql(sql), *args))

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        if rows:
            await self.conn.executemany(_sql(sql), rows)

    async def fetchall(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in await self.conn.fetch(_sql(sql), *args)]

    async def fetchone(self, sql: str, args: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        row = await self.conn.fetchrow(_sql(sql), *args)
        return tuple(row) if row is not None else None

    async def fetchval(self, sql: str, args: Sequence[Any] = ()) -> Any:
        return await self.conn.fetchval(_sql(sql), *args)

    async def run_script(self, writes: Sequence[tuple[str, Sequence[Sequence[Any]]]],
                         reads: Sequence[tuple[str, Sequence[Any]]] = ()) -> list[list[tuple[Any, ...]]]:
        for sql, rows in writes:
            await self.executemany(sql, rows)
        return [await self.fetchall(sql, args) for sql, args in reads]

    async def lock(self, keys: Iterable[str]) -> None:
        ordered = sorted(set(keys))
        if ordered:
            await self.conn.execute(
                "SELECT pg_advisory_xact_lock($1, hashtext(k)) FROM (SELECT unnest($2::text[]) AS k ORDER BY 1) s",
                LOCK_SPACE, ordered)

    async def try_lock(self, key: str) -> bool:
        return bool(await self.conn.fetchval("SELECT pg_try_advisory_xact_lock($1, hashtext($2))", LOCK_SPACE, key))


class PostgresState:
    """A StateDatabase in PostgreSQL."""

    dialect = POSTGRESQL

    def __init__(self, location: PostgresLocation, schema: DatabaseSchema, *, read_only: bool = False) -> None:
        self.settings = location
        self.schema = schema
        self.read_only = read_only  # a reader beside the collector: one connection, creates nothing
        self.location = location.display
        self._pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        asyncpg = require_asyncpg()
        s = self.settings
        self._pool = await asyncpg.create_pool(
            s.url, password=s.password or None, min_size=1, max_size=1 if self.read_only else s.pool_size,
            timeout=s.connect_timeout_s,
            command_timeout=s.statement_timeout_s, reset=_nothing_to_reset,
            server_settings={"application_name": "twin-collector"})
        if self.read_only:
            return
        try:
            async with self.transaction() as conn:
                await self._apply_schema(conn)
        except BaseException:
            await self.close()
            raise
        log.info("state database: PostgreSQL %s (pool of %d)", self.location, s.pool_size)

    async def _apply_schema(self, conn: StateConnection) -> None:
        await conn.lock([SCHEMA_LOCK])  # collectors starting together create the tables once
        await conn.execute(postgres_ddl(VERSIONS_TABLE.strip().rstrip(";")))
        stored = {str(p): int(v) for p, v in await conn.fetchall("SELECT part, version FROM schema_versions")}
        for part in self.schema.parts.values():
            have = stored.get(part.name)
            if have is not None and have > part.version:
                raise ConfigError(
                    f"state database {self.location}: its {part.name} tables are at schema version {have}, and this "
                    f"release knows versions up to {part.version}: it was written by a newer release. Migrations only "
                    "go forward; run that release again (or restore a backup made before the upgrade)")
            for statement in _statements(part.create):
                ddl = postgres_ddl(statement)
                await conn.execute(ddl)
                table = table_columns(ddl)
                if table is None or have is None:
                    continue
                name, columns = table
                existing = {r[0] for r in await conn.fetchall(
                    "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
                    "AND table_name = ?", (name,))}
                for column, definition in columns:
                    if column not in existing:
                        await conn.execute(f"ALTER TABLE {name} ADD COLUMN {definition}")
                        log.info("state database: %s.%s added (%s schema version %d)", name, column, part.name,
                                 part.version)
            if have != part.version:
                await conn.execute(
                    "INSERT INTO schema_versions VALUES (?, ?, ?) ON CONFLICT (part) DO UPDATE SET "
                    "version = excluded.version, updated_ns = excluded.updated_ns",
                    (part.name, part.version, time.time_ns()))

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), timeout=10)
            except (TimeoutError, OSError):
                pool.terminate()

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError(f"state database {self.location} is not open")
        return self._pool

    @contextlib.asynccontextmanager
    async def _connection(self, **transaction: Any) -> AsyncIterator[StateConnection]:
        async with self.pool.acquire() as conn, conn.transaction(**transaction):
            yield PostgresConnection(conn)

    def transaction(self) -> contextlib.AbstractAsyncContextManager[StateConnection]:
        return self._connection()

    def reading(self) -> contextlib.AbstractAsyncContextManager[StateConnection]:
        return self._connection(isolation="repeatable_read", readonly=True)

    def claim(self) -> contextlib.AbstractAsyncContextManager[StateConnection]:
        return self._connection()

    async def run(self, work: Callable[[StateConnection], Awaitable[T]]) -> T:
        """`work` in a transaction, again in a new one when it lost a conflict with another
        transaction (deadlock, serialization failure, a unique row another collector inserted)."""
        for attempt in range(1, CONFLICT_ATTEMPTS + 1):
            try:
                async with self.transaction() as conn:
                    return await work(conn)
            except Exception as exc:
                if attempt == CONFLICT_ATTEMPTS or getattr(exc, "sqlstate", None) not in CONFLICT_STATES:
                    raise
                log.debug("transaction conflict (%s), attempt %d: %s", exc.sqlstate, attempt, exc)  # type: ignore[attr-defined]
                await asyncio.sleep(random.uniform(0.005, 0.05) * attempt)
        raise AssertionError("unreachable")

    def is_transient(self, exc: BaseException) -> bool:
        asyncpg = require_asyncpg()
        if isinstance(exc, OSError | TimeoutError | asyncpg.InterfaceError | asyncpg.PostgresConnectionError):
            return True
        state = getattr(exc, "sqlstate", None) or ""
        return state in CONFLICT_STATES or state[:2] in TRANSIENT_CLASSES
