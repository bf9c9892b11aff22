"""Indicator history for the rules: summaries and vibration blocks per asset, in the state database.

Rate-of-change and trend rules need the recent past of an indicator, a work order's context shows
the trend of the indicator that triggered it, and the what-if replay re-runs rules over it. Rows
are written by `FleetTwin.commit_batch` in the same transaction as the batch, so history, rule
state and work orders can never disagree after a crash.

Bounded: summaries are merged into `summary_resolution_s` buckets (mean weighted by count, min of
mins, max of maxes, newest last), vibration blocks are kept per `vibration_resolution_s` bucket
(0 = every block; the newest block of a bucket wins), and rows older than `retention_days` are
deleted by the collector's periodic check. Size: about 80 bytes per summary row, so 200 points at
the default 60 s resolution and 14 days take about 330 MB.

A series is named `point:<point>:<field>` (field: mean, min, max, last) or
`vibration:<sensor>:<indicator>` (a numeric field of VibrationIndicators, e.g. velocity_rms_mm_s).
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterator
from typing import Any

import numpy as np
from pydantic import Field

from collector.state import StateConnection
from collector.state.dialect import SQLITE, Dialect
from collector.workorders.evaluate import SummaryObs, VibrationObs
from collector.workorders.trend import VIBRATION_FIELDS
from protos.twin.v1 import twin_pb2
from runtime.schema import SchemaPart
from runtime.tomlconfig import StrictModel

__all__ = ["SCHEMA", "SCHEMA_PART", "HistorySettings", "batch_statements", "iter_observations", "prune", "record_batch",
           "series", "series_label", "series_sync", "summary_obs", "vibration_doc"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS summary_history (
    asset TEXT NOT NULL, point TEXT NOT NULL, bucket_ns INTEGER NOT NULL, ts_ns INTEGER NOT NULL,
    mean REAL, vmin REAL, vmax REAL, last REAL, count INTEGER NOT NULL, bad INTEGER NOT NULL,
    quality TEXT NOT NULL, reason TEXT NOT NULL, PRIMARY KEY (asset, point, bucket_ns)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS summary_history_ts ON summary_history (ts_ns);
CREATE TABLE IF NOT EXISTS vibration_history (
    asset TEXT NOT NULL, sensor TEXT NOT NULL, bucket_ns INTEGER NOT NULL, ts_ns INTEGER NOT NULL,
    block TEXT NOT NULL, PRIMARY KEY (asset, sensor, bucket_ns)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS vibration_history_ts ON vibration_history (ts_ns);
"""

# Registered with the fleet database (collector/fleet.py, runtime/schema.py).
SCHEMA_PART = SchemaPart("history", SCHEMA)

_QUALITY = {int(twin_pb2.GOOD): "GOOD", int(twin_pb2.UNCERTAIN): "UNCERTAIN", int(twin_pb2.BAD): "BAD"}
_FIELD_COLUMN = {"mean": "mean", "min": "vmin", "max": "vmax", "last": "last"}


class HistorySettings(StrictModel):
    """`[history]`: what the rules keep of the past."""

    retention_days: float = Field(default=14.0, gt=0, le=3650)
    summary_resolution_s: float = Field(default=60.0, ge=0)
    vibration_resolution_s: float = Field(default=0.0, ge=0)


# Target columns are qualified (`summary_history.count`): PostgreSQL finds them ambiguous beside
# `excluded.count`; CASE stands for SQLite's two-argument MIN and MAX.
_INSERT_SUMMARY = """
INSERT INTO summary_history (asset, point, bucket_ns, ts_ns, mean, vmin, vmax, last, count, bad, quality, reason)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (asset, point, bucket_ns) DO UPDATE SET
  mean = CASE WHEN excluded.count = 0 THEN summary_history.mean WHEN summary_history.count = 0 THEN excluded.mean
              ELSE (summary_history.mean * summary_history.count + excluded.mean * excluded.count)
                   / (summary_history.count + excluded.count) END,
  vmin = CASE WHEN excluded.count = 0 THEN summary_history.vmin WHEN summary_history.count = 0 THEN excluded.vmin
              WHEN excluded.vmin < summary_history.vmin THEN excluded.vmin ELSE summary_history.vmin END,
  vmax = CASE WHEN excluded.count = 0 THEN summary_history.vmax WHEN summary_history.count = 0 THEN excluded.vmax
              WHEN excluded.vmax > summary_history.vmax THEN excluded.vmax ELSE summary_history.vmax END,
  last = CASE WHEN excluded.count > 0 AND (summary_history.count = 0 OR excluded.ts_ns >= summary_history.ts_ns)
              THEN excluded.last ELSE summary_history.last END,
  quality = CASE WHEN excluded.ts_ns >= summary_history.ts_ns THEN excluded.quality ELSE summary_history.quality END,
  reason = CASE WHEN excluded.ts_ns >= summary_history.ts_ns THEN excluded.reason ELSE summary_history.reason END,
  count = summary_history.count + excluded.count, bad = summary_history.bad + excluded.bad,
  ts_ns = CASE WHEN excluded.ts_ns > summary_history.ts_ns THEN excluded.ts_ns ELSE summary_history.ts_ns END
"""

