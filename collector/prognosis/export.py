"""RemainingLifeExport: write the prognosis rule's assessments to the point sink (InfluxDB or the
embedded store) as the `remaining_life` measurement, for Grafana.

The same pattern as the work-order annotations (collector/workorders/annotations.py): rows of the
fleet's `remaining_life` table past a persisted cursor are written, and the cursor moves only after
the sink took them, so assessments made while InfluxDB is down arrive later. Written rows are then
deleted, except the latest of each (asset, sensor, rule), which the twin shows.
"""

from __future__ import annotations

import asyncio
import logging

from collector.fleet import FleetTwin
from collector.points import Point, PointSink, PointsRejectedError, remaining_life_point

__all__ = ["MAX_ROWS_PER_WRITE", "RemainingLifeExport"]

log = logging.getLogger("twin.collector.remaining_life")

MAX_ROWS_PER_WRITE = 1000


class RemainingLifeExport:
    def __init__(self, fleet: FleetTwin, sink: PointSink, default_site: str) -> None:
        self.fleet = fleet
        self.sink = sink
        self.default_site = default_site
        self._lock = asyncio.Lock()  # one sync at a time: the cursor moves forward only
        self.skipped = 0  # assessments that could not be points (no timestamp)

    async def sync(self) -> int:
        """Write the assessments made since the last sync; return how many points were written.

        Raises the sink's error (SinkError) when it is unavailable; nothing is skipped then.
        """
        written = 0
        async with self._lock:
            while True:
                async with self.fleet.reading() as db:
                    row = await (await db.execute("SELECT row FROM remaining_life_cursor WHERE id = 1")).fetchone()
                    cursor = int(row[0]) if row else 0
                    rows = await (await db.execute(
                        "SELECT r.id, r.asset, r.sensor, r.rule, r.ts_ns, r.basis, r.estimate_s, r.low_s, r.high_s, "
                        "r.hi, r.degraded, a.site FROM remaining_life r LEFT JOIN assets a ON a.asset = r.asset "
                        "WHERE r.id > ? ORDER BY r.id LIMIT ?", (cursor, MAX_ROWS_PER_WRITE))).fetchall()
                if not rows:
                    return written
                points: list[Point] = []
                for _, asset, sensor, rule, ts, basis, est, low, high, hi, degraded, site in rows:
                    try:
                        points.append(remaining_life_point(
                            site=site or self.default_site, asset=asset, sensor=sensor, rule=rule, ts_ns=ts,
                            basis=basis, estimate_s=est, low_s=low, high_s=high, hi=hi, degraded=bool(degraded)))
                    except ValueError as exc:  # no storable time: skipped (and counted), never blocks the rest
                        self.skipped += 1
                        log.warning("remaining-life assessment not written: %s", exc)
                try:
                    if points:
                        await self.sink.write(points)
                except PointsRejectedError as exc:  # the rest is stored; these would be refused forever
                    log.warning("%d remaining-life points rejected by the sink: %s", len(exc.rejected), exc)
                last = int(rows[-1][0])
                async with self.fleet.transaction() as db:
                    await db.execute("INSERT INTO remaining_life_cursor VALUES (1, ?) ON CONFLICT (id) DO UPDATE "
                                     "SET row = excluded.row", (last,))
                    await db.execute(
                        "DELETE FROM remaining_life WHERE id <= ? AND id NOT IN (SELECT MAX(id) FROM remaining_life "
                        "GROUP BY asset, sensor, rule)", (last,))
                written += len(points)
