"""Work orders in SQLite: one open work order per (asset, rule), lifecycle open -> acknowledged -> closed.

The store works on the fleet twin's connection and never commits on its own: the caller owns the
transaction (FleetTwin), so a work order is created in the same transaction that stores the batch
which caused it, and a crash followed by a resent batch can never raise it twice. Every change is
an event row; a `WorkOrderListener` (the ITSM outbox) is called for each event inside the same
transaction, so a change and its forwarding are stored together or not at all.

Re-raise policy (what a finding does when no work order is open for its (asset, rule)):
- `raise` opens a new work order. Rules raise only on the rising edge of their condition, so after
  a close a new work order comes only when the condition has cleared and returned.
- `escalate` while the condition persists after someone closed the work order opens a new one at the
  higher severity: closing says "we know", not "ignore it however bad it gets".
- `clear` with nothing open changes nothing.
With a work order open, `raise` refreshes its evidence (severity only ever goes up), `escalate`
raises its severity and `clear` notes that the condition cleared; a person closes it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import aiosqlite

from collector.workorders.rules import SEVERITIES, Finding

__all__ = ["SCHEMA", "STATUSES", "WorkOrder", "WorkOrderEvent", "WorkOrderListener", "WorkOrderStore", "migrate",
           "parse_ref"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS work_orders (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    asset TEXT NOT NULL, rule TEXT NOT NULL, severity TEXT NOT NULL, title TEXT NOT NULL,
    description TEXT NOT NULL, evidence TEXT NOT NULL, context TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'open', created_ns INTEGER NOT NULL, updated_ns INTEGER NOT NULL,
    condition_cleared_ns INTEGER, acknowledged_by TEXT, acknowledged_ns INTEGER,
    closed_by TEXT, closed_ns INTEGER, note TEXT NOT NULL DEFAULT '',
    category TEXT NOT NULL DEFAULT 'corrective');
CREATE UNIQUE INDEX IF NOT EXISTS work_orders_one_open ON work_orders (asset, rule) WHERE status != 'closed';
CREATE INDEX IF NOT EXISTS work_orders_asset ON work_orders (asset, id);
CREATE TABLE IF NOT EXISTS work_order_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, work_order INTEGER NOT NULL, ts_ns INTEGER NOT NULL,
    action TEXT NOT NULL, detail TEXT NOT NULL);
"""

STATUSES = ("open", "acknowledged", "closed")


async def migrate(db: aiosqlite.Connection) -> None:
    """Bring a work_orders table created by an earlier version up to this schema."""
    cols = {r[1] for r in await (await db.execute("PRAGMA table_info(work_orders)")).fetchall()}
    if "category" not in cols:
        await db.execute("ALTER TABLE work_orders ADD COLUMN category TEXT NOT NULL DEFAULT 'corrective'")


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

    @property
    def ref(self) -> str:
        return f"WO-{self.id:06d}"

    def to_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, **asdict(self)}


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

    async def work_order_changed(self, db: aiosqlite.Connection, wo: WorkOrder, event: WorkOrderEvent) -> None: ...


_COLUMNS = ("id, asset, rule, severity, title, description, evidence, context, status, created_ns, updated_ns, "
            "condition_cleared_ns, acknowledged_by, acknowledged_ns, closed_by, closed_ns, note, category")


def _row(r: tuple[Any, ...]) -> WorkOrder:
    return WorkOrder(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), json.loads(r[7]), *r[8:])


def parse_ref(ref: str | int) -> int:
    """`WO-000123`, `wo-123` or `123` -> 123 (ValueError otherwise)."""
    text = str(ref).strip().upper().removeprefix("WO-")
    if not text.isdigit():
        raise ValueError(f"not a work order reference: {ref!r} (expected WO-000123 or 123)")
    return int(text)


