"""A database that cannot be opened leaves no worker thread behind that outlives its event loop.

aiosqlite stops the worker of a failed connection with a future nobody awaits; a short-lived loop
(the metrics scrape's `read_now`) closed before the thread got to it, and the thread died with
"Event loop is closed" in about half of the attempts."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from collector.state.connect import read_now


def test_a_database_that_cannot_be_opened_ends_its_worker_thread_in_time(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "collector.sqlite"
    died: list[str] = []
    previous = threading.excepthook
    threading.excepthook = lambda args: died.append(f"{args.thread.name if args.thread else '?'}: "
                                                    f"{args.exc_value!r}")
    try:
        for _ in range(40):
            with pytest.raises(sqlite3.OperationalError, match="unable to open database file"):
                read_now(missing, [("SELECT 1", ())])
    finally:
        threading.excepthook = previous
    assert died == [], died[:3]
    assert not any("_connection_worker_thread" in t.name for t in threading.enumerate()), "no worker left"
