"""The collector's gRPC servicer: authenticate, deduplicate, store, then ack.

One stream per agent. The bearer token in the call metadata identifies the agent (tokens are
stored hashed); the Hello's agent id must match it. Batches are handled in order, each one (or a
group of consecutive ones that arrived together, when an agent catches up) like this:

1. duplicate? (seq at or below the (agent, queue epoch) watermark) -> ack again, store nothing;
2. write its points to the sink (InfluxDB or SQLite), retrying with backoff while the sink is
   down: the agent gets no ack meanwhile, so its own disk queue absorbs the outage;
3. commit the fleet twin, the watermark and any work orders in one SQLite transaction;
4. ack. Only now may the agent delete the batch.

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
import contextlib
import hmac
import logging
import random
import sqlite3
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

import grpc

from collector.config import hash_token
from collector.fleet import FleetTwin
from collector.health import CollectorHealth
from collector.points import Point, PointSink, PointsRejectedError, batch_to_points
from collector.workorders.annotations import WorkOrderAnnotations
from collector.workorders.store import WorkOrder
from protos.twin.v1 import twin_pb2, twin_pb2_grpc
from runtime.errors import SinkError

__all__ = ["AgentIngestStats", "IngestServicer", "authenticate"]

log = logging.getLogger("twin.collector.ingest")

MAX_GROUP = 32  # batches of one agent stored in one sink write and one SQLite transaction


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


@dataclass(slots=True)
class StreamPresence:
    """One open stream of an agent: when it last sent something, and what the collector holds of it."""

    inbox: asyncio.Queue[twin_pb2.Batch | None]
    last_rx_ns: int = 0
    storing: int = 0  # batches of the group being stored (not acked yet)

    def held(self) -> int:
        return self.inbox.qsize() + self.storing


@dataclass(slots=True)
class IngestTotals:
    refused_streams: int = 0
    sink_errors: int = 0
    sink_write_seconds: float = 0.0
    sink_writes: int = 0
    per_agent: dict[str, AgentIngestStats] = field(default_factory=dict)


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


def _transient(exc: BaseException) -> bool:
    """Errors of the store rather than of the batch: retrying later can succeed."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    text = str(exc).lower()
    return any(word in text for word in ("locked", "busy", "disk", "full", "i/o", "unable to open"))


