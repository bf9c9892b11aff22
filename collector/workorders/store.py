"""Work orders in the state database: one open work order per (asset, rule), lifecycle open ->
acknowledged -> closed.

`WorkOrderStore` works on the caller's connection and never commits on its own: the caller owns the
transaction (FleetTwin), so a work order is created in the same transaction that stores the batch
which caused it, and a crash followed by a resent batch can never raise it twice. Every change is
an event row; a `WorkOrderListener` (the ITSM outbox) is called for each event inside the same
transaction, so a change and its forwarding are stored together or not at all. `WorkOrders` is the
same for callers without a transaction of their own: reads, and the lifecycle steps people take.

With several collectors on one PostgreSQL database, one open work order per (asset, rule) holds
because the partial unique index `work_orders_one_open` says so; the callers change an asset's
work orders under its lock (`asset_lock`) and the open work order's row is read FOR UPDATE, so a
person closing it and a rule refreshing it wait for each other instead of crossing. The events'
`annotated` flag says whether the time-series store has the change (workorders/annotations.py).

One work order, several subjects: a rule judges each sensor (vibration) or point (data quality) on its
own, but the work order is per (asset, rule). Each subject's latest finding is kept (`subjects`), and
the work order's title, description and evidence are always rendered from them together
(`render_subjects`): one subject is shown as its finding says; several are led by the worst, with
the others named in the title ("... (also nde)") and their evidence under `also`. So the title, the
description and the evidence always name the same point or sensor.

Re-raise policy (what a finding does when no work order is open for its (asset, rule)):
- `raise` opens a new work order. Rules raise only on the rising edge of their condition, so after
  a close a new work order comes when the condition has cleared and returned ...
- ... or when it still holds `reraise_after_s` (per rule, default 24 h) after the close
  (`reraise_due`, called by the collector's periodic check): closing says "we know", not "never
  again". A clear after the close is noted on the closed work order, which stops that.
- `escalate` while the condition persists after someone closed the work order opens a new one at the
  higher severity: closing is not "ignore it however bad it gets".
With a work order open, `raise` refreshes its subject's finding (severity only ever goes up),
`escalate` raises its severity and `clear` notes that the condition cleared; a person closes it.

A new work order may name its `probable_cause`: an open work order on an asset it depends on that
explains the symptom (the fleet twin decides which, see FleetTwin.probable_cause).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import aiosqlite

from collector.state import StateConnection, StateDatabase
from collector.workorders.rules import SEVERITIES, Finding
from runtime.schema import Migration, SchemaPart, add_column

__all__ = ["SCHEMA", "SCHEMA_PART", "STATUSES", "WorkOrder", "WorkOrderEvent", "WorkOrderListener", "WorkOrderStore",
           "WorkOrders", "asset_lock", "close_warning", "condition_holds", "parse_ref", "render_subjects"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS work_orders (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    asset TEXT NOT NULL, rule TEXT NOT NULL, severity TEXT NOT NULL, title TEXT NOT NULL,
    description TEXT NOT NULL, evidence TEXT NOT NULL, context TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'open', created_ns INTEGER NOT NULL, updated_ns INTEGER NOT NULL,
    condition_cleared_ns INTEGER, acknowledged_by TEXT, acknowledged_ns INTEGER,
    closed_by TEXT, closed_ns INTEGER, note TEXT NOT NULL DEFAULT '',
    category TEXT NOT NULL DEFAULT 'corrective', subjects TEXT NOT NULL DEFAULT '{}', probable_cause TEXT);
CREATE UNIQUE INDEX IF NOT EXISTS work_orders_one_open ON work_orders (asset, rule) WHERE status != 'closed';
CREATE INDEX IF NOT EXISTS work_orders_asset ON work_orders (asset, id);
CREATE TABLE IF NOT EXISTS work_order_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, work_order INTEGER NOT NULL, ts_ns INTEGER NOT NULL,
    action TEXT NOT NULL, detail TEXT NOT NULL, annotated INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS work_order_events_of ON work_order_events (work_order, id);
CREATE INDEX IF NOT EXISTS work_order_events_unannotated ON work_order_events (id) WHERE annotated = 0;
"""

