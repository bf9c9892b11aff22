"""FleetTwin: the collector's picture of every asset of every agent, in SQLite.

`commit_batch` is the one place where a batch becomes durable state: in a single transaction it
updates assets, points, changes and agent health, advances the (agent, queue epoch) watermark used
for deduplication, evaluates the work-order rules and stores the resulting work orders. Either all
of it happens or none, so a batch resent after a crash is recognised as a duplicate exactly when
its effects are already stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from collector.workorders.rules import RuleSettings, ThresholdState, evaluate_threshold, rule_applies
from collector.workorders.store import SCHEMA as WORK_ORDER_SCHEMA
from collector.workorders.store import WorkOrder, WorkOrderStore
from protos.twin.v1 import twin_pb2

__all__ = ["FleetTwin", "IngestCounters"]

CONTEXT_CHANGES_WINDOW_NS = 24 * 3600 * 10**9
CONTEXT_MAX_CHANGES = 50

_SCHEMA = """
CREATE TABLE IF NOT EXISTS agents (
    agent_id TEXT PRIMARY KEY, site TEXT NOT NULL, version TEXT NOT NULL, queue_epoch TEXT NOT NULL,
    last_seen_ns INTEGER NOT NULL, connected INTEGER NOT NULL DEFAULT 0, health TEXT NOT NULL DEFAULT '{}');
CREATE TABLE IF NOT EXISTS watermarks (
    agent_id TEXT NOT NULL, epoch TEXT NOT NULL, seq INTEGER NOT NULL, batches INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (agent_id, epoch));
