"""Fixtures shared by the test folders.

`state_location` runs a test once per state database: the embedded SQLite file and PostgreSQL (a
real server for the whole session, a new database per test). Tests of the collector's state
(fleet twin, work orders, ITSM outbox, annotations, periodic check) take it instead of a file path,
so both backends pass the same suite.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from collector.state import PostgresLocation, StateLocation, read_now
from tests.servers import POSTGRES_PASSWORD, PostgresServer, postgres_server

_databases = itertools.count(1)


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """One PostgreSQL 15 server for the session (fsync off: tests never crash it)."""
    server = postgres_server(tmp_path_factory.mktemp("postgres"))
    try:
        yield server
    finally:
        server.remove()


def new_postgres_database(server: PostgresServer) -> PostgresLocation:
    return PostgresLocation(server.create_database(f"test_{next(_databases)}"), POSTGRES_PASSWORD)


@pytest.fixture(params=["sqlite", "postgres"])
def state_location(request: pytest.FixtureRequest, tmp_path: Path) -> StateLocation:
    """The collector's state database: a new SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return tmp_path / "collector.sqlite"
    return new_postgres_database(request.getfixturevalue("postgres"))


def state_table(location: StateLocation, tmp_path: Path) -> dict[str, Any]:
    """The `[state]` table of a collector config for `location` (empty for the embedded file);
    the password goes through a file, as in production."""
    if isinstance(location, Path):
        return {}
    secret = tmp_path / "state.password"
    secret.write_text(location.password + "\n")
    return {"url": location.url, "password_file": str(secret)}


def collector_state(location: StateLocation, state_dir: Path) -> StateLocation:
    """Where a collector with `state_dir` and `[state]` from `location` keeps its state."""
    return state_dir / "collector.sqlite" if isinstance(location, Path) else location


def state_toml(location: StateLocation, tmp_path: Path) -> str:
    """`state_table` as TOML text, for config files."""
    table = state_table(location, tmp_path)
    return "[state]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in table.items()) if table else ""


def query_state(location: StateLocation, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """The rows of `sql` (with `?` placeholders) on a state database that a collector process uses;
    callable from sync helpers inside async tests (collector/state/connect.py `read_now`)."""
    return read_now(location, [(sql, args)])[0]