STATUSES = ("open", "acknowledged", "closed")


async def _add_category(db: aiosqlite.Connection) -> None:
    await add_column(db, "work_orders", "category", "TEXT NOT NULL DEFAULT 'corrective'")


async def _add_subjects_and_cause(db: aiosqlite.Connection) -> None:
    # rows from before: their one finding is re-rendered on its next change
    await add_column(db, "work_orders", "subjects", "TEXT NOT NULL DEFAULT '{}'")
    await add_column(db, "work_orders", "probable_cause", "TEXT")


async def _add_annotated(db: aiosqlite.Connection) -> None:
    # which events the time-series store has (the annotations part marks those its old cursor had passed)
    await add_column(db, "work_order_events", "annotated", "INTEGER NOT NULL DEFAULT 0")


# Registered with the fleet database (collector/fleet.py, runtime/schema.py). A new column: add it to
# SCHEMA and a Migration(version=<next>, ..., add_column) here; a PostgreSQL state database gets it from
# SCHEMA (collector/state/postgres.py).
SCHEMA_PART = SchemaPart("work_orders", SCHEMA, (
    Migration(2, "work_orders.category, which releases before 0.1.0 did not have", _add_category),
    Migration(3, "work_orders.subjects (one work order, several subjects) and probable_cause",
              _add_subjects_and_cause),
    Migration(4, "work_order_events.annotated: each event marked once InfluxDB has it (several collectors)",
              _add_annotated),
))


@dataclass(frozen=True, slots=True)
class WorkOrder:
    id: int
    asset: str
    rule: str
    severity: str
    title: str
    description: str
    evidence: dict[str, Any]
    context: dict[str, Any]
    status: str
    created_ns: int
    updated_ns: int
    condition_cleared_ns: int | None
    acknowledged_by: str | None
    acknowledged_ns: int | None
    closed_by: str | None
    closed_ns: int | None
    note: str
    category: str = "corrective"
    subjects: dict[str, Any] = field(default_factory=dict)  # subject -> its latest finding (see module doc)
    probable_cause: dict[str, Any] | None = None  # {ref, asset, rule, title, relation} or None

    @property
    def ref(self) -> str:
        return f"WO-{self.id:06d}"

    def to_dict(self) -> dict[str, Any]:
        doc = {"ref": self.ref, **asdict(self)}
        del doc["subjects"]  # bookkeeping: title, description and evidence are rendered from it
        return doc


def condition_holds(wo: WorkOrder) -> bool:
    """True when no clear of the condition was noted since the work order was raised (or last recurred)."""
    return wo.condition_cleared_ns is None


def close_warning(wo: WorkOrder, reraise_after_s: float) -> str | None:
    """What to tell whoever closes `wo` while its condition still holds (None when it cleared)."""
    if not condition_holds(wo):
        return None
    if reraise_after_s <= 0:
        return (f"the condition of {wo.ref} still holds (no clear since it was raised); its rule {wo.rule} "
                "does not raise it again (reraise_after_s = 0) unless it clears and returns")
    return (f"the condition of {wo.ref} still holds (no clear since it was raised): it will be raised again in "
            f"{_age(reraise_after_s)} if it still holds then (rule {wo.rule}, reraise_after_s = {reraise_after_s:g})")


