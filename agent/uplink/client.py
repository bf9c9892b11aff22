"""UplinkClient: one long-lived gRPC stream to the collector, fed from the on-disk queue.

Sends a Hello, then every queued batch in seq order with up to `max_in_flight` unacked; deletes
batches from the queue when the collector's cumulative Ack arrives. Any failure (collector down,
network gone, stream reset, auth refused) closes the stream and reconnects after an exponential
backoff with jitter (runtime/backoff.py), so that a fleet of gateways does not reconnect in lockstep after a
collector restart. On every (re)connect the sending restarts from the oldest unacked batch:
the collector deduplicates by (agent, queue epoch, seq), so a resend never duplicates an effect.

The stream speaks wire v2 (protos/twin/v2: series interned per stream, see agent/uplink/wire.py);
a collector without it answers UNIMPLEMENTED, and the client speaks v1 until the agent restarts. gRPC
compression (`[uplink] compression`) applies to either.

A link can also fail silently: a collector frozen (SIGSTOP, a hung host) or a partition that drops
packets without a reset keeps the TCP connection "up". Two things notice it. HTTP/2 keepalive pings
(every KEEPALIVE_TIME_S, answered within KEEPALIVE_TIMEOUT_S, also while no call is active and no
data flows) close a transport whose peer does not answer; and the ack timeout closes a stream on
which batches (or the Hello) have waited `ack_timeout_s` without any ack, which catches a collector
whose transport answers but whose ingest does not. While the oldest batch in flight has waited more
than a third of the ack timeout the link is shown as "stalled".

With several collector addresses, each new stream after a failure goes to the next one
(agent/uplink/addresses.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import grpc

from agent.uplink.addresses import CHANNEL_OPTIONS, CollectorAddresses
from agent.uplink.queue import StoreAndForwardQueue
from agent.uplink.wire import StreamEncoder, encoder
from protos.twin.v1 import twin_pb2, twin_pb2_grpc
from protos.twin.v2 import twin_pb2_grpc as twin_v2_pb2_grpc
from runtime.backoff import Backoff

__all__ = ["ChannelSettings", "UplinkClient", "UplinkCounters"]

log = logging.getLogger("twin.agent.uplink")

KEEPALIVE_TIME_S = 10.0
KEEPALIVE_TIMEOUT_S = 10.0
DEFAULT_ACK_TIMEOUT_S = 30.0
STALLED_FRACTION = 1 / 3  # of the ack timeout: the link shows "stalled" from then on

KEEPALIVE_OPTIONS = [
    ("grpc.keepalive_time_ms", int(KEEPALIVE_TIME_S * 1000)),
    ("grpc.keepalive_timeout_ms", int(KEEPALIVE_TIMEOUT_S * 1000)),
    # gRPC >= 1.5x waits for a ping's answer ping_timeout_ms (default 1 min), not keepalive_timeout_ms.
    ("grpc.http2.ping_timeout_ms", int(KEEPALIVE_TIMEOUT_S * 1000)),
    ("grpc.keepalive_permit_without_calls", 1),
    # Keep pinging while nothing is sent (a full in-flight window waiting for acks sends nothing):
    # by default gRPC stops after two pings without data, and spaces them 5 minutes apart.
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.http2.min_time_between_pings_ms", int(KEEPALIVE_TIME_S * 1000)),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


class AckTimeoutError(Exception):
    """Batches or the Hello waited `ack_timeout_s` for an ack: the collector or the path is stuck."""


@dataclass(slots=True)
class UplinkCounters:
    sent: int = 0
    acked: int = 0
    reconnects: int = 0
    ack_timeouts: int = 0
    connected: bool = False
    last_error: str = ""
    waiting_since: float = 0.0  # monotonic time the oldest unanswered message was sent; 0 = none

    def waiting_s(self, now: float | None = None) -> float:
        """How long the oldest batch in flight (or the Hello) has waited for an ack."""
        if not self.waiting_since:
            return 0.0
        return max(0.0, (time.monotonic() if now is None else now) - self.waiting_since)


@dataclass(frozen=True, slots=True)
class ChannelSettings:
    target: str
    token: str
    tls: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    server_name: str = ""
    compression: str = "none"  # none | gzip | deflate


COMPRESSION = {"none": grpc.Compression.NoCompression, "gzip": grpc.Compression.Gzip,
               "deflate": grpc.Compression.Deflate}


def open_channel(s: ChannelSettings) -> grpc.aio.Channel:
    options = list(KEEPALIVE_OPTIONS) + CHANNEL_OPTIONS
    compression = COMPRESSION[s.compression]
    if not s.tls:
        return grpc.aio.insecure_channel(s.target, options=options, compression=compression)
    read = lambda p: Path(p).read_bytes() if p else None  # noqa: E731
    creds = grpc.ssl_channel_credentials(read(s.ca_file), read(s.key_file), read(s.cert_file))
    if s.server_name:
        options.append(("grpc.ssl_target_name_override", s.server_name))
    return grpc.aio.secure_channel(s.target, creds, options=options, compression=compression)


class UplinkClient:
    def __init__(
        self,
        channel: ChannelSettings,
        queue: StoreAndForwardQueue,
        hello: Callable[[], twin_pb2.Hello],
        max_in_flight: int = 16,
        backoff: Backoff | None = None,
        ack_timeout_s: float = DEFAULT_ACK_TIMEOUT_S,
        wire: str = "v2",
        addresses: CollectorAddresses | None = None,
    ) -> None:
        self.addresses = addresses or CollectorAddresses([channel.target])
        self.channel_settings = channel
        self.queue = queue
        self.hello = hello
        self.max_in_flight = max_in_flight
        self.backoff = backoff or Backoff(0.5, 60.0)
        self.ack_timeout_s = ack_timeout_s
        self.counters = UplinkCounters()
        self.wire = wire  # "v1" once a collector has answered v2 with UNIMPLEMENTED

    def link_state(self, now: float | None = None) -> str:
        """connected | stalled | disconnected, for status and metrics."""
        c = self.counters
        if not c.connected:
            return "disconnected"
        if c.waiting_s(now) > self.ack_timeout_s * STALLED_FRACTION:
            return "stalled"
        return "connected"

    async def run(self) -> None:
        """Stream forever; returns only when cancelled."""
        while True:
            self.channel_settings = replace(self.channel_settings, target=self.addresses.current)
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except AckTimeoutError as exc:
                self.counters.ack_timeouts += 1
                self._failed(str(exc), level=logging.WARNING)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNIMPLEMENTED and self.wire == "v2":
                    log.info("uplink: %s does not speak wire v2; using v1", self.channel_settings.target)
                    self.wire = "v1"
                    continue
                self._failed(f"{exc.code().name}: {exc.details()}",
                             level=logging.ERROR if exc.code() in (grpc.StatusCode.UNAUTHENTICATED,
                                                                  grpc.StatusCode.PERMISSION_DENIED)
                             else logging.WARNING)
            except Exception as exc:  # a session must never end the uplink
                self._failed(f"{type(exc).__name__}: {exc}", level=logging.WARNING, exc=exc)
            self.counters.connected = False
            self.counters.waiting_since = 0.0
            self.addresses.failed()
            delay = self.backoff.next_delay()
            log.info("uplink: reconnecting to %s in %.1fs", self.addresses.current, delay)
            await asyncio.sleep(delay)
            self.counters.reconnects += 1

    def _failed(self, message: str, level: int, exc: BaseException | None = None) -> None:
        if message != self.counters.last_error:  # one line per distinct error, not one per retry
            log.log(level, "uplink: stream to %s failed: %s", self.channel_settings.target, message,
                    exc_info=exc if level >= logging.ERROR else None)
        self.counters.last_error = message

    async def _session(self) -> None:
        """One stream, until it fails or the ack watchdog gives up on it (that covers the connection
        and the Hello too: a collector that accepts TCP but never answers is given up as well)."""
        async with open_channel(self.channel_settings) as channel:
            self.counters.waiting_since = time.monotonic()  # the Hello's answer is awaited from now
            talk = asyncio.create_task(self._talk(channel))
            watchdog = asyncio.create_task(self._ack_watchdog())
            try:
                done, _ = await asyncio.wait({talk, watchdog}, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()  # raises what ended the session
            finally:
                for task in (talk, watchdog):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task

    async def _talk(self, channel: grpc.aio.Channel) -> None:
        stub = (twin_v2_pb2_grpc if self.wire == "v2" else twin_pb2_grpc).CollectorStub(channel)
        call = stub.Connect(metadata=(("authorization", f"Bearer {self.channel_settings.token}"),))
        wire = encoder(self.wire)  # v2's series table lives as long as this stream
        in_flight: deque[tuple[int, float]] = deque()  # (seq, monotonic send time)
        window = asyncio.Semaphore(self.max_in_flight)
        sender: asyncio.Task[None] | None = None
        try:
            await call.write(wire.hello(self.hello()))
            sender = asyncio.create_task(self._send_loop(call, window, in_flight, wire))
            await self._read_loop(call, window, in_flight)
        finally:
            if sender is not None:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await sender
            call.cancel()

    async def _read_loop(self, call: grpc.aio.StreamStreamCall, window: asyncio.Semaphore,
                         in_flight: deque[tuple[int, float]]) -> None:
        while True:
            msg = await call.read()
            if msg is grpc.aio.EOF:
                raise ConnectionError("collector closed the stream")
            if msg.HasField("ack"):
                await self._on_ack(msg.ack.seq, window, in_flight)

    async def _ack_watchdog(self) -> None:
        """Raise AckTimeoutError once the oldest unanswered message has waited `ack_timeout_s`."""
        while True:
            waited = self.counters.waiting_s()
            if waited >= self.ack_timeout_s:
                raise AckTimeoutError(f"no ack for {self.ack_timeout_s:g}s (collector or network stalled)")
            await asyncio.sleep(min(self.ack_timeout_s - waited, 1.0))

    async def _on_ack(self, seq: int, window: asyncio.Semaphore, in_flight: deque[tuple[int, float]]) -> None:
        """Acks are cumulative; the first one answers the Hello with the collector's watermark."""
        self.counters.acked += await self.queue.ack(seq)
        if not self.counters.connected:
            log.info("uplink: connected to %s", self.channel_settings.target)
            self.counters.last_error = ""
            self.counters.connected = True
            self.backoff.reset()
        while in_flight and in_flight[0][0] <= seq:
            in_flight.popleft()
            window.release()
        self.counters.waiting_since = in_flight[0][1] if in_flight else 0.0

    async def _send_loop(self, call: grpc.aio.StreamStreamCall, window: asyncio.Semaphore,
                         in_flight: deque[tuple[int, float]], wire: StreamEncoder) -> None:
        last_sent = 0
        while True:
            self.queue.changed.clear()
            batches = await self.queue.peek(last_sent, self.max_in_flight)
            if not batches:
                await self.queue.changed.wait()
                continue
            for seq, payload in batches:
                await window.acquire()
                in_flight.append((seq, time.monotonic()))
                if not self.counters.waiting_since:
                    self.counters.waiting_since = in_flight[0][1]
                await call.write(wire.batch(payload))
                last_sent = seq
                self.counters.sent += 1
