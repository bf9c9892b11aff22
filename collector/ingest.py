"""The collector's gRPC servicer: authenticate, deduplicate, store, then ack.

One stream per agent, over wire v1 or v2 (collector/wire.py; both are served for one release).
The bearer token in the call metadata identifies the agent (tokens are stored hashed) and is
checked before any message is read: a client without a valid token gets UNAUTHENTICATED and
never has a byte of its messages held by the collector. The Hello (first message) may be at most
MAX_HELLO_BYTES, any message at most MAX_MESSAGE_BYTES (also gRPC's receive limit); its agent id
must match the token's. Client mistakes (refused tokens, corrupt or oversized messages) are one
rate-limited log line each and a precise status (UNAUTHENTICATED, PERMISSION_DENIED,
INVALID_ARGUMENT), never a traceback.

Batches are handled in order, each one (or a group of consecutive ones that arrived together,
when an agent catches up) like this:

1. duplicate? (seq at or below the (agent, queue epoch) watermark) -> ack again, store nothing;
2. encode its points for the sink (the sink's own record form, straight from the protobuf) and
   hand the group to the group committer (collector/group_commit.py), which writes the groups of
   all streams that are ready in one sink write, retrying with backoff while the sink is down
   (the agent gets no ack meanwhile, so its own disk queue absorbs the outage) ...
3. ... then commits them to the fleet twin (twin, watermarks, work orders) in one transaction of the
   state database (SQLite, or PostgreSQL shared with other collectors: each watermark is read and
   advanced there with its row locked, so a batch that two collectors receive is stored once);
4. ack. Only now may the agent delete the batch.

Memory is bounded however many agents send at once: the stream readers together hold at most
RECEIVE_BUDGET_BYTES of received, not yet stored messages (then they stop reading and HTTP/2 flow
control holds the agents back), and at most CONVERSION_SLOTS streams at a time hold decoded and
encoded batches (steps 2-4); the others wait their turn with their messages still compact.

At shutdown (`close_streams`) each stream finishes the group it is storing, acks it and ends, so
the agents reconnect elsewhere or later without a batch stored but left unacked; a group still
waiting for a sink that is down is left unacked and resent by the agent.

A crash between 2 and 3 makes the agent resend the batch: the sink write is idempotent (same
series and timestamps) and step 3 happens once.

Every sink write and fleet commit tells `health` (collector/health.py) whether it worked, and each
stream keeps when its agent last sent something and whether the collector holds batches of it not yet
acknowledged: `presence()` is what the agent_offline rule judges, so an agent the collector keeps
waiting (sink down, catching up) is never called offline.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import hmac
import logging
import random
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from collector.budget import ByteBudget
from collector.config import hash_token
from collector.fleet import FleetTwin
from collector.group_commit import GroupCommitter
from collector.health import CollectorHealth
from collector.points import BatchEncoder, PointSink, PointsRejectedError
from collector.wire import StreamDecoder, WireError, decoder
from collector.workorders.annotations import WorkOrderAnnotations
from collector.workorders.store import WorkOrder
from protos.twin.v1 import twin_pb2
from runtime.errors import SinkError
from runtime.logs import RateLimitedLog

__all__ = [
    "CONVERSION_SLOTS",
    "MAX_HELLO_BYTES",
    "MAX_MESSAGE_BYTES",
    "RECEIVE_BUDGET_BYTES",
    "AgentIngestStats",
    "IngestServicer",
    "authenticate",
    "register_ingest",
]

log = logging.getLogger("twin.collector.ingest")

MAX_GROUP = 16  # batches of one agent stored together (an agent's default window is 16)
MAX_HELLO_BYTES = 1024 * 1024  # ~50 bytes per declared point: room for ~20,000 points per agent
MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # a batch: ~180,000 summaries (v1), far beyond one interval of a gateway
RECEIVE_BUDGET_BYTES = 32 * 1024 * 1024  # received, not yet stored, all streams together
CONVERSION_SLOTS = 32  # streams holding decoded/encoded batches at once
CLIENT_ERROR_LOG_INTERVAL_S = 60.0
# A client is refused from its metadata, before anything it sends is read. Ending its stream at once
# cuts off the write of its Hello, and gRPC's asyncio client (the agent's) then reports its own
# broken write (INTERNAL) instead of the collector's reason; a moment's grace lets that write finish.
# Nothing is read meanwhile: at most the stream's 32 KiB HTTP/2 window is buffered by gRPC.
REFUSAL_GRACE_S = 0.5
STALL_INTERVALS = 3.0  # an open stream silent for this many of its agent's intervals is "stalled"
STALL_MIN_S = 10.0
DEFAULT_BATCH_INTERVAL_S = 10.0  # the agent's default summary interval, until its own cadence is seen


@dataclass(slots=True)
class AgentIngestStats:
    connected: bool = False
    streams: int = 0
    batches: int = 0
    duplicates: int = 0
    summaries: int = 0
    rejected_points: int = 0
    malformed_batches: int = 0
    foreign_entries: int = 0
    sink_retries: int = 0
    last_seen_ns: int = 0
    disconnected_ns: int = 0  # when its last stream ended
    connected_ns: int = 0  # of the newest stream's Hello (marks the connection in the fleet twin)
    last_message_monotonic: float = 0.0  # when the agent's stream last delivered a message
    message_interval_s: float = 0.0  # smoothed gap between its messages: one batch per interval when live

    def link(self, now: float | None = None) -> str:
        """connected | stalled | disconnected: stalled = the stream is open but the agent has been
        silent for STALL_INTERVALS of its intervals (at least STALL_MIN_S): a frozen agent or a
        silent partition, until keepalive pings close the stream."""
        if not self.connected:
            return "disconnected"
        silent = (time.monotonic() if now is None else now) - self.last_message_monotonic
        interval = self.message_interval_s or DEFAULT_BATCH_INTERVAL_S
        return "stalled" if silent > max(STALL_INTERVALS * interval, STALL_MIN_S) else "connected"

    def heard(self, now: float | None = None) -> None:
        """A message arrived (the Hello or a batch). The gaps between messages learn the agent's
        interval; a catch-up burst only shortens it for a while, and STALL_MIN_S bounds it below."""
        now = time.monotonic() if now is None else now
        if self.last_message_monotonic:
            gap = now - self.last_message_monotonic
            self.message_interval_s = gap if not self.message_interval_s else 0.7 * self.message_interval_s + 0.3 * gap
        self.last_message_monotonic = now


@dataclass(slots=True)
class StreamPresence:
    """One open stream of an agent: when it last sent something, and what the collector holds of it."""

    inbox: asyncio.Queue[tuple[bytes, int] | None]
    last_rx_ns: int = 0
    storing: int = 0  # batches of the group being stored (not acked yet)

    def held(self) -> int:
        return self.inbox.qsize() + self.storing


@dataclass(slots=True)
class IngestTotals:
    refused_streams: int = 0
    invalid_messages: int = 0
    sink_errors: int = 0
    sink_write_seconds: float = 0.0
    sink_writes: int = 0
    per_agent: dict[str, AgentIngestStats] = field(default_factory=dict)


@dataclass(eq=False, slots=True)
class Submission:
    """One stream's group on its way through the group committer."""

    agent_id: str
    epoch: str
    batches: list[twin_pb2.Batch]
    records: list[Any]
    stats: AgentIngestStats
    changed: list[WorkOrder] = field(default_factory=list)


