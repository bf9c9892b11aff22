"""OPC-UA connector: one server, subscriptions (or polling), supervised and self-healing.

`run` loops forever:

    connect (async with Client) -> resolve node ids / browse paths -> subscribe or poll
        -> on any failure: every point BAD with the reason (once), backoff with jitter, connect again

Session, subscription, monitored items and resolved node ids are created afresh on every
connection: after a server or PLC restart the old ones no longer exist, and reusing them is what
leaves points stuck in BadNodeIdUnknown. Points whose node does not exist (yet) are retried while
connected, so a PLC whose program starts after its OPC-UA server still recovers. While offline
nothing is emitted except the one BAD reading per point: no last value is ever repeated with a new
timestamp.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from asyncua import Client, ua
from asyncua.client.ua_client import UaClientState
from asyncua.common.subscription import DataChangeEvent, StatusChangeEvent, Subscription

from agent.connectors.base import ConnectorStats, Emit
from agent.connectors.opcua.codec import reading_from_datavalue, status_name, timestamp_ns
from agent.connectors.opcua.config import (
    OpcUaPointConfig,
    OpcUaSourceConfig,
    expected_interval_s,
    load_source,
    parse_browse_path,
    read_password,
)
from agent.connectors.opcua.session import certificate_application_uri, describe_failure, new_client
from agent.model import PointSpec, Quality, Reading, now_ns
from runtime.backoff import backoff_delay
from runtime.cancellation import raise_if_cancelling
from runtime.errors import ConfigError, ConnectError, DecodeError

__all__ = ["OpcUaConnector", "build", "describe_failure"]

log = logging.getLogger("twin.connector.opcua")

SUBSCRIPTION_QUEUE = 10_000  # notifications buffered between the publish loop and `emit`
MAX_ITEM_QUEUE = 100  # per monitored item: samples kept between two publishes
MAX_NODES_PER_READ = 500  # poll reads are split so that no server limit is hit
DECODE_LOG_INTERVAL_S = 60.0  # per point: at most one decode-error log line per interval
DEFAULT_APPLICATION_URI = "urn:facility-twin:agent"


@dataclass(slots=True)
class _Point:
    index: int
    cfg: OpcUaPointConfig
    spec: PointSpec
    node_id: ua.NodeId | None  # parsed `node_id` (namespace URI, if any, resolved per connection)
    path: list[ua.QualifiedName] | None  # parsed `browse_path`

    @property
    def handle(self) -> int:
        return self.index + 1


class _Retry:
    """When to try again for points that did not resolve: backoff, reset by any success."""

    def __init__(self, cfg: OpcUaSourceConfig, rng: random.Random) -> None:
        self._cfg, self._rng, self._attempt = cfg, rng, 0
        self.due = 0.0

    def schedule(self, progressed: bool) -> None:
        self._attempt = 0 if progressed else self._attempt + 1
        delay = backoff_delay(self._attempt, self._cfg.backoff_initial_s, self._cfg.backoff_max_s, self._rng)
        self.due = time.monotonic() + delay


class OpcUaConnector:
    """Reads the points of one `[[sources]] type = "opcua"` table from one OPC-UA server."""

    def __init__(self, cfg: OpcUaSourceConfig, password: str = "", application_uri: str = "") -> None:
        self.name = cfg.name
        self.stats = ConnectorStats()
        self.config = cfg
        self._password = password
        self.application_uri = cfg.application_uri or application_uri or f"{DEFAULT_APPLICATION_URI}:{cfg.name}"
        self._points = [self._point(i, p) for i, p in enumerate(cfg.points)]
        self._rng = random.Random()
        self._offline_reason: str | None = None  # reason all points were last marked BAD with
        self._point_reason: dict[int, str] = {}  # per point: reason it is unresolved
        self._last_problem = ""  # last connection problem logged, to log each problem once
        self._decode_log: dict[int, tuple[float, int]] = {}  # point -> (last log time, suppressed)
        self._ever_connected = False

    def _point(self, index: int, p: OpcUaPointConfig) -> _Point:
        spec = PointSpec(asset=p.asset, name=p.name, unit=p.unit, kind=p.kind,
                         expected_interval_s=expected_interval_s(self.config, p), deadband=p.deadband,
                         sample_rate_hz=p.sample_rate_hz)
        node_id = ua.NodeId.from_string(p.node_id) if p.node_id else None
        path = parse_browse_path(p.browse_path) if p.browse_path else None
        return _Point(index, p, spec, node_id, path)

    def points(self) -> Sequence[PointSpec]:
        return [p.spec for p in self._points]

    # ----------------------------------------------------------------------------- supervision

    async def run(self, emit: Emit) -> None:
        cfg = self.config
        attempt = 0
        while True:
            raise_if_cancelling()  # asyncua awaits requests with wait_for, which can swallow a cancel
            polls_before = self.stats.polls
            try:
                await self._session(emit)
                failure: BaseException = ConnectError("the server closed the connection")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failure = exc
            if self.stats.polls > polls_before:
                # Data flowed: this is a new outage. A session that connects and fails at once
                # (flapping) keeps backing off, logs its problem once and marks the points once.
                attempt = 0
                self._last_problem = ""
                self._offline_reason = None
            self.stats.errors += 1
            self.stats.devices_online[cfg.endpoint] = False
            reason, message = describe_failure(failure, cfg)
            self.stats.last_error = message
            self._report(message, failure)
            self._mark_offline(emit, reason)
            delay = backoff_delay(attempt, cfg.backoff_initial_s, cfg.backoff_max_s, self._rng)
            attempt += 1
            await asyncio.sleep(delay)
            self.stats.reconnects += 1

    def _report(self, message: str, exc: BaseException) -> None:
        """Log each distinct problem once (repeats at debug), so an outage is one line, not a storm."""
        if message == self._last_problem:
            log.debug("%s: still failing: %s", self.name, message)
            return
        self._last_problem = message
        if message.startswith("unexpected "):
            log.warning("%s (%s): %s", self.name, self.config.endpoint, message, exc_info=exc)
        else:
            log.warning("%s (%s): %s; retrying with backoff", self.name, self.config.endpoint, message)

    def _mark_offline(self, emit: Emit, reason: str) -> None:
        if self._offline_reason == reason:
            return
        self._offline_reason = reason
        ts = now_ns()
        self._emit(emit, [Reading(p.spec.asset, p.spec.name, None, ts, Quality.BAD, reason) for p in self._points])

    def _emit(self, emit: Emit, readings: list[Reading]) -> None:
        if not readings:
            return
        try:
            emit(readings)
        except Exception:
            self.stats.errors += 1
            log.exception("%s: emit failed for %d readings", self.name, len(readings))

    async def _session(self, emit: Emit) -> None:
        client = await new_client(self.config, self.application_uri, self._password)
        async with client:
            self.stats.devices_online[self.config.endpoint] = True
            self._point_reason.clear()
            log.info("%s: %s to %s (%s, %d points)", self.name,
                     "reconnected" if self._ever_connected else "connected", self.config.endpoint,
                     self.config.mode, len(self._points))
            self._ever_connected = True
            if self.config.mode == "subscribe":
                await self._subscribe(client, emit)
            else:
                await self._poll(client, emit)

    # ------------------------------------------------------------------------------ resolution

    async def _resolve(self, client: Client, points: Sequence[_Point]) -> dict[int, ua.NodeId | ua.StatusCode]:
        """Node ids (namespace URIs looked up now) and browse paths (translated now) for `points`."""
        out: dict[int, ua.NodeId | ua.StatusCode] = {}
        namespaces: list[str] | None = None
        by_path: list[_Point] = []
        for p in points:
            if p.path is not None:
                by_path.append(p)
                continue
            assert p.node_id is not None
            nid = p.node_id
            uri = getattr(nid, "NamespaceUri", None)
            if uri:
                if namespaces is None:
                    namespaces = await client.get_namespace_array()
                if uri not in namespaces:
                    out[p.index] = ua.StatusCode(ua.StatusCodes.BadNodeIdUnknown)
                    continue
                nid = ua.NodeId(nid.Identifier, namespaces.index(uri), nid.NodeIdType)
            out[p.index] = nid
        if by_path:
            paths = [ua.RelativePath(Elements=[
                ua.RelativePathElement(ReferenceTypeId=ua.NodeId(ua.ObjectIds.HierarchicalReferences),
                                       IsInverse=False, IncludeSubtypes=True, TargetName=name)
                for name in p.path or ()]) for p in by_path]
            results = await client.translate_browsepaths(ua.NodeId(ua.ObjectIds.RootFolder), paths)
            for p, res in zip(by_path, results, strict=True):
                if res.StatusCode.is_good() and res.Targets:
                    out[p.index] = ua.NodeId(res.Targets[0].TargetId.Identifier,
                                             res.Targets[0].TargetId.NamespaceIndex,
                                             res.Targets[0].TargetId.NodeIdType)
                else:
                    bad = res.StatusCode if not res.StatusCode.is_good() else ua.StatusCode(
                        ua.StatusCodes.BadNoMatch)
                    out[p.index] = bad
        return out

    def _unresolved(self, emit: Emit, failed: dict[int, ua.StatusCode]) -> None:
        """BAD once per point and reason; one log line naming the points."""
        changed = []
        ts = now_ns()
        readings = []
        for index, status in failed.items():
            p = self._points[index]
            reason = status_name(status)
            if self._point_reason.get(p.index) != reason:
                self._point_reason[p.index] = reason
                changed.append(f"{p.spec.asset}/{p.spec.name} ({p.cfg.node_id or p.cfg.browse_path}): {reason}")
                readings.append(Reading(p.spec.asset, p.spec.name, None, ts, Quality.BAD, reason))
        self._emit(emit, readings)
        if changed:
            self.stats.errors += 1
            log.warning("%s: %d point(s) not available, retrying while connected: %s", self.name, len(changed),
                        "; ".join(changed[:10]) + (" ..." if len(changed) > 10 else ""))

    # ---------------------------------------------------------------------------- subscription

    def _monitor_request(self, p: _Point, node_id: ua.NodeId) -> ua.MonitoredItemCreateRequest:
        publishing_ms = self.config.publishing_interval_ms
        sampling_ms = p.cfg.sampling_interval_ms if p.cfg.sampling_interval_ms is not None else publishing_ms
        queue = 1 if sampling_ms <= 0 else max(1, min(MAX_ITEM_QUEUE, math.ceil(publishing_ms / sampling_ms)))
        params = ua.MonitoringParameters(ClientHandle=p.handle, SamplingInterval=sampling_ms, QueueSize=queue,
                                         DiscardOldest=True)
        if p.cfg.deadband > 0:
            params.Filter = ua.DataChangeFilter(Trigger=ua.DataChangeTrigger.StatusValue,
                                                DeadbandType=ua.DeadbandType.Absolute,
                                                DeadbandValue=p.cfg.deadband)
        return ua.MonitoredItemCreateRequest(
            ItemToMonitor=ua.ReadValueId(NodeId=node_id, AttributeId=ua.AttributeIds.Value),
            MonitoringMode=ua.MonitoringMode.Reporting, RequestedParameters=params)

    async def _monitor(self, client: Client, sub: Subscription, points: Sequence[_Point],
                       emit: Emit) -> list[_Point]:
        """Create monitored items for `points`; return those that could not be monitored (yet)."""
        resolved = await self._resolve(client, points)
        failed: dict[int, ua.StatusCode] = {}
        to_create: list[tuple[_Point, ua.NodeId]] = []
        for p in points:
            target = resolved[p.index]
            if isinstance(target, ua.StatusCode):
                failed[p.index] = target
            else:
                to_create.append((p, target))
        if to_create:
            results = await sub.create_monitored_items([self._monitor_request(p, nid) for p, nid in to_create])
            for (p, _nid), res in zip(to_create, results, strict=True):
                if isinstance(res, ua.StatusCode):
                    failed[p.index] = res
                else:
                    self._point_reason.pop(p.index, None)
        self._unresolved(emit, failed)
        return [p for p in points if p.index in failed]

    async def _subscribe(self, client: Client, emit: Emit) -> None:
        cfg = self.config
        sub = await client.create_subscription(cfg.publishing_interval_ms, handler=None,
                                               queue_maxsize=SUBSCRIPTION_QUEUE)
        by_handle = {p.handle: p for p in self._points}
        retry = _Retry(cfg, self._rng)
        pending = await self._monitor(client, sub, self._points, emit)
        retry.schedule(progressed=True)
        while True:
            raise_if_cancelling()
            if client.state is not UaClientState.CONNECTED:
                raise ConnectError("connection lost")
            if pending and time.monotonic() >= retry.due:
                before = len(pending)
                pending = await self._monitor(client, sub, pending, emit)
                retry.schedule(progressed=len(pending) < before)
            wait = min(cfg.timeout_s, max(0.05, retry.due - time.monotonic())) if pending else cfg.timeout_s
            try:
                ev = await sub.next_event(timeout=wait)
            except StopAsyncIteration:
                raise ConnectError("the subscription was closed") from None
            if ev is None:
                continue
            if isinstance(ev, DataChangeEvent):
                p = by_handle.get(ev.data.subscription_data.client_handle)
                if p is None:
                    continue
                self.stats.polls += 1
                self._emit(emit, [self._reading(p, ev.data.monitored_item.Value, now_ns())])
            elif isinstance(ev, StatusChangeEvent) and not ev.notification.Status.is_good():
                raise ua.UaStatusCodeError(ev.notification.Status.value)

    # --------------------------------------------------------------------------------- polling

    async def _poll(self, client: Client, emit: Emit) -> None:
        cfg = self.config
        retry = _Retry(cfg, self._rng)
        nodes: dict[int, ua.NodeId] = {}
        pending: list[_Point] = list(self._points)
        next_tick = time.monotonic()
        while True:
            raise_if_cancelling()
            if client.state is not UaClientState.CONNECTED:
                raise ConnectError("connection lost")
            if pending and time.monotonic() >= retry.due:
                resolved = await self._resolve(client, pending)
                failed: dict[int, ua.StatusCode] = {}
                for p in pending:
                    target = resolved[p.index]
                    if isinstance(target, ua.StatusCode):
                        failed[p.index] = target
                    else:
                        nodes[p.index] = target
                        self._point_reason.pop(p.index, None)
                self._unresolved(emit, failed)
                retry.schedule(progressed=len(failed) < len(pending))
                pending = [p for p in pending if p.index in failed]
            if nodes:
                await self._read(client, nodes, emit)
                self.stats.polls += 1
            next_tick += cfg.poll_interval_s
            delay = next_tick - time.monotonic()
            if delay < 0:  # a slow read: skip the missed ticks instead of bursting to catch up
                next_tick = time.monotonic()
                delay = 0.0
            await asyncio.sleep(delay)

    async def _read(self, client: Client, nodes: dict[int, ua.NodeId], emit: Emit) -> None:
        order = sorted(nodes)
        for start in range(0, len(order), MAX_NODES_PER_READ):
            chunk = order[start:start + MAX_NODES_PER_READ]
            params = ua.ReadParameters(
                MaxAge=0, TimestampsToReturn=ua.TimestampsToReturn.Both,
                NodesToRead=[ua.ReadValueId(NodeId=nodes[i], AttributeId=ua.AttributeIds.Value) for i in chunk])
            values = await client.uaclient.read(params)
            received = now_ns()
            self._emit(emit, [self._reading(self._points[i], dv, received)
                              for i, dv in zip(chunk, values, strict=True)])

    # -------------------------------------------------------------------------------- decoding

    def _reading(self, p: _Point, dv: ua.DataValue, received_ns: int) -> Reading:
        try:
            return reading_from_datavalue(p.spec.asset, p.spec.name, p.cfg.kind, dv, received_ns,
                                          p.cfg.scale, p.cfg.offset)
        except DecodeError as exc:
            self.stats.decode_errors += 1
            self._log_decode(p, exc)
            return Reading(p.spec.asset, p.spec.name, None, timestamp_ns(dv, received_ns), Quality.BAD,
                           f"decode error: {exc}")

    def _log_decode(self, p: _Point, exc: DecodeError) -> None:
        now = time.monotonic()
        last, suppressed = self._decode_log.get(p.index, (-math.inf, 0))
        if now - last < DECODE_LOG_INTERVAL_S:
            self._decode_log[p.index] = (last, suppressed + 1)
            return
        more = f" ({suppressed} more since the last message)" if suppressed else ""
        log.warning("%s: %s/%s (%s): %s%s", self.name, p.spec.asset, p.spec.name,
                    p.cfg.node_id or p.cfg.browse_path, exc, more)
        self._decode_log[p.index] = (now, 0)


def build(table: dict[str, Any], key: str) -> OpcUaConnector:
    """The registry's factory: validate the table and build the connector (ConfigError names the key)."""
    cfg = load_source(table, key)
    password = read_password(cfg, key)
    application_uri = ""
    if cfg.certificate_file:
        try:
            application_uri = certificate_application_uri(cfg.certificate_file)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{key}.certificate_file: not a readable PEM or DER certificate: {exc}") from None
        if not application_uri and not cfg.application_uri:
            raise ConfigError(f"{key}.certificate_file: the certificate has no URI in its subjectAltName; "
                              "set application_uri or use an OPC-UA application certificate")
    return OpcUaConnector(cfg, password=password, application_uri=application_uri)
