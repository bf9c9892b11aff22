"""Remaining-life assessments in the state database: the latest per sensor for the twin, and the queue
of assessments not yet written to the point sink (InfluxDB) for Grafana.

Rows are appended by the prognosis rule inside the batch transaction (collector/fleet.py), so an
assessment exists exactly when the batch that caused it is stored. collector/prognosis/export.py
writes the rows not yet `exported` to the sink, marks them, and deletes the exported rows except the
latest of each (asset, sensor, rule): the table stays as small as the number of sensors.
"""

from __future__ import annotations

import math
import sqlite3
from typing import Any

import aiosqlite

from collector.prognosis.remaining_life import RemainingLife
from collector.state import StateConnection
from runtime.schema import Migration, SchemaPart, add_column

__all__ = ["SCHEMA", "SCHEMA_PART", "latest", "latest_sync", "prune", "record"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS remaining_life (
    id INTEGER PRIMARY KEY AUTOINCREMENT, asset TEXT NOT NULL, sensor TEXT NOT NULL, rule TEXT NOT NULL,
    ts_ns INTEGER NOT NULL, basis TEXT NOT NULL, estimate_s REAL, low_s REAL, high_s REAL, hi REAL,
    degraded INTEGER NOT NULL, exported INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS remaining_life_series ON remaining_life (asset, sensor, rule, id);
CREATE INDEX IF NOT EXISTS remaining_life_unexported ON remaining_life (id) WHERE exported = 0;
"""


async def _cursor_to_marks(db: aiosqlite.Connection) -> None:
    """Rows up to the cursor the export kept before were written: mark them, and drop the cursor."""
    if await add_column(db, "remaining_life", "exported", "INTEGER NOT NULL DEFAULT 0") and await (await db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'remaining_life_cursor'")).fetchone():
        await db.execute("UPDATE remaining_life SET exported = 1 WHERE id <= "
                         "(SELECT row FROM remaining_life_cursor WHERE id = 1)")
    await db.execute("DROP TABLE IF EXISTS remaining_life_cursor")


# Registered with the fleet database (collector/fleet.py, runtime/schema.py).
SCHEMA_PART = SchemaPart("remaining_life", SCHEMA, (
    Migration(2, "remaining_life.exported: rows marked once InfluxDB has them, instead of a cursor", _cursor_to_marks),
))


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


async def record(db: StateConnection, asset: str, sensor: str, rule: str, ts_ns: int,
                 rl: RemainingLife) -> None:
    await db.execute(
        "INSERT INTO remaining_life (asset, sensor, rule, ts_ns, basis, estimate_s, low_s, high_s, hi, degraded) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (asset, sensor, rule, ts_ns, rl.basis, _finite(rl.estimate_s), _finite(rl.low_s), _finite(rl.high_s),
         _finite(rl.hi), int(rl.degraded)))


def row_doc(row: tuple[Any, ...]) -> dict[str, Any]:
    """(rule, ts_ns, basis, estimate_s, low_s, high_s, hi, degraded) as the twin shows it."""
    rule, ts_ns, basis, est, low, high, hi, degraded = row
    return {"rule": rule, "ts_ns": ts_ns, "basis": basis, "estimate_s": est, "low_s": low, "high_s": high,
            "health_indicator": hi, "ratio_to_baseline": round(math.exp(hi), 4) if hi is not None else None,
            "degraded": bool(degraded)}


_LATEST = ("SELECT asset, sensor, rule, ts_ns, basis, estimate_s, low_s, high_s, hi, degraded FROM remaining_life r "
           "WHERE {where} id = (SELECT MAX(id) FROM remaining_life WHERE asset = r.asset AND sensor = r.sensor "
           "AND rule = r.rule) ORDER BY asset, sensor, estimate_s")


def _by_sensor(rows: list[Any]) -> dict[str, dict[str, dict[str, Any]]]:
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for asset, sensor, *rest in rows:
        out.setdefault(asset, {}).setdefault(sensor, row_doc(tuple(rest)))
    return out


async def latest(db: StateConnection, asset: str) -> dict[str, dict[str, Any]]:
    """Per sensor, the latest assessment (of the rule with the shortest remaining life, if several)."""
    return _by_sensor(await db.fetchall(_LATEST.format(where="asset = ? AND"), (asset,))).get(asset, {})


def latest_sync(conn: sqlite3.Connection) -> dict[str, dict[str, dict[str, Any]]]:
    """`latest` of every asset, on a plain (read-only) connection: asset -> sensor -> assessment."""
    try:
        return _by_sensor(conn.execute(_LATEST.format(where="")).fetchall())
    except sqlite3.OperationalError:  # a database from before the prognosis rule: no table yet
        return {}


async def prune(db: StateConnection, before_ns: int) -> int:
    """Delete assessments older than `before_ns` (a sensor that stopped reporting keeps none)."""
    return await db.execute("DELETE FROM remaining_life WHERE ts_ns < ?", (before_ns,))
