"""RemainingLifeExport: write the prognosis rule's assessments to the point sink (InfluxDB or the
embedded store) as the `remaining_life` measurement, for Grafana.

The same pattern as the work-order annotations (collector/workorders/annotations.py): rows of the
fleet's `remaining_life` table not yet `exported` are claimed, written, and marked only after the
sink took them, so assessments made while InfluxDB is down arrive later; with several collectors
each row is claimed by one. Exported rows are then deleted, except the latest of each (asset, sensor,
rule), which the twin shows.
"""

from __future__ import annotations

import asyncio
import logging

from collector.points import Point, PointSink, PointsRejectedError, remaining_life_point
from collector.state import StateDatabase

__all__ = ["MAX_ROWS_PER_WRITE", "RemainingLifeExport"]

log = logging.getLogger("twin.collector.remaining_life")

MAX_ROWS_PER_WRITE = 1000


class RemainingLifeExport:
    def __init__(self, state: StateDatabase, sink: PointSink, default_site: str) -> None:
        self.state = state
        self.sink = sink
        self.default_site = default_site
        self._lock = asyncio.Lock()  # one sync at a time in this collector
        self.skipped = 0  # assessments that could not be points (no timestamp)

    async def sync(self) -> int:
        """Write the assessments made since the last sync; return how many points were written.

        Raises the sink's error (SinkError) when it is unavailable; nothing is skipped then.
        """
        written = 0
        async with self._lock:
            while True:
                async with self.state.claim() as db:
                    rows = await db.fetchall(
                        "SELECT r.id, r.asset, r.sensor, r.rule, r.ts_ns, r.basis, r.estimate_s, r.low_s, r.high_s, "
                        "r.hi, r.degraded, a.site FROM remaining_life r LEFT JOIN assets a ON a.asset = r.asset "
                        f"WHERE r.exported = 0 ORDER BY r.id LIMIT ?{db.dialect.skip_locked_of('r')}",
                        (MAX_ROWS_PER_WRITE,))
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
                    done, args = db.dialect.in_list("id", [int(r[0]) for r in rows])
                    await db.execute(f"UPDATE remaining_life SET exported = 1 WHERE {done}", args)
                    await db.execute(
                        "DELETE FROM remaining_life WHERE exported = 1 AND id NOT IN "
                        "(SELECT MAX(id) FROM remaining_life GROUP BY asset, sensor, rule)")
                written += len(points)
