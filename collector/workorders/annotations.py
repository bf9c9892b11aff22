"""WorkOrderAnnotations: keep the `work_order` measurement in step with the work-order store.

Grafana reads work orders (annotations, the open count, the open list) from the time series store,
so every change must reach it: raised or escalated by a rule, acknowledged or closed through the API
or by `twin-collector work-orders` in another process. Each change is a row of `work_order_events`;
`sync()` writes the current state of every work order with events past a persisted cursor, and moves
the cursor only after the sink took the points, so changes made while InfluxDB is down arrive later.

`severity` is a tag (DESIGN section 7), so an escalated work order has a second series. The series
written for each work order are remembered, and after an escalation the point of the earlier
severity is rewritten with status `escalated`: dashboards that keep `status` to open, acknowledged or
closed then see each work order once, with its current severity.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import aiosqlite

from collector.points import Point, PointSink, PointsRejectedError, work_order_point
from collector.workorders.store import WorkOrder
from runtime.schema import SchemaPart

if TYPE_CHECKING:
    from collector.fleet import FleetTwin

__all__ = ["SCHEMA_PART", "SUPERSEDED_STATUS", "WorkOrderAnnotations"]

log = logging.getLogger("twin.collector.annotations")

SUPERSEDED_STATUS = "escalated"
MAX_EVENTS_PER_WRITE = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS annotation_cursor (id INTEGER PRIMARY KEY CHECK (id = 1), event INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS annotation_series (
    work_order INTEGER NOT NULL, severity TEXT NOT NULL, PRIMARY KEY (work_order, severity)) WITHOUT ROWID;
"""
# Registered with the fleet database (collector/fleet.py, runtime/schema.py): the tables exist once
# the fleet twin is open.
SCHEMA_PART = SchemaPart("annotations", _SCHEMA)


class WorkOrderAnnotations:
    def __init__(self, fleet: FleetTwin, sink: PointSink, default_site: str) -> None:
        self.fleet = fleet
        self.sink = sink
        self.default_site = default_site
        self._lock = asyncio.Lock()  # one sync at a time: the cursor moves forward only

    async def sync(self) -> int:
        """Write the work orders changed since the last sync; return how many points were written.

        Raises the sink's error (SinkError) when it is unavailable; nothing is skipped then.
        """
        async with self._lock:
            written = 0
            while True:
                async with self.fleet.reading() as db:  # the periodic no-op sync takes no write lock
                    last_event, points, series = await self._pending(db)
                if last_event is None:
                    return written
                try:
                    if points:
                        await self.sink.write(points)
                except PointsRejectedError as exc:  # the rest is stored; these would be refused forever
                    log.warning("%d work-order annotation points rejected by the sink: %s", len(exc.rejected), exc)
                async with self.fleet.transaction() as db:
                    await db.execute("INSERT INTO annotation_cursor VALUES (1, ?) ON CONFLICT (id) DO UPDATE "
                                     "SET event = excluded.event", (last_event,))
                    await db.executemany("INSERT OR IGNORE INTO annotation_series VALUES (?, ?)", series)
                written += len(points)

    async def _pending(self, db: aiosqlite.Connection) -> tuple[int | None, list[Point], list[tuple[int, str]]]:
        row = await (await db.execute("SELECT event FROM annotation_cursor WHERE id = 1")).fetchone()
        cursor = int(row[0]) if row else 0
        events = await (await db.execute(
            "SELECT id, work_order FROM work_order_events WHERE id > ? ORDER BY id LIMIT ?",
            (cursor, MAX_EVENTS_PER_WRITE))).fetchall()
        if not events:
            return None, [], []
        store = self.fleet.work_orders
        assert store is not None
        points: list[Point] = []
        series: list[tuple[int, str]] = []
        for wo_id in dict.fromkeys(int(w) for _, w in events):
            wo = await store.get(wo_id)
            if wo is None:  # pruned with its history
                continue
            site = await self._site(db, wo)
            known = [str(r[0]) for r in await (await db.execute(
                "SELECT severity FROM annotation_series WHERE work_order = ?", (wo.id,))).fetchall()]
            for severity in known:
                if severity != wo.severity:
                    points.append(_point(wo, site, severity, SUPERSEDED_STATUS))
            points.append(_point(wo, site, wo.severity, wo.status))
            series.append((wo.id, wo.severity))
        return int(events[-1][0]), points, series

    async def _site(self, db: aiosqlite.Connection, wo: WorkOrder) -> str:
        row = await (await db.execute("SELECT site FROM assets WHERE asset = ?", (wo.asset,))).fetchone()
        return str(row[0]) if row and row[0] else self.default_site


def _point(wo: WorkOrder, site: str, severity: str, status: str) -> Point:
    return work_order_point(site=site, asset=wo.asset, severity=severity, rule=wo.rule, order_id=wo.ref,
                            title=wo.title, status=status, opened_ns=wo.created_ns)