class IngestServicer(twin_pb2_grpc.CollectorServicer):
    def __init__(self, fleet: FleetTwin, sink: PointSink, token_hashes: Mapping[str, str], site: str,
                 sink_retry_max_s: float = 30.0, annotations: WorkOrderAnnotations | None = None,
                 health: CollectorHealth | None = None) -> None:
        self.fleet = fleet
        self.health = health or CollectorHealth("sink", "sink", str(fleet.path))
        self._streams: dict[str, list[StreamPresence]] = {}
        self.sink = sink
        self.annotations = annotations
        self.token_hashes = dict(token_hashes)
        self.site = site
        self.sink_retry_max_s = sink_retry_max_s
        self.totals = IngestTotals()
        self._closing = asyncio.Event()
        self._inboxes: set[asyncio.Queue[twin_pb2.Batch | None]] = set()
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

    async def Connect(
        self, request_iterator: AsyncIterator[twin_pb2.AgentMessage], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[twin_pb2.CollectorMessage]:
        self._handlers += 1
        self._idle.clear()
        replies = self._serve(request_iterator, context)
        try:
            async for reply in replies:
                yield reply
        finally:
            await replies.aclose()  # its cleanup now, not whenever the garbage collector gets to it
            self._handlers -= 1
            if self._handlers == 0:
                self._idle.set()

    async def _serve(
        self, request_iterator: AsyncIterator[twin_pb2.AgentMessage], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[twin_pb2.CollectorMessage]:
        if self._closing.is_set():
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the collector is shutting down")
        peer = context.peer()
        metadata = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        agent_id = authenticate(metadata, self.token_hashes)
        # The first message is read before refusing: aborting while the client is still sending it
        # makes the client see a transport error instead of the reason.
        first = await anext(aiter(request_iterator), None)
        if agent_id is None:
            self.totals.refused_streams += 1
            log.warning("refused stream from %s: missing or unknown token", peer)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or unknown agent token")
        if first is None or not first.HasField("hello"):
            self.totals.refused_streams += 1
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be a Hello")
        hello = first.hello
        if hello.agent_id != agent_id:
            self.totals.refused_streams += 1
            log.warning("refused stream from %s: token belongs to agent %r but Hello says %r",
                        peer, agent_id, hello.agent_id)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                "agent id in Hello does not match the agent of the token")
        stats = self.totals.per_agent.setdefault(agent_id, AgentIngestStats())
        # Bounded: a client that ignores its in-flight window waits here instead of filling memory.
        inbox: asyncio.Queue[twin_pb2.Batch | None] = asyncio.Queue(maxsize=MAX_GROUP * 4)
        # present from its Hello on: a registration waiting for a busy collector is the collector's delay
        presence = StreamPresence(inbox, time.time_ns(), storing=1)
        self._streams.setdefault(agent_id, []).append(presence)
        try:
            watermark = await self.fleet.register_hello(hello)
            asset_types = await self.fleet.asset_types(agent_id)
        except BaseException as exc:
            self._streams[agent_id].remove(presence)
            stats.disconnected_ns = time.time_ns()
            if _transient(exc):
                self.health.state.failed(f"{type(exc).__name__}: {exc}")
            raise
        presence.storing = 0
        site = hello.site or self.site
        stats.connected = True
        stats.streams += 1
        log.info("agent %s connected from %s (version %s, epoch %s, watermark %d)",
                 agent_id, peer, hello.version, hello.queue_epoch[:8], watermark)
        self._inboxes.add(inbox)
        reader = asyncio.create_task(self._read(request_iterator, inbox, presence))
        try:
            # Answer the Hello with the watermark: the agent may drop anything at or below it.
            yield twin_pb2.CollectorMessage(ack=twin_pb2.Ack(seq=watermark))
            while not self._closing.is_set() and (group := await self._next_group(inbox)) is not None:
                stats.last_seen_ns = time.time_ns()
                fresh = [b for b in group if b.seq > watermark]
                stats.duplicates += len(group) - len(fresh)
                if fresh:
                    presence.storing = len(group)
                    if not await self._store(agent_id, site, hello.queue_epoch, fresh, asset_types, stats):
                        break  # shutting down with the sink unavailable: unacked, the agent resends
                    watermark = fresh[-1].seq
                presence.storing = 0
                # Acks are cumulative: one for the whole group.
                yield twin_pb2.CollectorMessage(ack=twin_pb2.Ack(seq=max(b.seq for b in group)))
        finally:
            self._inboxes.discard(inbox)
            self._streams[agent_id].remove(presence)
            stats.disconnected_ns = time.time_ns()
            reader.cancel()
            # After a network blip the new stream may be up before the old one is noticed dead:
            # the agent is disconnected only when its last stream ends.
            stats.streams -= 1
            log.info("agent %s: stream from %s ended (%d still open)", agent_id, peer, stats.streams)
            if stats.streams == 0:
                stats.connected = False
                await asyncio.shield(self.fleet.set_connected(agent_id, False))

    @staticmethod
    async def _read(request_iterator: AsyncIterator[twin_pb2.AgentMessage],
                    inbox: asyncio.Queue[twin_pb2.Batch | None], presence: StreamPresence) -> None:
        """Move the agent's batches into `inbox` while earlier ones are being stored."""
        try:
            async for msg in request_iterator:
                presence.last_rx_ns = time.time_ns()
                if msg.HasField("batch"):
                    await inbox.put(msg.batch)
        except asyncio.CancelledError:
            raise  # the handler is gone: nobody waits for the end mark
        except Exception as exc:  # the stream broke (agent gone, network): end like a closed stream
            log.debug("stream read ended: %s", exc)
        await inbox.put(None)

    @staticmethod
    async def _next_group(inbox: asyncio.Queue[twin_pb2.Batch | None]) -> list[twin_pb2.Batch] | None:
        """The next batch plus whatever else has already arrived (up to MAX_GROUP), in seq order.

        A live agent sends one batch per interval and gets a group of one; an agent catching up
        after an outage has many in flight, and storing them together saves a disk sync per batch.
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

    async def _store(self, agent_id: str, site: str, epoch: str, batches: list[twin_pb2.Batch],
                     asset_types: dict[str, str], stats: AgentIngestStats) -> bool:
        """Store a group; False when shutdown came while the sink was unavailable (nothing committed)."""
        points: list[Point] = []
        for batch in batches:
            foreign = keep_owned(batch, asset_types)
            if foreign:
                stats.foreign_entries += foreign
                log.warning("agent %s batch %d: %d entries for assets it does not own were dropped",
                            agent_id, batch.seq, foreign)
            try:
                points += batch_to_points(batch, agent_id=agent_id, site=site, asset_types=asset_types)
            except ValueError as exc:
                # Can never be stored as points; keep its twin effects and move on rather than block the agent.
                stats.malformed_batches += 1
                log.warning("agent %s batch %d: malformed, points not stored: %s", agent_id, batch.seq, exc)
        if not await self._write_with_retry(agent_id, points, stats):
            return False
        changed = await self._commit(agent_id, epoch, batches, stats)
        stats.batches += len(batches)
        stats.summaries += sum(len(b.summaries) for b in batches)
        if changed:
            await self.work_orders_changed(changed)
        return True

    async def _commit(self, agent_id: str, epoch: str, batches: list[twin_pb2.Batch],
                      stats: AgentIngestStats) -> list[WorkOrder]:
        """Commit to the fleet twin; a batch that can never be committed is skipped, not retried forever.

        A transient SQLite error (locked, busy, disk full, I/O) propagates: the stream ends, nothing is
        acked, and the agent resends later. Any other failure is the batch's own fault: the group is
        retried batch by batch, and a batch that fails alone is logged, counted and skipped.
        """
        try:
            changed = await self.fleet.commit_batches(agent_id, epoch, batches)
        except Exception as exc:
            if _transient(exc):
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

    async def _write_with_retry(self, agent_id: str, points: list[Point], stats: AgentIngestStats) -> bool:
        """Write until the sink takes the points (True) or the collector is shutting down (False)."""
        delay = 0.5
        while points:
            started = time.perf_counter()
            try:
                await self.sink.write(points)
            except PointsRejectedError as exc:
                stats.rejected_points += len(exc.rejected)
                log.warning("agent %s: %d points permanently rejected by the sink: %s",
                            agent_id, len(exc.rejected), exc)
            except SinkError as exc:
                self.totals.sink_errors += 1
                stats.sink_retries += 1
                self.health.sink.failed(str(exc).removeprefix(f"{self.health.sink.label}: "))
                log.debug("sink write failed (agent %s, %d points), retrying in %.1fs: %s",
                          agent_id, len(points), delay, exc)
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