CREATE TABLE IF NOT EXISTS assets (
    asset TEXT PRIMARY KEY, agent_id TEXT NOT NULL, site TEXT NOT NULL, type TEXT NOT NULL, name TEXT NOT NULL,
    depends_on TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'unknown', health REAL NOT NULL DEFAULT 100,
    state_ts_ns INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS points (
    asset TEXT NOT NULL, point TEXT NOT NULL, unit TEXT NOT NULL, kind TEXT NOT NULL,
    expected_interval_s REAL NOT NULL, mean REAL, min REAL, max REAL, last REAL, last_text TEXT,
    count INTEGER NOT NULL DEFAULT 0, bad INTEGER NOT NULL DEFAULT 0, quality TEXT NOT NULL DEFAULT 'BAD',
    reason TEXT NOT NULL DEFAULT '', ts_ns INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (asset, point));
CREATE TABLE IF NOT EXISTS changes (
    id INTEGER PRIMARY KEY AUTOINCREMENT, asset TEXT NOT NULL, point TEXT NOT NULL, ts_ns INTEGER NOT NULL,
    kind TEXT NOT NULL, old_value TEXT NOT NULL, new_value TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS changes_asset_ts ON changes (asset, ts_ns);
CREATE TABLE IF NOT EXISTS vibration (
    asset TEXT NOT NULL, sensor TEXT NOT NULL, ts_ns INTEGER NOT NULL, indicators TEXT NOT NULL,
    PRIMARY KEY (asset, sensor));
CREATE TABLE IF NOT EXISTS rule_state (
    asset TEXT NOT NULL, rule TEXT NOT NULL, state TEXT NOT NULL, PRIMARY KEY (asset, rule));
"""

_QUALITY = {int(twin_pb2.GOOD): "GOOD", int(twin_pb2.UNCERTAIN): "UNCERTAIN", int(twin_pb2.BAD): "BAD"}


@dataclass(slots=True)
class IngestCounters:
    batches: int = 0
    duplicates: int = 0
    summaries: int = 0


class FleetTwin:
    def __init__(self, path: Path, rules: Sequence[RuleSettings] = ()) -> None:
        self.path = path
        self.rules = tuple(rules)
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self.work_orders: WorkOrderStore | None = None

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self.path, isolation_level=None)
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.execute("PRAGMA synchronous=FULL")
        await self._db.execute("PRAGMA busy_timeout=10000")
        await self._db.executescript(_SCHEMA + WORK_ORDER_SCHEMA)
        self.work_orders = WorkOrderStore(self._db)

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("fleet twin is not open")
        return self._db

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            await self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                await self.db.execute("ROLLBACK")
                raise
            await self.db.execute("COMMIT")

    # ---- agents ---------------------------------------------------------------------------------
    async def register_hello(self, hello: twin_pb2.Hello) -> int:
        """Record the agent and its asset descriptors; return the watermark for its queue epoch."""
        now = time.time_ns()
        async with self.transaction() as db:
            await db.execute(
                "INSERT INTO agents (agent_id, site, version, queue_epoch, last_seen_ns, connected) "
                "VALUES (?, ?, ?, ?, ?, 1) ON CONFLICT (agent_id) DO UPDATE SET site = excluded.site, "
                "version = excluded.version, queue_epoch = excluded.queue_epoch, "
                "last_seen_ns = excluded.last_seen_ns, connected = 1",
                (hello.agent_id, hello.site, hello.version, hello.queue_epoch, now))
            for a in hello.assets:
                await db.execute(
                    "INSERT INTO assets (asset, agent_id, site, type, name, depends_on) VALUES (?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (asset) DO UPDATE SET agent_id = excluded.agent_id, site = excluded.site, "
                    "type = excluded.type, name = excluded.name, depends_on = excluded.depends_on",
                    (a.id, hello.agent_id, hello.site, a.type, a.name, json.dumps(list(a.depends_on))))
                for p in a.points:
                    await db.execute(
                        "INSERT INTO points (asset, point, unit, kind, expected_interval_s) VALUES (?, ?, ?, ?, ?) "
                        "ON CONFLICT (asset, point) DO UPDATE SET unit = excluded.unit, kind = excluded.kind, "
                        "expected_interval_s = excluded.expected_interval_s",
                        (a.id, p.name, p.unit, p.kind, p.expected_interval_s))
            cur = await db.execute("SELECT seq FROM watermarks WHERE agent_id = ? AND epoch = ?",
                                   (hello.agent_id, hello.queue_epoch))
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def set_connected(self, agent_id: str, connected: bool) -> None:
        async with self.transaction() as db:
            await db.execute("UPDATE agents SET connected = ?, last_seen_ns = ? WHERE agent_id = ?",
                             (int(connected), time.time_ns(), agent_id))

    async def asset_types(self, agent_id: str) -> dict[str, str]:
        cur = await self.db.execute("SELECT asset, type FROM assets WHERE agent_id = ?", (agent_id,))
        return {a: t for a, t in await cur.fetchall()}

    # ---- the batch transaction ------------------------------------------------------------------
    async def commit_batch(self, agent_id: str, epoch: str, batch: twin_pb2.Batch) -> list[WorkOrder]:
        """Store a batch's effects and advance the watermark atomically; return changed work orders.

        A batch at or below the watermark is a duplicate and changes nothing.
        """
        changed: list[WorkOrder] = []
        async with self.transaction() as db:
            cur = await db.execute("SELECT seq FROM watermarks WHERE agent_id = ? AND epoch = ?", (agent_id, epoch))
            row = await cur.fetchone()
            if row and batch.seq <= int(row[0]):
                return []
            await self._store_summaries(db, batch)
            await self._store_changes_states(db, batch)
            await db.execute(
                "INSERT INTO watermarks (agent_id, epoch, seq, batches) VALUES (?, ?, ?, 1) "
                "ON CONFLICT (agent_id, epoch) DO UPDATE SET seq = excluded.seq, batches = batches + 1",
                (agent_id, epoch, batch.seq))
            if batch.HasField("health"):
                h = batch.health
                health = {f.name: getattr(h, f.name) for f in h.DESCRIPTOR.fields}
                await db.execute("UPDATE agents SET health = ?, last_seen_ns = ? WHERE agent_id = ?",
                                 (json.dumps(health), time.time_ns(), agent_id))
            changed = await self._evaluate_rules(db, batch)
        return changed

    async def watermark(self, agent_id: str, epoch: str) -> int:
        cur = await self.db.execute("SELECT seq FROM watermarks WHERE agent_id = ? AND epoch = ?", (agent_id, epoch))
        row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def _store_summaries(self, db: aiosqlite.Connection, batch: twin_pb2.Batch) -> None:
        rows = []
        for s in batch.summaries:
            quality = _QUALITY.get(int(s.quality), "BAD")
            if s.count:
                rows.append((s.asset, s.point, s.unit, s.mean, s.min, s.max, s.last, s.last_text or None,
                             s.count, s.bad_count, quality, s.reason, s.last_ns))
            else:  # no good value in the interval: keep the last good value, record the quality
                rows.append((s.asset, s.point, s.unit, None, None, None, None, None, 0, s.bad_count,
                             quality, s.reason, s.last_ns))
        await db.executemany(
            "INSERT INTO points (asset, point, unit, kind, expected_interval_s, mean, min, max, last, last_text, "
            "count, bad, quality, reason, ts_ns) VALUES (?1, ?2, ?3, 'measurement', 0, ?4, ?5, ?6, ?7, ?8, ?9, ?10, "
            "?11, ?12, ?13) ON CONFLICT (asset, point) DO UPDATE SET "
            "mean = COALESCE(excluded.mean, mean), min = COALESCE(excluded.min, min), "
            "max = COALESCE(excluded.max, max), last = COALESCE(excluded.last, last), "
            "last_text = COALESCE(excluded.last_text, last_text), count = excluded.count, bad = excluded.bad, "
            "quality = excluded.quality, reason = excluded.reason, ts_ns = excluded.ts_ns "
            "WHERE excluded.ts_ns >= points.ts_ns",
            rows)

    async def _store_changes_states(self, db: aiosqlite.Connection, batch: twin_pb2.Batch) -> None:
        await db.executemany(
            "INSERT INTO changes (asset, point, ts_ns, kind, old_value, new_value) VALUES (?, ?, ?, ?, ?, ?)",
            [(c.asset, c.point, c.ts_ns, c.kind, c.old_value, c.new_value) for c in batch.changes])
        await db.executemany(
            "UPDATE assets SET state = ?, health = ?, state_ts_ns = ? WHERE asset = ? AND state_ts_ns <= ?",
            [(s.state, s.health, s.ts_ns, s.asset, s.ts_ns) for s in batch.asset_states])
        for v in batch.vibration:
            doc = {f.name: getattr(v, f.name) for f in v.DESCRIPTOR.fields if f.name != "diagnosis"}
            doc["diagnosis"] = [{"fault": d.fault, "confidence": d.confidence, "evidence": d.evidence}
                                for d in v.diagnosis]
            await db.execute(
                "INSERT INTO vibration VALUES (?, ?, ?, ?) ON CONFLICT (asset, sensor) DO UPDATE SET "
                "ts_ns = excluded.ts_ns, indicators = excluded.indicators WHERE excluded.ts_ns >= vibration.ts_ns",
                (v.asset, v.sensor, v.ts_ns, json.dumps(doc)))

    async def _evaluate_rules(self, db: aiosqlite.Connection, batch: twin_pb2.Batch) -> list[WorkOrder]:
        if not self.rules:
            return []
        assert self.work_orders is not None
        types = {a: t for a, t in await (await db.execute("SELECT asset, type FROM assets")).fetchall()}
        changed: list[WorkOrder] = []
        for s in sorted(batch.summaries, key=lambda s: s.interval_end_ns):
            if s.count == 0:
                continue  # no good value: the rule keeps its state (data quality is another rule's job)
            for rule in self.rules:
                if rule.point != s.point or not rule_applies(rule, s.asset, types.get(s.asset, "")):
                    continue
                state = await self._rule_state(db, s.asset, rule.name)
                value = float(getattr(s, rule.field))
                new_state, finding = evaluate_threshold(rule, state, s.asset, value, s.interval_end_ns)
                if new_state != state:
                    await db.execute(
                        "INSERT INTO rule_state VALUES (?, ?, ?) ON CONFLICT (asset, rule) DO UPDATE "
                        "SET state = excluded.state", (s.asset, rule.name, json.dumps(asdict(new_state))))
                if finding is not None:
                    context = await self.context(s.asset, db) if finding.action == "raise" else {}
                    wo = await self.work_orders.apply(finding, context)
                    if wo is not None:
                        changed.append(wo)
        return changed

    async def _rule_state(self, db: aiosqlite.Connection, asset: str, rule: str) -> ThresholdState:
        cur = await db.execute("SELECT state FROM rule_state WHERE asset = ? AND rule = ?", (asset, rule))
        row = await cur.fetchone()
        return ThresholdState(**json.loads(row[0])) if row else ThresholdState()

    # ---- reads ----------------------------------------------------------------------------------
    async def asset(self, asset: str, db: aiosqlite.Connection | None = None) -> dict[str, Any] | None:
        db = db or self.db
        cur = await db.execute("SELECT asset, agent_id, site, type, name, depends_on, state, health, state_ts_ns "
                               "FROM assets WHERE asset = ?", (asset,))
        row = await cur.fetchone()
        if row is None:
            return None
        points = {}
        for p in await (await db.execute(
                "SELECT point, unit, mean, min, max, last, last_text, quality, reason, ts_ns FROM points "
                "WHERE asset = ? ORDER BY point", (asset,))).fetchall():
            points[p[0]] = {"unit": p[1], "mean": p[2], "min": p[3], "max": p[4], "last": p[5],
                            "text": p[6], "quality": p[7], "reason": p[8], "ts_ns": p[9]}
        vib = {s: json.loads(doc) for s, doc in await (await db.execute(
            "SELECT sensor, indicators FROM vibration WHERE asset = ?", (asset,))).fetchall()}
        return {"id": row[0], "agent": row[1], "site": row[2], "type": row[3], "name": row[4],
                "depends_on": json.loads(row[5]), "state": row[6], "health": row[7], "state_ts_ns": row[8],
                "points": points, "vibration": vib}

    async def assets(self) -> list[dict[str, Any]]:
        names = [r[0] for r in await (await self.db.execute("SELECT asset FROM assets ORDER BY asset")).fetchall()]
        out = []
        for a in names:
            doc = await self.asset(a)
            if doc is not None:
                out.append(doc)
        return out

    async def context(self, asset: str, db: aiosqlite.Connection | None = None) -> dict[str, Any]:
        """What a responder needs beside the finding: state, recent changes, dependencies."""
        db = db or self.db
        doc = await self.asset(asset, db) or {"id": asset}
        since = time.time_ns() - CONTEXT_CHANGES_WINDOW_NS
        changes = [
            {"point": p, "ts_ns": ts, "kind": k, "old": o, "new": n}
            for p, ts, k, o, n in await (await db.execute(
                "SELECT point, ts_ns, kind, old_value, new_value FROM changes WHERE asset = ? AND ts_ns >= ? "
                "ORDER BY ts_ns DESC LIMIT ?", (asset, since, CONTEXT_MAX_CHANGES))).fetchall()
        ]

        async def neighbour(other: str) -> dict[str, Any]:
            cur = await db.execute("SELECT state, health, type FROM assets WHERE asset = ?", (other,))
            row = await cur.fetchone()
            open_wos = [r[0] for r in await (await db.execute(
                "SELECT id FROM work_orders WHERE asset = ? AND status != 'closed'", (other,))).fetchall()]
            return {"asset": other, "state": row[0] if row else "unknown", "health": row[1] if row else None,
                    "type": row[2] if row else None, "open_work_orders": [f"WO-{i:06d}" for i in open_wos]}

        dependents = [r[0] for r in await (await db.execute(
            "SELECT asset FROM assets WHERE EXISTS (SELECT 1 FROM json_each(assets.depends_on) WHERE value = ?)",
            (asset,))).fetchall()]
        return {
            "state": {k: doc.get(k) for k in ("state", "health", "type", "name", "agent")},
            "points": doc.get("points", {}),
            "vibration": doc.get("vibration", {}),
            "recent_changes": changes,
            "depends_on": [await neighbour(d) for d in doc.get("depends_on", [])],
            "dependents": [await neighbour(d) for d in dependents],
        }

    # ---- work-order lifecycle (through the same lock as ingest) ---------------------------------
    async def acknowledge(self, wo_id: int, who: str, note: str = "") -> WorkOrder:
        assert self.work_orders is not None
        async with self.transaction():
            return await self.work_orders.acknowledge(wo_id, who, note)

    async def close_work_order(self, wo_id: int, who: str, note: str = "") -> WorkOrder:
        assert self.work_orders is not None
        async with self.transaction():
            return await self.work_orders.close(wo_id, who, note)

