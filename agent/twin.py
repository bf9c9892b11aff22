"""LocalTwin: the agent's live picture of its assets, persisted so a restart resumes from it.

Per point it keeps the latest value, quality, reason and source timestamp; per asset a derived
state (online / degraded / offline / unknown); and a change log of what a technician wants to know
happened (setpoint and state-point changes, quality transitions, asset state transitions, counter
resets: a counter point whose value went down, e.g. a meter that restarted). Changes
are also handed to the uplink (`drain_changes`) so the collector's fleet twin sees them.

Updates are synchronous and in memory (connectors call them on every reading); SQLite writes
happen in `flush()`, periodically and at shutdown, so a busy MQTT waveform stream never waits on disk.
A flush that fails (disk full) is rolled back and its rows are kept for the next one.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import aiosqlite
import numpy as np

from agent.model import AssetSpec, PointSpec, Quality, Reading, Value
from runtime.schema import DatabaseSchema, SchemaPart
from runtime.sqlite import open_database

__all__ = ["AssetView", "Change", "LocalTwin", "PointState"]

STALE_FACTOR = 3.0  # a point silent for 3x its expected interval is stale
CHANGE_RETENTION_S = 7 * 86400
TRACKED_KINDS = ("setpoint", "state")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS point_state (
    asset TEXT NOT NULL, point TEXT NOT NULL, value TEXT, quality INTEGER NOT NULL,
    reason TEXT NOT NULL, ts_ns INTEGER NOT NULL, PRIMARY KEY (asset, point));
CREATE TABLE IF NOT EXISTS asset_state (
    asset TEXT PRIMARY KEY, state TEXT NOT NULL, ts_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS changes (
    id INTEGER PRIMARY KEY AUTOINCREMENT, asset TEXT NOT NULL, point TEXT NOT NULL,
    ts_ns INTEGER NOT NULL, kind TEXT NOT NULL, old_value TEXT NOT NULL, new_value TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS changes_ts ON changes (ts_ns);
"""
# The twin's tables and their versions (runtime/schema.py; register a Migration when a table changes).
TWIN_DATABASE = DatabaseSchema("twin.sqlite", [SchemaPart("twin", _SCHEMA)])


@dataclass(slots=True)
class PointState:
    spec: PointSpec
    value: Value | None = None
    quality: Quality = Quality.BAD
    reason: str = "no data yet"
    ts_ns: int = 0
    received_monotonic: float = 0.0  # 0 = never received in this process

    def is_stale(self, now_monotonic: float) -> bool:
        if self.received_monotonic == 0.0:
            return True
        return now_monotonic - self.received_monotonic > STALE_FACTOR * self.spec.expected_interval_s


@dataclass(frozen=True, slots=True)
class Change:
    asset: str
    point: str  # "" for asset-level changes
    ts_ns: int
    kind: str  # asset_state | setpoint | state | quality
    old_value: str
    new_value: str


@dataclass(slots=True)
class AssetView:
    spec: AssetSpec
    state: str = "unknown"
    state_ts_ns: int = 0
    points: dict[str, PointState] = field(default_factory=dict)


def _display(value: Value | None) -> str:
    if value is None:
        return ""
    if isinstance(value, np.ndarray):
        return f"<waveform {value.size} samples>"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _to_json(value: Value | None) -> str | None:
    if value is None or isinstance(value, np.ndarray):
        return None  # waveforms are not kept in the twin's store: their indicators are
    return json.dumps(value)