class WorkOrderStore:
    def __init__(self, db: aiosqlite.Connection, listener: WorkOrderListener | None = None) -> None:
        self.db = db
        self.listener = listener

    async def get(self, wo_id: int) -> WorkOrder | None:
        cur = await self.db.execute(f"SELECT {_COLUMNS} FROM work_orders WHERE id = ?", (wo_id,))
        row = await cur.fetchone()
        return _row(tuple(row)) if row else None

    async def open_for(self, asset: str, rule: str) -> WorkOrder | None:
        cur = await self.db.execute(
            f"SELECT {_COLUMNS} FROM work_orders WHERE asset = ? AND rule = ? AND status != 'closed'", (asset, rule))
        row = await cur.fetchone()
        return _row(tuple(row)) if row else None

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
        cur = await self.db.execute(sql + " ORDER BY id DESC LIMIT ?", (*args, limit))
        return [_row(tuple(r)) for r in await cur.fetchall()]

    async def counts(self) -> dict[str, int]:
        cur = await self.db.execute("SELECT status, COUNT(*) FROM work_orders GROUP BY status")
        return {str(s): int(n) for s, n in await cur.fetchall()}

    async def apply(self, finding: Finding,
                    context: Callable[[], Awaitable[dict[str, Any]]] | dict[str, Any]) -> WorkOrder | None:
        """Apply a rule finding; return the work order it created or changed (None if nothing changed).

        `context` (or a coroutine function making it) is captured when a work order is created.
        See the module docstring for the re-raise policy.
        """
        now = time.time_ns()
        current = await self.open_for(finding.asset, finding.rule)
        if current is None and finding.action in ("raise", "escalate"):
            ctx = context if isinstance(context, dict) else await context()
            description = finding.description
            if finding.action == "escalate":
                closed = await self._last_closed(finding.asset, finding.rule)
                if closed is not None:
                    description = (f"{finding.description} The condition persisted after {closed.ref} was closed "
                                   f"and has worsened.")
            cur = await self.db.execute(
                "INSERT INTO work_orders (asset, rule, severity, title, description, evidence, context, "
                "created_ns, updated_ns, category) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (finding.asset, finding.rule, finding.severity, finding.title, description,
                 json.dumps(finding.evidence), json.dumps(ctx), finding.ts_ns, now, finding.category))
            wo_id = int(cur.lastrowid or 0)
            return await self._event(wo_id, now, "raised", description)
        if current is None:
            return None
        if finding.action == "clear":
            await self.db.execute("UPDATE work_orders SET condition_cleared_ns = ?, updated_ns = ? WHERE id = ?",
                                  (finding.ts_ns, now, current.id))
            return await self._event(current.id, now, "condition_cleared", finding.description)
        severity = max(current.severity, finding.severity, key=SEVERITIES.index)
        await self.db.execute(
            "UPDATE work_orders SET severity = ?, evidence = ?, condition_cleared_ns = NULL, updated_ns = ? "
            "WHERE id = ?", (severity, json.dumps(finding.evidence), now, current.id))
        return await self._event(current.id, now, "escalated" if severity != current.severity else "recurred",
                                 finding.description)

    async def _last_closed(self, asset: str, rule: str) -> WorkOrder | None:
        cur = await self.db.execute(f"SELECT {_COLUMNS} FROM work_orders WHERE asset = ? AND rule = ? "
                                    "AND status = 'closed' ORDER BY id DESC LIMIT 1", (asset, rule))
        row = await cur.fetchone()
        return _row(tuple(row)) if row else None

    async def acknowledge(self, wo_id: int, who: str, note: str = "") -> WorkOrder:
        return await self._transition(wo_id, "acknowledged", who, note, ("open",))

    async def close(self, wo_id: int, who: str, note: str = "") -> WorkOrder:
        return await self._transition(wo_id, "closed", who, note, ("open", "acknowledged"))

    async def _transition(self, wo_id: int, status: str, who: str, note: str, allowed: tuple[str, ...]) -> WorkOrder:
        wo = await self.get(wo_id)
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
        cur = await self.db.execute(
            "INSERT INTO work_order_events (work_order, ts_ns, action, detail) VALUES (?, ?, ?, ?)",
            (wo_id, now, action, detail))
        event = WorkOrderEvent(int(cur.lastrowid or 0), wo_id, now, action, detail)
        wo = await self.get(wo_id)
        assert wo is not None
        if self.listener is not None:
            await self.listener.work_order_changed(self.db, wo, event)
        return wo

    async def events(self, wo_id: int) -> list[tuple[int, str, str]]:
        cur = await self.db.execute(
            "SELECT ts_ns, action, detail FROM work_order_events WHERE work_order = ? ORDER BY id", (wo_id,))
        return [(int(a), str(b), str(c)) for a, b, c in await cur.fetchall()]

    async def event_list(self, wo_id: int) -> list[WorkOrderEvent]:
        cur = await self.db.execute(
            "SELECT id, work_order, ts_ns, action, detail FROM work_order_events WHERE work_order = ? ORDER BY id",
            (wo_id,))
        return [WorkOrderEvent(int(a), int(b), int(c), str(d), str(e)) for a, b, c, d, e in await cur.fetchall()]
