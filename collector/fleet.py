"""FleetTwin: the collector's picture of every asset of every agent, in SQLite.

`commit_batch` is the one place where a batch becomes durable state: in a single transaction it
updates assets, points, changes and agent health, appends the indicator history, advances the
(agent, queue epoch) watermark used for deduplication, evaluates the work-order rules, stores the
resulting work orders and queues their ITSM deliveries. Either all of it happens or none, so a
batch resent after a crash is recognised as a duplicate exactly when its effects are already stored.

The data-quality rules (stale points, BAD data, devices offline) are judged inside that transaction
too, at the batch's own data time, from what the agent reported: a batch that waited in a queue while
the sink or the collector was down is judged at the time it describes, and nothing is judged while
nothing is committed. So an outage of the monitoring itself never blames the field.

`commit_groups` is how ingest calls it: the batches of every agent stream that is ready at the
same moment go into one transaction (group commit, see collector/group_commit.py), and the
writes of each round of batches are one call to the database thread instead of one round trip
per statement. Rules run in the event loop after their batch's round is written, as before.

`check` is the periodic half, in wall-clock time: agents whose stream is gone (the daemon says which
streams are present), work orders closed while their condition held and due to be raised again, and
each asset's `link` (can the twin see it) and `condition` (what it sees of the equipment).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite
import numpy as np

from collector.condition import asset_condition
from collector.itsm import SCHEMA_PART as OUTBOX_PART
from collector.prognosis import store as remaining_life
from collector.prognosis.remaining_life import RemainingLife
from collector.workorders import history
from collector.workorders.annotations import SCHEMA_PART as ANNOTATIONS_PART
from collector.workorders.collector_health import collector_health_rule
from collector.workorders.data_quality import AgentOfflineRule
from collector.workorders.evaluate import (
    DATA_QUALITY_KINDS,
    AgentStatus,
    PointReport,
    Rule,
    VibrationObs,
    evaluate_data_quality,
    evaluate_summary,
    evaluate_tick,
    evaluate_vibration,
)
from collector.workorders.history import HistorySettings
from collector.workorders.rules import SEVERITIES, Finding
from collector.workorders.store import SCHEMA_PART as WORK_ORDERS_PART
from collector.workorders.store import WorkOrder, WorkOrderListener, WorkOrderStore
from protos.twin.v1 import twin_pb2
from runtime.schema import DatabaseSchema, Migration, SchemaPart, add_column
from runtime.sqlite import open_database, run_on_connection

__all__ = ["AssetStatus", "FleetTwin", "IngestCounters", "SqliteRuleStore"]

log = logging.getLogger("twin.collector.fleet")

CONTEXT_CHANGES_WINDOW_NS = 24 * 3600 * 10**9
CONTEXT_MAX_CHANGES = 50
CONTEXT_TREND_WINDOW_NS = 24 * 3600 * 10**9
CONTEXT_TREND_POINTS = 96
CONTEXT_EARLIER_WORK_ORDERS = 10
DEFAULT_LINK_OFFLINE_AFTER_S = 300.0  # without an agent_offline rule: when a gone gateway makes its assets offline
NOTHING_FOUND = "no open work order, no finding"
CAUSE_DEPTH = 3  # how far up the dependency map a probable cause is looked for

_SCHEMA = """
CREATE TABLE IF NOT EXISTS agents (
    agent_id TEXT PRIMARY KEY, site TEXT NOT NULL, version TEXT NOT NULL, queue_epoch TEXT NOT NULL,
    last_seen_ns INTEGER NOT NULL, connected INTEGER NOT NULL DEFAULT 0, health TEXT NOT NULL DEFAULT '{}',
    connected_ns INTEGER NOT NULL DEFAULT 0);
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
CREATE TABLE IF NOT EXISTS rule_states (
    asset TEXT NOT NULL, rule TEXT NOT NULL, subject TEXT NOT NULL, state TEXT NOT NULL,
    PRIMARY KEY (asset, rule, subject)) WITHOUT ROWID;
"""


async def _pre_release_columns(db: aiosqlite.Connection) -> None:
    if await add_column(db, "agents", "connected_ns", "INTEGER NOT NULL DEFAULT 0"):
        # threshold state of the single-subject layout, kept so an active condition still clears
        await db.execute("INSERT OR IGNORE INTO rule_states SELECT asset, rule, '', state FROM rule_state")


async def _link_and_condition(db: aiosqlite.Connection) -> None:
    await add_column(db, "agents", "started_ns", "INTEGER NOT NULL DEFAULT 0")
    await add_column(db, "points", "declared", "INTEGER NOT NULL DEFAULT 0")
    await add_column(db, "points", "expected_since_ns", "INTEGER NOT NULL DEFAULT 0")
    for column, decl in (("link", "TEXT NOT NULL DEFAULT 'unknown'"), ("link_reason", "TEXT NOT NULL DEFAULT ''"),
                         ("condition", "TEXT NOT NULL DEFAULT 'good'"),
                         ("condition_reason", "TEXT NOT NULL DEFAULT ''"), ("status_ns", "INTEGER NOT NULL DEFAULT 0")):
        await add_column(db, "assets", column, decl)


# A new column: add it to _SCHEMA and a Migration(version=<next>, ..., add_column) here.
FLEET_PART = SchemaPart("fleet", _SCHEMA, (
    Migration(2, "agents.connected_ns and per-subject rule state, which releases before 0.1.0 did not have",
              _pre_release_columns),
    Migration(3, "data quality in data time and each asset's link and condition: agents.started_ns, "
              "points.declared and expected_since_ns, assets.link, condition and their reasons", _link_and_condition),
))
# collector.sqlite: every component that keeps tables in it registers its part here; each part has its
# own version and migrations (runtime/schema.py), applied when the file is opened.
FLEET_DATABASE = DatabaseSchema("collector.sqlite", [FLEET_PART, WORK_ORDERS_PART, history.SCHEMA_PART, OUTBOX_PART,
                                                     ANNOTATIONS_PART, remaining_life.SCHEMA_PART])

_QUALITY = {int(twin_pb2.GOOD): "GOOD", int(twin_pb2.UNCERTAIN): "UNCERTAIN", int(twin_pb2.BAD): "BAD"}
_IN_CHUNK = 500  # SQLite's limit on ? parameters is 999 on old builds

CommitGroup = tuple[str, str, Sequence[twin_pb2.Batch]]  # (agent_id, queue epoch, consecutive batches)


@dataclass(frozen=True, slots=True)
class AssetStatus:
    """An asset's link (can the twin see it) and condition (what it sees), in words (see collector/condition.py)."""

    asset: str
    site: str
    link: str  # online | degraded | offline | unknown
    link_reason: str
    condition: str  # good | watch | act
    condition_reason: str


