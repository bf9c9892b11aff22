"""The collector's durable state behind one seam: the embedded SQLite file (one collector, the
default) or PostgreSQL (several collectors serving one fleet).

database.py   StateConnection / StateDatabase (the seam), locations
              (the tables: runtime/schema.py DatabaseSchema, each component registers its SchemaPart)
connect.py    open_state (picks the backend for a location), read_now (reads from synchronous code)
dialect.py    the SQL that differs between the two, as fragments
embedded.py   SQLite (aiosqlite): one connection, one transaction at a time
postgres.py   PostgreSQL (asyncpg, extra `[postgres]`): a pool, locks for what runs concurrently
settings.py   `[state]` in the collector's TOML
"""

from collector.state.connect import open_state, read_now
from collector.state.database import (
    PostgresLocation,
    StateConnection,
    StateDatabase,
    StateLocation,
    parse_location,
)

__all__ = ["PostgresLocation", "StateConnection", "StateDatabase", "StateLocation", "open_state", "parse_location",
           "read_now"]