_INSERT_VIBRATION = """
INSERT INTO vibration_history (asset, sensor, bucket_ns, ts_ns, block) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (asset, sensor, bucket_ns) DO UPDATE SET ts_ns = excluded.ts_ns, block = excluded.block
WHERE excluded.ts_ns >= vibration_history.ts_ns
"""


def _bucket(ts_ns: int, resolution_s: float) -> int:
    if resolution_s <= 0:
        return ts_ns
    res = int(resolution_s * 1e9)
    return ts_ns - ts_ns % res


def dumps_finite(doc: Any) -> str:
    """JSON with NaN and infinities as null: SQLite's JSON functions refuse them, and one such
    value from an agent must not make its batch impossible to store."""
    def clean(x: Any) -> Any:
        if isinstance(x, float):
            return x if math.isfinite(x) else None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, list | tuple):
            return [clean(v) for v in x]
        return x

    return json.dumps(clean(doc), allow_nan=False)


def vibration_doc(v: twin_pb2.VibrationIndicators) -> dict[str, Any]:
    """A vibration block as the rules and the history see it (numeric indicators, zone, diagnosis)."""
    doc: dict[str, Any] = {name: getattr(v, name) for name in VIBRATION_FIELDS}
    doc |= {"iso_zone": v.iso_zone, "fault": v.fault, "rpm_source": v.rpm_source,
            "diagnosis": [{"fault": d.fault, "confidence": d.confidence, "evidence": d.evidence}
                          for d in v.diagnosis]}
    return doc


def summary_obs(s: twin_pb2.Summary) -> SummaryObs:
    return SummaryObs(s.asset, s.point, s.interval_end_ns, s.mean, s.min, s.max, s.last, s.count, s.bad_count,
                      _QUALITY.get(int(s.quality), "BAD"), s.reason)


def batch_statements(batch: twin_pb2.Batch, settings: HistorySettings) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """The statements that append a batch's numeric summaries and vibration blocks: (sql, rows) each,
    for the caller's transaction (the fleet's group commit sends a round's statements together)."""
    rows = []
    for s in batch.summaries:
        if s.last_text:
            continue  # text points carry no numbers to trend
        good = s.count > 0
        rows.append((s.asset, s.point, _bucket(s.interval_end_ns, settings.summary_resolution_s), s.interval_end_ns,
                     s.mean if good else None, s.min if good else None, s.max if good else None,
                     s.last if good else None, s.count, s.bad_count, _QUALITY.get(int(s.quality), "BAD"), s.reason))
    vib = [(v.asset, v.sensor, _bucket(v.ts_ns, settings.vibration_resolution_s), v.ts_ns,
            dumps_finite(vibration_doc(v))) for v in batch.vibration]
    return [(sql, r) for sql, r in ((_INSERT_SUMMARY, rows), (_INSERT_VIBRATION, vib)) if r]


async def record_batch(db: StateConnection, batch: twin_pb2.Batch, settings: HistorySettings) -> None:
    """Append a batch's numeric summaries and vibration blocks (inside the caller's transaction)."""
    await db.run_script(batch_statements(batch, settings))


