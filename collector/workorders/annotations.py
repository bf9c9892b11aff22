"""WorkOrderAnnotations: keep the `work_order` measurement in step with the work-order store.

Grafana reads work orders (annotations, the open count, the open list) from the time series store,
so every change must reach it: raised or escalated by a rule, acknowledged or closed through the API
or by `twin-collector work-orders` in another process. Each change is a row of `work_order_events`;
`sync()` writes the current state of every work order with events not yet `annotated`, and marks
them only after the sink took the points, so changes made while InfluxDB is down arrive later.

A flag per event rather than a cursor: with several collectors on PostgreSQL, event ids are handed
out when a transaction inserts and become visible when it commits, which is not the same order, so
a cursor could pass an event committed late. A sync claims its events (FOR UPDATE SKIP LOCKED),
so two collectors' syncs never write the same ones; the points are idempotent anyway.

`severity` is a tag (DESIGN section 7), so an escalated work order has a second series. The series
written for each work order are remembered, and after an escalation the point of the earlier
severity is rewritten with status `escalated`: dashboards that keep `status` to open, acknowledged or
closed then see each work order once, with its current severity.
"""

from __future__ import annotations

import asyncio
import logging

import aiosqlite

from collector.points import Point, PointSink, PointsRejectedError, work_order_point
from collector.state import StateConnection, StateDatabase
from collector.workorders.store import WorkOrder, WorkOrderStore
from runtime.schema import Migration, SchemaPart

__all__ = ["SCHEMA_PART", "SUPERSEDED_STATUS", "WorkOrderAnnotations"]

log = logging.getLogger("twin.collector.annotations")

SUPERSEDED_STATUS = "escalated"
MAX_EVENTS_PER_WRITE = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS annotation_series (
    work_order INTEGER NOT NULL, severity TEXT NOT NULL, PRIMARY KEY (work_order, severity)) WITHOUT ROWID;
"""


async def _cursor_to_marks(db: aiosqlite.Connection) -> None:
    """Events up to the cursor releases before kept were written: mark them, and drop the cursor (the
    work_orders part, registered before this one, has added work_order_events.annotated)."""
    if await (await db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'annotation_cursor'"
                               )).fetchone():
        await db.execute("UPDATE work_order_events SET annotated = 1 WHERE id <= "
                         "(SELECT event FROM annotation_cursor WHERE id = 1)")
        await db.execute("DROP TABLE annotation_cursor")


# Registered with the fleet database (collector/fleet.py, runtime/schema.py): the tables exist once
# the fleet twin is open.
SCHEMA_PART = SchemaPart("annotations", _SCHEMA, (
    Migration(2, "events marked annotated instead of a cursor (several collectors)", _cursor_to_marks),
))


class WorkOrderAnnotations:
    def __init__(self, state: StateDatabase, sink: PointSink, default_site: str) -> None:
        self.state = state
        self.sink = sink
        self.default_site = default_site
        self._lock = asyncio.Lock()  # one sync at a time in this collector

    async def sync(self) -> int:
        """Write the work orders changed since the last sync; return how many points were written.

        Raises the sink's error (SinkError) when it is unavailable; nothing is marked then.
        """
        async with self._lock:
            written = 0
            while True:
                async with self.state.claim() as db:
                    events = await db.fetchall(
                        "SELECT id, work_order FROM work_order_events WHERE annotated = 0 ORDER BY id LIMIT ?"
                        f"{db.dialect.skip_locked}", (MAX_EVENTS_PER_WRITE,))
                    if not events:
                        return written
                    points, series = await self._points(db, [int(w) for _, w in events])
                    try:
                        if points:
                            await self.sink.write(points)
                    except PointsRejectedError as exc:  # the rest is stored; these would be refused forever
                        log.warning("%d work-order annotation points rejected by the sink: %s", len(exc.rejected),
                                    exc)
                    done, args = db.dialect.in_list("id", [int(e) for e, _ in events])
                    await db.execute(f"UPDATE work_order_events SET annotated = 1 WHERE {done}", args)
                    await db.executemany("INSERT INTO annotation_series VALUES (?, ?) ON CONFLICT DO NOTHING", series)
                written += len(points)

    async def _points(self, db: StateConnection, work_orders: list[int]) -> tuple[list[Point], list[tuple[int, str]]]:
        store = WorkOrderStore(db)
        points: list[Point] = []
        series: list[tuple[int, str]] = []
        for wo_id in dict.fromkeys(work_orders):
            wo = await store.get(wo_id)
            if wo is None:  # pruned with its history
                continue
            site = await self._site(db, wo)
            known = [str(r[0]) for r in await db.fetchall(
                "SELECT severity FROM annotation_series WHERE work_order = ?", (wo.id,))]
            for severity in known:
                if severity != wo.severity:
                    points.append(_point(wo, site, severity, SUPERSEDED_STATUS))
            points.append(_point(wo, site, wo.severity, wo.status))
            series.append((wo.id, wo.severity))
        return points, series

    async def _site(self, db: StateConnection, wo: WorkOrder) -> str:
        site = await db.fetchval("SELECT site FROM assets WHERE asset = ?", (wo.asset,))
        return str(site) if site else self.default_site


def _point(wo: WorkOrder, site: str, severity: str, status: str) -> Point:
    return work_order_point(site=site, asset=wo.asset, severity=severity, rule=wo.rule, order_id=wo.ref,
                            title=wo.title, status=status, opened_ns=wo.created_ns)
