"""FleetTwin: the collector's picture of every asset of every agent, in the state database.

The state database is the embedded SQLite file or PostgreSQL shared by several collectors
(collector/state/): this module writes one SQL for both and takes the locks that make concurrent
collectors correct, which cost nothing on SQLite (one transaction at a time there).

`commit_batch` is the one place where a batch becomes durable state: in a single transaction it
updates assets, points, changes and agent health, appends the indicator history, advances the
(agent, queue epoch) watermark used for deduplication, evaluates the work-order rules, stores the
resulting work orders and queues their ITSM deliveries. Either all of it happens or none, so a
batch resent after a crash is recognised as a duplicate exactly when its effects are already stored.
Across collectors (an agent that reconnects to another collector while its old stream is not yet
dead) the transaction first locks the watermark row and reads it (`_LOCK_WATERMARK`): a second
collector with the same batch waits, then sees it stored. It then locks the batch's assets
(`asset:<id>`, sorted): the rules of an asset run in one collector at a time.

The data-quality rules (stale points, BAD data, devices offline) are judged inside that transaction
too, at the batch's own data time, from what the agent reported: a batch that waited in a queue while
the sink or the collector was down is judged at the time it describes, and nothing is judged while
nothing is committed. So an outage of the monitoring itself never blames the field. They judge every
point of the agent, so the transaction locks all the agent's assets.

`check` is the periodic half, in wall-clock time: agents whose stream is gone, work orders closed
while their condition held and due to be raised again, and each asset's `link` (can the twin see it)
and `condition` (what it sees of the equipment). Each collector records where its streams are
(`agents.present_ns`), so an agent on another collector counts as present; of several collectors the
one that gets the `periodic-check` lock judges and the others skip the round (`asset-status` and
`periodic-prune` likewise).

Lock order, the same in every transaction so that none waits for another in a circle: watermark
rows (sorted), asset locks (sorted), then the rows of those assets and their agent.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import aiosqlite
import numpy as np

from collector.condition import asset_condition
from collector.itsm import SCHEMA_PART as OUTBOX_PART
from collector.prognosis import store as remaining_life
from collector.prognosis.remaining_life import RemainingLife
from collector.state import StateConnection, StateLocation, open_state, parse_location
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
from collector.workorders.store import WorkOrder, WorkOrderListener, WorkOrders, WorkOrderStore, asset_lock
from protos.twin.v1 import twin_pb2
from runtime.schema import DatabaseSchema, Migration, SchemaPart, add_column

__all__ = ["FLEET_DATABASE", "AssetStatus", "DatabaseRuleStore", "FleetTwin", "IngestCounters"]

log = logging.getLogger("twin.collector.fleet")

CONTEXT_CHANGES_WINDOW_NS = 24 * 3600 * 10**9
CONTEXT_MAX_CHANGES = 50
CONTEXT_TREND_WINDOW_NS = 24 * 3600 * 10**9
CONTEXT_TREND_POINTS = 96
CONTEXT_EARLIER_WORK_ORDERS = 10
DEFAULT_LINK_OFFLINE_AFTER_S = 300.0  # without an agent_offline rule: when a gone gateway makes its assets offline
NOTHING_FOUND = "no open work order, no finding"
CAUSE_DEPTH = 3  # how far up the dependency map a probable cause is looked for
CHECK_LOCK = "periodic-check"
STATUS_LOCK = "asset-status"
PRUNE_LOCK = "periodic-prune"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS agents (
    agent_id TEXT PRIMARY KEY, site TEXT NOT NULL, version TEXT NOT NULL, queue_epoch TEXT NOT NULL,
    last_seen_ns INTEGER NOT NULL, connected INTEGER NOT NULL DEFAULT 0, health TEXT NOT NULL DEFAULT '{}',
    connected_ns INTEGER NOT NULL DEFAULT 0, started_ns INTEGER NOT NULL DEFAULT 0,
    present_ns INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS watermarks (
    agent_id TEXT NOT NULL, epoch TEXT NOT NULL, seq INTEGER NOT NULL, batches INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (agent_id, epoch));
CREATE TABLE IF NOT EXISTS assets (
    asset TEXT PRIMARY KEY, agent_id TEXT NOT NULL, site TEXT NOT NULL, type TEXT NOT NULL, name TEXT NOT NULL,
    depends_on TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'unknown', health REAL NOT NULL DEFAULT 100,
    state_ts_ns INTEGER NOT NULL DEFAULT 0, link TEXT NOT NULL DEFAULT 'unknown', link_reason TEXT NOT NULL DEFAULT '',
    condition TEXT NOT NULL DEFAULT 'good', condition_reason TEXT NOT NULL DEFAULT '',
    status_ns INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS assets_agent ON assets (agent_id);
CREATE TABLE IF NOT EXISTS points (
    asset TEXT NOT NULL, point TEXT NOT NULL, unit TEXT NOT NULL, kind TEXT NOT NULL,
    expected_interval_s REAL NOT NULL, mean REAL, min REAL, max REAL, last REAL, last_text TEXT,
    count INTEGER NOT NULL DEFAULT 0, bad INTEGER NOT NULL DEFAULT 0, quality TEXT NOT NULL DEFAULT 'BAD',
    reason TEXT NOT NULL DEFAULT '', ts_ns INTEGER NOT NULL DEFAULT 0, declared INTEGER NOT NULL DEFAULT 0,
    expected_since_ns INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (asset, point));
CREATE TABLE IF NOT EXISTS changes (
    id INTEGER PRIMARY KEY AUTOINCREMENT, asset TEXT NOT NULL, point TEXT NOT NULL, ts_ns INTEGER NOT NULL,
    kind TEXT NOT NULL, old_value TEXT NOT NULL, new_value TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS changes_asset_ts ON changes (asset, ts_ns);
CREATE TABLE IF NOT EXISTS vibration (
    asset TEXT NOT NULL, sensor TEXT NOT NULL, ts_ns INTEGER NOT NULL, indicators TEXT NOT NULL,
    PRIMARY KEY (asset, sensor));
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


async def _presence(db: aiosqlite.Connection) -> None:
    await add_column(db, "agents", "present_ns", "INTEGER NOT NULL DEFAULT 0")


# A new column: add it to _SCHEMA and a Migration(version=<next>, ..., add_column) here. The migrations
# bring SQLite files forward; a PostgreSQL state database gets the columns its tables lack from _SCHEMA
# (collector/state/postgres.py).
FLEET_PART = SchemaPart("fleet", _SCHEMA, (
    Migration(2, "agents.connected_ns and per-subject rule state, which releases before 0.1.0 did not have",
              _pre_release_columns),
    Migration(3, "data quality in data time and each asset's link and condition: agents.started_ns, "
              "points.declared and expected_since_ns, assets.link, condition and their reasons", _link_and_condition),
    Migration(4, "agents.present_ns: when a collector last knew the agent present (several collectors)", _presence),
))
# collector.sqlite (or the PostgreSQL state database): every component that keeps tables in it registers its
# part here; each part has its own version and migrations (runtime/schema.py), applied when it is opened.
FLEET_DATABASE = DatabaseSchema("collector.sqlite", [FLEET_PART, WORK_ORDERS_PART, history.SCHEMA_PART, OUTBOX_PART,
                                                     ANNOTATIONS_PART, remaining_life.SCHEMA_PART])

_QUALITY = {int(twin_pb2.GOOD): "GOOD", int(twin_pb2.UNCERTAIN): "UNCERTAIN", int(twin_pb2.BAD): "BAD"}
_IN_CHUNK = 500  # SQLite's limit on ? parameters is 999 on old builds

CommitGroup = tuple[str, str, Sequence[twin_pb2.Batch]]  # (agent_id, queue epoch, consecutive batches)

# Read the (agent, epoch) watermark with its row locked until the transaction ends. The row is created
# if missing and "updated" to itself: an upsert locks the row in PostgreSQL (a SELECT ... FOR UPDATE
# would lock nothing while the row does not exist yet), and a second collector's transaction with the
# same agent waits here, then reads the seq this one stored.
_LOCK_WATERMARK = ("INSERT INTO watermarks (agent_id, epoch, seq, batches) VALUES (?, ?, 0, 0) "
                   "ON CONFLICT (agent_id, epoch) DO UPDATE SET seq = watermarks.seq RETURNING seq")

_UPSERT_POINT = (
    "INSERT INTO points (asset, point, unit, kind, expected_interval_s, mean, min, max, last, last_text, "
    "count, bad, quality, reason, ts_ns) VALUES (?1, ?2, ?3, 'measurement', 0, ?4, ?5, ?6, ?7, ?8, ?9, ?10, "
    "?11, ?12, ?13) ON CONFLICT (asset, point) DO UPDATE SET "
    "mean = COALESCE(excluded.mean, points.mean), min = COALESCE(excluded.min, points.min), "
    "max = COALESCE(excluded.max, points.max), last = COALESCE(excluded.last, points.last), "
    "last_text = COALESCE(excluded.last_text, points.last_text), count = excluded.count, "
    "bad = excluded.bad, quality = excluded.quality, reason = excluded.reason, ts_ns = excluded.ts_ns "
    "WHERE excluded.ts_ns >= points.ts_ns")


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


class DatabaseRuleStore:
    """The rules' state and history inside the state database (used within a transaction).

    `preload` reads the state of every rule of the batch's assets in one query: most values change
    no state, so a batch costs one read instead of one per (summary, rule).
    """

    def __init__(self, db: StateConnection) -> None:
        self.db = db
        self._cache: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._cached_assets: set[str] = set()

    async def preload(self, assets: Iterable[str]) -> None:
        todo = sorted(set(assets) - self._cached_assets)
        for i in range(0, len(todo), _IN_CHUNK):
            where, args = self.db.dialect.in_list("asset", todo[i:i + _IN_CHUNK])
            for asset, rule, subject, state in await self.db.fetchall(
                    f"SELECT asset, rule, subject, state FROM rule_states WHERE {where}", args):
                self._cache[(asset, rule, subject)] = json.loads(state)
        self._cached_assets.update(todo)

    def add_preloaded(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """Cache rule_states rows the caller read (all the rows of the assets it then marks)."""
        for asset, rule, subject, state in rows:
            self._cache[(asset, rule, subject)] = json.loads(state)

    def mark_preloaded(self, assets: Iterable[str]) -> None:
        self._cached_assets.update(assets)

    async def load_state(self, asset: str, rule: str, subject: str) -> dict[str, Any] | None:
        if asset in self._cached_assets:
            return self._cache.get((asset, rule, subject))
        state = await self.db.fetchval("SELECT state FROM rule_states WHERE asset = ? AND rule = ? AND subject = ?",
                                       (asset, rule, subject))
        return json.loads(state) if state is not None else None

    async def save_state(self, asset: str, rule: str, subject: str, state: dict[str, Any]) -> None:
        if asset in self._cached_assets:
            self._cache[(asset, rule, subject)] = state
        await self.db.execute(
            "INSERT INTO rule_states VALUES (?, ?, ?, ?) ON CONFLICT (asset, rule, subject) DO UPDATE "
            "SET state = excluded.state", (asset, rule, subject, json.dumps(state)))

    async def active_subjects(self, asset: str, rule: str) -> list[str]:
        if asset in self._cached_assets:
            return [s for (a, r, s), st in self._cache.items() if a == asset and r == rule and st.get("active")]
        active = self.db.dialect.flag("state", "active")
        rows = await self.db.fetchall(f"SELECT subject FROM rule_states WHERE asset = ? AND rule = ? AND {active}",
                                      (asset, rule))
        return [r[0] for r in rows]

    async def series(self, asset: str, key: str, since_ns: int, until_ns: int) -> tuple[np.ndarray, np.ndarray]:
        return await history.series(self.db, asset, key, since_ns, until_ns)

    async def record_remaining_life(self, asset: str, rule: str, subject: str, ts_ns: int,
                                    assessment: RemainingLife) -> None:
        await remaining_life.record(self.db, asset, subject, rule, ts_ns, assessment)


class FleetTwin:
    def __init__(self, location: StateLocation | str, rules: Sequence[Rule] = (),
                 history_settings: HistorySettings | None = None, listener: WorkOrderListener | None = None) -> None:
        self.location = parse_location(location)
        self.state = open_state(self.location, FLEET_DATABASE)
        self.rules = tuple(rules)
        self.history = history_settings or HistorySettings()
        self.listener = listener
        self.work_orders = WorkOrders(self.state, listener)

    async def open(self) -> None:
        await self.state.open()

    async def close(self) -> None:
        await self.state.close()

    def transaction(self) -> contextlib.AbstractAsyncContextManager[StateConnection]:
        return self.state.transaction()

    def reading(self) -> contextlib.AbstractAsyncContextManager[StateConnection]:
        """Reads of committed data only, one consistent snapshot."""
        return self.state.reading()

    # ---- agents ---------------------------------------------------------------------------------
    async def register_hello(self, hello: twin_pb2.Hello, connected_ns: int | None = None) -> int:
        """Record the agent and its asset descriptors; return the watermark for its queue epoch.

        `connected_ns` marks this connection: `set_connected(..., False, since_ns=connected_ns)` at
        the end of the stream clears `connected` only if no newer connection (on this or another
        collector) has been registered since. One transaction of two round trips to the database
        (a Hello declares every point of the agent, and a thousand agents reconnect at once).
        """
        now = connected_ns if connected_ns is not None else time.time_ns()
        declared = [a.id for a in hello.assets]

        async def register(db: StateConnection) -> int:
            await db.lock(asset_lock(a) for a in declared)
            # An asset belongs to the agent that first declared it (or claims it after
            # `twin-collector assets release`): another gateway cannot take it over.
            where, args = db.dialect.in_list("asset", declared)
            (owners,) = await db.run_script(
                [("INSERT INTO assets (asset, agent_id, site, type, name, depends_on) VALUES (?, ?, ?, ?, ?, ?) "
                  "ON CONFLICT (asset) DO UPDATE SET agent_id = excluded.agent_id, site = excluded.site, "
                  "type = excluded.type, name = excluded.name, depends_on = excluded.depends_on "
                  "WHERE assets.agent_id IN ('', excluded.agent_id)",
                  [(a.id, hello.agent_id, hello.site, a.type, a.name, json.dumps(list(a.depends_on)))
                   for a in hello.assets])],
                [(f"SELECT asset, agent_id FROM assets WHERE {where}", args)])
            owner = dict(owners)
            writes: list[tuple[str, list[tuple[Any, ...]]]] = []
            points: list[tuple[Any, ...]] = []
            for a in hello.assets:
                if owner.get(a.id) != hello.agent_id:
                    log.warning("agent %s declares asset %s, which belongs to agent %s: ignored (release it with "
                                "`twin-collector assets release %s` if it moved)", hello.agent_id, a.id,
                                owner.get(a.id), a.id)
                    continue
                # Points no longer in the agent's configuration stop being expected (no stale alarms).
                retired, args = db.dialect.in_list("point", [p.name for p in a.points], negate=True)
                writes.append((f"UPDATE points SET expected_interval_s = 0, declared = 0 WHERE asset = ? AND {retired}",
                               [(a.id, *args)]))
                # expected_since_ns: silence counts from when a point is declared (or starts being expected)
                points += [(a.id, p.name, p.unit, p.kind, p.expected_interval_s, now) for p in a.points]
            writes.append((
                "INSERT INTO points (asset, point, unit, kind, expected_interval_s, declared, expected_since_ns) "
                "VALUES (?, ?, ?, ?, ?, 1, ?) "
                "ON CONFLICT (asset, point) DO UPDATE SET unit = excluded.unit, kind = excluded.kind, "
                "expected_since_ns = CASE WHEN points.declared = 0 OR points.expected_interval_s = 0 "
                "THEN excluded.expected_since_ns ELSE points.expected_since_ns END, "
                "expected_interval_s = excluded.expected_interval_s, declared = 1", points))
            undeclared, args = db.dialect.in_list("asset", declared, negate=True)
            writes.append((f"UPDATE points SET expected_interval_s = 0, declared = 0 WHERE asset IN (SELECT asset FROM "
                           f"assets WHERE agent_id = ? AND {undeclared})", [(hello.agent_id, *args)]))
            writes.append((
                "INSERT INTO agents (agent_id, site, version, queue_epoch, last_seen_ns, connected, connected_ns) "
                "VALUES (?, ?, ?, ?, ?, 1, ?) ON CONFLICT (agent_id) DO UPDATE SET site = excluded.site, "
                "version = excluded.version, queue_epoch = excluded.queue_epoch, "
                "last_seen_ns = excluded.last_seen_ns, connected = 1, connected_ns = excluded.connected_ns",
                [(hello.agent_id, hello.site, hello.version, hello.queue_epoch, now, now)]))
            seq, all_assets = await db.run_script(writes, [
                ("SELECT seq FROM watermarks WHERE agent_id = ? AND epoch = ?", (hello.agent_id, hello.queue_epoch)),
                ("SELECT asset, depends_on FROM assets ORDER BY asset", ())])
            for asset, missing in _undeclared(all_assets, declared):
                log.warning("asset %s (agent %s) depends on %s, which no agent declares: check the id in its "
                            "depends_on (or the agent that declares it has not connected yet)",
                            asset, hello.agent_id, missing)
            return int(seq[0][0]) if seq else 0

        return await self.state.run(register)

    async def release_asset(self, asset: str) -> bool:
        """Let the next agent that declares `asset` own it (the asset moved to another gateway)."""
        async def release(db: StateConnection) -> bool:
            await db.lock([asset_lock(asset)])
            return bool(await db.execute("UPDATE assets SET agent_id = '' WHERE asset = ?", (asset,)))

        return await self.state.run(release)

    async def set_connected(self, agent_id: str, connected: bool, since_ns: int | None = None) -> None:
        """Mark the agent (dis)connected. A disconnection with `since_ns` (the connection's
        `register_hello` time) is ignored when the agent has connected again since, here or to
        another collector."""
        async def mark(db: StateConnection) -> None:
            if since_ns is None or connected:
                await db.execute("UPDATE agents SET connected = ?, last_seen_ns = ? WHERE agent_id = ?",
                                 (int(connected), time.time_ns(), agent_id))
            else:
                await db.execute("UPDATE agents SET connected = 0, last_seen_ns = ? WHERE agent_id = ? "
                                 "AND connected_ns = ?", (time.time_ns(), agent_id, since_ns))

        await self.state.run(mark)

    async def asset_types(self, agent_id: str) -> dict[str, str]:
        async with self.state.reading() as db:
            return {a: t for a, t in await db.fetchall("SELECT asset, type FROM assets WHERE agent_id = ?",
                                                        (agent_id,))}

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
        caller may retry the groups one by one to find the one at fault); a conflict with another
        collector's transaction runs it again (StateDatabase.run). First the watermark rows of every
        group are locked and read, in key order, then the agents' assets are locked, in order: one
        lock order in every collector. The batches then go in rounds (every group's first batch,
        then every second one, ...): a round's writes, with the asset types and rule state the rules
        need, are one script sent together (one call to SQLite's thread), and the rules see each
        batch right after its round is written, so what they read (history, rule state) is what they
        saw when batches came one at a time. Agents own disjoint assets, so batches of different
        agents in one round do not meet.
        """
        async def commit(db: StateConnection) -> list[list[WorkOrder]]:
            changed: list[list[WorkOrder]] = [[] for _ in groups]
            keys = sorted({(agent, epoch) for agent, epoch, _ in groups})
            marks = await db.run_script([], [(_LOCK_WATERMARK, key) for key in keys])
            watermarks = {key: int(rows[0][0]) for key, rows in zip(keys, marks, strict=True)}
            fresh: list[list[twin_pb2.Batch]] = []
            for agent, epoch, batches in groups:
                mine: list[twin_pb2.Batch] = []
                for batch in batches:
                    if batch.seq > watermarks[(agent, epoch)]:
                        mine.append(batch)
                        watermarks[(agent, epoch)] = batch.seq
                fresh.append(mine)
            if not any(fresh):
                return changed
            agents = sorted({groups[g][0] for g, f in enumerate(fresh) if f})
            owned = [r[0] for chunk in _chunks(agents) for r in await db.fetchall(
                "SELECT asset FROM assets WHERE " + db.dialect.in_list("agent_id", chunk)[0],
                db.dialect.in_list("agent_id", chunk)[1])]
            await db.lock(asset_lock(a) for a in {*owned, *_batch_assets([b for f in fresh for b in f])})
            store = DatabaseRuleStore(db) if self.rules else None
            types: dict[str, str] = {}
            now = time.time_ns()
            for r in range(max(len(f) for f in fresh)):
                items = [(g, groups[g][0], groups[g][1], f[r]) for g, f in enumerate(fresh) if r < len(f)]
                writes: dict[str, list[tuple[Any, ...]]] = {}
                touched: set[str] = set()
                for _, agent, epoch, batch in items:
                    for sql, rows in self._batch_statements(agent, epoch, batch, now):
                        writes.setdefault(sql, []).extend(rows)
                    touched |= {s.asset for s in batch.summaries} | {v.asset for v in batch.vibration}
                reads: list[tuple[str, Sequence[Any]]] = []
                new = sorted(touched - types.keys()) if store is not None else []
                for chunk in _chunks(new):
                    where, args = db.dialect.in_list("asset", chunk)
                    reads += [(f"SELECT asset, type FROM assets WHERE {where}", args),
                              (f"SELECT asset, rule, subject, state FROM rule_states WHERE {where}", args)]
                results = await db.run_script(list(writes.items()), reads)
                if store is None:
                    continue
                for k in range(0, len(results), 2):
                    types.update({a: t for a, t in results[k]})
                    store.add_preloaded(results[k + 1])
                store.mark_preloaded(new)
                for g, agent, _, batch in items:
                    changed[g] += await self._evaluate_rules(db, batch, store, types, agent)
            return changed

        return await self.state.run(commit)

    async def skip_batch(self, agent_id: str, epoch: str, seq: int) -> None:
        """Advance the watermark past a batch that can never be stored, so it does not block the agent."""
        async def skip(db: StateConnection) -> None:
            await db.execute(
                "INSERT INTO watermarks (agent_id, epoch, seq, batches) VALUES (?, ?, ?, 0) "
                "ON CONFLICT (agent_id, epoch) DO UPDATE SET seq = CASE WHEN excluded.seq > watermarks.seq "
                "THEN excluded.seq ELSE watermarks.seq END", (agent_id, epoch, seq))

        await self.state.run(skip)

    def _batch_statements(self, agent_id: str, epoch: str, batch: twin_pb2.Batch,
                          now_ns: int) -> list[tuple[str, list[tuple[Any, ...]]]]:
        """A batch's effects besides the rules, as (sql, rows) statements: twin, history, watermark, agent."""
        out = [*self._summary_statements(batch), *self._change_state_statements(batch),
               *history.batch_statements(batch, self.history),
               ("UPDATE watermarks SET seq = ?, batches = batches + 1 WHERE agent_id = ? AND epoch = ?",
                [(batch.seq, agent_id, epoch)])]
        if batch.HasField("health"):
            h = batch.health
            health = {f.name: getattr(h, f.name) for f in h.DESCRIPTOR.fields}
            # started_ns: when the agent process started, in its own clock (silence counts from there)
            out.append(("UPDATE agents SET last_seen_ns = ?, health = ?, started_ns = ? WHERE agent_id = ?",
                        [(now_ns, history.dumps_finite(health), h.ts_ns - int(h.uptime_s * 1e9) if h.ts_ns else 0,
                          agent_id)]))
        else:
            out.append(("UPDATE agents SET last_seen_ns = ? WHERE agent_id = ?", [(now_ns, agent_id)]))
        return out

    async def watermark(self, agent_id: str, epoch: str) -> int:
        async with self.state.reading() as db:
            seq = await db.fetchval("SELECT seq FROM watermarks WHERE agent_id = ? AND epoch = ?", (agent_id, epoch))
        return int(seq) if seq is not None else 0

    @staticmethod
    def _summary_statements(batch: twin_pb2.Batch) -> list[tuple[str, list[tuple[Any, ...]]]]:
        rows: list[tuple[Any, ...]] = []
        for s in batch.summaries:
            quality = _QUALITY.get(int(s.quality), "BAD")
            if s.count:
                rows.append((s.asset, s.point, s.unit, s.mean, s.min, s.max, s.last, s.last_text or None,
                             s.count, s.bad_count, quality, s.reason, s.last_ns))
            else:  # no good value in the interval: keep the last good value, record the quality
                rows.append((s.asset, s.point, s.unit, None, None, None, None, None, 0, s.bad_count,
                             quality, s.reason, s.last_ns))
        return [(_UPSERT_POINT, rows)] if rows else []

    @staticmethod
    def _change_state_statements(batch: twin_pb2.Batch) -> list[tuple[str, list[tuple[Any, ...]]]]:
        out: list[tuple[str, list[tuple[Any, ...]]]] = []
        if batch.changes:
            out.append(("INSERT INTO changes (asset, point, ts_ns, kind, old_value, new_value) VALUES "
                        "(?, ?, ?, ?, ?, ?)",
                        [(c.asset, c.point, c.ts_ns, c.kind, c.old_value, c.new_value) for c in batch.changes]))
        if batch.asset_states:  # in asset order, as the periodic status refresh updates them: no deadlock
            out.append(("UPDATE assets SET state = ?, health = ?, state_ts_ns = ? WHERE asset = ? AND state_ts_ns <= ?",
                        [(s.state, s.health, s.ts_ns, s.asset, s.ts_ns)
                         for s in sorted(batch.asset_states, key=lambda s: s.asset)]))
        if batch.vibration:
            blocks = []
            for v in batch.vibration:
                doc = {f.name: getattr(v, f.name) for f in v.DESCRIPTOR.fields if f.name != "diagnosis"}
                doc["diagnosis"] = [{"fault": d.fault, "confidence": d.confidence, "evidence": d.evidence}
                                    for d in v.diagnosis]
                blocks.append((v.asset, v.sensor, v.ts_ns, history.dumps_finite(doc)))
            out.append(("INSERT INTO vibration VALUES (?, ?, ?, ?) ON CONFLICT (asset, sensor) DO UPDATE SET "
                        "ts_ns = excluded.ts_ns, indicators = excluded.indicators "
                        "WHERE excluded.ts_ns >= vibration.ts_ns", blocks))
            # Waveform points reach the collector as indicators, not summaries: an analysed block is
            # a good, fresh reading of its sensor point (for the twin and the stale-data rule).
            out.append(("UPDATE points SET ts_ns = ?, quality = 'GOOD', reason = '' WHERE asset = ? AND point = ? "
                        "AND ts_ns <= ?", [(v.ts_ns, v.asset, v.sensor, v.ts_ns) for v in batch.vibration]))
        return out

    async def _evaluate_rules(self, db: StateConnection, batch: twin_pb2.Batch, store: DatabaseRuleStore,
                              types: dict[str, str], agent_id: str = "") -> list[WorkOrder]:
        """The rules on a batch just written (`types` and `store`'s cache hold its assets)."""
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

    async def _judge_data_quality(self, db: StateConnection, store: DatabaseRuleStore, agent_id: str,
                                  batch: twin_pb2.Batch) -> list[Finding]:
        """Data-quality rules over every point the agent declared, at the batch's data time (its interval
        end): what the agent reported, whenever the collector gets to store it."""
        now = batch.created_ns or max([s.interval_end_ns for s in batch.summaries]
                                      + [v.ts_ns for v in batch.vibration], default=0)
        if now <= 0:
            return []
        started = int(await db.fetchval("SELECT started_ns FROM agents WHERE agent_id = ?", (agent_id,)) or 0)
        rows = await db.fetchall(
            "SELECT p.asset, a.type, p.point, p.expected_interval_s, p.ts_ns, p.count, p.quality, p.reason, "
            "p.expected_since_ns FROM points p JOIN assets a ON a.asset = p.asset "
            "WHERE a.agent_id = ? AND p.declared = 1 ORDER BY p.asset, p.point", (agent_id,))
        reports = [PointReport(asset, atype, point, float(expected), int(ts), count == 0 and quality == "BAD",
                               str(reason), max(started, int(since)))
                   for asset, atype, point, expected, ts, count, quality, reason, since in rows]
        await store.preload({r.asset for r in reports})
        return await evaluate_data_quality(self.rules, store, now, reports)

    async def _apply(self, db: StateConnection, findings: list[Finding]) -> list[WorkOrder]:
        store = WorkOrderStore(db, self.listener)
        changed: dict[int, WorkOrder] = {}
        for finding in findings:
            async def context(finding: Finding = finding) -> dict[str, Any]:
                return await self.context(finding.asset, db, finding)

            async def cause(finding: Finding = finding) -> dict[str, Any] | None:
                return await self.probable_cause(db, finding)
            await db.lock([asset_lock(finding.asset)])  # held already on ingest; the periodic check takes it here
            wo = await store.apply(finding, context, cause)
            if wo is not None:
                changed[wo.id] = wo
        return list(changed.values())

    async def apply_findings(self, findings: Sequence[Finding]) -> list[WorkOrder]:
        """Apply findings made outside a batch (the collector's own incidents) in one transaction."""
        if not findings:
            return []
        return await self.state.run(lambda db: self._apply(db, list(findings)))

    async def probable_cause(self, db: StateConnection, finding: Finding) -> dict[str, Any] | None:
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
        agent = await db.fetchval("SELECT agent_id FROM assets WHERE asset = ?", (finding.asset,))
        while frontier and depth < CAUSE_DEPTH:
            depth += 1
            upstream: list[str] = []
            for asset in frontier:
                depends_on = await db.fetchval("SELECT depends_on FROM assets WHERE asset = ?", (asset,))
                for dep in json.loads(depends_on) if depends_on is not None else []:
                    if dep not in seen:
                        seen.add(dep)
                        upstream.append(dep)
                        relation[dep] = f"{asset} depends on {dep}"
            if depth == 1 and agent is not None and agent not in seen:
                seen.add(agent)
                upstream.append(agent)
                relation[agent] = f"{finding.asset} is served by gateway {agent}"
            for up in upstream:
                for ref_id, rule, severity, category, title, evidence, created in await db.fetchall(
                        "SELECT id, rule, severity, category, title, evidence, created_ns FROM work_orders "
                        "WHERE asset = ? AND status != 'closed' AND created_ns <= ?", (up, finding.ts_ns)):
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
    async def record_presence(self, presence: dict[str, int]) -> None:
        """Store when this collector last knew each of its agents present (its open streams, their last
        message or their end): with several collectors, an agent is present if any of them says so."""
        if not presence:
            return

        async def record(db: StateConnection) -> None:
            await db.executemany(
                "UPDATE agents SET present_ns = CASE WHEN ? > present_ns THEN ? ELSE present_ns END "
                "WHERE agent_id = ?", [(ns, ns, agent) for agent, ns in sorted(presence.items())])

        await self.state.run(record)

    async def check(self, now_ns: int | None = None, presence: dict[str, int] | None = None,
                    judge_agents: bool = True, watch_since_ns: int = 0) -> list[WorkOrder]:
        """The wall-clock half of the rules at `now_ns`; return changed work orders.

        `presence`: when each of this collector's agents was last known present (the daemon's ingest
        knows); it is recorded first, and agents are judged on what every collector recorded. Without
        it the stored connection state stands in. `judge_agents` False while the collector itself is
        failing: silence during its own outage proves nothing. `watch_since_ns`: when the collector
        (re)started or recovered; no agent is judged silent from before it.

        With several collectors on one database, the one that holds the `periodic-check` lock judges and
        the others skip the round (an empty list). Only this check writes the agent_offline rule's
        state, so holding that one lock serialises it; a finding's work order is changed under its
        asset's lock like any other.
        """
        now = now_ns if now_ns is not None else time.time_ns()
        if presence is not None:
            await self.record_presence(presence)

        async def judge(db: StateConnection) -> list[WorkOrder]:
            if not await db.try_lock(CHECK_LOCK):
                return []
            findings: list[Finding] = []
            if judge_agents and any(isinstance(r, AgentOfflineRule) for r in self.rules):
                statuses = await self._agent_statuses(db, now, presence is not None, watch_since_ns)
                findings = await evaluate_tick(self.rules, DatabaseRuleStore(db), now, statuses)
            changed = {wo.id: wo for wo in await self._apply(db, findings)}

            async def context(wo: WorkOrder) -> dict[str, Any]:
                return await self.context(wo.asset, db)
            reraise = {r.name: r.reraise_after_s for r in (*self.rules, collector_health_rule(self.rules))}
            for wo in await WorkOrderStore(db, self.listener).reraise_due(now, reraise, context):
                changed[wo.id] = wo
            return list(changed.values())

        return await self.state.run(judge)

    @staticmethod
    async def _presence(db: StateConnection, now: int, recorded: bool) -> dict[str, tuple[int, int, bool]]:
        """agent -> (when last known present, last seen, connected): the collectors' records of their
        streams, or its Hello or last stored batch if later (an agent that registered after the
        records were taken, while this check waited for the database, is present); without records the
        stored connection state."""
        out = {}
        for agent, seen, connected, present in await db.fetchall(
                "SELECT agent_id, last_seen_ns, connected, present_ns FROM agents"):
            known = max(int(present), int(seen)) if recorded else (now if connected else int(seen))
            out[agent] = (known, int(seen), bool(connected))
        return out

    async def _agent_statuses(self, db: StateConnection, now: int, recorded: bool,
                              watch_since_ns: int) -> list[AgentStatus]:
        served: dict[str, list[str]] = {}
        for asset, agent in await db.fetchall("SELECT asset, agent_id FROM assets ORDER BY asset"):
            served.setdefault(agent, []).append(asset)
        return [AgentStatus(agent, max(present, watch_since_ns), served.get(agent, []))
                for agent, (present, _, _) in (await self._presence(db, now, recorded)).items()]

    async def refresh_asset_status(self, now_ns: int | None = None, presence: dict[str, int] | None = None
                                   ) -> list[AssetStatus]:
        """Recompute every asset's link and condition; return those that changed.

        link: the gateway's stream (gone past the agent_offline limit: offline; gone for less:
        degraded, as a reconnect or a restart may be under way) and, while it is there, the state the
        agent reports for the asset (online, degraded: some points BAD or silent, offline: none
        delivering). condition: see collector/condition.py. `presence` as for `check` (recorded there
        first when given). Of several collectors, the one that holds the `asset-status` lock refreshes;
        the others return [].
        """
        now = now_ns if now_ns is not None else time.time_ns()
        limits = [r.offline_after_s for r in self.rules if isinstance(r, AgentOfflineRule)]
        offline_after_ns = int((min(limits) if limits else DEFAULT_LINK_OFFLINE_AFTER_S) * 1e9)

        async def refresh(db: StateConnection) -> list[AssetStatus]:
            if not await db.try_lock(STATUS_LOCK):
                return []
            changed: list[AssetStatus] = []
            agents = await self._presence(db, now, presence is not None)
            open_wos: dict[str, list[dict[str, Any]]] = {}
            for ref_id, asset, category, severity, title in await db.fetchall(
                    "SELECT id, asset, category, severity, title FROM work_orders WHERE status != 'closed' "
                    "ORDER BY id"):
                open_wos.setdefault(asset, []).append({"ref": f"WO-{ref_id:06d}", "category": category,
                                                       "severity": severity, "title": title})
            vibration: dict[str, dict[str, Any]] = {}
            for asset, sensor, doc in await db.fetchall("SELECT asset, sensor, indicators FROM vibration"):
                vibration.setdefault(asset, {})[sensor] = json.loads(doc)
            bad: dict[str, tuple[int, int, str]] = {}
            for asset, total, n_bad, reason in await db.fetchall(
                    "SELECT asset, COUNT(*), SUM(CASE WHEN quality = 'BAD' AND count = 0 THEN 1 ELSE 0 END), "
                    "MAX(CASE WHEN quality = 'BAD' THEN reason END) FROM points WHERE declared = 1 GROUP BY asset"):
                bad[asset] = (int(total), int(n_bad or 0), str(reason or ""))
            rows = await db.fetchall(
                "SELECT asset, site, agent_id, state, link, link_reason, condition, condition_reason "
                "FROM assets ORDER BY asset")
            for asset, site, agent, state, *old in rows:
                present = agents.get(agent, (0, 0, False))[0]
                if agent and present < now and now - present > offline_after_ns:
                    link, link_reason = "offline", f"gateway {agent} gone for {(now - present) / 1e9:.0f} s"
                elif agent and present < now:
                    link, link_reason = "degraded", f"gateway {agent} disconnected {(now - present) / 1e9:.0f} s ago"
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

        return await self.state.run(refresh)

    async def asset_statuses(self) -> list[AssetStatus]:
        async with self.state.reading() as db:
            return [AssetStatus(*r) for r in await db.fetchall(
                "SELECT asset, site, link, link_reason, condition, condition_reason FROM assets ORDER BY asset")]

    async def prune_history(self, now_ns: int | None = None) -> int:
        """Delete history (and delivered ITSM outbox rows) older than the retention."""
        now = now_ns if now_ns is not None else time.time_ns()
        before = now - int(self.history.retention_days * 86_400e9)

        async def prune(db: StateConnection) -> int:
            if not await db.try_lock(PRUNE_LOCK):
                return 0
            outbox = await db.execute("DELETE FROM outbox WHERE delivered_ns IS NOT NULL AND delivered_ns < ?",
                                      (before,))
            return await history.prune(db, before) + outbox + await remaining_life.prune(db, before)

        return await self.state.run(prune)

    async def twin(self, asset: str) -> dict[str, Any] | None:
        """One asset's twin for the API: state, latest values and indicators, dependencies, open work orders."""
        async with self.state.reading() as db:
            doc = await self.asset(asset, db)
            if doc is None:
                return None
            dependents = await _dependents(db, asset)
            doc["depends_on"] = [await self._neighbour(db, d) for d in doc["depends_on"]]
            doc["dependents"] = [await self._neighbour(db, d) for d in dependents]
            doc["open_work_orders"] = [
                {k: v for k, v in wo.to_dict().items() if k != "context"}
                for wo in await WorkOrderStore(db).list(status="active", asset=asset)]
            return doc

    # ---- reads (on `db` when given, else on a read of their own) --------------------------------
    async def asset(self, asset: str, db: StateConnection | None = None) -> dict[str, Any] | None:
        if db is None:
            async with self.state.reading() as db:
                return await self.asset(asset, db)
        row = await db.fetchone("SELECT asset, agent_id, site, type, name, depends_on, state, health, state_ts_ns, "
                                "link, link_reason, condition, condition_reason FROM assets WHERE asset = ?", (asset,))
        if row is None:
            return None
        points = {}
        for p in await db.fetchall(
                "SELECT point, unit, mean, min, max, last, last_text, quality, reason, ts_ns FROM points "
                "WHERE asset = ? ORDER BY point", (asset,)):
            points[p[0]] = {"unit": p[1], "mean": p[2], "min": p[3], "max": p[4], "last": p[5],
                            "text": p[6], "quality": p[7], "reason": p[8], "ts_ns": p[9]}
        vib = {s: json.loads(doc) for s, doc in await db.fetchall(
            "SELECT sensor, indicators FROM vibration WHERE asset = ?", (asset,))}
        return {"id": row[0], "agent": row[1], "site": row[2], "type": row[3], "name": row[4],
                "depends_on": json.loads(row[5]), "state": row[6], "health": row[7], "state_ts_ns": row[8],
                "link": row[9], "link_reason": row[10], "condition": row[11], "condition_reason": row[12],
                "points": points, "vibration": vib, "remaining_life": await remaining_life.latest(db, asset)}

    async def undeclared_dependencies(self) -> list[tuple[str, str]]:
        """(asset, depends_on id) pairs whose id no agent has declared."""
        async with self.state.reading() as db:
            return await undeclared_dependencies(db)

    async def assets(self) -> list[dict[str, Any]]:
        async with self.state.reading() as db:
            out = []
            for (name,) in await db.fetchall("SELECT asset FROM assets ORDER BY asset"):
                doc = await self.asset(name, db)
                if doc is not None:
                    out.append(doc)
            return out

    async def asset_summaries(self) -> list[dict[str, Any]]:
        """Every asset with its state and how many work orders are open on it (the API's /assets)."""
        async with self.state.reading() as db:
            rows = await db.fetchall(
                "SELECT a.asset, a.type, a.name, a.site, a.agent_id, a.state, a.health, a.depends_on, "
                "(SELECT COUNT(*) FROM work_orders w WHERE w.asset = a.asset AND w.status != 'closed'), "
                "a.link, a.link_reason, a.condition, a.condition_reason FROM assets a ORDER BY a.asset")
        return [{"id": r[0], "type": r[1], "name": r[2], "site": r[3], "agent": r[4], "state": r[5],
                 "health": r[6], "depends_on": json.loads(r[7]), "open_work_orders": int(r[8]),
                 "link": r[9], "link_reason": r[10], "condition": r[11], "condition_reason": r[12]} for r in rows]

    async def context(self, asset: str, db: StateConnection | None = None,
                      finding: Finding | None = None) -> dict[str, Any]:
        """What a responder needs beside the finding, captured when the work order is raised.

        The asset's state, latest values and vibration indicators; its state, setpoint and
        configuration changes in the 24 h before the finding; the assets it depends on and those
        that depend on it, with their states and open work orders; the recent values of the
        indicator that triggered the finding; and earlier work orders on the same asset.
        """
        if db is None:
            async with self.state.reading() as db:
                return await self.context(asset, db, finding)
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
            for p, ts, k, o, n in await db.fetchall(
                "SELECT point, ts_ns, kind, old_value, new_value FROM changes WHERE asset = ? AND ts_ns >= ? "
                "AND ts_ns <= ? ORDER BY ts_ns DESC, id DESC LIMIT ?",
                (asset, ref_ns - CONTEXT_CHANGES_WINDOW_NS, ref_ns, CONTEXT_MAX_CHANGES))
        ]
        dependents = await _dependents(db, asset)
        earlier = [{"ref": f"WO-{i:06d}", "rule": r, "severity": sev, "status": st, "title": t, "created_ns": c,
                    "closed_ns": cl, "closed_by": by, "note": n}
                   for i, r, sev, st, t, c, cl, by, n in await db.fetchall(
                       "SELECT id, rule, severity, status, title, created_ns, closed_ns, closed_by, note "
                       "FROM work_orders WHERE asset = ? ORDER BY id DESC LIMIT ?",
                       (asset, CONTEXT_EARLIER_WORK_ORDERS))]
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

    async def _neighbour(self, db: StateConnection, other: str) -> dict[str, Any]:
        row = await db.fetchone("SELECT state, health, type FROM assets WHERE asset = ?", (other,))
        open_wos = [{"ref": f"WO-{i:06d}", "rule": r, "severity": s, "title": t} for i, r, s, t in await db.fetchall(
            "SELECT id, rule, severity, title FROM work_orders WHERE asset = ? AND status != 'closed' ORDER BY id",
            (other,))]
        return {"asset": other, "state": row[0] if row else "unknown", "health": row[1] if row else None,
                "type": row[2] if row else None, "open_work_orders": [w["ref"] for w in open_wos],
                "open_work_order_details": open_wos}

    async def _trend(self, db: StateConnection, asset: str, key: str, ref_ns: int,
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

    async def agent(self, agent_id: str, db: StateConnection | None = None) -> dict[str, Any] | None:
        if db is None:
            async with self.state.reading() as db:
                return await self.agent(agent_id, db)
        row = await db.fetchone("SELECT agent_id, site, version, last_seen_ns, connected, health FROM agents "
                                "WHERE agent_id = ?", (agent_id,))
        if row is None:
            return None
        assets = [r[0] for r in await db.fetchall("SELECT asset FROM assets WHERE agent_id = ? ORDER BY asset",
                                                  (agent_id,))]
        return {"id": row[0], "site": row[1], "version": row[2], "last_seen_ns": row[3], "connected": bool(row[4]),
                "health": json.loads(row[5]), "assets": assets}

    async def agents(self) -> list[dict[str, Any]]:
        async with self.state.reading() as db:
            ids = [r[0] for r in await db.fetchall("SELECT agent_id FROM agents ORDER BY agent_id")]
            return [a for a in [await self.agent(i, db) for i in ids] if a is not None]

    # ---- work-order lifecycle (people, through the API or the CLI) ----------------------------
    async def acknowledge(self, wo_id: int, who: str, note: str = "") -> WorkOrder:
        return await self.work_orders.acknowledge(wo_id, who, note)

    async def close_work_order(self, wo_id: int, who: str, note: str = "") -> WorkOrder:
        return await self.work_orders.close(wo_id, who, note)


def _batch_assets(batches: Sequence[twin_pb2.Batch]) -> set[str]:
    return {e.asset for b in batches for entries in (b.summaries, b.vibration, b.changes, b.asset_states)
            for e in entries}


def _chunks(keys: Sequence[str]) -> list[Sequence[str]]:
    """`keys` in pieces small enough for one IN list (SQLite binds at most 999 values on old builds)."""
    return [keys[i:i + _IN_CHUNK] for i in range(0, len(keys), _IN_CHUNK)]


async def _dependents(db: StateConnection, asset: str) -> list[str]:
    """Assets whose depends_on names `asset`."""
    return [r[0] for r in await db.fetchall(
        f"SELECT asset FROM assets WHERE {db.dialect.contains('depends_on')} ORDER BY asset", (asset,))]


def _undeclared(rows: Iterable[tuple[Any, ...]], assets: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """(asset, id) for each `depends_on` id of the (asset, depends_on) rows that is not an asset."""
    rows = list(rows)
    known = {a for a, _ in rows}
    return [(a, d) for a, deps in rows if assets is None or a in assets
            for d in sorted(set(json.loads(deps))) if d not in known]


async def undeclared_dependencies(db: StateConnection, assets: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """(asset, id) for each `depends_on` id that is not an asset of any agent (of `assets`, or all)."""
    return _undeclared(await db.fetchall("SELECT asset, depends_on FROM assets ORDER BY asset"), assets)
