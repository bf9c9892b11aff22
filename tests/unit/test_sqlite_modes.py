"""SQLite state files follow the process umask like other files (0666 minus it), so a group-writable
state directory (the collector's, UMask=0007) lets operators in the group write the database."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from runtime.sqlite import process_umask


def test_database_and_wal_files_get_0666_minus_the_umask(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import asyncio, os
        from pathlib import Path
        from runtime.sqlite import open_database
        os.umask(0o007)
        async def main():
            db = await open_database(Path({str(tmp_path / "state" / "x.sqlite")!r}),
                                     "CREATE TABLE IF NOT EXISTS t (v INTEGER);")
            await db.execute("INSERT INTO t VALUES (1)")
            await db.commit()
            for suffix in ("", "-wal", "-shm"):
                print(suffix or "db", oct(os.stat({str(tmp_path / "state" / "x.sqlite")!r} + suffix).st_mode & 0o777))
            await db.close()
        asyncio.run(main())
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2]).stdout.split()
    assert out == ["db", "0o660", "-wal", "0o660", "-shm", "0o660"]


def test_umask_is_read_without_changing_it() -> None:
    before = os.umask(0o027)
    try:
        assert process_umask() == 0o027
        assert os.umask(0o027) == 0o027
    finally:
        os.umask(before)