def render_subjects(subjects: Mapping[str, Mapping[str, Any]]) -> tuple[str, str, dict[str, Any]]:
    """Title, description and evidence of a work order from its subjects' findings (see module doc).

    Whatever a rule's (or a configured) title and description say, each names its subject: a subject
    they do not mention is added, so the three can never point at different points or sensors.
    """
    def named(subject: str, entry: Mapping[str, Any]) -> tuple[str, str]:
        title, desc = str(entry["title"]), str(entry["description"])
        if subject and subject not in title:
            title = f"{title} ({subject})"
        if subject and subject not in desc:
            desc = f"{subject}: {desc}"
        return title, " ".join(filter(None, [entry.get("reraised"), desc]))

    entries = list(subjects.items())
    order = {subject: i for i, (subject, _) in enumerate(entries)}
    lead_subject, lead = max(entries, key=lambda kv: (SEVERITIES.index(kv[1]["severity"]), -order[kv[0]]))
    title, description = named(lead_subject, lead)
    evidence = dict(lead["evidence"])
    others = [(s, e) for s, e in entries if s != lead_subject]
    if others:
        title = f"{title} (also {', '.join(s for s, _ in others)})"
        description = " ".join([description, "Also:", *(named(s, e)[1] for s, e in others)])
        evidence["also"] = {s: e["evidence"] for s, e in others}
    return title, description, evidence


@dataclass(frozen=True, slots=True)
class WorkOrderEvent:
    """One change of a work order: raised, recurred, escalated, condition_cleared, acknowledged, closed."""

    id: int
    work_order: int
    ts_ns: int
    action: str
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class WorkOrderListener(Protocol):
    """Told about every change inside the transaction that makes it (the ITSM outbox)."""

    async def work_order_changed(self, db: StateConnection, wo: WorkOrder, event: WorkOrderEvent) -> None: ...


_COLUMNS = ("id, asset, rule, severity, title, description, evidence, context, status, created_ns, updated_ns, "
            "condition_cleared_ns, acknowledged_by, acknowledged_ns, closed_by, closed_ns, note, category, subjects, "
            "probable_cause")


def _row(r: tuple[Any, ...]) -> WorkOrder:
    return WorkOrder(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), json.loads(r[7]), *r[8:18],
                     json.loads(r[18] or "{}"), json.loads(r[19]) if r[19] else None)


def _entry(finding: Finding, description: str) -> dict[str, Any]:
    """One subject's finding; its evidence names the subject (`subject`), whatever the rule put in it."""
    evidence = finding.evidence | {"subject": finding.subject} if finding.subject else finding.evidence
    return {"title": finding.title, "description": description, "evidence": evidence,
            "severity": finding.severity, "ts_ns": finding.ts_ns}


def _age(seconds: float) -> str:
    if seconds >= 2 * 86_400:
        return f"{seconds / 86_400:.0f} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.0f} h"
    if seconds >= 120:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


def parse_ref(ref: str | int) -> int:
    """`WO-000123`, `wo-123` or `123` -> 123 (ValueError otherwise)."""
    text = str(ref).strip().upper().removeprefix("WO-")
    if not text.isdigit():
        raise ValueError(f"not a work order reference: {ref!r} (expected WO-000123 or 123)")
    return int(text)


def asset_lock(asset: str) -> str:
    """The lock key under which an asset's rules and work orders change (also for an agent id that
    stands as the asset of an agent_offline work order)."""
    return f"asset:{asset}"


