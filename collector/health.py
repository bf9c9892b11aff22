"""Is the collector able to do its job? The health of what it depends on: the sink and the state database.

Each `Dependency` is told about every real use of it (a sink write, a fleet-twin commit or periodic
check) and keeps one state: working, or failing since a time with the last error. It logs each
transition once ("sink failing: ...", then "sink recovered after 27 s, 14 batches stored late"), never
each retry, and keeps the outages for the collector's own incident (collector/workorders/collector_health.py).
A dependency nobody uses is not probed: a quiet collector learns of a sink outage at its next write
(an agent batch, a work-order annotation or an asset status, at least every check interval while
assets change).

`/health` and `/ready` answer 503 with `reasons()` while one is failing; the metrics show the same.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from collector.workorders.collector_health import Outage

__all__ = ["CollectorHealth", "Dependency"]

log = logging.getLogger("twin.collector.health")

MAX_FINISHED = 100  # outages kept for the incident check (they are consumed every check interval)


def _clock(ns: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ns / 1e9))


@dataclass
class Dependency:
    """One thing the collector needs (`dependency`: "sink" or "state_database")."""

    dependency: str
    name: str  # short: "InfluxDB", "embedded summary store", "state database"
    label: str  # which one, e.g. "InfluxDB v1 at http://127.0.0.1:8086 (database facility_twin)"
    current: Outage | None = None
    finished: list[Outage] = field(default_factory=list)
    outages_total: int = 0
    failures_total: int = 0
    late_batches_total: int = 0
    recovered_ns: int = 0  # when the last outage ended (0: never failed)

    @property
    def failing(self) -> bool:
        return self.current is not None

    def failed(self, error: str) -> None:
        """A use failed (it will be retried by whoever used it)."""
        self.failures_total += 1
        if self.current is None:
            self.current = Outage(self.dependency, self.name, self.label, time.time_ns(), error)
            self.outages_total += 1
            log.warning("%s failing: %s: %s; agents keep their batches queued until it is back, and no data-quality "
                      "work order is raised for it", self.dependency.replace("_", " "), self.label, error)
        elif error != self.current.error:
            self.current = Outage(self.dependency, self.name, self.label, self.current.since_ns, error)

    def succeeded(self, late_batches: int = 0) -> None:
        """A use succeeded; `late_batches`: batches that waited for the outage and are stored now."""
        if self.current is None:
            return
        now = time.time_ns()
        done = Outage(self.dependency, self.name, self.label, self.current.since_ns, self.current.error, now,
                      late_batches)
        self.current = None
        self.recovered_ns = now
        self.late_batches_total += late_batches
        self.finished = [*self.finished[-(MAX_FINISHED - 1):], done]
        log.warning("%s recovered after %.0f s, %d batches stored late (%s)", self.dependency.replace("_", " "),
                    done.duration_s(now), late_batches, self.label)

    def take_finished(self) -> list[Outage]:
        out, self.finished = self.finished, []
        return out

    def reason(self, now_ns: int) -> str:
        assert self.current is not None
        return (f"{self.dependency.replace('_', ' ')} {self.label} failing since {_clock(self.current.since_ns)} "
                f"({self.current.duration_s(now_ns):.0f} s): {self.current.error}")


class CollectorHealth:
    """The collector's dependencies; ready when none is failing."""

    def __init__(self, sink_name: str, sink_label: str, state_label: str) -> None:
        self.sink = Dependency("sink", sink_name, sink_label)
        self.state = Dependency("state_database", "state database", state_label)
        self.started_ns = time.time_ns()

    @property
    def dependencies(self) -> tuple[Dependency, Dependency]:
        return self.sink, self.state

    def ready(self) -> bool:
        return not any(d.failing for d in self.dependencies)

    def reasons(self, now_ns: int | None = None) -> list[str]:
        now = now_ns if now_ns is not None else time.time_ns()
        return [d.reason(now) for d in self.dependencies if d.failing]

    def watch_since_ns(self) -> int:
        """Since when the collector has been able to watch: its start or its last recovery."""
        return max(self.started_ns, *(d.recovered_ns for d in self.dependencies))
