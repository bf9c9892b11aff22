"""runtime/schema.py: versions per part, forward migrations on open, one transaction, no downgrades."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import aiosqlite
import pytest

from runtime.errors import ConfigError
from runtime.schema import DatabaseSchema, Migration, SchemaPart, add_column
from runtime.sqlite import open_database

V1 = "CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, title TEXT NOT NULL);"
V3 = """
CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, title TEXT NOT NULL,
    category TEXT NOT NULL DEFAULT 'corrective', -- kinds; one of several
    remaining_days REAL);
CREATE INDEX IF NOT EXISTS orders_category ON orders (category);
CREATE TABLE IF NOT EXISTS order_links (a INTEGER NOT NULL, b INTEGER NOT NULL, PRIMARY KEY (a, b));
"""


async def _category(db: aiosqlite.Connection) -> None:
    await add_column(db, "orders", "category", "TEXT NOT NULL DEFAULT 'corrective'")


async def _remaining(db: aiosqlite.Connection) -> None:
    await add_column(db, "orders", "remaining_days", "REAL")


ORDERS_V3 = SchemaPart("orders", V3, (Migration(2, "work-order category", _category),
                                      Migration(3, "remaining life", _remaining)))
OTHER = SchemaPart("other", "CREATE TABLE IF NOT EXISTS other (k TEXT PRIMARY KEY);")


def _open(path: Path, *parts: SchemaPart) -> tuple[dict[str, int], list[str]]:
    async def main() -> tuple[dict[str, int], list[str]]:
        db = await open_database(path, DatabaseSchema(path.name, parts))
        try:
            versions = dict(await (await db.execute("SELECT part, version FROM schema_versions")).fetchall())
            cols = [r[1] for r in await (await db.execute("PRAGMA table_info(orders)")).fetchall()]
            return versions, cols
        finally:
            await db.close()
    return asyncio.run(main())


def test_a_new_file_gets_the_current_schema_and_versions(tmp_path: Path) -> None:
    versions, cols = _open(tmp_path / "x.sqlite", ORDERS_V3, OTHER)
    assert versions == {"orders": 3, "other": 1}
    assert cols == ["id", "title", "category", "remaining_days"]


def test_a_file_from_before_versions_is_version_1_and_migrates_with_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "x.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript(V1 + "INSERT INTO orders VALUES (1, 'filter');")
    versions, cols = _open(path, ORDERS_V3, OTHER)
    assert versions == {"orders": 3, "other": 1} and cols == ["id", "title", "category", "remaining_days"]
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT id, title, category, remaining_days FROM orders").fetchall() == [
            (1, "filter", "corrective", None)]
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'order_links'").fetchone(), \
            "a table new in a later version comes from the create statements"
    assert _open(path, ORDERS_V3, OTHER)[0] == versions, "a second open changes nothing"


def test_migrations_run_from_the_stored_version_and_tolerate_earlier_fixes(tmp_path: Path) -> None:
    path = tmp_path / "x.sqlite"
    _open(path, SchemaPart("orders", V1))
    with sqlite3.connect(path) as conn:  # an ad-hoc fix of an old release added the column already
        conn.execute("ALTER TABLE orders ADD COLUMN category TEXT NOT NULL DEFAULT 'corrective'")
    assert _open(path, ORDERS_V3)[0]["orders"] == 3


def test_a_failing_migration_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "x.sqlite"
    _open(path, SchemaPart("orders", V1))

    async def broken(db: aiosqlite.Connection) -> None:
        await add_column(db, "orders", "category", "TEXT")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        _open(path, SchemaPart("orders", V3, (Migration(2, "broken", broken),)))
    with sqlite3.connect(path) as conn:
        assert [r[1] for r in conn.execute("PRAGMA table_info(orders)")] == ["id", "title"]
        assert conn.execute("SELECT version FROM schema_versions").fetchall() == [(1,)]


def test_a_file_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.sqlite"
    _open(path, ORDERS_V3)
    with pytest.raises(ConfigError, match=r"x.sqlite: its orders tables are at schema version 3, and this "
                                          r"release knows versions up to 1"):
        _open(path, SchemaPart("orders", V1))


def test_parts_are_checked_when_declared() -> None:
    with pytest.raises(ValueError, match="versions \\[2\\] in order"):
        SchemaPart("x", V1, (Migration(3, "skips 2", _category),))
    with pytest.raises(ValueError, match="registered twice"):
        DatabaseSchema("x", [OTHER, OTHER])


def test_a_new_file_runs_the_migrations_too(tmp_path: Path) -> None:
    """A create statement that lacks a column a migration adds still ends with the column."""
    incomplete = SchemaPart("orders", V1, (Migration(2, "work-order category", _category),))
    versions, cols = _open(tmp_path / "x.sqlite", incomplete)
    assert versions == {"orders": 2} and cols == ["id", "title", "category"]
