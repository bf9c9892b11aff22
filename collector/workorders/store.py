"""Work orders in SQLite: one open work order per (asset, rule), lifecycle open -> acknowledged -> closed.

The store works on the fleet twin's connection and never commits on its own: the caller owns the
transaction (FleetTwin), so a work order is created in the same transaction that stores the batch
which caused it, and a crash followed by a resent batch can never raise it twice.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

import aiosqlite

from collector.workorders.rules import SEVERITIES, Finding

__all__ = ["SCHEMA", "WorkOrder", "WorkOrderStore"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS work_orders (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    asset TEXT NOT NULL, rule TEXT NOT NULL, severity TEXT NOT NULL, title TEXT NOT NULL,
    description TEXT NOT NULL, evidence TEXT NOT NULL, context TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'open', created_ns INTEGER NOT NULL, updated_ns INTEGER NOT NULL,
    condition_cleared_ns INTEGER, acknowledged_by TEXT, acknowledged_ns INTEGER,
    closed_by TEXT, closed_ns INTEGER, note TEXT NOT NULL DEFAULT '');
CREATE UNIQUE INDEX IF NOT EXISTS work_orders_one_open ON work_orders (asset, rule) WHERE status != 'closed';
CREATE TABLE IF NOT EXISTS work_order_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, work_order INTEGER NOT NULL, ts_ns INTEGER NOT NULL,
    action TEXT NOT NULL, detail TEXT NOT NULL);
"""

STATUSES = ("open", "acknowledged", "closed")


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

    @property
    def ref(self) -> str:
        return f"WO-{self.id:06d}"

    def to_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, **asdict(self)}


_COLUMNS = ("id, asset, rule, severity, title, description, evidence, context, status, created_ns, updated_ns, "
            "condition_cleared_ns, acknowledged_by, acknowledged_ns, closed_by, closed_ns, note")


def _row(r: tuple[Any, ...]) -> WorkOrder:
    return WorkOrder(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), json.loads(r[7]), *r[8:])


class WorkOrderStore:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db

    async def get(self, wo_id: int) -> WorkOrder | None:
        cur = await self.db.execute(f"SELECT {_COLUMNS} FROM work_orders WHERE id = ?", (wo_id,))
        row = await cur.fetchone()
        return _row(tuple(row)) if row else None

    async def open_for(self, asset: str, rule: str) -> WorkOrder | None:
        cur = await self.db.execute(
            f"SELECT {_COLUMNS} FROM work_orders WHERE asset = ? AND rule = ? AND status != 'closed'", (asset, rule))
        row = await cur.fetchone()
        return _row(tuple(row)) if row else None

    async def list(self, status: str | None = None, asset: str | None = None, limit: int = 200) -> list[WorkOrder]:
        where, args = [], []
        if status == "active":
            where.append("status != 'closed'")
        elif status:
            where.append("status = ?")
            args.append(status)
        if asset:
            where.append("asset = ?")
            args.append(asset)
        sql = f"SELECT {_COLUMNS} FROM work_orders"
        if where:
            sql += " WHERE " + " AND ".join(where)
        cur = await self.db.execute(sql + " ORDER BY id DESC LIMIT ?", (*args, limit))
        return [_row(tuple(r)) for r in await cur.fetchall()]

    async def apply(self, finding: Finding, context: dict[str, Any]) -> WorkOrder | None:
        """Apply a rule finding; return the work order it created or changed (None if nothing changed).

        raise    -> a new open work order, unless one is already open for (asset, rule): then the
                    open one is updated (new evidence; severity only ever goes up).
        escalate -> the open work order's severity goes up.
        clear    -> the open work order notes that the condition cleared; a person closes it.
        """
        now = time.time_ns()
        current = await self.open_for(finding.asset, finding.rule)
        if finding.action == "raise" and current is None:
            cur = await self.db.execute(
                "INSERT INTO work_orders (asset, rule, severity, title, description, evidence, context, "
                "created_ns, updated_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (finding.asset, finding.rule, finding.severity, finding.title, finding.description,
                 json.dumps(finding.evidence), json.dumps(context), finding.ts_ns, now))
            wo_id = int(cur.lastrowid or 0)
            await self._event(wo_id, now, "raised", finding.description)
            return await self.get(wo_id)
        if current is None:
            return None
        if finding.action == "clear":
            await self.db.execute("UPDATE work_orders SET condition_cleared_ns = ?, updated_ns = ? WHERE id = ?",
                                  (finding.ts_ns, now, current.id))
            await self._event(current.id, now, "condition_cleared", finding.description)
            return await self.get(current.id)
        severity = max(current.severity, finding.severity, key=SEVERITIES.index)
        await self.db.execute(
            "UPDATE work_orders SET severity = ?, evidence = ?, condition_cleared_ns = NULL, updated_ns = ? "
            "WHERE id = ?", (severity, json.dumps(finding.evidence), now, current.id))
        await self._event(current.id, now, "escalated" if severity != current.severity else "recurred",
                          finding.description)
        return await self.get(current.id)

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
        now = time.time_ns()
        prefix = "acknowledged" if status == "acknowledged" else "closed"
        await self.db.execute(
            f"UPDATE work_orders SET status = ?, {prefix}_by = ?, {prefix}_ns = ?, updated_ns = ?, "
            "note = CASE WHEN ? = '' THEN note ELSE ? END WHERE id = ?",
            (status, who, now, now, note, note, wo_id))
        await self._event(wo_id, now, status, f"{who}: {note}" if note else who)
        result = await self.get(wo_id)
        assert result is not None
        return result

    async def events(self, wo_id: int) -> list[tuple[int, str, str]]:
        cur = await self.db.execute(
            "SELECT ts_ns, action, detail FROM work_order_events WHERE work_order = ? ORDER BY id", (wo_id,))
        return [(int(a), str(b), str(c)) for a, b, c in await cur.fetchall()]

    async def _event(self, wo_id: int, ts_ns: int, action: str, detail: str) -> None:
        await self.db.execute("INSERT INTO work_order_events (work_order, ts_ns, action, detail) VALUES (?, ?, ?, ?)",
                              (wo_id, ts_ns, action, detail))
