"""Opening the SQLite files both daemons keep their durable state in, all the same way.

WAL lets readers (`twin-agent status`, the demo, the API) read while the daemon writes;
`synchronous=FULL` makes a commit survive a power cut, which is what "acked means stored" and
"queued means on disk" rest on; `busy_timeout` lets a CLI command and the daemon share a file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import aiosqlite

__all__ = ["open_database"]

BUSY_TIMEOUT_MS = 10_000


async def open_database(path: Path, schema: str, *, autocommit: bool = False,
                        synchronous: Literal["FULL", "NORMAL"] = "FULL") -> aiosqlite.Connection:
    """Create the folder and the tables if needed, and return the open connection.

    `autocommit=True` leaves transactions to the caller (explicit BEGIN/COMMIT). `synchronous="NORMAL"`
    is for state that is rebuilt from the devices anyway (the agent's twin), to spare flash storage.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    db = await aiosqlite.connect(path, isolation_level=None if autocommit else "DEFERRED")
    try:
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute(f"PRAGMA synchronous={synchronous}")
        await db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        await db.executescript(schema)
        await db.commit()
    except BaseException:
        await db.close()
        raise
    return db
