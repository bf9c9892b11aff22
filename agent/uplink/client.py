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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from agent.uplink.queue import StoreAndForwardQueue
from agent.uplink.wire import StreamEncoder, encoder
from protos.twin.v1 import twin_pb2, twin_pb2_grpc
from protos.twin.v2 import twin_pb2_grpc as twin_v2_pb2_grpc
from runtime.backoff import Backoff

__all__ = ["ChannelSettings", "UplinkClient", "UplinkCounters"]

log = logging.getLogger("twin.agent.uplink")

KEEPALIVE_OPTIONS = [
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


@dataclass(slots=True)
class UplinkCounters:
    sent: int = 0
    acked: int = 0
    reconnects: int = 0
    connected: bool = False
    last_error: str = ""


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
    options = list(KEEPALIVE_OPTIONS)
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
        wire: str = "v2",
    ) -> None:
        self.channel_settings = channel
        self.queue = queue
        self.hello = hello
        self.max_in_flight = max_in_flight
        self.backoff = backoff or Backoff(0.5, 60.0)
        self.counters = UplinkCounters()
        self.wire = wire  # "v1" once a collector has answered v2 with UNIMPLEMENTED

    async def run(self) -> None:
        """Stream forever; returns only when cancelled."""
        while True:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
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
            delay = self.backoff.next_delay()
            log.info("uplink: reconnecting in %.1fs", delay)
            await asyncio.sleep(delay)
            self.counters.reconnects += 1

    def _failed(self, message: str, level: int, exc: BaseException | None = None) -> None:
        if message != self.counters.last_error:  # one line per distinct error, not one per retry
            log.log(level, "uplink: stream to %s failed: %s", self.channel_settings.target, message,
                    exc_info=exc if level >= logging.ERROR else None)
        self.counters.last_error = message

    async def _session(self) -> None:
        async with open_channel(self.channel_settings) as channel:
            stub = (twin_v2_pb2_grpc if self.wire == "v2" else twin_pb2_grpc).CollectorStub(channel)
            call = stub.Connect(metadata=(("authorization", f"Bearer {self.channel_settings.token}"),))
            wire = encoder(self.wire)  # v2's series table lives as long as this stream
            await call.write(wire.hello(self.hello()))
            window = asyncio.Semaphore(self.max_in_flight)
            in_flight: deque[int] = deque()
            sender = asyncio.create_task(self._send_loop(call, window, in_flight, wire))
            try:
                while True:
                    msg = await call.read()
                    if msg is grpc.aio.EOF:
                        raise ConnectionError("collector closed the stream")
                    if msg.HasField("ack"):
                        await self._on_ack(msg.ack.seq, window, in_flight)
            finally:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await sender
                call.cancel()

    async def _on_ack(self, seq: int, window: asyncio.Semaphore, in_flight: deque[int]) -> None:
        """Acks are cumulative; the first one answers the Hello with the collector's watermark."""
        self.counters.acked += await self.queue.ack(seq)
        if not self.counters.connected:
            log.info("uplink: connected to %s", self.channel_settings.target)
            self.counters.last_error = ""
            self.counters.connected = True
            self.backoff.reset()
        while in_flight and in_flight[0] <= seq:
            in_flight.popleft()
            window.release()

    async def _send_loop(self, call: grpc.aio.StreamStreamCall, window: asyncio.Semaphore,
                         in_flight: deque[int], wire: StreamEncoder) -> None:
        last_sent = 0
        while True:
            self.queue.changed.clear()
            batches = await self.queue.peek(last_sent, self.max_in_flight)
            if not batches:
                await self.queue.changed.wait()
                continue
            for seq, payload in batches:
                await window.acquire()
                in_flight.append(seq)
                await call.write(wire.batch(payload))
                last_sent = seq
                self.counters.sent += 1
