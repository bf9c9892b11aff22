"""MQTT connector: subscribes to topic filters, decodes each payload per point, emits readings.

Threading: paho-mqtt runs its network loop (`loop_forever`) in a thread of its own, one thread per
connection attempt. Its `on_message` only appends the message to an `_Inbox` and, when the inbox
was empty, schedules one `_drain` on the event loop (`call_soon_threadsafe`, then DRAIN_DELAY_S
later); so a burst of messages costs one wake-up and one GIL hand-over instead of one per message
(which halved throughput in bench/mqtt_bench.py), and decoding, Sparkplug state and `emit` all
happen on the event-loop thread. The inbox is bounded in bytes: when the event loop falls behind, `on_message`
waits, paho stops reading the socket and TCP flow control makes the broker hold the messages (QoS 1
messages are acknowledged only after `on_message` returns) instead of the gateway running out of
memory or dropping data.

Connections: paho's own reconnect loop is switched off (`reconnect_on_failure=False`); `run`
supervises instead, with exponential backoff and jitter so that many gateways do not reconnect in
lockstep after a broker restart. Every connection subscribes again (a clean session has forgotten
the subscriptions; a persistent one keeps them and the broker ignores the repeat). With
`clean_session = false` (MQTT 3.1.1) or a session expiry (MQTT 5) the broker queues QoS 1 messages
while the agent is away and delivers them on reconnect.

A lost connection marks each point BAD ("disconnected") once; last values are never re-sent with
new timestamps. A malformed payload makes its point's reading BAD with the reason, is counted in
`stats.decode_errors` and logged at most once per topic per `log_interval_s`.

Sparkplug births: data from an edge node (or device) whose birth this connector has not seen --
after the agent starts, restarts or reloads, or reconnects without a persistent session -- cannot
be named when it uses aliases. It is not malformed: the connector logs "waiting for birth from
group/node" and publishes the `Node Control/Rebirth` NCMD (QoS 0, at most once per node per
`sparkplug_rebirth_interval_s`; `sparkplug_rebirth = false` turns it off). On connecting it asks
the nodes named in the config for their births right away.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.matcher import MQTTMatcher
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.connectors.base import ConnectorStats, Emit
from agent.connectors.mqtt.codec import (
    JsonPath,
    WaveformFormat,
    decode_number,
    decode_waveform,
    json_field,
    json_timestamp,
    json_value,
    parse_json,
    parse_json_path,
)
from agent.connectors.mqtt.config import (
    MqttPointSettings,
    MqttSourceSettings,
    TemplateTopic,
    all_points,
    effective_protocol,
    filter_covers,
    overlapping_filters,
    parse_source,
    point_filter,
    point_spec,
    read_password,
    subscriptions,
    waveform_format,
)
from agent.connectors.mqtt.sparkplug import NAMESPACE, SparkplugDecoder, rebirth_request
from agent.model import AssetSpec, PointSpec, Quality, Reading, Value, now_ns
from runtime.backoff import Backoff
from runtime.errors import ConfigError, DecodeError
from runtime.logs import RateLimitedLog

__all__ = ["MqttConnector", "build"]

log = logging.getLogger("twin.agent.mqtt")

MAX_INBOX_BYTES = 32 * 1024 * 1024  # payload bytes waiting for the event loop
DRAIN_DELAY_S = 0.005  # collect messages this long before waking the event loop (one wake-up per burst)
DRAIN_BATCH = 2000  # messages decoded per event-loop turn, so other tasks still get to run
MAX_TOPIC_CACHE = 10_000  # concrete topics whose matching points are remembered
MAX_UNKNOWN_DEVICES = 1_000  # distinct undeclared devices counted by name; the rest under OTHER_DEVICES
OTHER_DEVICES = "(others)"
THREAD_JOIN_TIMEOUT_S = 5.0
STABLE_SESSION_S = 10.0  # a connection that lasted this long resets the backoff; a flapping one does not
DISCONNECTED = "disconnected"


@dataclass(frozen=True, slots=True)
class _Template:
    """A topic template, compiled for telling undeclared devices and points from declared ones."""

    index: int
    topic: TemplateTopic
    assets: frozenset[str]
    points: frozenset[str]


@dataclass(frozen=True, slots=True)
class _Route:
    """One configured point, compiled for decoding."""

    index: int
    spec: PointSpec
    settings: MqttPointSettings
    value_path: JsonPath = ()
    timestamp_path: JsonPath | None = None
    waveform: WaveformFormat | None = None


class _Inbox:
    """Messages from paho's network thread to the event loop: ordered, batched, bounded in bytes."""

    def __init__(self, loop: asyncio.AbstractEventLoop, drain: Callable[[], None], max_bytes: int) -> None:
        self._loop, self._drain, self._max_bytes = loop, drain, max_bytes
        self._items: deque[tuple[mqtt.MQTTMessage, int]] = deque()
        self._bytes = 0
        self._scheduled = False
        self._closed = False
        self._cond = threading.Condition()

    def put(self, msg: mqtt.MQTTMessage, recv_ns: int) -> None:
        """Network thread. Blocks while the inbox is full (backpressure to the broker)."""
        with self._cond:
            while self._bytes >= self._max_bytes and not self._closed:
                self._cond.wait(0.5)
            if self._closed:
                return
            self._items.append((msg, recv_ns))
            self._bytes += len(msg.payload)
            schedule, self._scheduled = not self._scheduled, True
        if schedule:
            try:
                self._loop.call_soon_threadsafe(self._loop.call_later, DRAIN_DELAY_S, self._drain)
            except RuntimeError:  # the event loop is closed: the connector is gone
                self.close()

    def take(self, limit: int) -> tuple[list[tuple[mqtt.MQTTMessage, int]], bool]:
        """Event loop. Up to `limit` messages and whether more remain (the caller drains them next)."""
        with self._cond:
            n = min(limit, len(self._items))
            batch = [self._items.popleft() for _ in range(n)]
            self._bytes -= sum(len(m.payload) for m, _ in batch)
            more = bool(self._items)
            self._scheduled = more
            self._cond.notify_all()
        return batch, more

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class MqttConnector:
    """One broker connection serving the points of one `[[sources]]` table."""

    def __init__(self, settings: MqttSourceSettings, password: str | None = None,
                 tls_context: ssl.SSLContext | None = None) -> None:
        self.name = settings.name
        self.stats = ConnectorStats()
        self.settings = settings
        self.broker = f"{settings.host}:{settings.broker_port}"
        self._password = password
        self._tls_context = tls_context
        self._routes = tuple(_compile(i, p) for i, p in enumerate(all_points(settings)))
        self._subscriptions = subscriptions(settings)
        self.protocol, self._protocol_why = effective_protocol(settings)
        self._v5 = self.protocol == "5"
        # Subscription identifiers only where they are needed: every message then carries one
        # more MQTT 5 property for paho to parse.
        self._sub_ids = self._v5 and bool(overlapping_filters(settings))
        # MQTT 5 subscription identifier (1, 2, ...) -> the points that subscription serves: a message
        # matching two overlapping filters arrives once per subscription, and each copy feeds only its own.
        self._subscription_points = {
            sub_id: frozenset(r.index for r in self._routes if filter_covers(f, point_filter(r.settings)))
            for sub_id, f in enumerate(self._subscriptions, start=1)
        }
        self._pending_subacks: set[int] = set()  # SUBSCRIBE packet ids awaiting SUBACK (paho thread)
        self._sub_filters: dict[int, list[str]] = {}  # SUBSCRIBE packet id -> its filters (paho thread)
        self._matcher = MQTTMatcher()
        for route in self._routes:
            f = point_filter(route.settings)
            try:
                self._matcher[f].append(route)
            except KeyError:
                self._matcher[f] = [route]
        self._topic_routes: dict[str, tuple[_Route, ...]] = {}
        self._templates = tuple(
            _Template(j, TemplateTopic(t.topic), frozenset(t.assets), frozenset(p.name for p in t.points))
            for j, t in enumerate(settings.templates))
        self._template_matcher = MQTTMatcher()
        for t in self._templates:
            try:
                self._template_matcher[t.topic.filter].append(t)
            except KeyError:
                self._template_matcher[t.topic.filter] = [t]
        self._unknown_log = RateLimitedLog(log, settings.log_interval_s)
        self._sparkplug = SparkplugDecoder() if any(r.settings.format == "sparkplug" for r in self._routes) else None
        self._sparkplug_source: dict[int, tuple[str, str, str]] = {}  # route -> (group, node, device)
        self._sparkplug_nodes = _configured_nodes(self._routes)
        self._rebirth_at: dict[tuple[str, str], float] = {}  # (group, node) -> monotonic time of the last request
        self.rebirth_requests = 0
        self._birth_log = RateLimitedLog(log, settings.log_interval_s)
        self._client: mqtt.Client | None = None
        self._is_bad = [False] * len(self._routes)
        self._malformed_log = RateLimitedLog(log, settings.log_interval_s)
        self._backoff = Backoff(settings.reconnect_min_s, settings.reconnect_max_s)
        self._emit: Emit | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox: _Inbox | None = None
        self._stopping = threading.Event()
        self._ever_connected = False
        self._connected = False
        self._connected_at = 0.0
        self._end_reason = ""
        self.stats.devices_online[self.broker] = False

    def points(self) -> Sequence[PointSpec]:
        return tuple(r.spec for r in self._routes)

    def declared_assets(self) -> Sequence[AssetSpec]:
        """The assets the topic templates declare (one per device id, of the template's type)."""
        return tuple(AssetSpec(id=asset, type=t.asset_type, name=asset)
                     for t in self.settings.templates for asset in t.assets)

    @property
    def ready(self) -> bool:
        """Connected and subscribed."""
        return self.stats.devices_online.get(self.broker, False)

    # ------------------------------------------------------------------ supervision (event loop)

    async def run(self, emit: Emit) -> None:
        loop = asyncio.get_running_loop()
        self._emit, self._loop = emit, loop
        self._stopping.clear()
        self._inbox = _Inbox(loop, self._drain, MAX_INBOX_BYTES)
        client = self._client = self._new_client()
        thread: threading.Thread | None = None
        try:
            while True:
                done: asyncio.Future[str] = loop.create_future()
                thread = threading.Thread(target=self._network, args=(client, loop, done),
                                          name=f"mqtt-{self.name}", daemon=True)
                thread.start()
                reason = await done
                await asyncio.to_thread(thread.join, THREAD_JOIN_TIMEOUT_S)
                if self._connected and time.monotonic() - self._connected_at >= STABLE_SESSION_S:
                    self._backoff.reset()
                self._session_ended(reason)
                delay = self._backoff.next_delay()
                log.warning("%s: %s (%s); reconnecting in %.2fs", self.name, reason, self.broker, delay)
                await asyncio.sleep(delay)
        finally:
            self._stopping.set()
            self._inbox.close()
            client.disconnect()
            if thread is not None:
                await asyncio.shield(asyncio.to_thread(thread.join, THREAD_JOIN_TIMEOUT_S))
            self.stats.devices_online[self.broker] = False

    def _new_client(self) -> mqtt.Client:
        s = self.settings
        v5 = self._v5
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=s.client_id,
            clean_session=None if v5 else s.clean_session,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311, reconnect_on_failure=False,
        )
        client.connect_timeout = s.connect_timeout_s
        if self._tls_context is not None:
            client.tls_set_context(self._tls_context)
        if s.username:
            client.username_pw_set(s.username, self._password)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def _connect_args(self) -> dict[str, Any]:
        s = self.settings
        if not self._v5:
            return {}
        props = Properties(PacketTypes.CONNECT)
        if not s.clean_session:
            props.SessionExpiryInterval = s.session_expiry_s
        return {"clean_start": s.clean_session, "properties": props}

    def _connected_ok(self, session_present: bool) -> None:
        if self._ever_connected:
            self.stats.reconnects += 1
        self._ever_connected = self._connected = True
        self._connected_at = time.monotonic()
        if self._sparkplug is not None and not session_present:
            # Births published while we were away went to nobody: aliases learnt before may be stale.
            self._sparkplug = SparkplugDecoder()
        log.info("%s: connected to %s (MQTT %s: %s; session present: %s)", self.name, self.broker, self.protocol,
                 self._protocol_why, session_present)

    def _subscribed(self, failed: list[str], complete: bool) -> None:
        if failed:
            self.stats.errors += 1
            self.stats.last_error = f"subscription refused: {', '.join(failed)}"
            log.error("%s: broker refused subscriptions: %s", self.name, ", ".join(failed))
        if complete and self._connected:
            self.stats.devices_online[self.broker] = True
            for group, node in self._sparkplug_nodes:
                if self._sparkplug is not None and not self._sparkplug.born(group, node):
                    self._request_rebirth(group, node)

    def _waiting_for_birth(self, group: str, node: str) -> None:
        outcome = self._request_rebirth(group, node)
        self._birth_log.warning(f"birth {group}/{node}", f"{self.name}: waiting for birth from {group}/{node}: "
                                f"its data uses aliases only its NBIRTH/DBIRTH declare; {outcome}")

    def _request_rebirth(self, group: str, node: str) -> str:
        """Publish the rebirth NCMD to one edge node, at most once per interval; says what happened."""
        if not self.settings.sparkplug_rebirth:
            return "rebirth requests are off (sparkplug_rebirth = false)"
        if self._client is None or not self._connected:
            return "not connected: the rebirth is requested once connected"
        now = time.monotonic()
        last = self._rebirth_at.get((group, node))
        interval = self.settings.sparkplug_rebirth_interval_s
        if last is not None and now - last < interval:
            return f"rebirth requested {now - last:.0f}s ago (at most every {interval:g}s)"
        topic, payload = rebirth_request(group, node, time.time_ns() // 1_000_000)
        info = self._client.publish(topic, payload, qos=0, retain=False)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return f"could not publish the rebirth request to {topic}: {mqtt.error_string(info.rc)}"
        self._rebirth_at[(group, node)] = now
        self.rebirth_requests += 1
        log.info("%s: asked Sparkplug edge node %s/%s to publish its births (%s)", self.name, group, node, topic)
        return f"rebirth requested ({topic}, Node Control/Rebirth)"

    def _session_ended(self, reason: str) -> None:
        self.stats.devices_online[self.broker] = False
        self._connected = False
        self.stats.errors += 1
        self.stats.last_error = reason
        self._drain_all()
        now = now_ns()
        bad = [self._bad_reading(r, now, DISCONNECTED) for r in self._routes if not self._is_bad[r.index]]
        self._sparkplug_source.clear()
        if bad:
            self._emit_safely(bad)

    # ------------------------------------------------------------------ paho thread

    def _network(self, client: mqtt.Client, loop: asyncio.AbstractEventLoop, done: asyncio.Future[str]) -> None:
        s = self.settings
        self._end_reason = ""
        try:
            client.connect(s.host, s.broker_port, s.keepalive_s, **self._connect_args())
            if self._stopping.is_set():
                client.disconnect()
            client.loop_forever()
            reason = self._end_reason or "connection closed"
        except (OSError, ValueError) as exc:  # refused, unreachable, TLS handshake (ssl.SSLError)
            reason = f"cannot connect: {exc}"
        except Exception as exc:
            log.exception("%s: MQTT network loop failed", self.name)
            reason = f"network loop failed: {exc!r}"
        try:
            loop.call_soon_threadsafe(_resolve, done, reason)
        except RuntimeError:  # event loop already closed
            pass

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                    properties: Any) -> None:
        if reason_code.is_failure:
            self._end_reason = f"broker refused the connection: {reason_code}"
            return
        if self._stopping.is_set():
            client.disconnect()
            return
        self._call_soon(self._connected_ok, bool(flags.session_present))
        self._pending_subacks.clear()
        self._sub_filters.clear()
        if self._sub_ids:  # one SUBSCRIBE per filter: an identifier belongs to a whole SUBSCRIBE packet
            for sub_id, (f, qos) in enumerate(self._subscriptions.items(), start=1):
                props = Properties(PacketTypes.SUBSCRIBE)
                props.SubscriptionIdentifier = sub_id
                _, mid = client.subscribe(f, qos, properties=props)
                self._sub_filters[mid] = [f]
        else:
            _, mid = client.subscribe(list(self._subscriptions.items()))
            self._sub_filters[mid] = list(self._subscriptions)
        self._pending_subacks.update(self._sub_filters)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: list[Any],
                      properties: Any) -> None:
        filters = self._sub_filters.get(mid, [])
        failed = [f"{filters[i] if i < len(filters) else '?'} ({rc})"
                  for i, rc in enumerate(reason_codes) if rc.is_failure]
        self._pending_subacks.discard(mid)
        self._call_soon(self._subscribed, failed, not self._pending_subacks)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                       properties: Any) -> None:
        if not self._end_reason:
            by_broker = getattr(flags, "is_disconnect_packet_from_server", False)
            self._end_reason = (f"the broker closed the connection: {reason_code}" if by_broker
                                else "connection lost")

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        assert self._inbox is not None
        self._inbox.put(msg, time.time_ns())

    def _call_soon(self, fn: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            pass

    # ------------------------------------------------------------------ decoding (event loop)

    def _drain(self) -> None:
        assert self._inbox is not None and self._loop is not None
        if self._stopping.is_set():
            return  # run() has ended; nobody consumes readings any more
        batch, more = self._inbox.take(DRAIN_BATCH)
        try:
            self._decode_batch(batch)
        except Exception as exc:  # a decoder bug must not stop the drain: the inbox would fill for good
            self.stats.errors += 1
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("%s: decoding %d messages failed", self.name, len(batch))
        finally:
            if more:
                self._loop.call_soon(self._drain)

    def _drain_all(self) -> None:
        assert self._inbox is not None
        while True:
            batch, more = self._inbox.take(DRAIN_BATCH)
            self._decode_batch(batch)
            if not more:
                return

    def _decode_batch(self, batch: list[tuple[mqtt.MQTTMessage, int]]) -> None:
        readings: list[Reading] = []
        for msg, recv_ns in batch:
            self.stats.polls += 1
            try:
                topic = msg.topic
            except UnicodeDecodeError:
                self._malformed("(not UTF-8)", ["topic is not UTF-8"])
                continue
            sub_ids = getattr(msg.properties, "SubscriptionIdentifier", None) if self._sub_ids else None
            self.decode_message(topic, msg.payload, recv_ns, readings, sub_ids)
        if readings:
            self._emit_safely(readings)

    def decode_message(self, topic: str, payload: bytes, recv_ns: int, out: list[Reading],
                       subscription_ids: Sequence[int] | None = None) -> None:
        """Append the readings one message yields to `out` (malformed parts are BAD and counted).

        `subscription_ids` (MQTT 5) limits the message to the points of the subscriptions it came by."""
        routes = self._topic_routes.get(topic)
        if routes is None:
            routes = tuple(r for group in self._matcher.iter_match(topic) for r in group)
            if len(self._topic_routes) >= MAX_TOPIC_CACHE:
                self._topic_routes.clear()
            self._topic_routes[topic] = routes
        if not routes and self._templates and not topic.startswith(NAMESPACE + "/") and self._undeclared(topic):
            return
        if subscription_ids and len(self._subscription_points) > 1:
            wanted = frozenset().union(*(self._subscription_points.get(i, frozenset()) for i in subscription_ids))
            routes = tuple(r for r in routes if r.index in wanted)
        problems: list[str] = []
        if self._sparkplug is not None and topic.startswith(NAMESPACE + "/"):
            self._decode_sparkplug(topic, payload, recv_ns, routes, out, problems)
        doc: Any = _UNPARSED
        for r in routes:
            fmt = r.settings.format
            if fmt == "sparkplug":
                continue
            try:
                ts_ns = recv_ns
                value: Value
                if fmt == "number":
                    value = decode_number(payload)
                elif fmt == "json":
                    if doc is _UNPARSED:
                        doc = _parse_or_error(payload)
                    if isinstance(doc, DecodeError):
                        raise doc
                    value = json_value(json_field(doc, r.value_path), r.settings.kind)
                    if r.timestamp_path is not None:
                        ts_ns = json_timestamp(doc, r.timestamp_path)
                else:
                    assert r.waveform is not None
                    value, header_ts = decode_waveform(payload, r.waveform)
                    ts_ns = header_ts or recv_ns
            except DecodeError as exc:
                problems.append(f"{r.spec.asset}/{r.spec.name}: {exc}")
                out.append(self._bad_reading(r, recv_ns, f"decode error: {exc}"))
                continue
            out.append(self._good_reading(r, value, ts_ns))
        if problems:
            self._malformed(topic, problems)

    def _decode_sparkplug(self, topic: str, payload: bytes, recv_ns: int, routes: tuple[_Route, ...],
                          out: list[Reading], problems: list[str]) -> None:
        assert self._sparkplug is not None
        sp_routes = [r for r in routes if r.settings.format == "sparkplug"]
        try:
            msg = self._sparkplug.decode(topic, payload, recv_ns)
        except DecodeError as exc:
            problems.append(str(exc))
            out.extend(self._bad_reading(r, recv_ns, f"decode error: {exc}") for r in sp_routes)
            return
        problems.extend(msg.problems)
        t = msg.topic
        if msg.waiting_for_birth:
            self._waiting_for_birth(t.group, t.edge_node)
        for r in sp_routes:
            values = msg.metrics.get(r.settings.metric)
            if not values:
                continue
            self._sparkplug_source[r.index] = (t.group, t.edge_node, t.device)
            for m in values:
                if m.error:
                    problems.append(f"{r.spec.asset}/{r.spec.name}: metric {r.settings.metric}: {m.error}")
                    out.append(self._bad_reading(r, m.ts_ns, f"decode error: {m.error}"))
                elif m.value is None:
                    out.append(self._bad_reading(r, m.ts_ns, "null (Sparkplug is_null)"))
                else:
                    out.append(self._good_reading(r, m.value, m.ts_ns))
        if msg.death:
            for index, (group, node, device) in list(self._sparkplug_source.items()):
                if (group, node) == (t.group, t.edge_node) and (t.message_type == "NDEATH" or device == t.device):
                    del self._sparkplug_source[index]
                    if not self._is_bad[index]:
                        out.append(self._bad_reading(self._routes[index], recv_ns, f"Sparkplug {t.message_type}"))

    def _undeclared(self, topic: str) -> bool:
        """A message on a template's topic from a device (or of a point) the template does not list:
        count and log it; False when no template's topic matches."""
        levels = topic.split("/")
        for group in self._template_matcher.iter_match(topic):
            for t in group:
                device = levels[t.topic.asset_level]
                point = levels[t.topic.point_level] if t.topic.point_level is not None else ""
                if device in t.assets:
                    key = f"{device}/{point}"
                    what = (f"point {point!r} of device {device} is not among templates[{t.index}].points "
                            f"({', '.join(sorted(t.points))})")
                else:
                    key = device
                    what = (f"device {device} is not declared: add it to templates[{t.index}].assets "
                            f"(asset type {self.settings.templates[t.index].asset_type}) and reload")
                self._count_unknown(key)
                self._unknown_log.warning(f"unknown {key}", f"{self.name}: message on {topic} ignored: {what} "
                                          f"({self.stats.unknown_devices.get(key, 0)} so far; see status "
                                          "unknown_devices)")
                return True
        return False

    def _count_unknown(self, key: str) -> None:
        unknown = self.stats.unknown_devices
        if key not in unknown and len(unknown) >= MAX_UNKNOWN_DEVICES:
            key = OTHER_DEVICES
        unknown[key] = unknown.get(key, 0) + 1

    def _good_reading(self, r: _Route, value: Value, ts_ns: int) -> Reading:
        self._is_bad[r.index] = False
        return Reading(r.spec.asset, r.spec.name, value, ts_ns, Quality.GOOD)

    def _bad_reading(self, r: _Route, ts_ns: int, reason: str) -> Reading:
        self._is_bad[r.index] = True
        return Reading(r.spec.asset, r.spec.name, None, ts_ns, Quality.BAD, reason)

    def _malformed(self, topic: str, problems: list[str]) -> None:
        self.stats.decode_errors += 1
        self._malformed_log.warning(topic, f"{self.name}: malformed payload on {topic}: {'; '.join(problems)}")

    def _emit_safely(self, readings: list[Reading]) -> None:
        assert self._emit is not None
        try:
            self._emit(readings)
        except Exception:
            self.stats.errors += 1
            log.exception("%s: emit failed for %d readings", self.name, len(readings))


_UNPARSED = object()


def _parse_or_error(payload: bytes) -> Any:
    try:
        return parse_json(payload)
    except DecodeError as exc:
        return exc


def _resolve(done: asyncio.Future[str], reason: str) -> None:
    if not done.done():
        done.set_result(reason)


def _compile(index: int, p: MqttPointSettings) -> _Route:
    spec = point_spec(p)
    if p.format == "json":
        return _Route(index, spec, p, parse_json_path(p.value_path),
                      parse_json_path(p.timestamp_path) if p.timestamp_path else None)
    if p.format == "waveform":
        return _Route(index, spec, p, waveform=waveform_format(p))
    return _Route(index, spec, p)


def _configured_nodes(routes: Sequence[_Route]) -> tuple[tuple[str, str], ...]:
    """(group, edge node) of the Sparkplug points whose topic names both (no wildcard there)."""
    nodes: dict[tuple[str, str], None] = {}
    for r in routes:
        if r.settings.format == "sparkplug":
            levels = r.settings.topic.split("/")
            if len(levels) >= 4 and not {levels[1], levels[3]} & {"+", "#"}:
                nodes[(levels[1], levels[3])] = None
    return tuple(nodes)


def _tls_context(s: MqttSourceSettings, key: str) -> ssl.SSLContext:
    """Built at config time so that an unreadable or mismatched certificate is a config error."""
    try:
        context = ssl.create_default_context(cafile=s.ca_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{key}.ca_file: cannot load CA certificates from {s.ca_file}: {exc}") from None
    if s.cert_file:
        try:
            context.load_cert_chain(s.cert_file, s.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"{key}.cert_file: cannot load the client certificate and key: {exc}") from None
    return context


def build(table: dict[str, Any], key: str) -> MqttConnector:
    """The registry's factory: validate the `[[sources]]` table (without `type`) and build."""
    settings = parse_source(table, key)
    password = read_password(settings, key)
    # A client key readable only inside the unit was checked (or noted) by parse_source; without it
    # this connector is only validated, never run, so the TLS context is left out.
    usable_key = not settings.key_file or os.access(settings.key_file, os.R_OK)
    return MqttConnector(settings, password, _tls_context(settings, key) if settings.tls and usable_key else None)
