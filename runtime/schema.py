"""The one owner of every SQLite schema: versions, and forward migrations run when a daemon starts.

Each state file (the agent's twin and queue, the collector's fleet database and embedded summary
store) has a `DatabaseSchema`, and each component that keeps tables in it registers a `SchemaPart`:
its name, the statements that create its tables and indexes (`CREATE ... IF NOT EXISTS`), and the
migrations that bring an older file up to date. The collector's fleet database holds several parts
(fleet twin, work orders, ITSM outbox, history, annotations); none of them knows the others.

`runtime.sqlite.open_database` applies the schema in one transaction, before anything else uses
the file:

1. `schema_versions` (part, version, updated_ns) says which version of each part the file holds.
   A part without a row is new when none of its tables exists, and otherwise at version 1: files
   written before versions were recorded (release 0.1.0) hold the version-1 schema.
2. The part's migrations newer than that run in order, then its create statements (they add what
   is new: tables, indexes). For a new part the create statements run first and then every
   migration. Migrations change what exists (add a column, move data) and are idempotent
   (`add_column` adds only a missing column to an existing table), so a migration fits a new file,
   an old one, and one an earlier ad-hoc fix had already changed.
3. The row is set to the part's version, which is its newest migration's (1 without migrations).

A file from a newer release (a part at a version this code does not know) is refused with a
message: migrations only go forward, and a downgrade would drop what the newer release wrote.
A new column or table in a component is therefore: the column in its CREATE statement, and a
`Migration(version=n + 1, ...)` with `add_column` for files that have the table already.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import aiosqlite

from runtime.errors import ConfigError

__all__ = ["DatabaseSchema", "Migration", "SchemaPart", "add_column", "versions"]

VERSIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_versions (
    part TEXT PRIMARY KEY, version INTEGER NOT NULL, updated_ns INTEGER NOT NULL);
"""
_CREATE_TABLE = re.compile(r"CREATE\s+TABLE\s+IF\s+NOT\s+EXISTS\s+(\w+)", re.IGNORECASE)


@dataclass(frozen=True)
class Migration:
    """Brings a part to `version` from the one before; `apply` runs inside the opening transaction."""

    version: int
    description: str
    apply: Callable[[aiosqlite.Connection], Awaitable[None]]


@dataclass(frozen=True)
class SchemaPart:
    """One component's tables in a database file."""

    name: str
    create: str
    migrations: tuple[Migration, ...] = ()

    def __post_init__(self) -> None:
        expected = list(range(2, 2 + len(self.migrations)))
        if [m.version for m in self.migrations] != expected:
            raise ValueError(f"schema part {self.name}: migrations must be versions {expected} in order")

    @property
    def version(self) -> int:
        return 1 + len(self.migrations)

    @property
    def tables(self) -> list[str]:
        return _CREATE_TABLE.findall(self.create)


class DatabaseSchema:
    """The parts kept in one database file; components register theirs."""

    def __init__(self, file: str, parts: Sequence[SchemaPart] = ()) -> None:
        self.file = file
        self.parts: dict[str, SchemaPart] = {}
        for part in parts:
            self.register(part)

    def register(self, part: SchemaPart) -> None:
        if part.name in self.parts:
            raise ValueError(f"{self.file}: schema part {part.name!r} is registered twice")
        self.parts[part.name] = part

    async def apply(self, db: aiosqlite.Connection) -> list[str]:
        """Create or migrate every part inside the caller's transaction; return what was done."""
        await db.execute(VERSIONS_TABLE)
        stored = await versions(db)
        existing = {r[0] for r in await (await db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")).fetchall()}
        done: list[str] = []
        for part in self.parts.values():
            have = stored.get(part.name)
            if have is None:
                have = 1 if existing & set(part.tables) else 0
            if have > part.version:
                raise ConfigError(
                    f"{self.file}: its {part.name} tables are at schema version {have}, and this release knows "
                    f"versions up to {part.version}: the file was written by a newer release. Migrations only go "
                    "forward; run that release again (or restore a backup made before the upgrade)")
            if not have:
                for statement in _statements(part.create):
                    await db.execute(statement)
            for migration in part.migrations:
                if migration.version > have:
                    await migration.apply(db)
                    done.append(f"{part.name} {migration.version}: {migration.description}")
            if have:
                for statement in _statements(part.create):
                    await db.execute(statement)
            if stored.get(part.name) != part.version:
                await db.execute(
                    "INSERT INTO schema_versions VALUES (?, ?, ?) ON CONFLICT (part) DO UPDATE SET "
                    "version = excluded.version, updated_ns = excluded.updated_ns",
                    (part.name, part.version, time.time_ns()))
        return done


def _statements(script: str) -> list[str]:
    """The statements of a script of CREATE statements, comments removed (no triggers, no ';' or '--'
    inside string literals). Not executescript: that would commit the caller's transaction."""
    return [s.strip() for s in re.sub(r"--[^\n]*", "", script).split(";") if s.strip()]


async def versions(db: aiosqlite.Connection) -> dict[str, int]:
    """part -> version recorded in the file ({} before any was recorded)."""
    try:
        rows = await (await db.execute("SELECT part, version FROM schema_versions")).fetchall()
    except aiosqlite.OperationalError:
        return {}
    return {str(r[0]): int(r[1]) for r in rows}


async def add_column(db: aiosqlite.Connection, table: str, column: str, definition: str) -> bool:
    """`ALTER TABLE table ADD COLUMN column definition` unless the table lacks or has it; True if added."""
    cols = {r[1] for r in await (await db.execute(f"PRAGMA table_info({table})")).fetchall()}
    if not cols or column in cols:
        return False
    await db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
    return True