# How people call the vibration indicators a series may follow (the keys are internal names).
_VIBRATION_LABELS = {
    "accel_rms": "acceleration r.m.s.", "accel_peak": "acceleration peak", "crest_factor": "crest factor",
    "kurtosis": "kurtosis", "velocity_rms_mm_s": "velocity r.m.s. (mm/s)", "rpm": "shaft speed (rpm)",
    "amp_1x": "1x amplitude", "amp_2x": "2x amplitude", "amp_3x": "3x amplitude", "bpfo": "outer race (BPFO) line",
    "bpfi": "inner race (BPFI) line", "bsf": "ball (BSF) line", "ftf": "cage (FTF) line", "health": "health",
    "confidence": "bearing fault confidence",
}


def series_label(key: str) -> str:
    """A series key as a person reads it: `point:filter_dp:mean` -> "filter_dp (mean)",
    `vibration:de_accel:confidence` -> "de_accel bearing fault confidence"."""
    kind, _, rest = key.partition(":")
    name, _, field = rest.rpartition(":")
    if kind == "point" and name:
        return f"{name} ({field})"
    if kind == "vibration" and name:
        return f"{name} {_VIBRATION_LABELS.get(field, field.replace('_', ' '))}"
    return key


def _series_query(key: str, dialect: Dialect = SQLITE) -> tuple[str, str, str]:
    """SQL for a series key: (sql with ?asset ?name ?since ?until placeholders, asset-independent name, column)."""
    kind, _, rest = key.partition(":")
    name, _, field = rest.rpartition(":")
    if kind == "point" and field in _FIELD_COLUMN:
        col = _FIELD_COLUMN[field]
        return (f"SELECT ts_ns, {col} FROM summary_history WHERE asset = ? AND point = ? AND ts_ns >= ? "
                f"AND ts_ns <= ? AND count > 0 ORDER BY ts_ns", name, col)
    if kind == "vibration" and field in VIBRATION_FIELDS:
        return (f"SELECT ts_ns, {dialect.number('block', field)} FROM vibration_history WHERE asset = ? "
                "AND sensor = ? AND ts_ns >= ? AND ts_ns <= ? ORDER BY ts_ns", name, field)
    raise ValueError(f"not a history series: {key!r}")


def _arrays(rows: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    rows = [r for r in rows if r[1] is not None]
    return (np.array([r[0] for r in rows], dtype=np.int64), np.array([r[1] for r in rows], dtype=np.float64))


async def series(db: StateConnection, asset: str, key: str, since_ns: int,
                 until_ns: int) -> tuple[np.ndarray, np.ndarray]:
    sql, name, _ = _series_query(key, db.dialect)
    return _arrays(await db.fetchall(sql, (asset, name, since_ns, until_ns)))


def series_sync(conn: sqlite3.Connection, asset: str, key: str, since_ns: int,
                until_ns: int) -> tuple[np.ndarray, np.ndarray]:
    sql, name, _ = _series_query(key)
    return _arrays(conn.execute(sql, (asset, name, since_ns, until_ns)).fetchall())


async def prune(db: StateConnection, before_ns: int) -> int:
    """Delete history older than `before_ns`; return the number of rows deleted."""
    deleted = 0
    for table in ("summary_history", "vibration_history"):
        deleted += await db.execute(f"DELETE FROM {table} WHERE ts_ns < ?", (before_ns,))
    return deleted


def iter_observations(conn: sqlite3.Connection, since_ns: int,
                      until_ns: int | None = None) -> Iterator[SummaryObs | VibrationObs]:
    """Every stored summary and vibration block from `since_ns`, in time order (the what-if replay)."""
    until = until_ns if until_ns is not None else 2**63 - 1
    cur = conn.execute(
        "SELECT 0, asset, point, ts_ns, mean, vmin, vmax, last, count, bad, quality, reason FROM summary_history "
        "WHERE ts_ns >= ?1 AND ts_ns <= ?2 UNION ALL "
        "SELECT 1, asset, sensor, ts_ns, block, NULL, NULL, NULL, NULL, NULL, NULL, NULL FROM vibration_history "
        "WHERE ts_ns >= ?1 AND ts_ns <= ?2 ORDER BY 4, 1, 2, 3", (since_ns, until))
    for row in cur:
        if row[0] == 0:
            yield SummaryObs(row[1], row[2], row[3], row[4] or 0.0, row[5] or 0.0, row[6] or 0.0, row[7] or 0.0,
                             row[8], row[9], row[10], row[11])
        else:
            yield VibrationObs(row[1], row[2], row[3], json.loads(row[4]))