class WorkOrderStore:
    """Work orders on one connection: inside the caller's transaction (changes) or read."""

    def __init__(self, db: StateConnection, listener: WorkOrderListener | None = None) -> None:
        self.db = db
        self.listener = listener

    async def get(self, wo_id: int, *, for_update: bool = False) -> WorkOrder | None:
        lock = self.db.dialect.for_update if for_update else ""
        row = await self.db.fetchone(f"SELECT {_COLUMNS} FROM work_orders WHERE id = ?{lock}", (wo_id,))
        return _row(row) if row else None

    async def open_for(self, asset: str, rule: str) -> WorkOrder | None:
        """The open work order of (asset, rule), its row locked until the transaction ends."""
        row = await self.db.fetchone(
            f"SELECT {_COLUMNS} FROM work_orders WHERE asset = ? AND rule = ? AND status != 'closed'"
            f"{self.db.dialect.for_update}", (asset, rule))
        return _row(row) if row else None

    async def list(self, status: str | None = None, asset: str | None = None, limit: int = 200, *,
                   severity: str | None = None, rule: str | None = None, category: str | None = None,
                   since_ns: int | None = None) -> list[WorkOrder]:
        """Newest first. status: open | acknowledged | closed | active (= not closed)."""
        where, args = [], []
        if status == "active":
            where.append("status != 'closed'")
        elif status:
            where.append("status = ?")
            args.append(status)
        for column, value in (("asset", asset), ("severity", severity), ("rule", rule), ("category", category)):
            if value:
                where.append(f"{column} = ?")
                args.append(value)
        if since_ns is not None:
            where.append("created_ns >= ?")
            args.append(since_ns)
        sql = f"SELECT {_COLUMNS} FROM work_orders"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [_row(r) for r in await self.db.fetchall(sql + " ORDER BY id DESC LIMIT ?", (*args, limit))]

    async def counts(self) -> dict[str, int]:
        return {str(s): int(n) for s, n in await self.db.fetchall(
            "SELECT status, COUNT(*) FROM work_orders GROUP BY status")}

    async def apply(self, finding: Finding,
                    context: Callable[[], Awaitable[dict[str, Any]]] | dict[str, Any],
                    cause: Callable[[], Awaitable[dict[str, Any] | None]] | None = None) -> WorkOrder | None:
        """Apply a rule finding; return the work order it created or changed (None if nothing changed).

        `context` (or a coroutine function making it) is captured when a work order is created, and so
        is its probable cause (`cause`, a coroutine function). See the module docstring for the policy.
        """
        now = time.time_ns()
        current = await self.open_for(finding.asset, finding.rule)
        if current is None and finding.action in ("raise", "escalate"):
            ctx = context if isinstance(context, dict) else await context()
            probable = await cause() if cause is not None else None
            description = finding.description
            if finding.action == "escalate":
                closed = await self._last_closed(finding.asset, finding.rule)
                if closed is not None:
                    description = (f"{finding.description} The condition persisted after {closed.ref} was closed "
                                   f"and has worsened.")
            subjects = {finding.subject: _entry(finding, description)}
            return await self._insert(finding.asset, finding.rule, finding.severity, finding.category, subjects,
                                      ctx, probable, finding.ts_ns, now, description)
        if current is None:
            if finding.action == "clear":
                # closed while the condition held, and now it cleared: nothing to raise again later
                await self.db.execute(
                    "UPDATE work_orders SET condition_cleared_ns = ? WHERE id = (SELECT MAX(id) FROM work_orders "
                    "WHERE asset = ? AND rule = ?) AND status = 'closed' AND condition_cleared_ns IS NULL",
                    (finding.ts_ns, finding.asset, finding.rule))
            return None
        if finding.action == "clear":
            await self.db.execute("UPDATE work_orders SET condition_cleared_ns = ?, updated_ns = ? WHERE id = ?",
                                  (finding.ts_ns, now, current.id))
            return await self._event(current.id, now, "condition_cleared", finding.description)
        subjects = dict(current.subjects)
        known = subjects.get(finding.subject)
        # a raise describes the condition; an escalation only notes a change (kept in the event)
        description = finding.description if known is None or finding.action == "raise" else known["description"]
        subjects[finding.subject] = _entry(finding, description)
        title, description, evidence = render_subjects(subjects)
        severity = max(current.severity, finding.severity, key=SEVERITIES.index)
        await self.db.execute(
            "UPDATE work_orders SET severity = ?, title = ?, description = ?, evidence = ?, subjects = ?, "
            "condition_cleared_ns = NULL, updated_ns = ? WHERE id = ?",
            (severity, title, description, json.dumps(evidence), json.dumps(subjects), now, current.id))
        return await self._event(current.id, now, "escalated" if severity != current.severity else "recurred",
                                 finding.description)

    async def _insert(self, asset: str, rule: str, severity: str, category: str, subjects: dict[str, Any],
                      context: dict[str, Any], cause: dict[str, Any] | None, created_ns: int, now: int,
                      detail: str) -> WorkOrder:
        title, description, evidence = render_subjects(subjects)
        wo_id = await self.db.fetchval(
            "INSERT INTO work_orders (asset, rule, severity, title, description, evidence, context, "
            "created_ns, updated_ns, category, subjects, probable_cause) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "RETURNING id",
            (asset, rule, severity, title, description, json.dumps(evidence), json.dumps(context), created_ns, now,
             category, json.dumps(subjects), json.dumps(cause) if cause else None))
        return await self._event(int(wo_id), now, "raised", detail)

    async def reraise_due(self, now_ns: int, reraise_after_s: Mapping[str, float],
                          context: Callable[[WorkOrder], Awaitable[dict[str, Any]]]) -> list[WorkOrder]:
        """Raise again what was closed while its condition held, once the rule's `reraise_after_s` passed.

        Looks at the newest work order of each (asset, rule): closed, with no clear noted since it was
        raised (or since it last recurred). A rule no longer configured, or with reraise_after_s = 0,
        never re-raises.
        """
        rows = await self.db.fetchall(
            f"SELECT {_COLUMNS} FROM work_orders w WHERE status = 'closed' AND condition_cleared_ns IS NULL "
            "AND id = (SELECT MAX(id) FROM work_orders WHERE asset = w.asset AND rule = w.rule)")
        raised: list[WorkOrder] = []
        for closed in [_row(r) for r in rows]:
            after_s = reraise_after_s.get(closed.rule, 0.0)
            if not after_s or closed.closed_ns is None or now_ns - closed.closed_ns < after_s * 1e9:
                continue
            # under the asset's lock, and only if nothing has been raised for it since the list was read
            # (another collector's rules may have): one open work order per (asset, rule)
            await self.db.lock([asset_lock(closed.asset)])
            newest = await self.db.fetchval("SELECT MAX(id) FROM work_orders WHERE asset = ? AND rule = ?",
                                            (closed.asset, closed.rule))
            if newest != closed.id:
                continue
            age = _age((now_ns - closed.closed_ns) / 1e9)
            why = (f"Raised again: the condition still holds {age} after {closed.ref} was closed by "
                   f"{closed.closed_by}" + (f" ({closed.note})" if closed.note else "") + ".")
            subjects = {s: dict(e) | {"reraised": why}
                        for s, e in (closed.subjects or {"": {"title": closed.title, "description": closed.description,
                                                              "evidence": closed.evidence,
                                                              "severity": closed.severity}}).items()}
            raised.append(await self._insert(closed.asset, closed.rule, closed.severity, closed.category, subjects,
                                             await context(closed), closed.probable_cause, now_ns, time.time_ns(),
                                             why))
        return raised

    async def _last_closed(self, asset: str, rule: str) -> WorkOrder | None:
        row = await self.db.fetchone(f"SELECT {_COLUMNS} FROM work_orders WHERE asset = ? AND rule = ? "
                                     "AND status = 'closed' ORDER BY id DESC LIMIT 1", (asset, rule))
        return _row(row) if row else None

    async def acknowledge(self, wo_id: int, who: str, note: str = "") -> WorkOrder:
        return await self._transition(wo_id, "acknowledged", who, note, ("open",))

    async def close(self, wo_id: int, who: str, note: str = "") -> WorkOrder:
        return await self._transition(wo_id, "closed", who, note, ("open", "acknowledged"))

    async def _transition(self, wo_id: int, status: str, who: str, note: str, allowed: tuple[str, ...]) -> WorkOrder:
        wo = await self.get(wo_id, for_update=True)
        if wo is None:
            raise LookupError(f"no work order {wo_id}")
        if wo.status not in allowed:
            raise ValueError(f"{wo.ref} is {wo.status}; cannot move it to {status}")
        if not who.strip():
            raise ValueError("say who: an empty name is not accepted")
        now = time.time_ns()
        prefix = "acknowledged" if status == "acknowledged" else "closed"
        await self.db.execute(
            f"UPDATE work_orders SET status = ?, {prefix}_by = ?, {prefix}_ns = ?, updated_ns = ?, "
            "note = CASE WHEN ? = '' THEN note ELSE ? END WHERE id = ?",
            (status, who, now, now, note, note, wo_id))
        return await self._event(wo_id, now, status, f"{who}: {note}" if note else who)

    async def _event(self, wo_id: int, now: int, action: str, detail: str) -> WorkOrder:
        event_id = await self.db.fetchval(
            "INSERT INTO work_order_events (work_order, ts_ns, action, detail) VALUES (?, ?, ?, ?) RETURNING id",
            (wo_id, now, action, detail))
        event = WorkOrderEvent(int(event_id), wo_id, now, action, detail)
        wo = await self.get(wo_id)
        assert wo is not None
        if self.listener is not None:
            await self.listener.work_order_changed(self.db, wo, event)
        return wo

    async def events(self, wo_id: int) -> list[tuple[int, str, str]]:
        return [(int(a), str(b), str(c)) for a, b, c in await self.db.fetchall(
            "SELECT ts_ns, action, detail FROM work_order_events WHERE work_order = ? ORDER BY id", (wo_id,))]

    async def event_list(self, wo_id: int) -> list[WorkOrderEvent]:
        return [WorkOrderEvent(int(a), int(b), int(c), str(d), str(e)) for a, b, c, d, e in await self.db.fetchall(
            "SELECT id, work_order, ts_ns, action, detail FROM work_order_events WHERE work_order = ? ORDER BY id",
            (wo_id,))]


