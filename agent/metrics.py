"""Prometheus metrics of a running agent, read from the live daemon objects at scrape time.

Nothing is counted twice: `AgentMetrics.collect` reads the counters the connectors, twin,
queue, uplink and vibration monitor already keep, when Prometheus scrapes. The HTTP endpoint is
`runtime.metrics_server` (shared with the collector).

    twin_agent_info{agent,site,version}                       1
    twin_agent_uptime_seconds, twin_agent_readings_total
    twin_agent_connector_{polls,errors,decode_errors,reconnects}_total{connector}
    twin_agent_connector_devices{connector}, twin_agent_connector_devices_online{connector}
    twin_agent_device_online{connector,device}                0 | 1
    twin_agent_connector_unknown_devices{connector}, twin_agent_connector_unknown_device_messages_total{connector}
    twin_agent_points{quality="good|uncertain|bad"}, twin_agent_points_stale
    twin_agent_assets{state}
    twin_agent_queue_{batches,bytes,max_bytes}, twin_agent_queue_dropped_batches_total,
    twin_agent_queue_{batches,summaries}_stored_total, twin_agent_queue_dropped_summaries_total,
    twin_agent_queue_overflow_{batches,bytes}, twin_agent_queue_payload_bytes_stored_total
    twin_agent_disk_full                                      1 while the state directory refuses writes
    twin_agent_uplink_connected, twin_agent_uplink_stalled, twin_agent_uplink_{sent,acked}_batches_total,
    twin_agent_uplink_reconnects_total, twin_agent_uplink_ack_timeouts_total
    twin_agent_intervals_closed_total, twin_agent_intervals_closed_early_total, twin_agent_clock_behind_seconds
    twin_agent_vibration_blocks_{analysed,dropped}_total, twin_agent_vibration_analysis_errors_total
    twin_agent_resident_memory_bytes
    + the standard process_* metrics (CPU, open fds, ...) of prometheus_client
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from agent import __version__
from agent.model import Quality
from runtime.memory import rss_mb

if TYPE_CHECKING:  # the daemon registers these metrics; importing it here would be circular
    from agent.daemon import AgentDaemon

__all__ = ["AgentMetrics", "agent_registry"]


class AgentMetrics(Collector):
    """Reads the daemon's own counters on every scrape (called from the HTTP server's thread).

    Only reads: values are ints/bools updated by the event loop, and dicts that may grow are
    copied in one C-level step (`dict(...)`) before iterating.
    """

    def __init__(self, daemon: AgentDaemon) -> None:
        self.daemon = daemon

    def collect(self) -> Iterator[Metric]:
        d = self.daemon
        a = d.config.agent
        yield InfoMetricFamily("twin_agent", "Agent identity.",
                               value={"agent": a.id, "site": a.site, "version": __version__})
        yield GaugeMetricFamily("twin_agent_uptime_seconds", "Seconds since the daemon started.",
                                value=time.monotonic() - d.started)
        yield CounterMetricFamily("twin_agent_readings", "Readings received from all connectors.",
                                  value=d.readings)
        yield from self._connectors()
        yield from self._twin()
        yield from self._queue_uplink()
        v = d.vibration
        yield CounterMetricFamily("twin_agent_vibration_blocks_analysed", "Waveform blocks analysed.",
                                  value=v.analysed_blocks)
        yield CounterMetricFamily("twin_agent_vibration_blocks_dropped",
                                  "Waveform blocks dropped because analysis fell behind.", value=v.dropped_blocks)
        yield CounterMetricFamily("twin_agent_vibration_analysis_errors", "Waveform blocks whose analysis failed.",
                                  value=v.errors)
        yield GaugeMetricFamily("twin_agent_resident_memory_bytes", "Resident set size of the agent process.",
                                value=rss_mb() * 1e6)

    def _connectors(self) -> Iterator[Metric]:
        labels = ["connector"]
        polls = CounterMetricFamily("twin_agent_connector_polls", "Poll cycles or messages handled.", labels=labels)
        errors = CounterMetricFamily("twin_agent_connector_errors", "Failed polls, timeouts, lost connections.",
                                     labels=labels)
        decode = CounterMetricFamily("twin_agent_connector_decode_errors", "Values or payloads that could not be "
                                     "decoded.", labels=labels)
        reconnects = CounterMetricFamily("twin_agent_connector_reconnects", "Connections re-established.",
                                         labels=labels)
        devices = GaugeMetricFamily("twin_agent_connector_devices", "Devices the connector talks to.", labels=labels)
        online = GaugeMetricFamily("twin_agent_connector_devices_online", "Devices currently answering.",
                                   labels=labels)
        device = GaugeMetricFamily("twin_agent_device_online", "1 while the device answers, else 0.",
                                   labels=["connector", "device"])
        unknown = GaugeMetricFamily("twin_agent_connector_unknown_devices", "Devices (or points) that sent data "
                                    "but are not configured.", labels=labels)
        unknown_messages = CounterMetricFamily("twin_agent_connector_unknown_device_messages", "Messages from "
                                               "devices (or of points) that are not configured.", labels=labels)
        for c in self.daemon.config.connectors:
            s = c.stats
            polls.add_metric([c.name], s.polls)
            errors.add_metric([c.name], s.errors)
            decode.add_metric([c.name], s.decode_errors)
            reconnects.add_metric([c.name], s.reconnects)
            states = dict(s.devices_online)
            devices.add_metric([c.name], len(states))
            online.add_metric([c.name], sum(states.values()))
            for name, up in sorted(states.items()):
                device.add_metric([c.name, name], float(up))
            strangers = dict(s.unknown_devices)
            unknown.add_metric([c.name], len(strangers))
            unknown_messages.add_metric([c.name], sum(strangers.values()))
        yield from (polls, errors, decode, reconnects, devices, online, device, unknown, unknown_messages)

    def _twin(self) -> Iterator[Metric]:
        twin = self.daemon.twin
        views = list(twin.assets.values())
        quality = Counter(p.quality for v in views for p in list(v.points.values()))
        points = GaugeMetricFamily("twin_agent_points", "Points by the quality of their latest reading.",
                                   labels=["quality"])
        for q in Quality:
            points.add_metric([q.name.lower()], quality.get(q, 0))
        yield points
        yield GaugeMetricFamily("twin_agent_points_stale", "Points silent for longer than expected.",
                                value=twin.stale_points())
        assets = GaugeMetricFamily("twin_agent_assets", "Assets by derived state.", labels=["state"])
        for state, n in sorted(Counter(v.state for v in views).items()):
            assets.add_metric([state], n)
        yield assets

    def _queue_uplink(self) -> Iterator[Metric]:
        q = self.daemon.queue.stats()
        c = self.daemon.uplink.counters
        yield GaugeMetricFamily("twin_agent_queue_batches", "Batches waiting for an ack.", value=q.batches)
        yield GaugeMetricFamily("twin_agent_queue_bytes", "Bytes of batches waiting for an ack.", value=q.bytes)
        yield GaugeMetricFamily("twin_agent_queue_max_bytes", "Queue bound; the oldest batches are dropped beyond.",
                                value=self.daemon.queue.max_bytes)
        yield CounterMetricFamily("twin_agent_queue_dropped_batches", "Batches dropped because the queue was full.",
                                  value=q.dropped)
        yield CounterMetricFamily("twin_agent_queue_batches_stored", "Batches stored in this queue epoch.",
                                  value=max(q.next_seq - 1, 0))
        yield CounterMetricFamily("twin_agent_queue_summaries_stored", "Summaries stored in this queue epoch.",
                                  value=q.summaries_total)
        yield CounterMetricFamily("twin_agent_queue_dropped_summaries", "Summaries in batches dropped from the "
                                  "in-memory overflow (disk full).", value=q.summaries_dropped)
        yield GaugeMetricFamily("twin_agent_queue_overflow_batches", "Closed intervals waiting in memory because "
                                "the disk refuses writes.", value=q.overflow_batches)
        yield GaugeMetricFamily("twin_agent_queue_overflow_bytes", "Bytes of those batches.", value=q.overflow_bytes)
        yield CounterMetricFamily("twin_agent_queue_payload_bytes_stored", "Batch payload bytes stored since the "
                                  "agent started.", value=q.payload_bytes_stored)
        yield GaugeMetricFamily("twin_agent_disk_full", "1 while the state directory's disk is full (queue, twin "
                                "or status writes refused).", value=float(self.daemon.storage_state() == "disk full"))
        yield GaugeMetricFamily("twin_agent_uplink_connected", "1 while the collector stream is up.",
                                value=float(c.connected))
        yield GaugeMetricFamily("twin_agent_uplink_stalled", "1 while batches in flight wait unusually long for an "
                                "ack (collector or network stalled).",
                                value=float(self.daemon.uplink.link_state() == "stalled"))
        yield CounterMetricFamily("twin_agent_uplink_ack_timeouts", "Streams closed because no ack came within "
                                  "ack_timeout_s.", value=c.ack_timeouts)
        yield CounterMetricFamily("twin_agent_uplink_sent_batches", "Batches sent (resends included).", value=c.sent)
        yield CounterMetricFamily("twin_agent_uplink_acked_batches", "Batches acked by the collector.", value=c.acked)
        yield CounterMetricFamily("twin_agent_uplink_reconnects", "Stream reconnects.", value=c.reconnects)
        d = self.daemon
        yield CounterMetricFamily("twin_agent_intervals_closed", "Summary intervals closed.", value=d.intervals_closed)
        yield CounterMetricFamily("twin_agent_intervals_closed_early", "Summary intervals closed before their "
                                  "boundary because every point due in them had been read.",
                                  value=d.completion.early_closes)
        yield GaugeMetricFamily("twin_agent_clock_behind_seconds", "How far the wall clock is behind the last "
                                "stored interval (after a backward step); 0 normally.", value=d.clock_behind_ns / 1e9)


def agent_registry(daemon: AgentDaemon) -> CollectorRegistry:
    """A registry with the agent's metrics and the standard process metrics, for one daemon."""
    registry = CollectorRegistry()
    registry.register(AgentMetrics(daemon))
    ProcessCollector(registry=registry)
    return registry
