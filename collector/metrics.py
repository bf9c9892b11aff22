"""Prometheus metrics of a running collector, read at scrape time from the ingest servicer, the
sink and (for work orders, assets and agents) the state database.

The in-memory counters are those the servicer and the sink already keep. Work orders and assets
are counted with one small GROUP BY each on a separate read-only connection (the SQLite file in
WAL mode, or one PostgreSQL connection), so a scrape never waits on the event loop and never
blocks ingest. With several collectors on PostgreSQL, each reports the whole fleet's work orders
and assets, and its own agents' ingest counters. Served by
`runtime.metrics_server.start_metrics_server`, loopback by default.

    twin_collector_agent_{batches,summaries,duplicate_batches,rejected_points,
                          malformed_batches,sink_retries}_total{agent}
    twin_collector_agent_connected{agent}                     0 | 1 (every agent ever seen)
    twin_collector_agent_stalled{agent}                       0 | 1 (stream open, agent silent)
    twin_collector_agent_last_seen_timestamp_seconds{agent}
    twin_collector_refused_streams_total
    twin_collector_sink_write_seconds (summary: _count writes, _sum seconds)
    twin_collector_sink_write_errors_total, twin_collector_sink_points_{written,rejected}_total
    twin_collector_work_orders{status,severity}               every combination, zeros included
    twin_collector_assets{state}
    twin_collector_fleet_db_up                                0 when the state database cannot be read
    twin_collector_ready                                      1 when /ready answers 200 (sink and state
                                                              database working), else 0
    twin_collector_dependency_up{dependency}                  sink | state_database: 1 working, 0 failing
    twin_collector_dependency_failing_seconds{dependency}     how long the current outage lasts (0 when up)
    twin_collector_dependency_outages_total{dependency}
    twin_collector_batches_stored_late_total{dependency}      batches that waited for an outage to end
    twin_collector_assets_by_link{link}, twin_collector_assets_by_condition{condition}

Alert on `twin_collector_ready == 0` for a few minutes (the collector's own outage: agents keep their
data queued) apart from field work orders; see the README's Operations section.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector

from collector.points import PointSink
from collector.state import StateLocation, read_now
from collector.workorders.rules import SEVERITIES
from collector.workorders.store import STATUSES

if TYPE_CHECKING:
    from collector.daemon import CollectorDaemon
    from collector.health import CollectorHealth
    from collector.ingest import IngestServicer

__all__ = ["CollectorMetrics", "collector_registry"]

log = logging.getLogger("twin.collector.metrics")

DB_WARNING_INTERVAL_S = 300.0


class CollectorMetrics(Collector):
    def __init__(self, servicer: IngestServicer, sink: PointSink, fleet_db: StateLocation,
                 health: CollectorHealth | None = None) -> None:
        self.servicer = servicer
        self.sink = sink
        self.fleet_db = fleet_db
        self.health = health if health is not None else servicer.health
        self._last_db_warning = 0.0

    def collect(self) -> Iterator[Metric]:
        fleet = self._read_fleet()
        yield from self._agents(fleet[2] if fleet else {})
        t = self.servicer.totals
        yield CounterMetricFamily("twin_collector_refused_streams", "Agent streams refused (token, agent id, "
                                  "no Hello).", value=t.refused_streams)
        yield SummaryMetricFamily("twin_collector_sink_write_seconds", "Durations of successful sink writes.",
                                  count_value=t.sink_writes, sum_value=t.sink_write_seconds)
        yield CounterMetricFamily("twin_collector_sink_write_errors", "Sink writes that failed and were retried.",
                                  value=t.sink_errors)
        s = self.sink.stats
        yield CounterMetricFamily("twin_collector_sink_points_written", "Points the sink stored.",
                                  value=s.points_written)
        yield CounterMetricFamily("twin_collector_sink_points_rejected", "Points the store refused for good.",
                                  value=s.points_rejected)
        yield GaugeMetricFamily("twin_collector_fleet_db_up", "1 when the state database could be read.",
                                value=float(fleet is not None))
        yield from self._ingest_pipeline()
        yield from self._health()
        if fleet is None:
            return
        work_orders, assets, _, by_link, by_condition = fleet
        wo = GaugeMetricFamily("twin_collector_work_orders", "Work orders by status and severity.",
                               labels=["status", "severity"])
        for status in STATUSES:
            for severity in SEVERITIES:
                wo.add_metric([status, severity], work_orders.get((status, severity), 0))
        for (status, severity), n in sorted(work_orders.items()):
            if status not in STATUSES or severity not in SEVERITIES:
                wo.add_metric([status, severity], n)
        yield wo
        by_state = GaugeMetricFamily("twin_collector_assets", "Assets by their latest state.", labels=["state"])
        for state, n in sorted(assets.items()):
            by_state.add_metric([state], n)
        yield by_state
        for name, label, counts in (("link", "Assets by link (can the twin see them).", by_link),
                                    ("condition", "Assets by condition (good, watch, act).", by_condition)):
            family = GaugeMetricFamily(f"twin_collector_assets_by_{name}", label, labels=[name])
            for value, n in sorted(counts.items()):
                family.add_metric([value], n)
            yield family

    def _ingest_pipeline(self) -> Iterator[Metric]:
        """The receive budget (bounds the memory of a catch-up storm) and the group commit (batches of
        many streams written and committed together): where ingest waits when it is saturated."""
        budget, committer = self.servicer.budget, self.servicer.committer
        yield GaugeMetricFamily("twin_collector_receive_budget_bytes", "Bytes of received batches the ingest "
                                "may hold at once (receive_budget_mb).", value=budget.capacity)
        yield GaugeMetricFamily("twin_collector_receive_budget_used_bytes", "Bytes of received batches held now.",
                                value=budget.used)
        yield GaugeMetricFamily("twin_collector_receive_budget_peak_bytes", "Most bytes held at once since start.",
                                value=budget.peak)
        yield GaugeMetricFamily("twin_collector_receive_budget_waiting_streams", "Streams waiting for budget "
                                "before reading their next batch.", value=budget.waiting)
        yield CounterMetricFamily("twin_collector_group_writes", "Sink writes of grouped batches.",
                                  value=committer.writes)
        yield CounterMetricFamily("twin_collector_group_commits", "State commits of grouped batches.",
                                  value=committer.commits)
        yield CounterMetricFamily("twin_collector_group_batches", "Batches that went through the group commit.",
                                  value=committer.items)
        yield GaugeMetricFamily("twin_collector_group_queued_batches", "Batches waiting to be written or "
                                "committed.", value=committer.queued)

    def _health(self) -> Iterator[Metric]:
        now = time.time_ns()
        yield GaugeMetricFamily("twin_collector_ready", "1 when the sink and the state database work (/ready).",
                                value=float(self.health.ready()))
        labels = ["dependency"]
        up = GaugeMetricFamily("twin_collector_dependency_up", "1 while the dependency works.", labels=labels)
        failing = GaugeMetricFamily("twin_collector_dependency_failing_seconds",
                                    "How long the dependency has been failing (0 when it works).", labels=labels)
        outages = CounterMetricFamily("twin_collector_dependency_outages", "Outages of the dependency.",
                                      labels=labels)
        late = CounterMetricFamily("twin_collector_batches_stored_late",
                                   "Batches that waited for an outage of the dependency to end.", labels=labels)
        for dep in self.health.dependencies:
            up.add_metric([dep.dependency], float(not dep.failing))
            failing.add_metric([dep.dependency], dep.current.duration_s(now) if dep.current else 0.0)
            outages.add_metric([dep.dependency], dep.outages_total)
            late.add_metric([dep.dependency], dep.late_batches_total)
        yield from (up, failing, outages, late)

    def _agents(self, last_seen_db: dict[str, int]) -> Iterator[Metric]:
        per_agent = dict(self.servicer.totals.per_agent)  # one C-level copy: the loop may add agents
        labels = ["agent"]
        families = {
            "batches": CounterMetricFamily("twin_collector_agent_batches", "Batches stored.", labels=labels),
            "summaries": CounterMetricFamily("twin_collector_agent_summaries", "Summaries stored.", labels=labels),
            "duplicates": CounterMetricFamily("twin_collector_agent_duplicate_batches",
                                              "Resent batches recognised as already stored.", labels=labels),
            "rejected_points": CounterMetricFamily("twin_collector_agent_rejected_points",
                                                   "Points the store refused for good.", labels=labels),
            "malformed_batches": CounterMetricFamily("twin_collector_agent_malformed_batches",
                                                     "Batches whose points could not be built.", labels=labels),
            "sink_retries": CounterMetricFamily("twin_collector_agent_sink_retries",
                                                "Sink write retries while storing this agent's batches.",
                                                labels=labels),
        }
        connected = GaugeMetricFamily("twin_collector_agent_connected", "1 while the agent's stream is open.",
                                      labels=labels)
        stalled = GaugeMetricFamily("twin_collector_agent_stalled", "1 while the agent's stream is open but "
                                    "silent for several of its batch intervals.", labels=labels)
        last_seen = GaugeMetricFamily("twin_collector_agent_last_seen_timestamp_seconds",
                                      "When the agent last sent a batch or (dis)connected.", labels=labels)
        for agent in sorted(set(per_agent) | set(last_seen_db)):
            stats = per_agent.get(agent)
            if stats is not None:
                for attr, family in families.items():
                    family.add_metric([agent], getattr(stats, attr))
            connected.add_metric([agent], float(stats is not None and stats.connected))
            stalled.add_metric([agent], float(stats is not None and stats.link() == "stalled"))
            seen_ns = max(last_seen_db.get(agent, 0), stats.last_seen_ns if stats else 0)
            if seen_ns:
                last_seen.add_metric([agent], seen_ns / 1e9)
        yield from families.values()
        yield connected
        yield stalled
        yield last_seen

    def _read_fleet(self) -> tuple[dict[tuple[str, str], int], dict[str, int], dict[str, int], dict[str, int],
                                   dict[str, int]] | None:
        """(work orders by (status, severity), assets by state, agent last seen ns, assets by link,
        assets by condition) or None."""
        try:
            wo_rows, asset_rows, agent_rows, link_rows, condition_rows = read_now(self.fleet_db, [
                ("SELECT status, severity, COUNT(*) FROM work_orders GROUP BY status, severity", ()),
                ("SELECT state, COUNT(*) FROM assets GROUP BY state", ()),
                ("SELECT agent_id, last_seen_ns FROM agents", ()),
                ("SELECT link, COUNT(*) FROM assets GROUP BY link", ()),
                ("SELECT condition, COUNT(*) FROM assets GROUP BY condition", ())])
        except Exception as exc:  # any backend's error: reported as fleet_db_up 0, never raised into a scrape
            now = time.monotonic()
            if now - self._last_db_warning > DB_WARNING_INTERVAL_S:
                log.warning("metrics: cannot read the state database: %s: %s", type(exc).__name__, exc)
                self._last_db_warning = now
            return None
        work_orders = {(str(st), str(sev)): int(n) for st, sev, n in wo_rows}
        assets = {str(st): int(n) for st, n in asset_rows}
        agents = {str(a): int(ns) for a, ns in agent_rows}
        by_link = {str(v): int(n) for v, n in link_rows}
        by_condition = {str(v): int(n) for v, n in condition_rows}
        return work_orders, assets, agents, by_link, by_condition


def collector_registry(daemon: CollectorDaemon) -> CollectorRegistry:
    """A registry with the collector's metrics and the standard process metrics."""
    registry = CollectorRegistry()
    registry.register(CollectorMetrics(daemon.servicer, daemon.sink, daemon.config.state_database, daemon.health))
    ProcessCollector(registry=registry)
    return registry