class _NotStored(Exception):
    """The collector is shutting down while the sink is unavailable: nothing committed, no ack."""


def authenticate(metadata: Mapping[str, str] | None, token_hashes: Mapping[str, str]) -> str | None:
    """Return the agent id whose token is presented, or None. Constant-time comparison."""
    header = (metadata or {}).get("authorization", "")
    if not header.lower().startswith("bearer "):
        return None
    token = header[7:].strip()
    if not token:
        return None
    digest = hash_token(token)
    found = None
    for known, agent_id in token_hashes.items():
        if hmac.compare_digest(known, digest):
            found = agent_id
    return found


def keep_owned(batch: twin_pb2.Batch, owned: Mapping[str, str]) -> int:
    """Drop a batch's entries for assets the agent does not own; return how many were dropped.

    The token proves who the agent is; this makes sure it can only write its own assets' twin.
    """
    dropped = 0
    for entries in (batch.summaries, batch.vibration, batch.changes, batch.asset_states):
        keep = [e for e in entries if e.asset in owned]
        if len(keep) != len(entries):
            dropped += len(entries) - len(keep)
            del entries[:]
            entries.extend(keep)
    return dropped


def register_ingest(server: grpc.aio.Server, servicer: IngestServicer) -> None:
    """Serve `twin.v1.Collector/Connect` and `twin.v2.Collector/Connect` with `servicer`.

    Registered without a request deserializer: the servicer gets each message as bytes, checks
    its size and parses it itself (a corrupt message is then the client's INVALID_ARGUMENT).
    """
    for version, connect in (("v1", servicer.Connect), ("v2", servicer.ConnectV2)):
        handler = grpc.stream_stream_rpc_method_handler(
            connect, request_deserializer=None,
            response_serializer=twin_pb2.CollectorMessage.SerializeToString)
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(f"twin.{version}.Collector",
                                                                              {"Connect": handler})])