@dataclass(slots=True)
class IngestCounters:
    batches: int = 0
    duplicates: int = 0
    summaries: int = 0


class SqliteRuleStore:
    """The rules' state and history inside the fleet database (used within a transaction).

    `preload` reads the state of every rule of the batch's assets in one query: most values change
    no state, so a batch costs one read instead of one per (summary, rule).
    """

    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db
        self._cache: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._cached_assets: set[str] = set()

    async def preload(self, assets: set[str]) -> None:
        todo = sorted(assets - self._cached_assets)
        for i in range(0, len(todo), _IN_CHUNK):
            chunk = todo[i:i + _IN_CHUNK]
            cur = await self.db.execute(
                f"SELECT asset, rule, subject, state FROM rule_states WHERE asset IN ({','.join('?' * len(chunk))})",
                chunk)
            self.add_preloaded((), await cur.fetchall())
        self._cached_assets.update(todo)

    def missing(self, assets: Iterable[str]) -> set[str]:
        """Of `assets`, those whose rule state is not cached yet."""
        return set(assets) - self._cached_assets

    def add_preloaded(self, assets: Iterable[str], rows: Iterable[tuple[str, str, str, str]]) -> None:
        """Cache rule_states rows read by the caller (all the rows of `assets`)."""
        for asset, rule, subject, state in rows:
            self._cache[(asset, rule, subject)] = json.loads(state)
        self._cached_assets.update(assets)

    async def load_state(self, asset: str, rule: str, subject: str) -> dict[str, Any] | None:
        if asset in self._cached_assets:
            return self._cache.get((asset, rule, subject))
        cur = await self.db.execute("SELECT state FROM rule_states WHERE asset = ? AND rule = ? AND subject = ?",
                                    (asset, rule, subject))
        row = await cur.fetchone()
        return json.loads(row[0]) if row else None

    async def save_state(self, asset: str, rule: str, subject: str, state: dict[str, Any]) -> None:
        if asset in self._cached_assets:
            self._cache[(asset, rule, subject)] = state
        await self.db.execute(
            "INSERT INTO rule_states VALUES (?, ?, ?, ?) ON CONFLICT (asset, rule, subject) DO UPDATE "
            "SET state = excluded.state", (asset, rule, subject, json.dumps(state)))

    async def active_subjects(self, asset: str, rule: str) -> list[str]:
        if asset in self._cached_assets:
            return [s for (a, r, s), st in self._cache.items() if a == asset and r == rule and st.get("active")]
        cur = await self.db.execute(
            "SELECT subject FROM rule_states WHERE asset = ? AND rule = ? AND json_extract(state, '$.active')",
            (asset, rule))
        return [r[0] for r in await cur.fetchall()]

    async def series(self, asset: str, key: str, since_ns: int, until_ns: int) -> tuple[np.ndarray, np.ndarray]:
        return await history.series(self.db, asset, key, since_ns, until_ns)

    async def record_remaining_life(self, asset: str, rule: str, subject: str, ts_ns: int,
                                    assessment: RemainingLife) -> None:
        await remaining_life.record(self.db, asset, subject, rule, ts_ns, assessment)


