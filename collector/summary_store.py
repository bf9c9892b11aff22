"""The embedded point store used when no InfluxDB is configured: the collector's own SQLite file.

It behaves like InfluxDB where the delivery contract depends on it: a point is identified by
(measurement, tags, timestamp), and writing it again merges its fields into the stored ones (same
field name: the new value wins), so a resent batch overwrites instead of duplicating. Empty tag
values and non-finite floats are dropped as InfluxDB drops them. A write returns after the
transaction is committed with `synchronous=FULL`, i.e. it survives a crash or power loss.

Ingest writes rows made by `SummaryRowEncoder` straight from the agents' protobuf batches (the
series text of each (asset, point, unit) is built once per stream, the fields JSON by one format
string), one transaction per write in one call to the database thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path

import aiosqlite

from collector.points import (
    FieldValue,
    Point,
    PointsRejectedError,
    SeriesTexts,
    SinkStats,
    storable_fields,
    summary_ts,
)
from protos.twin.v1 import twin_pb2
from runtime.errors import SinkError
from runtime.schema import DatabaseSchema, SchemaPart
from runtime.sqlite import open_database, run_on_connection

__all__ = ["SqliteSummarySink", "SummaryRowEncoder"]

Row = tuple[str, str, int, str]

SCHEMA = """
CREATE TABLE IF NOT EXISTS summary_points (
    measurement TEXT NOT NULL,
    series      TEXT NOT NULL,   -- the tags as canonical JSON (sorted keys): part of the identity
    ts_ns       INTEGER NOT NULL,
    fields      TEXT NOT NULL,   -- JSON object; ints stay ints, floats stay floats
    PRIMARY KEY (measurement, series, ts_ns)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS summary_points_by_time ON summary_points (measurement, ts_ns);
"""
# The embedded store's tables and their versions (runtime/schema.py).
SUMMARY_DATABASE = DatabaseSchema("summaries.sqlite", [SchemaPart("summaries", SCHEMA)])

UPSERT = """
INSERT INTO summary_points (measurement, series, ts_ns, fields) VALUES (?, ?, ?, ?)
ON CONFLICT (measurement, series, ts_ns) DO UPDATE SET fields = json_patch(fields, excluded.fields)
"""


def _series(tags: Mapping[str, str]) -> str:
    return json.dumps({k: v for k, v in tags.items() if v}, sort_keys=True, separators=(",", ":"))


def _row(point: Point) -> tuple[str, str, int, str]:
    """The stored form of a point; ValueError when InfluxDB would refuse it too."""
    if not point.measurement:
        raise ValueError("empty measurement name")
    if not all(isinstance(k, str) and k and isinstance(v, str) for k, v in point.tags.items()):
        raise ValueError(f"{point.measurement}: tag keys and values must be strings")
    if not isinstance(point.ts_ns, int) or isinstance(point.ts_ns, bool):
        raise ValueError(f"{point.measurement}: timestamp must be an int (ns)")
    fields = storable_fields(point.fields)
    if not fields:
        raise ValueError(f"{point.measurement} point at {point.ts_ns} has no storable field")
    return point.measurement, _series(point.tags), point.ts_ns, json.dumps(fields, allow_nan=False)


def _rows(points: Sequence[Point]) -> tuple[list[Row], list[tuple[int, str]]]:
    """The rows of `points`, and (index, reason) of those no store would accept."""
    rows: list[Row] = []
    rejected: list[tuple[int, str]] = []
    for i, p in enumerate(points):
        try:
            rows.append(_row(p))
        except ValueError as exc:
            rejected.append((i, str(exc)))
    return rows, rejected


class SummaryRowEncoder:
    """The stored rows of one agent stream's batches, straight from the protobuf.

    Rows are identical to `_row(p)` for `p` in `batch_to_points(...)` (the unit tests check it):
    the same series text and the same fields JSON, written here by one format string per summary.
    """

    def __init__(self, agent_id: str, site: str, asset_types: Mapping[str, str]) -> None:
        self.series = SeriesTexts(agent_id, site, asset_types, _series)

    def encode(self, batch: twin_pb2.Batch) -> tuple[list[Row], list[str]]:
        isfinite = math.isfinite
        series = self.series
        cache = series.cached
        rows: list[Row] = []
        for s in batch.summaries:
            if s.HasField("increase"):  # a counter point (few): the general path, the same row
                rows.append(_row(series.general_point(s, batch)))
                continue
            key = (s.asset, s.point, s.unit)
            text = cache.get(key) or series.new(key)
            ts = summary_ts(s, batch)
            count = s.count
            fields = f'{{"count": {count}, "bad": {s.bad_count}'
            if count:
                last_text = s.last_text
                if last_text:
                    fields += ', "text": ' + json.dumps(last_text)
                else:
                    low, high = s.min, s.max
                    if low <= high:  # min > max marks "no numeric statistics"
                        mean, last = s.mean, s.last
                        if isfinite(mean) and isfinite(low) and isfinite(high) and isfinite(last):
                            fields += f', "mean": {mean!r}, "min": {low!r}, "max": {high!r}, "last": {last!r}'
                        else:
                            for name, value in (("mean", mean), ("min", low), ("max", high), ("last", last)):
                                if isfinite(value):
                                    fields += f', "{name}": {value!r}'
            rows.append(("telemetry", text, ts, fields + "}"))
        others, rejected = series.other_records(batch, _row)
        rows.extend(others)
        return rows, rejected


def _upsert(conn: sqlite3.Connection, rows: Sequence[Row]) -> None:
    """One transaction, on the database thread."""
    try:
        conn.executemany(UPSERT, rows)
        conn.commit()
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.rollback()  # a broken connection: the original error is what gets reported
        raise


class SqliteSummarySink:
    """Points in a SQLite file (aiosqlite), with the small queries the demo report and tests need.

    The connection opens on first use; `close()` ends it. The table lives beside the collector's
    other tables if `path` is shared with them.
    """

    write_concurrency = 1  # one writer per SQLite file
    records_per_write = 50_000  # one transaction: the larger, the fewer disk syncs

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.target = f"SQLite point store {self.path}"
        self.stats = SinkStats()
        self._db: aiosqlite.Connection | None = None
        self._open_lock = asyncio.Lock()
        self._write_lock = asyncio.Lock()

    async def open(self) -> None:
        async with self._open_lock:
            if self._db is not None:
                return
            try:
                db = await open_database(self.path, SUMMARY_DATABASE)
            except (OSError, sqlite3.Error) as exc:
                raise SinkError(f"{self.target}: cannot open: {exc}") from None
            self._db = db

    async def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            await self.open()
        assert self._db is not None
        return self._db

    def encoder(self, agent_id: str, site: str, asset_types: Mapping[str, str]) -> SummaryRowEncoder:
        return SummaryRowEncoder(agent_id, site, asset_types)

    async def write_records(self, records: Sequence[Row]) -> None:
        """Commit rows made by `SummaryRowEncoder` (one transaction, one database-thread call)."""
        db = await self._conn()
        # One write at a time: writes from ingest and from the annotation sync share this
        # connection, and a rollback of one must never take another's uncommitted rows with it.
        async with self._write_lock:
            try:
                await run_on_connection(db, lambda conn: _upsert(conn, records))
            except sqlite3.Error as exc:
                self.stats.write_errors += 1
                self.stats.last_error = f"{self.target}: {exc}"
                raise SinkError(self.stats.last_error) from None
        self.stats.points_written += len(records)

    async def write(self, points: Sequence[Point]) -> None:
        """Commit `points`; PointsRejectedError after committing the rest if some are unstorable."""
        rows, rejected = _rows(points)
        await self.write_records(rows)
        if rejected:
            self.stats.points_rejected += len(rejected)
            self.stats.last_error = rejected[0][1]
            raise PointsRejectedError(
                f"{self.target}: {len(rejected)} of {len(points)} points rejected, the rest stored; "
                f"first: {rejected[0][1]}", [(points[i], why) for i, why in rejected], [i for i, _ in rejected])

    @staticmethod
    def _where(measurement: str, tags: Mapping[str, str] | None, start_ns: int | None,
               end_ns: int | None) -> tuple[str, list[object]]:
        clauses, args = ["measurement = ?"], [measurement]
        for key, value in (tags or {}).items():
            clauses.append("json_extract(series, ?) = ?")
            args += ['$."' + key.replace('"', '""') + '"', value]
        if start_ns is not None:
            clauses.append("ts_ns >= ?")
            args.append(start_ns)
        if end_ns is not None:
            clauses.append("ts_ns < ?")
            args.append(end_ns)
        return " AND ".join(clauses), args

    async def count(self, measurement: str, tags: Mapping[str, str] | None = None, *,
                    start_ns: int | None = None, end_ns: int | None = None) -> int:
        """Number of stored points of `measurement` whose tags include `tags`, in [start, end)."""
        where, args = self._where(measurement, tags, start_ns, end_ns)
        db = await self._conn()
        async with db.execute(f"SELECT count(*) FROM summary_points WHERE {where}", args) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def rows(self, measurement: str, tags: Mapping[str, str] | None = None, *,
                   start_ns: int | None = None, end_ns: int | None = None,
                   limit: int | None = None) -> list[Point]:
        """Stored points of `measurement` ordered by time, then series; filters as in `count`."""
        where, args = self._where(measurement, tags, start_ns, end_ns)
        sql = f"SELECT series, ts_ns, fields FROM summary_points WHERE {where} ORDER BY ts_ns, series"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        db = await self._conn()
        async with db.execute(sql, args) as cur:
            found = await cur.fetchall()
        out = []
        for series, ts_ns, fields in found:
            values: dict[str, FieldValue] = json.loads(fields)
            out.append(Point(measurement, json.loads(series), values, int(ts_ns)))
        return out

    async def close(self) -> None:
        async with self._open_lock:
            if self._db is not None:
                await self._db.close()
                self._db = None
