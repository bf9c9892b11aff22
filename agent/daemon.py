"""The agent daemon: connectors -> LocalTwin + summarizer -> queue -> uplink, supervised.

Every long-running piece is its own task wrapped in `supervise`, so a bug in one connector is
logged and that connector restarted after a pause, while the others, the queue and the uplink go on.
Summary intervals are scheduled as agent/intervals.py describes (monotonic waits, wall-clock
labels, early close). A disk that refuses writes never stops the summarizer: intervals keep
closing into the queue's in-memory overflow, and the twin flush and status file retry later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import ClassVar

import numpy as np

from agent import __version__
from agent.analytics.summarize import Summarizer
from agent.batch import build_batch, build_hello
from agent.config import AgentConfig
from agent.intervals import IntervalCompletion, interval_label_ns, next_target_ns
from agent.model import PointSpec, Quality, Reading
from agent.status_file import ASK_SIGNAL, STATUS_FILE, write_status
from agent.twin import LocalTwin
from agent.uplink.addresses import CollectorAddresses
from agent.uplink.client import ChannelSettings, UplinkClient
from agent.uplink.queue import StoreAndForwardQueue, storage_problem
from agent.vibration_monitor import VibrationMonitor
from protos.twin.v1 import twin_pb2
from runtime.backoff import Backoff
from runtime.cancellation import cancel_and_wait
from runtime.logs import RateLimitedLog
from runtime.memory import rss_mb
from runtime.supervise import supervise

__all__ = ["STATUS_FILE", "AgentDaemon"]

log = logging.getLogger("twin.agent")

MAX_CLOCK_AHEAD_NS = 300 * 10**9  # device timestamps further ahead than this are not trusted
STORAGE_RETRY_S = 1.0  # while the disk refuses writes: how often the queue's overflow is retried
STATUS_MIN_SPACING_S = 0.05  # status requests beyond this rate are answered by one write


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
    # Status requests (SIGUSR1) answered by this process, across reloads: `twin-agent status` waits for
    # the count in the file to move past the one it saw before asking.
    status_requests: ClassVar[int] = 0

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        state_dir = config.state_dir
        self.twin = LocalTwin(config.assets, state_dir / "twin.sqlite")
        self.queue = StoreAndForwardQueue(state_dir / "queue.sqlite", int(config.uplink.max_queue_mb * 1024 * 1024),
                                          unacked_window=config.uplink.max_in_flight,
                                          max_overflow_bytes=int(config.uplink.max_overflow_mb * 1024 * 1024))
        self.point_specs = {(p.asset, p.name): p for a in config.assets for p in a.points}
        for connector in config.connectors:  # connectors that learn metadata from the device (BACnet units)
            if hasattr(connector, "spec_listener"):
                connector.spec_listener = self.update_point_spec
        self.summarizer = Summarizer(counters=[k for k, p in self.point_specs.items() if p.kind == "counter"])
        self.completion = IntervalCompletion(self.point_specs.values())
        self.vibration = VibrationMonitor(config.assets)
        u = config.uplink
        self.uplink = UplinkClient(
            ChannelSettings(u.collectors[0], config.token, u.tls, u.ca_file, u.cert_file, u.key_file, u.server_name,
                            u.compression),
            self.queue, self._hello, max_in_flight=u.max_in_flight,
            backoff=Backoff(u.backoff_initial_s, u.backoff_max_s), ack_timeout_s=u.ack_timeout_s,
            addresses=CollectorAddresses(u.collectors),
        )
        self.started = time.monotonic()
        self.readings = 0
        self.intervals_closed = 0
        self.twin_flush_error = ""
        self.status_error = ""
        self._stop = asyncio.Event()
        self._status_wanted = asyncio.Event()
        self.running = asyncio.Event()  # set once every task is up
        self._last_end_ns = 0
        self.clock_behind_ns = 0  # how far the wall clock is behind the last stored interval
        self._errors = RateLimitedLog(log, 300.0)

    # ---- data path ------------------------------------------------------------------------------
    def emit(self, readings: Sequence[Reading]) -> None:
        readings = guard_clock_skew(readings, time.time_ns())
        self.readings += len(readings)
        self.twin.apply(readings)
        self.summarizer.add(readings)
        self.completion.observe(readings)
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

    async def emit_batch(self, end_ns: int | None = None) -> int | None:
        """Close the current summary interval into a batch and store it in the queue.

        `end_ns` is the interval boundary the batch is stored under; it is kept strictly after the
        last stored one so that two batches never write the same InfluxDB point (same series +
        timestamp). Returns the batch's seq, or None when the disk refused it and it waits in memory.
        """
        now_ns = time.time_ns()
        proposed = end_ns or now_ns
        self._note_clock(proposed)
        end_ns = interval_label_ns(proposed, self._last_end_ns)
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

        self.intervals_closed += 1
        had_error = self.queue.storage_error
        # Shielded: a cancellation (shutdown, reload) must not cut a store between insert and commit.
        seq = await asyncio.shield(self.queue.put(encode, now_ns, summaries=len(batch.summaries),
                                                  interval_end_ns=end_ns))
        if self.queue.storage_error != had_error:
            self._status_wanted.set()  # disk full, or writable again: worth a status update
        return seq

    def _note_clock(self, proposed_ns: int) -> None:
        """Log (once per episode) a wall clock that is behind the last stored interval.

        A gateway without a real-time clock may boot in the past until NTP syncs, and NTP may step
        the clock back: batches are then stored just after the last stored interval, 1 ms apart,
        until the clock has caught up, never under timestamps that already hold data.
        """
        behind = self._last_end_ns - proposed_ns
        if behind <= int(self.config.agent.summary_interval_s * 1e9):
            behind = 0  # an interval closed early is stored under its boundary, up to one interval ahead
        if behind > 0 and not self.clock_behind_ns:
            log.warning("system clock is %.0fs behind the last stored interval: intervals are stored 1 ms "
                        "after it until the clock catches up (delivery goes on)", behind / 1e9)
        elif not behind and self.clock_behind_ns:
            log.info("system clock has caught up with the stored intervals")
        self.clock_behind_ns = behind

    # ---- loops ----------------------------------------------------------------------------------
    async def _summary_loop(self) -> None:
        """Close intervals at their boundary, or earlier once every point due in them has been read.

        The wait is measured on the monotonic clock (agent/intervals.py), so a wall clock that steps
        back or forward cannot stall it; at most two intervals pass between two closes.
        """
        interval_s = self.config.agent.summary_interval_s
        interval_ns = int(interval_s * 1e9)
        target = 0
        while True:
            wall, mono = time.time_ns(), time.monotonic()
            target = next_target_ns(wall, interval_ns, target)
            deadline = mono + (target - wall) / 1e9
            self.completion.start(deadline, interval_s, mono)
            early = True
            try:
                async with asyncio.timeout(deadline - mono):
                    if self.completion.earliest > mono:  # closed early last time: not before the boundary
                        await asyncio.sleep(self.completion.earliest - mono)
                        self.completion.check()
                    await self.completion.complete.wait()
            except TimeoutError:
                early = False
            self.completion.closed(early)
            await self.emit_batch(target)

    async def _storage_loop(self) -> None:
        """While the disk refuses writes, retry every second: the queue's overflow, the twin's latest
        values and the status file (each write that fails writes nothing)."""
        while True:
            await asyncio.sleep(STORAGE_RETRY_S)
            if self.queue.stats().overflow_batches:
                had_error = self.queue.storage_error
                await self.queue.retry()
                if self.queue.storage_error != had_error:
                    self._status_wanted.set()
            if self.twin_flush_error:
                await self._flush_twin()
            if self.status_error:
                self._status_wanted.set()

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.agent.twin_flush_interval_s)
            await self._flush_twin()

    async def _flush_twin(self) -> None:
        try:
            await self.twin.flush()
        except (OSError, sqlite3.Error) as exc:  # disk full: the rows are kept for the next flush
            self.twin_flush_error = storage_problem(exc)
            self._errors.warning("twin flush", f"twin: latest values not saved ({self.twin_flush_error}); "
                                               "retrying at the next flush")
        else:
            self.twin_flush_error = ""

    async def _status_loop(self) -> None:
        """Rewrite status.json every status_interval_s, and when asked or when storage changes state."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.agent.status_interval_s):
                    await self._status_wanted.wait()
            self._status_wanted.clear()
            self.write_status()
            await asyncio.sleep(STATUS_MIN_SPACING_S)

    def _ask_status(self) -> None:
        AgentDaemon.status_requests += 1
        self._status_wanted.set()

    def storage_state(self) -> str:
        """ok, or what the disk refused last: "disk full" when that is the reason."""
        return self.queue.storage_error or self.twin_flush_error or self.status_error or "ok"

    def status(self) -> dict[str, object]:
        q = self.queue.stats()
        c = self.uplink.counters
        return {
            "agent": self.config.agent.id, "site": self.config.agent.site, "pid": os.getpid(),
            "updated_ns": time.time_ns(), "uptime_s": round(time.monotonic() - self.started, 1),
            "status_requests": self.status_requests, "readings": self.readings,
            "storage": self.storage_state(),
            "queue": {"batches": q.batches, "bytes": q.bytes, "dropped": q.dropped, "next_seq": q.next_seq,
                      "summaries_total": q.summaries_total, "summaries_dropped": q.summaries_dropped,
                      "overflow_batches": q.overflow_batches, "overflow_bytes": q.overflow_bytes,
                      "storage_error": q.storage_error, "storage_error_since_ns": q.storage_error_since_ns,
                      "payload_bytes_stored": q.payload_bytes_stored},
            "uplink": {"connected": c.connected, "link": self.uplink.link_state(),
                       "waiting_for_ack_s": round(c.waiting_s(), 1), "sent": c.sent, "acked": c.acked,
                       "reconnects": c.reconnects, "ack_timeouts": c.ack_timeouts, "last_error": c.last_error},
            "intervals": {"closed": self.intervals_closed, "closed_early": self.completion.early_closes,
                          "clock_behind_s": round(self.clock_behind_ns / 1e9, 3)},
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
        """Atomically replace state_dir/status.json; a full disk is logged, never raised."""
        try:
            write_status(self.config.state_dir, self.status())
        except OSError as exc:
            self.status_error = storage_problem(exc)
            self._errors.warning("status", f"{STATUS_FILE} not written: {self.status_error}")
        else:
            self.status_error = ""

    async def run(self) -> None:
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        await self.twin.open()
        await self.queue.open()
        self._last_end_ns = self.queue.last_interval_end_ns
        for address in self.config.uplink.collectors:
            host = address.rsplit(":", 1)[0].strip("[]")
            if not self.config.uplink.tls and host not in ("127.0.0.1", "localhost", "::1"):
                log.warning("uplink to %s without TLS: the token and the data cross the network in clear; "
                            "set tls = true (see configs/agent.example.toml)", address)
        log.info("agent %s (site %s) starting: %d assets, %d sources, queue has %d batches",
                 self.config.agent.id, self.config.agent.site, len(self.config.assets),
                 len(self.config.connectors), self.queue.stats().batches)
        producers = [asyncio.create_task(supervise(f"source {c.name}", lambda c=c: c.run(self.emit)))
                     for c in self.config.connectors]
        producers += [
            asyncio.create_task(supervise("summarizer", self._summary_loop)),
            asyncio.create_task(supervise("storage retry", self._storage_loop)),
            asyncio.create_task(supervise("twin flush", self._flush_loop)),
            asyncio.create_task(supervise("status", self._status_loop)),
        ]
        uplink = asyncio.create_task(supervise("uplink", self.uplink.run))
        loop = asyncio.get_running_loop()
        # A plain handler, not loop.add_signal_handler: removing that restores the default action, and
        # SIGUSR1's default is to terminate; between two daemons of a reload the signal is ignored.
        with contextlib.suppress(ValueError):  # not the main thread (embedded in a test): no requests
            signal.signal(ASK_SIGNAL, lambda *_: loop.call_soon_threadsafe(self._ask_status))
        self.write_status()
        self.running.set()
        try:
            await self._stop.wait()
        finally:
            log.info("agent stopping: storing the last interval and closing stores")
            with contextlib.suppress(ValueError):
                signal.signal(ASK_SIGNAL, signal.SIG_IGN)
            await cancel_and_wait(producers)
            try:
                await self.emit_batch()
            except Exception:
                log.exception("could not store the last interval at shutdown")
            await self._drain_uplink(self.config.uplink.shutdown_drain_s)
            await cancel_and_wait([uplink])
            self.uplink.counters.connected = False
            await self._flush_twin()
            await self.queue.close()
            self.write_status()
            with contextlib.suppress(OSError, sqlite3.Error):
                await self.twin.close()
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