class IngestServicer:
    def __init__(self, fleet: FleetTwin, sink: PointSink, token_hashes: Mapping[str, str], site: str,
                 sink_retry_max_s: float = 30.0, annotations: WorkOrderAnnotations | None = None,
                 health: CollectorHealth | None = None, receive_budget_bytes: int = RECEIVE_BUDGET_BYTES,
                 conversion_slots: int = CONVERSION_SLOTS) -> None:
        self.fleet = fleet
        self.health = health or CollectorHealth("sink", "sink", fleet.state.location)
        self._streams: dict[str, list[StreamPresence]] = {}
        self.sink = sink
        self.annotations = annotations
        self.token_hashes = dict(token_hashes)
        self.site = site
        self.sink_retry_max_s = sink_retry_max_s
        self.totals = IngestTotals()
        self.budget = ByteBudget(receive_budget_bytes)
        self.conversion_slots = conversion_slots
        self._slots = asyncio.Semaphore(conversion_slots)
        self.converting = 0
        self.converting_peak = 0
        self.committer: GroupCommitter[Submission] = GroupCommitter(
            self._write_stage, self._commit_stage, writers=sink.write_concurrency,
            max_records=sink.records_per_write)
        self._client_errors = RateLimitedLog(log, CLIENT_ERROR_LOG_INTERVAL_S)
        self._closing = asyncio.Event()
        self._inboxes: set[asyncio.Queue[tuple[bytes, int] | None]] = set()
        self._handlers = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def close_streams(self) -> None:
        """Ask every stream to end after the group it is storing; new streams are turned away."""
        self._closing.set()
        for inbox in self._inboxes:
            with contextlib.suppress(asyncio.QueueFull):  # a full inbox means its handler is busy, not waiting
                inbox.put_nowait(None)

    async def wait_idle(self, timeout_s: float) -> bool:
        """Until every stream handler has finished, its last fleet-twin write included."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """Stop the group committer (after `wait_idle`: nothing is waiting on it any more)."""
        await self.committer.close()

    def presence(self, now_ns: int | None = None) -> dict[str, int]:
        """When each agent was last known present: now while a stream of it is open and the collector
        holds batches of it (it waits for us), else its stream's last message or its disconnection."""
        now = now_ns if now_ns is not None else time.time_ns()
        out = {}
        for agent, stats in self.totals.per_agent.items():
            streams = self._streams.get(agent, [])
            out[agent] = max([stats.disconnected_ns, *(now if s.held() else s.last_rx_ns for s in streams)])
        return out

    def held_batches(self) -> int:
        """Batches received and not yet acknowledged, over every stream."""
        return sum(s.held() for streams in self._streams.values() for s in streams)

    async def Connect(self, request_iterator: AsyncIterator[bytes],
                      context: grpc.aio.ServicerContext) -> AsyncIterator[twin_pb2.CollectorMessage]:
        async for reply in self._handle(request_iterator, context, "v1"):
            yield reply

    async def ConnectV2(self, request_iterator: AsyncIterator[bytes],
                        context: grpc.aio.ServicerContext) -> AsyncIterator[twin_pb2.CollectorMessage]:
        async for reply in self._handle(request_iterator, context, "v2"):
            yield reply

    async def _handle(self, request_iterator: AsyncIterator[bytes], context: grpc.aio.ServicerContext,
                      wire: str) -> AsyncIterator[twin_pb2.CollectorMessage]:
        self._handlers += 1
        self._idle.clear()
        replies = self._serve(request_iterator, context, wire)
        try:
            async for reply in replies:
                yield reply
        finally:
            await replies.aclose()  # its cleanup now, not whenever the garbage collector gets to it
            self._handlers -= 1
            if self._handlers == 0:
                self._idle.set()

    async def _refuse(self, context: grpc.aio.ServicerContext, code: grpc.StatusCode, reason: str,
                      detail: str = "") -> None:
        """End the stream with `code`; one log line per reason per interval, however many clients."""
        self.totals.refused_streams += 1
        self._client_errors.warning(f"refused:{reason}", f"refused stream from {context.peer()}: {reason}"
                                    + (f" ({detail})" if detail else ""))
        await context.abort(code, reason)

    async def _serve(self, request_iterator: AsyncIterator[bytes], context: grpc.aio.ServicerContext,
                     wire: str) -> AsyncIterator[twin_pb2.CollectorMessage]:
        if self._closing.is_set():
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the collector is shutting down")
        peer = context.peer()
        metadata = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        agent_id = authenticate(metadata, self.token_hashes)
        if agent_id is None:  # before reading anything: an unknown client's bytes are never held
            await asyncio.sleep(REFUSAL_GRACE_S)
            await self._refuse(context, grpc.StatusCode.UNAUTHENTICATED, "missing or unknown agent token")
        assert agent_id is not None
        stream_decoder = decoder(wire)
        hello = await self._read_hello(request_iterator, context, stream_decoder)
        if hello is None:
            return  # the client went away before its Hello
        if hello.agent_id != agent_id:
            await self._refuse(context, grpc.StatusCode.PERMISSION_DENIED,
                               "agent id in Hello does not match the agent of the token",
                               f"token of {agent_id!r}, Hello says {hello.agent_id!r}")
        stats = self.totals.per_agent.setdefault(agent_id, AgentIngestStats())
        # Bounded: a client that ignores its in-flight window waits here instead of filling memory.
        inbox: asyncio.Queue[tuple[bytes, int] | None] = asyncio.Queue(maxsize=MAX_GROUP * 2)
        # present from its Hello on: a registration waiting for a busy collector is the collector's delay
        presence = StreamPresence(inbox, time.time_ns(), storing=1)
        self._streams.setdefault(agent_id, []).append(presence)
        try:
            connected_ns = time.time_ns()
            watermark = await self.fleet.register_hello(hello, connected_ns)
            stats.connected_ns = max(stats.connected_ns, connected_ns)
            asset_types = await self.fleet.asset_types(agent_id)
        except BaseException as exc:
            self._streams[agent_id].remove(presence)
            stats.disconnected_ns = time.time_ns()
            if self.fleet.state.is_transient(exc):
                self.health.state.failed(f"{type(exc).__name__}: {exc}")
            raise
        presence.storing = 0
        site = hello.site or self.site
        encoder = self.sink.encoder(agent_id, site, asset_types)
        stats.connected = True
        stats.streams += 1
        stats.last_message_monotonic = 0.0  # the gap across a reconnect is no interval
        stats.heard()
        log.info("agent %s connected from %s (wire %s, version %s, epoch %s, watermark %d)",
                 agent_id, peer, wire, hello.version, hello.queue_epoch[:8], watermark)
        self._inboxes.add(inbox)
        reader = asyncio.create_task(self._read(request_iterator, inbox, presence, stats))
        try:
            # Answer the Hello with the watermark: the agent may drop anything at or below it.
            yield twin_pb2.CollectorMessage(ack=twin_pb2.Ack(seq=watermark))
            while not self._closing.is_set() and (group := await self._next_group(inbox)) is not None:
                granted = sum(n for _, n in group)
                presence.storing = len(group)
                try:
                    acked = await self._process(context, group, stream_decoder, encoder, agent_id, hello.queue_epoch,
                                                asset_types, stats, watermark)
                finally:
                    self.budget.release(granted)
                presence.storing = 0
                if acked is None:
                    break  # shutting down with the sink unavailable: unacked, the agent resends
                watermark = max(watermark, acked)
                # Acks are cumulative: one for the whole group.
                yield twin_pb2.CollectorMessage(ack=twin_pb2.Ack(seq=acked))
        finally:
            self._inboxes.discard(inbox)
            self._streams[agent_id].remove(presence)
            stats.disconnected_ns = time.time_ns()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            while not inbox.empty():  # what was read but will not be stored gives its budget back
                item = inbox.get_nowait()
                if item is not None:
                    self.budget.release(item[1])
            # After a network blip the new stream may be up before the old one is noticed dead:
            # the agent is disconnected only when its last stream ends.
            stats.streams -= 1
            log.info("agent %s: stream from %s ended (%d still open)", agent_id, peer, stats.streams)
            if stats.streams == 0:
                stats.connected = False
                # not if the agent has connected again since (to this collector or another)
                await asyncio.shield(self.fleet.set_connected(agent_id, False, since_ns=stats.connected_ns))

    async def _read_hello(self, request_iterator: AsyncIterator[bytes], context: grpc.aio.ServicerContext,
                          stream_decoder: StreamDecoder) -> twin_pb2.Hello | None:
        try:
            raw = await anext(aiter(request_iterator), None)
        except Exception as exc:  # the stream broke before its first message
            log.debug("stream from %s ended before its Hello: %s", context.peer(), exc)
            return None
        if raw is None:
            await self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, "the first message must be a Hello",
                               "the stream ended without one")
        assert raw is not None
        if len(raw) > MAX_HELLO_BYTES:
            await self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT,
                               f"the Hello may be at most {MAX_HELLO_BYTES} bytes", f"got {len(raw)}")
        try:
            hello = stream_decoder.first(raw)
        except WireError as exc:
            await self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, "corrupt first message", str(exc))
        if hello is None:
            await self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, "the first message must be a Hello")
        return hello

    async def _read(self, request_iterator: AsyncIterator[bytes],
                    inbox: asyncio.Queue[tuple[bytes, int] | None], presence: StreamPresence,
                    stats: AgentIngestStats) -> None:
        """Move the agent's messages into `inbox` while earlier ones are being stored.

        Each message takes its size from the shared receive budget first; while the budget is
        spent, no stream reads, and gRPC's flow control makes the agents wait.
        """
        try:
            async for raw in request_iterator:
                presence.last_rx_ns = time.time_ns()
                stats.heard()
                granted = await self.budget.acquire(len(raw))
                try:
                    await inbox.put((raw, granted))
                except BaseException:
                    self.budget.release(granted)
                    raise
        except asyncio.CancelledError:
            raise  # the handler is gone: nobody waits for the end mark
        except Exception as exc:  # the stream broke (agent gone, network): end like a closed stream
            log.debug("stream read ended: %s", exc)
        await inbox.put(None)

    @staticmethod
    async def _next_group(inbox: asyncio.Queue[tuple[bytes, int] | None]) -> list[tuple[bytes, int]] | None:
        """The next message plus whatever else has already arrived (up to MAX_GROUP), in order.

        A live agent sends one batch per interval and gets a group of one; an agent catching up
        after an outage has many in flight, and storing them together saves work per batch.
        Returns None when the stream has ended.
        """
        first = await inbox.get()
        if first is None:
            return None
        group = [first]
        while len(group) < MAX_GROUP and not inbox.empty():
            nxt = inbox.get_nowait()
            if nxt is None:
                inbox.put_nowait(None)  # end of stream: handled on the next call
                break
            group.append(nxt)
        return group

    async def _process(self, context: grpc.aio.ServicerContext, group: list[tuple[bytes, int]],
                       stream_decoder: StreamDecoder, encoder: BatchEncoder, agent_id: str, epoch: str,
                       asset_types: dict[str, str], stats: AgentIngestStats, watermark: int) -> int | None:
        """Decode, deduplicate and store a group; the seq to ack, None when it could not be stored."""
        async with self._slots:
            self.converting += 1
            self.converting_peak = max(self.converting_peak, self.converting)
            try:
                batches: list[twin_pb2.Batch] = []
                for raw, _ in group:
                    if len(raw) > MAX_MESSAGE_BYTES:
                        await self._invalid(context, agent_id, f"a message may be at most {MAX_MESSAGE_BYTES} bytes, "
                                                               f"got {len(raw)}")
                    try:
                        batch = stream_decoder.batch(raw)
                    except WireError as exc:
                        await self._invalid(context, agent_id, str(exc))
                    if batch is not None:  # anything else (a second Hello) is ignored, as before
                        batches.append(batch)
                if not batches:
                    return watermark
                stats.last_seen_ns = time.time_ns()
                fresh = [b for b in batches if b.seq > watermark]
                stats.duplicates += len(batches) - len(fresh)
                if fresh:
                    try:
                        stored = await self._store(agent_id, epoch, fresh, encoder, asset_types, stats)
                    except Exception as exc:
                        if not self.fleet.state.is_transient(exc):
                            raise
                        self._client_errors.warning(
                            "state-store", f"the fleet twin cannot be written, agents are asked to retry: {exc}")
                        await context.abort(grpc.StatusCode.UNAVAILABLE, "the collector's state store is unavailable")
                    if not stored:
                        return None
                return max(b.seq for b in batches)
            finally:
                self.converting -= 1

    async def _invalid(self, context: grpc.aio.ServicerContext, agent_id: str, reason: str) -> None:
        self.totals.invalid_messages += 1
        self._client_errors.warning(f"invalid:{agent_id}", f"agent {agent_id} ({context.peer()}): invalid message, "
                                                           f"stream ended: {reason}")
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid message: {reason}")

    async def _store(self, agent_id: str, epoch: str, batches: list[twin_pb2.Batch], encoder: BatchEncoder,
                     asset_types: dict[str, str], stats: AgentIngestStats) -> bool:
        """Store a group; False when shutdown came while the sink was unavailable (nothing committed)."""
        records: list[Any] = []
        for batch in batches:
            foreign = keep_owned(batch, asset_types)
            if foreign:
                stats.foreign_entries += foreign
                log.warning("agent %s batch %d: %d entries for assets it does not own were dropped",
                            agent_id, batch.seq, foreign)
            try:
                encoded, refused = encoder.encode(batch)
            except ValueError as exc:
                # Can never be stored as points; keep its twin effects and move on rather than block the agent.
                stats.malformed_batches += 1
                log.warning("agent %s batch %d: malformed, points not stored: %s", agent_id, batch.seq, exc)
                continue
            records += encoded
            if refused:
                stats.rejected_points += len(refused)
                self.sink.stats.points_rejected += len(refused)
                log.warning("agent %s batch %d: %d points no store accepts were left out; first: %s",
                            agent_id, batch.seq, len(refused), refused[0])
        submission = Submission(agent_id, epoch, batches, records, stats)
        try:
            await self.committer.submit(submission, len(records))
        except _NotStored:
            return False
        stats.batches += len(batches)
        stats.summaries += sum(len(b.summaries) for b in batches)
        if submission.changed:
            await self.work_orders_changed(submission.changed)
        return True

    # ---- the group committer's stages ------------------------------------------------------------
    async def _write_stage(self, subs: Sequence[Submission]) -> None:
        """Sink write of several streams' records at once; raises _NotStored at shutdown."""
        records = [r for s in subs for r in s.records]
        if not await self._write_with_retry(records, subs):
            raise _NotStored()

    async def _commit_stage(self, subs: Sequence[Submission]) -> None:
        """The fleet-twin commit of several streams' groups in one transaction.

        If the shared transaction fails for a reason of its own (not the store's: a batch it
        cannot take), each group is committed on its own to isolate the batch at fault.
        """
        try:
            results = await self.fleet.commit_groups([(s.agent_id, s.epoch, s.batches) for s in subs])
        except Exception as exc:
            if self.fleet.state.is_transient(exc):
                self.health.state.failed(f"{type(exc).__name__}: {exc}")
                raise
            results = [await self._commit(s.agent_id, s.epoch, s.batches, s.stats) for s in subs]
        else:
            self.health.state.succeeded(self.held_batches())
        for sub, changed in zip(subs, results, strict=True):
            sub.changed = changed

    async def _commit(self, agent_id: str, epoch: str, batches: list[twin_pb2.Batch],
                      stats: AgentIngestStats) -> list[WorkOrder]:
        """Commit to the fleet twin; a batch that can never be committed is skipped, not retried forever.

        A transient error of the state database (SQLite locked, busy, disk full, I/O; PostgreSQL down or
        still in conflict after retries) propagates: the stream ends, nothing is
        acked, and the agent resends later. Any other failure is the batch's own fault: the group is
        retried batch by batch, and a batch that fails alone is logged, counted and skipped.
        """
        try:
            changed = await self.fleet.commit_batches(agent_id, epoch, batches)
        except Exception as exc:
            if self.fleet.state.is_transient(exc):
                self.health.state.failed(f"{type(exc).__name__}: {exc}")
                raise
            if len(batches) == 1:
                stats.malformed_batches += 1
                log.error("agent %s batch %d cannot be stored in the fleet twin, skipped: %s: %s",
                          agent_id, batches[0].seq, type(exc).__name__, exc)
                await self.fleet.skip_batch(agent_id, epoch, batches[0].seq)
                return []
        else:
            self.health.state.succeeded(self.held_batches())
            return changed
        changed = []
        for batch in batches:
            changed += await self._commit(agent_id, epoch, [batch], stats)
        return changed

    async def _write_with_retry(self, records: list[Any], subs: Sequence[Submission]) -> bool:
        """Write until the sink takes the records (True) or the collector is shutting down (False)."""
        delay = 0.5
        agents = sorted({s.agent_id for s in subs})
        while records:
            started = time.perf_counter()
            try:
                await self.sink.write_records(records)
            except PointsRejectedError as exc:
                self._count_rejected(exc, subs)
            except SinkError as exc:
                self.totals.sink_errors += 1
                for s in subs:
                    s.stats.sink_retries += 1
                self.health.sink.failed(str(exc).removeprefix(f"{self.health.sink.label}: "))
                log.debug("sink write failed (%d points of %d agents: %s), retrying in %.1fs: %s",
                          len(records), len(agents), ", ".join(agents[:3]) + (", ..." if len(agents) > 3 else ""),
                          delay, exc)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay * random.uniform(0.8, 1.2)):
                        await self._closing.wait()
                if self._closing.is_set():
                    return False
                delay = min(delay * 2, self.sink_retry_max_s)
                continue
            self.totals.sink_writes += 1
            self.totals.sink_write_seconds += time.perf_counter() - started
            self.health.sink.succeeded(self.held_batches())
            return True
        return True

    @staticmethod
    def _count_rejected(exc: PointsRejectedError, subs: Sequence[Submission]) -> None:
        """Charge each refused record to the agent whose batch it came from."""
        starts: list[int] = []
        offset = 0
        for s in subs:
            starts.append(offset)
            offset += len(s.records)
        per_agent: dict[str, int] = {}
        for index in exc.indices:
            sub = subs[bisect.bisect_right(starts, index) - 1]
            sub.stats.rejected_points += 1
            per_agent[sub.agent_id] = per_agent.get(sub.agent_id, 0) + 1
        for agent_id, n in sorted(per_agent.items()):
            log.warning("agent %s: %d points permanently rejected by the sink: %s", agent_id, n, exc)

    async def work_orders_changed(self, changed: list[WorkOrder]) -> None:
        """Log the changes and bring the `work_order` measurement up to date right away; a sink that
        is down gets them from the collector's periodic sync later."""
        for wo in changed:
            log.info("work order %s %s: %s [%s] %s", wo.ref, wo.status, wo.asset, wo.severity, wo.title)
        if self.annotations is None:
            return
        try:
            await self.annotations.sync()
        except SinkError as exc:
            log.warning("work-order annotations not written yet (the periodic sync retries): %s", exc)