class WorkOrders:
    """The work orders of a state database for callers outside a transaction: each read is a read
    of its own, each lifecycle step a transaction of its own (under the asset's lock)."""

    def __init__(self, state: StateDatabase, listener: WorkOrderListener | None = None) -> None:
        self.state = state
        self.listener = listener

    async def get(self, wo_id: int) -> WorkOrder | None:
        async with self.state.reading() as db:
            return await WorkOrderStore(db).get(wo_id)

    async def list(self, status: str | None = None, asset: str | None = None, limit: int = 200, *,
                   severity: str | None = None, rule: str | None = None, category: str | None = None,
                   since_ns: int | None = None) -> list[WorkOrder]:
        async with self.state.reading() as db:
            return await WorkOrderStore(db).list(status, asset, limit, severity=severity, rule=rule,
                                                 category=category, since_ns=since_ns)

    async def counts(self) -> dict[str, int]:
        async with self.state.reading() as db:
            return await WorkOrderStore(db).counts()

    async def events(self, wo_id: int) -> list[tuple[int, str, str]]:
        async with self.state.reading() as db:
            return await WorkOrderStore(db).events(wo_id)

    async def event_list(self, wo_id: int) -> list[WorkOrderEvent]:
        async with self.state.reading() as db:
            return await WorkOrderStore(db).event_list(wo_id)

    async def acknowledge(self, wo_id: int, who: str, note: str = "") -> WorkOrder:
        return await self._step(wo_id, lambda store: store.acknowledge(wo_id, who, note))

    async def close(self, wo_id: int, who: str, note: str = "") -> WorkOrder:
        return await self._step(wo_id, lambda store: store.close(wo_id, who, note))

    async def _step(self, wo_id: int, step: Callable[[WorkOrderStore], Awaitable[WorkOrder]]) -> WorkOrder:
        async def run(db: StateConnection) -> WorkOrder:
            asset = await db.fetchval("SELECT asset FROM work_orders WHERE id = ?", (wo_id,))
            if asset is not None:
                await db.lock([asset_lock(asset)])  # the same lock the rules change its work orders under
            return await step(WorkOrderStore(db, self.listener))

        return await self.state.run(run)