class LocalTwin:
    def __init__(self, assets: Sequence[AssetSpec], db_path: Path) -> None:
        self.db_path = db_path
        self.assets: dict[str, AssetView] = {
            a.id: AssetView(a, points={p.name: PointState(p) for p in a.points}) for a in assets
        }
        self._dirty: set[tuple[str, str]] = set()
        self._pending_changes: list[Change] = []
        self._unsaved_changes: list[Change] = []
        self._db: aiosqlite.Connection | None = None

    # ---- lifecycle -------------------------------------------------------------------------------
    async def open(self) -> None:
        """Open the store and resume from the last persisted state (values shown, quality kept)."""
        # The latest values come back from the devices anyway: spare the flash a sync per flush.
        self._db = await open_database(self.db_path, TWIN_DATABASE, synchronous="NORMAL")
        async with self._db.execute("SELECT asset, point, value, quality, reason, ts_ns FROM point_state") as cur:
            async for asset, point, value, quality, reason, ts_ns in cur:
                ps = self._point(asset, point)
                if ps is not None:
                    ps.value = json.loads(value) if value is not None else None
                    ps.quality, ps.reason, ps.ts_ns = Quality(quality), reason, ts_ns
        async with self._db.execute("SELECT asset, state, ts_ns FROM asset_state") as cur:
            async for asset, state, ts_ns in cur:
                if asset in self.assets:
                    self.assets[asset].state, self.assets[asset].state_ts_ns = state, ts_ns
        await self._db.commit()

    async def close(self) -> None:
        if self._db is not None:
            await self.flush()
            await self._db.close()
            self._db = None

    # ---- updates (synchronous, hot path) ------------------------------------------------------------
    def _point(self, asset: str, point: str) -> PointState | None:
        view = self.assets.get(asset)
        return None if view is None else view.points.get(point)

    def apply(self, readings: Iterable[Reading]) -> None:
        now_mono = time.monotonic()
        touched: set[str] = set()
        for r in readings:
            ps = self._point(r.asset, r.point)
            if ps is None:
                continue
            if ps.quality != r.quality and ps.received_monotonic:
                self._record(Change(r.asset, r.point, r.ts_ns, "quality", ps.quality.name, r.quality.name))
            if (
                ps.spec.kind in TRACKED_KINDS
                and r.quality == Quality.GOOD
                and ps.value is not None
                and r.value is not None
                and _display(ps.value) != _display(r.value)
            ):
                self._record(Change(r.asset, r.point, r.ts_ns, ps.spec.kind, _display(ps.value),
                                    _display(r.value)))
            elif (
                ps.spec.kind == "counter"
                and r.quality == Quality.GOOD
                and isinstance(ps.value, int | float)
                and isinstance(r.value, int | float)
                and r.value < ps.value
            ):
                self._record(Change(r.asset, r.point, r.ts_ns, "counter_reset", _display(ps.value),
                                    _display(r.value)))
            if r.value is not None or r.quality != Quality.GOOD:
                # A BAD reading keeps the last value for display but its own timestamp and quality.
                ps.value = r.value if r.value is not None else ps.value
            ps.quality, ps.reason, ps.ts_ns = r.quality, r.reason, r.ts_ns
            ps.received_monotonic = now_mono
            self._dirty.add((r.asset, r.point))
            touched.add(r.asset)
        for asset in touched:
            self._derive_state(asset, now_mono)

    def update_spec(self, spec: PointSpec) -> None:
        """Replace a point's spec (a connector learned its unit from the device)."""
        view = self.assets.get(spec.asset)
        if view is None or spec.name not in view.points:
            return
        view.points[spec.name].spec = spec
        view.spec = replace(view.spec, points=tuple(spec if p.name == spec.name else p for p in view.spec.points))

    def asset_specs(self) -> list[AssetSpec]:
        """The assets as currently known (config, plus what connectors learned since)."""
        return [v.spec for v in self.assets.values()]

    def refresh_states(self) -> None:
        """Re-derive every asset's state; call periodically so silence turns into offline."""
        now_mono = time.monotonic()
        for asset in self.assets:
            self._derive_state(asset, now_mono)

    def _derive_state(self, asset: str, now_mono: float) -> None:
        view = self.assets[asset]
        if not view.points:
            return
        good = sum(
            1 for p in view.points.values() if p.quality == Quality.GOOD and not p.is_stale(now_mono)
        )
        state = "online" if good == len(view.points) else "offline" if good == 0 else "degraded"
        if state != view.state:
            ts = time.time_ns()
            self._record(Change(asset, "", ts, "asset_state", view.state, state))
            view.state, view.state_ts_ns = state, ts

    def _record(self, change: Change) -> None:
        self._pending_changes.append(change)
        self._unsaved_changes.append(change)

    # ---- reads --------------------------------------------------------------------------------------
    def drain_changes(self) -> list[Change]:
        """Changes since the last call, for the uplink batch."""
        out, self._pending_changes = self._pending_changes, []
        return out

    def stale_points(self) -> int:
        now_mono = time.monotonic()
        return sum(p.is_stale(now_mono) for v in self.assets.values() for p in v.points.values())

    def snapshot(self) -> dict[str, dict[str, object]]:
        """Plain-data view for status output: {asset: {state, points: {name: {...}}}}."""
        now_mono = time.monotonic()
        return {
            a: {
                "state": v.state,
                "type": v.spec.type,
                "points": {
                    n: {
                        "value": _display(p.value), "unit": p.spec.unit, "quality": p.quality.name,
                        "reason": p.reason, "ts_ns": p.ts_ns, "stale": p.is_stale(now_mono),
                    }
                    for n, p in v.points.items()
                },
            }
            for a, v in self.assets.items()
        }

    # ---- persistence --------------------------------------------------------------------------------
    async def flush(self) -> None:
        if self._db is None:
            return
        dirty, self._dirty = self._dirty, set()
        changes, self._unsaved_changes = self._unsaved_changes, []
        try:
            await self._write(dirty, changes)
        except BaseException:
            with contextlib.suppress(Exception):
                await self._db.rollback()
            self._dirty |= dirty
            self._unsaved_changes = changes + self._unsaved_changes
            raise

    async def _write(self, dirty: set[tuple[str, str]], changes: list[Change]) -> None:
        assert self._db is not None
        rows = []
        for asset, point in dirty:
            ps = self.assets[asset].points[point]
            rows.append((asset, point, _to_json(ps.value), int(ps.quality), ps.reason, ps.ts_ns))
        await self._db.executemany(
            "INSERT INTO point_state VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (asset, point) DO UPDATE SET "
            "value = excluded.value, quality = excluded.quality, reason = excluded.reason, ts_ns = excluded.ts_ns",
            rows,
        )
        await self._db.executemany(
            "INSERT INTO asset_state VALUES (?, ?, ?) ON CONFLICT (asset) DO UPDATE SET "
            "state = excluded.state, ts_ns = excluded.ts_ns",
            [(a, v.state, v.state_ts_ns) for a, v in self.assets.items()],
        )
        await self._db.executemany(
            "INSERT INTO changes (asset, point, ts_ns, kind, old_value, new_value) VALUES (?, ?, ?, ?, ?, ?)",
            [(c.asset, c.point, c.ts_ns, c.kind, c.old_value, c.new_value) for c in changes],
        )
        await self._db.execute("DELETE FROM changes WHERE ts_ns < ?",
                               (time.time_ns() - int(CHANGE_RETENTION_S * 1e9),))
        await self._db.commit()