class FleetTwin:
    def __init__(self, path: Path, rules: Sequence[Rule] = (), history_settings: HistorySettings | None = None,
                 listener: WorkOrderListener | None = None) -> None:
        self.path = path
        self.rules = tuple(rules)
        self.history = history_settings or HistorySettings()
        self.listener = listener
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self.work_orders: WorkOrderStore | None = None

    async def open(self) -> None:
        self._db = await open_database(self.path, FLEET_DATABASE, autocommit=True)
        self.work_orders = WorkOrderStore(self._db, self.listener)

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
    async def reading(self) -> AsyncIterator[aiosqlite.Connection]:
        """Read without seeing another task's uncommitted transaction on the shared connection."""
        async with self._lock:
            yield self.db

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
        """Record the agent and its asset descriptors; return the watermark for its queue epoch.

        One transaction in one database-thread call: a Hello declares every point of the agent,
        and a thousand agents reconnecting at once must not cost a round trip per point.
        """
        async with self._lock:
            watermark = await run_on_connection(self.db, lambda conn: self._register_hello(conn, hello))
            for asset, missing in await undeclared_dependencies(self.db, [a.id for a in hello.assets]):
                log.warning("asset %s (agent %s) depends on %s, which no agent declares: check the id in its "
                            "depends_on (or the agent that declares it has not connected yet)",
                            asset, hello.agent_id, missing)
            return watermark

    @staticmethod
    def _register_hello(conn: sqlite3.Connection, hello: twin_pb2.Hello) -> int:
        now = time.time_ns()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "INSERT INTO agents (agent_id, site, version, queue_epoch, last_seen_ns, connected, connected_ns) "
                "VALUES (?, ?, ?, ?, ?, 1, ?) ON CONFLICT (agent_id) DO UPDATE SET site = excluded.site, "
                "version = excluded.version, queue_epoch = excluded.queue_epoch, "
                "last_seen_ns = excluded.last_seen_ns, connected = 1, connected_ns = excluded.connected_ns",
                (hello.agent_id, hello.site, hello.version, hello.queue_epoch, now, now))
            for a in hello.assets:
                # An asset belongs to the agent that first declared it (or claims it after
                # `twin-collector assets release`): another gateway cannot take it over.
                conn.execute(
                    "INSERT INTO assets (asset, agent_id, site, type, name, depends_on) VALUES (?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (asset) DO UPDATE SET agent_id = excluded.agent_id, site = excluded.site, "
                    "type = excluded.type, name = excluded.name, depends_on = excluded.depends_on "
                    "WHERE assets.agent_id IN ('', excluded.agent_id)",
                    (a.id, hello.agent_id, hello.site, a.type, a.name, json.dumps(list(a.depends_on))))
                owner = conn.execute("SELECT agent_id FROM assets WHERE asset = ?", (a.id,)).fetchone()
                if owner is not None and owner[0] != hello.agent_id:
                    log.warning("agent %s declares asset %s, which belongs to agent %s: ignored (release it with "
                                "`twin-collector assets release %s` if it moved)", hello.agent_id, a.id, owner[0], a.id)
                    continue
                # Points no longer in the agent's configuration stop being expected (no stale alarms).
                conn.execute(
                    f"UPDATE points SET expected_interval_s = 0, declared = 0 WHERE asset = ? AND point NOT IN "
                    f"({','.join('?' * len(a.points))})", (a.id, *[p.name for p in a.points]))
                # expected_since_ns: silence counts from when a point is declared (or starts being expected)
                conn.executemany(
                    "INSERT INTO points (asset, point, unit, kind, expected_interval_s, declared, "
                    "expected_since_ns) VALUES (?, ?, ?, ?, ?, 1, ?) "
                    "ON CONFLICT (asset, point) DO UPDATE SET unit = excluded.unit, kind = excluded.kind, "
                    "expected_since_ns = CASE WHEN points.declared = 0 OR points.expected_interval_s = 0 "
                    "THEN excluded.expected_since_ns ELSE points.expected_since_ns END, "
                    "expected_interval_s = excluded.expected_interval_s, declared = 1",
                    [(a.id, p.name, p.unit, p.kind, p.expected_interval_s, now) for p in a.points])
            declared = [a.id for a in hello.assets]
            conn.execute(
                f"UPDATE points SET expected_interval_s = 0, declared = 0 WHERE asset IN (SELECT asset FROM assets "
                f"WHERE agent_id = ? AND asset NOT IN ({','.join('?' * len(declared))}))", (hello.agent_id, *declared))
            row = conn.execute("SELECT seq FROM watermarks WHERE agent_id = ? AND epoch = ?",
                               (hello.agent_id, hello.queue_epoch)).fetchone()
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return int(row[0]) if row else 0

    async def release_asset(self, asset: str) -> bool:
        """Let the next agent that declares `asset` own it (the asset moved to another gateway)."""
        async with self.transaction() as db:
            cur = await db.execute("UPDATE assets SET agent_id = '' WHERE asset = ?", (asset,))
            return bool(cur.rowcount)

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
        return await self.commit_batches(agent_id, epoch, [batch])

    async def commit_batches(self, agent_id: str, epoch: str, batches: Sequence[twin_pb2.Batch]) -> list[WorkOrder]:
        """`commit_batch` for consecutive batches of one agent, in one transaction (one disk sync).

        An agent catching up after an outage sends many batches back to back; committing them
        together is what lets the collector keep up, with the same all-or-nothing guarantee.
        """
        return (await self.commit_groups([(agent_id, epoch, batches)]))[0]

    async def commit_groups(self, groups: Sequence[CommitGroup]) -> list[list[WorkOrder]]:
        """`commit_batches` for several agents in one transaction; the changed work orders per group.

        All or nothing for the whole call: any error rolls everything back and propagates (the
        caller may retry the groups one by one to find the one at fault). The batches go in
        rounds (every group's first batch, then every second one, ...): a round's writes are one
        database-thread call, and the rules see each batch right after its round is written, so
        what they read (history, rule state) is what they saw when batches came one at a time.
        Agents own disjoint assets, so batches of different agents in one round do not meet.
        Without rules the COMMIT goes into the last round's call: one call per round.
        """
        changed: list[list[WorkOrder]] = [[] for _ in groups]
        rounds = max((len(b) for _, _, b in groups), default=0)
        if rounds == 0:
            return changed
        watermarks: dict[tuple[str, str], int] = {}
        async with self._lock:
            db = self.db
            store = SqliteRuleStore(db) if self.rules else None
            try:
                for r in range(rounds):
                    items = [(g, agent, epoch, batches[r]) for g, (agent, epoch, batches) in enumerate(groups)
                             if r < len(batches)]
                    commit = r == rounds - 1 and store is None

                    def write(conn: sqlite3.Connection, items: list[tuple[int, str, str, twin_pb2.Batch]] = items,
                              first: bool = r == 0, commit: bool = commit) -> tuple[list[tuple[int, twin_pb2.Batch]],
                                                                                      dict[str, str]]:
                        return self._write_round(conn, items, watermarks, store, first, commit)

                    fresh, types = await run_on_connection(db, write)
                    if store is not None:
                        for g, batch in fresh:
                            changed[g] += await self._evaluate_rules(db, batch, store, types, groups[g][0])
                if store is not None:
                    await db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    await db.execute("ROLLBACK")  # fails harmlessly if the error came before BEGIN
                raise
        return changed

    def _write_round(self, conn: sqlite3.Connection, items: list[tuple[int, str, str, twin_pb2.Batch]],
                     watermarks: dict[tuple[str, str], int], store: SqliteRuleStore | None, first: bool,
                     commit: bool) -> tuple[list[tuple[int, twin_pb2.Batch]], dict[str, str]]:
        """One round of a group commit, on the database thread: the batches above their watermark
        are stored; returns them, and the asset types the rules need (their rule state goes into
        `store`'s cache, read in the same call)."""
        if first:
            conn.execute("BEGIN IMMEDIATE")
        fresh: list[tuple[int, twin_pb2.Batch]] = []
        touched: set[str] = set()
        now = time.time_ns()
        for g, agent_id, epoch, batch in items:
            key = (agent_id, epoch)
            if key not in watermarks:
                row = conn.execute("SELECT seq FROM watermarks WHERE agent_id = ? AND epoch = ?", key).fetchone()
                watermarks[key] = int(row[0]) if row else 0
            if batch.seq <= watermarks[key]:
                continue
            touched |= self._store_batch(conn, agent_id, epoch, batch, now)
            watermarks[key] = batch.seq
            fresh.append((g, batch))
        types: dict[str, str] = {}
        if store is not None and fresh:
            assets = sorted(touched)
            types = dict(_select_in(conn, "SELECT asset, type FROM assets WHERE asset IN ({})", assets))
            missing = sorted(store.missing(assets))
            store.add_preloaded(missing, _select_in(
                conn, "SELECT asset, rule, subject, state FROM rule_states WHERE asset IN ({})", missing))
        if commit:
            conn.execute("COMMIT")
        return fresh, types

    async def skip_batch(self, agent_id: str, epoch: str, seq: int) -> None:
        """Advance the watermark past a batch that can never be stored, so it does not block the agent."""
        async with self.transaction() as db:
            await db.execute(
                "INSERT INTO watermarks (agent_id, epoch, seq, batches) VALUES (?, ?, ?, 0) "
                "ON CONFLICT (agent_id, epoch) DO UPDATE SET seq = MAX(seq, excluded.seq)", (agent_id, epoch, seq))

    def _store_batch(self, conn: sqlite3.Connection, agent_id: str, epoch: str, batch: twin_pb2.Batch,
                     now_ns: int) -> set[str]:
        """A batch's effects besides the rules: twin, history, watermark, agent (database thread).

        Returns the assets its summaries and vibration blocks are about (what the rules look at).
        """
        rows = self._store_summaries(conn, batch)
        self._store_changes_states(conn, batch)
        history.record_batch_sync(conn, batch, self.history)
        conn.execute(
            "INSERT INTO watermarks (agent_id, epoch, seq, batches) VALUES (?, ?, ?, 1) "
            "ON CONFLICT (agent_id, epoch) DO UPDATE SET seq = excluded.seq, batches = batches + 1",
            (agent_id, epoch, batch.seq))
        conn.execute("UPDATE agents SET last_seen_ns = ? WHERE agent_id = ?", (now_ns, agent_id))
        if batch.HasField("health"):
            h = batch.health
            health = {f.name: getattr(h, f.name) for f in h.DESCRIPTOR.fields}
            # started_ns: when the agent process started, in its own clock (silence counts from there)
            conn.execute("UPDATE agents SET health = ?, started_ns = ? WHERE agent_id = ?",
                         (history.dumps_finite(health), h.ts_ns - int(h.uptime_s * 1e9) if h.ts_ns else 0, agent_id))
        return {row[0] for row in rows} | {v.asset for v in batch.vibration}

    async def watermark(self, agent_id: str, epoch: str) -> int:
        cur = await self.db.execute("SELECT seq FROM watermarks WHERE agent_id = ? AND epoch = ?", (agent_id, epoch))
        row = await cur.fetchone()
        return int(row[0]) if row else 0

    @staticmethod
    def _store_summaries(conn: sqlite3.Connection, batch: twin_pb2.Batch) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = []
        for s in batch.summaries:
            quality = _QUALITY.get(int(s.quality), "BAD")
            if s.count:
                rows.append((s.asset, s.point, s.unit, s.mean, s.min, s.max, s.last, s.last_text or None,
                             s.count, s.bad_count, quality, s.reason, s.last_ns))
            else:  # no good value in the interval: keep the last good value, record the quality
                rows.append((s.asset, s.point, s.unit, None, None, None, None, None, 0, s.bad_count,
                             quality, s.reason, s.last_ns))
        conn.executemany(
            "INSERT INTO points (asset, point, unit, kind, expected_interval_s, mean, min, max, last, last_text, "
            "count, bad, quality, reason, ts_ns) VALUES (?1, ?2, ?3, 'measurement', 0, ?4, ?5, ?6, ?7, ?8, ?9, ?10, "
            "?11, ?12, ?13) ON CONFLICT (asset, point) DO UPDATE SET "
            "mean = COALESCE(excluded.mean, mean), min = COALESCE(excluded.min, min), "
            "max = COALESCE(excluded.max, max), last = COALESCE(excluded.last, last), "
            "last_text = COALESCE(excluded.last_text, last_text), count = excluded.count, bad = excluded.bad, "
            "quality = excluded.quality, reason = excluded.reason, ts_ns = excluded.ts_ns "
            "WHERE excluded.ts_ns >= points.ts_ns",
            rows)
        return rows

    @staticmethod
    def _store_changes_states(conn: sqlite3.Connection, batch: twin_pb2.Batch) -> None:
        conn.executemany(
            "INSERT INTO changes (asset, point, ts_ns, kind, old_value, new_value) VALUES (?, ?, ?, ?, ?, ?)",
            [(c.asset, c.point, c.ts_ns, c.kind, c.old_value, c.new_value) for c in batch.changes])
        conn.executemany(
            "UPDATE assets SET state = ?, health = ?, state_ts_ns = ? WHERE asset = ? AND state_ts_ns <= ?",
            [(s.state, s.health, s.ts_ns, s.asset, s.ts_ns) for s in batch.asset_states])
        for v in batch.vibration:
            doc = {f.name: getattr(v, f.name) for f in v.DESCRIPTOR.fields if f.name != "diagnosis"}
            doc["diagnosis"] = [{"fault": d.fault, "confidence": d.confidence, "evidence": d.evidence}
                                for d in v.diagnosis]
            conn.execute(
                "INSERT INTO vibration VALUES (?, ?, ?, ?) ON CONFLICT (asset, sensor) DO UPDATE SET "
                "ts_ns = excluded.ts_ns, indicators = excluded.indicators WHERE excluded.ts_ns >= vibration.ts_ns",
                (v.asset, v.sensor, v.ts_ns, history.dumps_finite(doc)))
            # Waveform points reach the collector as indicators, not summaries: an analysed block is
            # a good, fresh reading of its sensor point (for the twin and the stale-data rule).
            conn.execute(
                "UPDATE points SET ts_ns = ?, quality = 'GOOD', reason = '' WHERE asset = ? AND point = ? "
                "AND ts_ns <= ?", (v.ts_ns, v.asset, v.sensor, v.ts_ns))

    async def _evaluate_rules(self, db: aiosqlite.Connection, batch: twin_pb2.Batch,
                              store: SqliteRuleStore, types: dict[str, str], agent_id: str = "") -> list[WorkOrder]:
        """The rules on a batch just written (`types` and `store`'s cache hold its assets)."""
        if not self.rules:
            return []
        observations: list[Any] = [history.summary_obs(s) for s in batch.summaries if not s.last_text]
        observations += [VibrationObs(v.asset, v.sensor, v.ts_ns, history.vibration_doc(v)) for v in batch.vibration]
        findings: list[Finding] = []
        for obs in sorted(observations, key=lambda o: o.ts_ns):
            if isinstance(obs, VibrationObs):
                findings += await evaluate_vibration(self.rules, store, obs, types.get(obs.asset, ""))
            else:
                findings += await evaluate_summary(self.rules, store, obs, types.get(obs.asset, ""))
        if agent_id and any(r.kind in DATA_QUALITY_KINDS for r in self.rules):
            findings += await self._judge_data_quality(db, store, agent_id, batch)
        return await self._apply(db, findings)

    async def _judge_data_quality(self, db: aiosqlite.Connection, store: SqliteRuleStore, agent_id: str,
                                  batch: twin_pb2.Batch) -> list[Finding]:
        """Data-quality rules over every point the agent declared, at the batch's data time (its interval
        end): what the agent reported, whenever the collector gets to store it."""
        now = batch.created_ns or max([s.interval_end_ns for s in batch.summaries]
                                      + [v.ts_ns for v in batch.vibration], default=0)
        if now <= 0:
            return []
        row = await (await db.execute("SELECT started_ns FROM agents WHERE agent_id = ?", (agent_id,))).fetchone()
        started = int(row[0]) if row else 0
        rows = await (await db.execute(
            "SELECT p.asset, a.type, p.point, p.expected_interval_s, p.ts_ns, p.count, p.quality, p.reason, "
            "p.expected_since_ns FROM points p JOIN assets a ON a.asset = p.asset "
            "WHERE a.agent_id = ? AND p.declared = 1 ORDER BY p.asset, p.point", (agent_id,))).fetchall()
        reports = [PointReport(asset, atype, point, float(expected), int(ts), count == 0 and quality == "BAD",
                               str(reason), max(started, int(since)))
                   for asset, atype, point, expected, ts, count, quality, reason, since in rows]
        await store.preload({r.asset for r in reports})
        return await evaluate_data_quality(self.rules, store, now, reports)

    async def _apply(self, db: aiosqlite.Connection, findings: list[Finding]) -> list[WorkOrder]:
        assert self.work_orders is not None
        changed: dict[int, WorkOrder] = {}
        for finding in findings:
            async def context(finding: Finding = finding) -> dict[str, Any]:
                return await self.context(finding.asset, db, finding)

            async def cause(finding: Finding = finding) -> dict[str, Any] | None:
                return await self.probable_cause(db, finding)
            wo = await self.work_orders.apply(finding, context, cause)
            if wo is not None:
                changed[wo.id] = wo
        return list(changed.values())

    async def apply_findings(self, findings: Sequence[Finding]) -> list[WorkOrder]:
        """Apply findings made outside a batch (the collector's own incidents) in one transaction."""
        if not findings:
            return []
        async with self.transaction() as db:
            return await self._apply(db, list(findings))

    async def probable_cause(self, db: aiosqlite.Connection, finding: Finding) -> dict[str, Any] | None:
        """An open work order upstream that explains `finding`: on an asset it depends on (directly or up
        to CAUSE_DEPTH steps), or on the gateway that serves it.

        Only what can explain a symptom downstream counts: a device or agent offline, or a corrective work
        order (the meter feeding the AHU is down, the chiller has failed). Preventive forecasts and the
        collector's own incidents explain nothing in the field. The nearest wins; among equals an
        offline device or agent first, then the most severe, then the oldest.
        """
        if finding.category == "collector":
            return None
        frontier, seen, depth, relation = [finding.asset], {finding.asset}, 0, {}
        candidates: list[tuple[int, int, int, int, dict[str, Any]]] = []
        agent_row = await (await db.execute("SELECT agent_id FROM assets WHERE asset = ?", (finding.asset,))).fetchone()
        while frontier and depth < CAUSE_DEPTH:
            depth += 1
            upstream: list[str] = []
            for asset in frontier:
                row = await (await db.execute("SELECT depends_on FROM assets WHERE asset = ?", (asset,))).fetchone()
                for dep in json.loads(row[0]) if row else []:
                    if dep not in seen:
                        seen.add(dep)
                        upstream.append(dep)
                        relation[dep] = f"{asset} depends on {dep}"
            if depth == 1 and agent_row is not None and agent_row[0] not in seen:
                seen.add(agent_row[0])
                upstream.append(agent_row[0])
                relation[agent_row[0]] = f"{finding.asset} is served by gateway {agent_row[0]}"
            for up in upstream:
                for ref_id, rule, severity, category, title, evidence, created in await (await db.execute(
                        "SELECT id, rule, severity, category, title, evidence, created_ns FROM work_orders "
                        "WHERE asset = ? AND status != 'closed' AND created_ns <= ?", (up, finding.ts_ns))).fetchall():
                    kind = json.loads(evidence).get("kind", "")
                    offline = kind in ("device_offline", "agent_offline")
                    if not offline and category != "corrective":
                        continue
                    candidates.append((depth, 0 if offline else 1, -SEVERITIES.index(severity), int(created),
                                       {"ref": f"WO-{ref_id:06d}", "asset": up, "rule": rule, "title": title,
                                        "relation": relation[up]}))
            if candidates:
                return min(candidates, key=lambda c: c[:4])[4]
            frontier = upstream
        return None

    # ---- the periodic check ----------------------------------------------------------------------
    async def check(self, now_ns: int | None = None, presence: dict[str, int] | None = None,
                    judge_agents: bool = True, watch_since_ns: int = 0) -> list[WorkOrder]:
        """The wall-clock half of the rules at `now_ns`; return changed work orders.

        `presence`: when each agent's stream was last known present (the daemon's ingest knows; without
        it the stored connection state stands in). `judge_agents` False while the collector itself is
        failing: silence during its own outage proves nothing. `watch_since_ns`: when the collector
        (re)started or recovered; no agent is judged silent from before it.
        """
        now = now_ns if now_ns is not None else time.time_ns()
        async with self.transaction() as db:
            findings: list[Finding] = []
            if judge_agents and any(isinstance(r, AgentOfflineRule) for r in self.rules):
                statuses = await self._agent_statuses(db, now, presence, watch_since_ns)
                findings = await evaluate_tick(self.rules, SqliteRuleStore(db), now, statuses)
            changed = {wo.id: wo for wo in await self._apply(db, findings)}
            assert self.work_orders is not None

            async def context(wo: WorkOrder) -> dict[str, Any]:
                return await self.context(wo.asset, db)
            reraise = {r.name: r.reraise_after_s for r in (*self.rules, collector_health_rule(self.rules))}
            for wo in await self.work_orders.reraise_due(now, reraise, context):
                changed[wo.id] = wo
            return list(changed.values())

    async def _agent_statuses(self, db: aiosqlite.Connection, now: int, presence: dict[str, int] | None,
                              watch_since_ns: int) -> list[AgentStatus]:
        served: dict[str, list[str]] = {}
        for asset, agent in await (await db.execute("SELECT asset, agent_id FROM assets ORDER BY asset")).fetchall():
            served.setdefault(agent, []).append(asset)
        out = []
        for agent, seen, connected in await (await db.execute(
                "SELECT agent_id, last_seen_ns, connected FROM agents")).fetchall():
            if presence is not None:
                present = presence.get(agent, 0)
            else:
                present = now if connected else int(seen)
            out.append(AgentStatus(agent, max(present, watch_since_ns), served.get(agent, [])))
        return out

    async def refresh_asset_status(self, now_ns: int | None = None, presence: dict[str, int] | None = None
                                   ) -> list[AssetStatus]:
        """Recompute every asset's link and condition; return those that changed.

        link: the gateway's stream (gone past the agent_offline limit: offline; gone for less:
        degraded, reconnecting) and, while it is there, the state the agent reports for the asset
        (online, degraded: some points BAD or silent, offline: none delivering). condition: see
        collector/condition.py. `presence` as for `check`.
        """
        now = now_ns if now_ns is not None else time.time_ns()
        limits = [r.offline_after_s for r in self.rules if isinstance(r, AgentOfflineRule)]
        offline_after_ns = int((min(limits) if limits else DEFAULT_LINK_OFFLINE_AFTER_S) * 1e9)
        changed: list[AssetStatus] = []
        async with self.transaction() as db:
            agents = {a: (int(seen), bool(c)) for a, seen, c in await (await db.execute(
                "SELECT agent_id, last_seen_ns, connected FROM agents")).fetchall()}
            open_wos: dict[str, list[dict[str, Any]]] = {}
            for ref_id, asset, category, severity, title in await (await db.execute(
                    "SELECT id, asset, category, severity, title FROM work_orders WHERE status != 'closed' "
                    "ORDER BY id")).fetchall():
                open_wos.setdefault(asset, []).append({"ref": f"WO-{ref_id:06d}", "category": category,
                                                       "severity": severity, "title": title})
            vibration: dict[str, dict[str, Any]] = {}
            for asset, sensor, doc in await (await db.execute(
                    "SELECT asset, sensor, indicators FROM vibration")).fetchall():
                vibration.setdefault(asset, {})[sensor] = json.loads(doc)
            bad: dict[str, tuple[int, int, str]] = {}
            for asset, total, n_bad, reason in await (await db.execute(
                    "SELECT asset, COUNT(*), SUM(quality = 'BAD' AND count = 0), MAX(CASE WHEN quality = 'BAD' "
                    "THEN reason END) FROM points WHERE declared = 1 GROUP BY asset")).fetchall():
                bad[asset] = (int(total), int(n_bad or 0), str(reason or ""))
            rows = await (await db.execute(
                "SELECT asset, site, agent_id, state, link, link_reason, condition, condition_reason "
                "FROM assets ORDER BY asset")).fetchall()
            for asset, site, agent, state, *old in rows:
                seen, connected = agents.get(agent, (0, False))
                present = (presence.get(agent, 0) if presence is not None else (now if connected else seen))
                if agent and present < now and now - present > offline_after_ns:
                    link, link_reason = "offline", f"gateway {agent} gone for {(now - present) / 1e9:.0f} s"
                elif agent and present < now:
                    link, link_reason = "degraded", f"gateway {agent} reconnecting"
                else:
                    link = state if state in ("online", "degraded", "offline") else "unknown"
                    total, n_bad, reason = bad.get(asset, (0, 0, ""))
                    link_reason = "every point reporting" if link == "online" else (
                        f"{n_bad} of {total} points BAD" + (f" ({reason})" if reason else "") if n_bad
                        else "some points not reporting" if link == "degraded"
                        else "no data yet" if link == "unknown" else "no point delivering")
                cond = asset_condition(open_wos.get(asset, []), vibration.get(asset, {}))
                new = [link, link_reason, cond.level, cond.text or NOTHING_FOUND]
                if new != list(old):
                    await db.execute("UPDATE assets SET link = ?, link_reason = ?, condition = ?, "
                                     "condition_reason = ?, status_ns = ? WHERE asset = ?", (*new, now, asset))
                    changed.append(AssetStatus(asset, site, *new))
        return changed

    async def asset_statuses(self) -> list[AssetStatus]:
        async with self.reading() as db:
            return [AssetStatus(*r) for r in await (await db.execute(
                "SELECT asset, site, link, link_reason, condition, condition_reason FROM assets ORDER BY asset"
            )).fetchall()]

    async def prune_history(self, now_ns: int | None = None) -> int:
        """Delete history (and delivered ITSM outbox rows) older than the retention."""
        now = now_ns if now_ns is not None else time.time_ns()
        before = now - int(self.history.retention_days * 86_400e9)
        async with self.transaction() as db:
            cur = await db.execute("DELETE FROM outbox WHERE delivered_ns IS NOT NULL AND delivered_ns < ?", (before,))
            return (await history.prune(db, before) + (cur.rowcount or 0)
                    + await remaining_life.prune(db, before))

    async def twin(self, asset: str) -> dict[str, Any] | None:
        """One asset's twin for the API: state, latest values and indicators, dependencies, open work orders."""
        async with self.reading() as db:
            doc = await self.asset(asset, db)
            if doc is None:
                return None
            dependents = [r[0] for r in await (await db.execute(
                "SELECT asset FROM assets WHERE EXISTS (SELECT 1 FROM json_each(assets.depends_on) WHERE value = ?)",
                (asset,))).fetchall()]
            doc["depends_on"] = [await self._neighbour(db, d) for d in doc["depends_on"]]
            doc["dependents"] = [await self._neighbour(db, d) for d in dependents]
            assert self.work_orders is not None
            doc["open_work_orders"] = [
                {k: v for k, v in wo.to_dict().items() if k != "context"}
                for wo in await self.work_orders.list(status="active", asset=asset)]
            return doc

    # ---- reads ----------------------------------------------------------------------------------
    async def asset(self, asset: str, db: aiosqlite.Connection | None = None) -> dict[str, Any] | None:
        db = db or self.db
        cur = await db.execute("SELECT asset, agent_id, site, type, name, depends_on, state, health, state_ts_ns, "
                               "link, link_reason, condition, condition_reason FROM assets WHERE asset = ?", (asset,))
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
                "link": row[9], "link_reason": row[10], "condition": row[11], "condition_reason": row[12],
                "points": points, "vibration": vib, "remaining_life": await remaining_life.latest(db, asset)}

    async def undeclared_dependencies(self) -> list[tuple[str, str]]:
        """(asset, depends_on id) pairs whose id no agent has declared."""
        return await undeclared_dependencies(self.db)

    async def assets(self) -> list[dict[str, Any]]:
        names = [r[0] for r in await (await self.db.execute("SELECT asset FROM assets ORDER BY asset")).fetchall()]
        out = []
        for a in names:
            doc = await self.asset(a)
            if doc is not None:
                out.append(doc)
        return out

    async def context(self, asset: str, db: aiosqlite.Connection | None = None,
                      finding: Finding | None = None) -> dict[str, Any]:
        """What a responder needs beside the finding, captured when the work order is raised.

        The asset's state, latest values and vibration indicators; its state, setpoint and
        configuration changes in the 24 h before the finding; the assets it depends on and those
        that depend on it, with their states and open work orders; the recent values of the
        indicator that triggered the finding; and earlier work orders on the same asset.
        """
        db = db or self.db
        ref_ns = finding.ts_ns if finding is not None else time.time_ns()
        doc = await self.asset(asset, db)
        out: dict[str, Any] = {}
        if doc is None:  # a rule about an agent (agent_offline): its assets stand in for dependencies
            agent = await self.agent(asset, db)
            if agent is not None:
                out["agent"] = agent
                out["agent_assets"] = [await self._neighbour(db, a) for a in agent["assets"]]
            doc = {"id": asset}
        changes = [
            {"point": p, "ts_ns": ts, "kind": k, "old": o, "new": n}
            for p, ts, k, o, n in await (await db.execute(
                "SELECT point, ts_ns, kind, old_value, new_value FROM changes WHERE asset = ? AND ts_ns >= ? "
                "AND ts_ns <= ? ORDER BY ts_ns DESC LIMIT ?",
                (asset, ref_ns - CONTEXT_CHANGES_WINDOW_NS, ref_ns, CONTEXT_MAX_CHANGES))).fetchall()
        ]
        dependents = [r[0] for r in await (await db.execute(
            "SELECT asset FROM assets WHERE EXISTS (SELECT 1 FROM json_each(assets.depends_on) WHERE value = ?)",
            (asset,))).fetchall()]
        earlier = [{"ref": f"WO-{i:06d}", "rule": r, "severity": sev, "status": st, "title": t, "created_ns": c,
                    "closed_ns": cl, "closed_by": by, "note": n}
                   for i, r, sev, st, t, c, cl, by, n in await (await db.execute(
                       "SELECT id, rule, severity, status, title, created_ns, closed_ns, closed_by, note "
                       "FROM work_orders WHERE asset = ? ORDER BY id DESC LIMIT ?",
                       (asset, CONTEXT_EARLIER_WORK_ORDERS))).fetchall()]
        out |= {
            "state": {k: doc.get(k) for k in ("state", "health", "type", "name", "agent")},
            "points": doc.get("points", {}),
            "vibration": doc.get("vibration", {}),
            "remaining_life": doc.get("remaining_life", {}),
            "recent_changes": changes,
            "depends_on": [await self._neighbour(db, d) for d in doc.get("depends_on", [])],
            "dependents": [await self._neighbour(db, d) for d in dependents],
            "earlier_work_orders": earlier,
        }
        key = finding.evidence.get("series") if finding is not None else None
        if isinstance(key, str):
            out["trend"] = await self._trend(db, asset, key, ref_ns, finding)
        return out

    async def _neighbour(self, db: aiosqlite.Connection, other: str) -> dict[str, Any]:
        cur = await db.execute("SELECT state, health, type FROM assets WHERE asset = ?", (other,))
        row = await cur.fetchone()
        open_wos = [{"ref": f"WO-{i:06d}", "rule": r, "severity": s, "title": t} for i, r, s, t in await (
            await db.execute("SELECT id, rule, severity, title FROM work_orders WHERE asset = ? AND status != 'closed' "
                             "ORDER BY id", (other,))).fetchall()]
        return {"asset": other, "state": row[0] if row else "unknown", "health": row[1] if row else None,
                "type": row[2] if row else None, "open_work_orders": [w["ref"] for w in open_wos],
                "open_work_order_details": open_wos}

    async def _trend(self, db: aiosqlite.Connection, asset: str, key: str, ref_ns: int,
                     finding: Finding | None) -> dict[str, Any]:
        """Recent values of the triggering indicator, reduced to at most CONTEXT_TREND_POINTS."""
        window = CONTEXT_TREND_WINDOW_NS
        if finding is not None and isinstance(finding.evidence.get("window_days"), int | float):
            window = max(window, int(float(finding.evidence["window_days"]) * 86_400e9))
        try:
            ts, values = await history.series(db, asset, key, ref_ns - window, ref_ns)
        except ValueError:
            return {"series": key, "values": []}
        if len(ts) > CONTEXT_TREND_POINTS:
            idx = np.linspace(0, len(ts) - 1, CONTEXT_TREND_POINTS).round().astype(int)
            ts, values = ts[idx], values[idx]
        return {"series": key, "window_s": window / 1e9,
                "values": [[int(t), round(float(v), 6)] for t, v in zip(ts, values, strict=True)]}

    async def agent(self, agent_id: str, db: aiosqlite.Connection | None = None) -> dict[str, Any] | None:
        db = db or self.db
        cur = await db.execute("SELECT agent_id, site, version, last_seen_ns, connected, health FROM agents "
                               "WHERE agent_id = ?", (agent_id,))
        row = await cur.fetchone()
        if row is None:
            return None
        assets = [r[0] for r in await (await db.execute(
            "SELECT asset FROM assets WHERE agent_id = ? ORDER BY asset", (agent_id,))).fetchall()]
        return {"id": row[0], "site": row[1], "version": row[2], "last_seen_ns": row[3], "connected": bool(row[4]),
                "health": json.loads(row[5]), "assets": assets}

    async def agents(self) -> list[dict[str, Any]]:
        ids = [r[0] for r in await (await self.db.execute("SELECT agent_id FROM agents ORDER BY agent_id")).fetchall()]
        return [a for a in [await self.agent(i) for i in ids] if a is not None]

    # ---- work-order lifecycle (through the same lock as ingest) ---------------------------------
    async def acknowledge(self, wo_id: int, who: str, note: str = "") -> WorkOrder:
        assert self.work_orders is not None
        async with self.transaction():
            return await self.work_orders.acknowledge(wo_id, who, note)

    async def close_work_order(self, wo_id: int, who: str, note: str = "") -> WorkOrder:
        assert self.work_orders is not None
        async with self.transaction():
            return await self.work_orders.close(wo_id, who, note)


async def undeclared_dependencies(db: aiosqlite.Connection, assets: Sequence[str] | None = None
                                  ) -> list[tuple[str, str]]:
    """(asset, id) for each `depends_on` id that is not an asset of any agent (of `assets`, or all)."""
    rows = await (await db.execute(
        "SELECT a.asset, d.value FROM assets a, json_each(a.depends_on) d "
        "WHERE d.value NOT IN (SELECT asset FROM assets) ORDER BY a.asset, d.value")).fetchall()
    return [(r[0], r[1]) for r in rows if assets is None or r[0] in assets]


def _select_in(conn: sqlite3.Connection, sql: str, keys: Sequence[str]) -> list[Any]:
    """`sql` with `IN ({})` filled for `keys`, in chunks; all rows."""
    rows: list[Any] = []
    for i in range(0, len(keys), _IN_CHUNK):
        chunk = keys[i:i + _IN_CHUNK]
        rows += conn.execute(sql.format(",".join("?" * len(chunk))), chunk).fetchall()
    return rows
