"""The agent daemon: connectors -> LocalTwin + summarizer -> queue -> uplink, supervised.

Every long-running piece is its own task wrapped in `supervise`, so a bug in one connector is
logged and that connector restarted after a pause, while the others, the queue and the uplink go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from agent import __version__
from agent.analytics.summarize import Summarizer
from agent.batch import build_batch, build_hello
from agent.config import AgentConfig
from agent.model import PointSpec, Quality, Reading
from agent.twin import LocalTwin
from agent.uplink.client import ChannelSettings, UplinkClient
from agent.uplink.queue import StoreAndForwardQueue
from agent.vibration_monitor import VibrationMonitor
from protos.twin.v1 import twin_pb2
from runtime.backoff import Backoff
from runtime.cancellation import cancel_and_wait
from runtime.memory import rss_mb
from runtime.supervise import supervise

__all__ = ["AgentDaemon"]

log = logging.getLogger("twin.agent")

STATUS_FILE = "status.json"
CLOCK_BACK_WARN_NS = 60 * 10**9
MIN_STEP_NS = 1_000_000
MAX_CLOCK_AHEAD_NS = 300 * 10**9  # device timestamps further ahead than this are not trusted


def next_boundary_ns(now_ns: int, interval_ns: int, previous_ns: int) -> int:
    """The wall-clock interval boundary the next batch closes at: the one after `previous_ns`.

    Exact boundaries (integer ns) line every agent's intervals up in Grafana; a wake-up that comes
    late on a busy gateway still closes its own interval, and a gateway that fell behind by more
    than an interval (suspend, clock step) skips to the next boundary ahead.
    """
    following = previous_ns + interval_ns
    if previous_ns and following > now_ns - interval_ns:
        return following
    return (now_ns // interval_ns + 1) * interval_ns


def guard_clock_skew(readings: Sequence[Reading], now_ns: int) -> Sequence[Reading]:
    """Readings stamped by a device clock that runs ahead get the receive time and UNCERTAIN quality.

    Source timestamps are used when devices give them (OPC-UA, MQTT payloads, Sparkplug), but a PLC
    whose clock is a year ahead would otherwise write into the future and freeze the twin's latest
    value until that date.
    """
    limit = now_ns + MAX_CLOCK_AHEAD_NS
    if all(r.ts_ns <= limit for r in readings):
        return readings
    return [
        r if r.ts_ns <= limit else replace(
            r, ts_ns=now_ns, quality=max(r.quality, Quality.UNCERTAIN),
            reason=f"device clock {(r.ts_ns - now_ns) / 1e9:.0f}s ahead; receive time used")
        for r in readings
    ]


class AgentDaemon:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        state_dir = config.state_dir
        self.twin = LocalTwin(config.assets, state_dir / "twin.sqlite")
        self.queue = StoreAndForwardQueue(state_dir / "queue.sqlite", int(config.uplink.max_queue_mb * 1024 * 1024),
                                          unacked_window=config.uplink.max_in_flight)
        self.summarizer = Summarizer()
        self.vibration = VibrationMonitor(config.assets)
        self.point_specs = {(p.asset, p.name): p for a in config.assets for p in a.points}
        for connector in config.connectors:  # connectors that learn metadata from the device (BACnet units)
            if hasattr(connector, "spec_listener"):
                connector.spec_listener = self.update_point_spec
        u = config.uplink
        self.uplink = UplinkClient(
            ChannelSettings(u.collector, config.token, u.tls, u.ca_file, u.cert_file, u.key_file, u.server_name,
                            u.compression),
            self.queue, self._hello, max_in_flight=u.max_in_flight,
            backoff=Backoff(u.backoff_initial_s, u.backoff_max_s),
        )
        self.started = time.monotonic()
        self.readings = 0
        self._stop = asyncio.Event()
        self.running = asyncio.Event()  # set once every task is up
        self._last_end_ns = 0

    # ---- data path ------------------------------------------------------------------------------
    def emit(self, readings: Sequence[Reading]) -> None:
        readings = guard_clock_skew(readings, time.time_ns())
        self.readings += len(readings)
        self.twin.apply(readings)
        self.summarizer.add(readings)
        for r in readings:
            if isinstance(r.value, np.ndarray) and r.quality != Quality.BAD:
                self.vibration.submit(r)
            elif r.value is not None:
                self.vibration.observe_scalar(r)

    def update_point_spec(self, spec: PointSpec) -> None:
        """A connector learned a point's metadata from its device: summaries, status and Hello use it."""
        self.point_specs[(spec.asset, spec.name)] = spec
        self.twin.update_spec(spec)

    def _hello(self) -> twin_pb2.Hello:
        a = self.config.agent
        return build_hello(a.id, a.site, __version__, self.queue.epoch, self.twin.asset_specs())

    def _health(self, now_ns: int) -> twin_pb2.AgentHealth:
        q = self.queue.stats()
        c = self.uplink.counters
        return twin_pb2.AgentHealth(
            ts_ns=now_ns, queue_batches=q.batches, queue_bytes=q.bytes, dropped=q.dropped,
            sent=c.sent, acked=c.acked,
            connector_errors=sum(x.stats.errors + x.stats.decode_errors for x in self.config.connectors),
            stale_points=self.twin.stale_points(), rss_mb=round(rss_mb(), 1),
            uptime_s=round(time.monotonic() - self.started, 1),
        )

    async def emit_batch(self, end_ns: int | None = None) -> int:
        """Close the current summary interval into a batch and store it in the queue.

        `end_ns` is the interval boundary the batch is stored under; it is strictly increasing
        so that two batches never write the same InfluxDB point (same series + timestamp).
        """
        now_ns = time.time_ns()
        proposed = end_ns or now_ns
        if proposed <= self._last_end_ns - CLOCK_BACK_WARN_NS:
            # A gateway without a real-time clock may boot in the past until NTP syncs: never write
            # under timestamps that already hold data (InfluxDB would silently overwrite them).
            log.warning("system clock is %.0fs behind the last stored interval; batches stay after it",
                        (self._last_end_ns - proposed) / 1e9)
        # Never the same timestamp twice; 1 ms apart so stores with ms resolution keep both.
        end_ns = max(proposed, self._last_end_ns + MIN_STEP_NS)
        self._last_end_ns = end_ns
        self.twin.refresh_states()
        vib = await self.vibration.drain()
        batch = build_batch(
            summaries=self.summarizer.drain(), point_specs=self.point_specs, interval_end_ns=end_ns,
            changes=self.twin.drain_changes(),
            asset_states={a: (v.state, self.vibration.health(a)) for a, v in self.twin.assets.items()},
            vibration=vib, health=self._health(now_ns),
        )

        def encode(seq: int) -> bytes:
            batch.seq = seq
            return batch.SerializeToString()

        # Shielded: a cancellation (shutdown, reload) must not cut a store between insert and commit.
        return await asyncio.shield(self.queue.put(encode, now_ns, summaries=len(batch.summaries),
                                                   interval_end_ns=end_ns))

    # ---- loops ----------------------------------------------------------------------------------
    async def _summary_loop(self) -> None:
        interval_ns = int(self.config.agent.summary_interval_s * 1e9)
        boundary = 0
        while True:
            # Sleep to the next wall-clock boundary so every agent's intervals line up in Grafana.
            boundary = next_boundary_ns(time.time_ns(), interval_ns, boundary)
            await asyncio.sleep(max(0.0, (boundary - time.time_ns()) / 1e9))
            await self.emit_batch(boundary)
            self.write_status()

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.agent.twin_flush_interval_s)
            await self.twin.flush()

    def status(self) -> dict[str, object]:
        q = self.queue.stats()
        c = self.uplink.counters
        return {
            "agent": self.config.agent.id, "site": self.config.agent.site, "pid": os.getpid(),
            "updated_ns": time.time_ns(), "uptime_s": round(time.monotonic() - self.started, 1),
            "readings": self.readings,
            "queue": {"batches": q.batches, "bytes": q.bytes, "dropped": q.dropped, "next_seq": q.next_seq,
                      "summaries_total": q.summaries_total},
            "uplink": {"connected": c.connected, "sent": c.sent, "acked": c.acked,
                       "reconnects": c.reconnects, "last_error": c.last_error},
            "connectors": {
                x.name: {"polls": x.stats.polls, "errors": x.stats.errors,
                         "decode_errors": x.stats.decode_errors, "last_error": x.stats.last_error,
                         "devices_online": dict(x.stats.devices_online),
                         "unknown_devices": dict(x.stats.unknown_devices)}
                for x in self.config.connectors
            },
            "assets": self.twin.snapshot(),
            "vibration": self.vibration.latest_summary(),
        }

    def write_status(self) -> None:
        """Atomically replace state_dir/status.json (read by `twin-agent status` and the demo)."""
        path = self.config.state_dir / STATUS_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.status(), default=str))
        tmp.replace(path)

    async def run(self) -> None:
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        await self.twin.open()
        await self.queue.open()
        self._last_end_ns = self.queue.last_interval_end_ns
        host = self.config.uplink.collector.rsplit(":", 1)[0].strip("[]")
        if not self.config.uplink.tls and host not in ("127.0.0.1", "localhost", "::1"):
            log.warning("uplink to %s without TLS: the token and the data cross the network in clear; "
                        "set tls = true (see configs/agent.example.toml)", self.config.uplink.collector)
        log.info("agent %s (site %s) starting: %d assets, %d sources, queue has %d batches",
                 self.config.agent.id, self.config.agent.site, len(self.config.assets),
                 len(self.config.connectors), self.queue.stats().batches)
        producers = [asyncio.create_task(supervise(f"source {c.name}", lambda c=c: c.run(self.emit)))
                     for c in self.config.connectors]
        producers += [
            asyncio.create_task(supervise("summarizer", self._summary_loop)),
            asyncio.create_task(supervise("twin flush", self._flush_loop)),
        ]
        uplink = asyncio.create_task(supervise("uplink", self.uplink.run))
        self.write_status()
        self.running.set()
        try:
            await self._stop.wait()
        finally:
            log.info("agent stopping: storing the last interval and closing stores")
            await cancel_and_wait(producers)
            try:
                await self.emit_batch()
            except Exception:
                log.exception("could not store the last interval at shutdown")
            await self._drain_uplink(self.config.uplink.shutdown_drain_s)
            await cancel_and_wait([uplink])
            self.uplink.counters.connected = False
            self.write_status()
            await self.twin.close()
            await self.queue.close()
            with contextlib.suppress(OSError):
                self.vibration.save_last_blocks(self.config.state_dir / "waveforms")
            await self.vibration.close()

    async def _drain_uplink(self, grace_s: float) -> None:
        """Give a connected uplink a moment to deliver the last batches; they stay queued otherwise."""
        deadline = time.monotonic() + grace_s
        # Polling is fine here: it runs once, at shutdown, for at most `grace_s`.
        while self.uplink.counters.connected and self.queue.stats().batches and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    def request_stop(self) -> None:
        self._stop.set()

