"""The state database's schema on PostgreSQL: created from the parts the components register
(runtime/schema.py), versions recorded as in SQLite, a database of an earlier version given the
columns it lacks, one of a newer release refused."""

from __future__ import annotations

import asyncio

import pytest

from collector.fleet import FLEET_DATABASE, FleetTwin
from runtime.errors import ConfigError
from tests.conftest import new_postgres_database, query_state
from tests.servers import PostgresServer


def test_earlier_tables_get_their_new_columns_and_a_newer_release_is_refused(postgres: PostgresServer) -> None:
    location = new_postgres_database(postgres)
    name = location.url.rsplit("/", 1)[1]

    async def open_close() -> None:
        fleet = FleetTwin(location)
        await fleet.open()
        await fleet.close()

    asyncio.run(open_close())
    versions = dict(query_state(location, "SELECT part, version FROM schema_versions"))
    assert versions == {p.name: p.version for p in FLEET_DATABASE.parts.values()}

    # as an earlier release left it: without agents.present_ns, the fleet part one version back
    fleet_version = FLEET_DATABASE.parts["fleet"].version
    postgres.psql("ALTER TABLE agents DROP COLUMN present_ns; "
                  f"UPDATE schema_versions SET version = {fleet_version - 1} WHERE part = 'fleet'", name)
    asyncio.run(open_close())
    assert query_state(location, "SELECT column_name FROM information_schema.columns WHERE table_name = 'agents' "
                                 "AND column_name = 'present_ns'") == [("present_ns",)]
    assert dict(query_state(location, "SELECT part, version FROM schema_versions"))["fleet"] == fleet_version

    postgres.psql(f"UPDATE schema_versions SET version = {fleet_version + 1} WHERE part = 'fleet'", name)
    with pytest.raises(ConfigError, match="written by a newer release"):
        asyncio.run(open_close())
