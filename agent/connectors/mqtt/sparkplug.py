"""Sparkplug B: topic namespace, payload decoding, and the per-edge-node alias table.

Why generated protobuf code rather than a hand-written reader: the payload is a protobuf message
with nested repeated fields, varints, two's-complement integers hidden in unsigned fields and
unknown-field skipping; the protobuf runtime (already a dependency for the gRPC uplink) does all of
that correctly and in C. `sparkplug_b.proto` beside this file declares the part of the schema we
read (nested structures we do not interpret are opaque bytes, which is wire-compatible), and
`sparkplug_b_pb2.py` is its committed generated module; tests check that it is fresh.

Why state: after a birth certificate (NBIRTH for the edge node, DBIRTH for each device) data
messages may carry only a numeric alias and omit the datatype. `SparkplugDecoder` learns both from
the births, per edge node (aliases are unique across a node and its devices), forgets them when a
node is reborn, and ignores a stale NDEATH (one whose bdSeq is not the current session's).

Why rebirth requests: Sparkplug 3.0 edge nodes publish their births once per session, not
retained, so a host that connects (or restarts, or reloads) after them sees only alias-only data
it cannot name. The decoder marks such messages `waiting_for_birth` (the node, or the device, has
no birth since the decoder started) instead of reporting unknown aliases as malformed, and the
connector asks the edge node to publish its births again with the `Node Control/Rebirth` NCMD
that `rebirth_request` encodes (specification 3.0, section 6.4.2 "Node Control/Rebirth").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError as ProtobufDecodeError

from agent.connectors.mqtt import sparkplug_b_pb2
from runtime.errors import DecodeError

__all__ = [
    "NAMESPACE",
    "SparkplugDecoder",
    "SparkplugMessage",
    "SparkplugMetric",
    "SparkplugTopic",
    "decode_payload",
    "metric_value",
    "parse_topic",
    "rebirth_request",
]

NAMESPACE = "spBv1.0"
MESSAGE_TYPES = frozenset({"NBIRTH", "NDEATH", "DBIRTH", "DDEATH", "NDATA", "DDATA", "NCMD", "DCMD"})
NODE_TYPES = frozenset({"NBIRTH", "NDEATH", "NDATA", "NCMD"})
BD_SEQ = "bdSeq"
REBIRTH_METRIC = "Node Control/Rebirth"
MAX_TS_NS = 2**63 - 1

# Sparkplug datatypes (specification section 6.4.16)
INT8, INT16, INT32, INT64 = 1, 2, 3, 4
UINT8, UINT16, UINT32, UINT64 = 5, 6, 7, 8
FLOAT, DOUBLE, BOOLEAN, STRING, DATETIME, TEXT, UUID = 9, 10, 11, 12, 13, 14, 15
_SIGNED_BITS = {INT8: 8, INT16: 16, INT32: 32, INT64: 64}
_INTEGER_TYPES = frozenset({INT8, INT16, INT32, INT64, UINT8, UINT16, UINT32, UINT64, DATETIME})
_STRING_TYPES = frozenset({STRING, TEXT, UUID})
_UNSUPPORTED = {16: "DataSet", 17: "Bytes", 18: "File", 19: "Template"}

MetricValue = float | bool | str


@dataclass(frozen=True, slots=True)
class SparkplugTopic:
    """`spBv1.0/<group>/<message type>/<edge node>[/<device>]`"""

    group: str
    message_type: str
    edge_node: str
    device: str = ""


def parse_topic(topic: str) -> SparkplugTopic:
    parts = topic.split("/")
    if len(parts) not in (4, 5) or parts[0] != NAMESPACE or parts[2] not in MESSAGE_TYPES:
        raise DecodeError(f"not a Sparkplug B topic: {topic!r}")
    if not all(parts[1:]):
        raise DecodeError(f"Sparkplug B topic with an empty level: {topic!r}")
    node_level = parts[2] in NODE_TYPES
    if node_level != (len(parts) == 4):
        raise DecodeError(f"Sparkplug B {parts[2]} topic needs {'no' if node_level else 'a'} device level")
    return SparkplugTopic(parts[1], parts[2], parts[3], parts[4] if len(parts) == 5 else "")


def decode_payload(data: bytes) -> Any:
    """Parse a Sparkplug B protobuf payload (a `sparkplug_b_pb2.Payload`)."""
    payload = sparkplug_b_pb2.Payload()
    try:
        payload.ParseFromString(data)
    except (ProtobufDecodeError, RecursionError, ValueError) as exc:
        raise DecodeError(f"not a Sparkplug B payload: {exc}") from None
    return payload


def metric_value(metric: Any, datatype: int) -> MetricValue:
    """A metric's value as a point value; `datatype` 0 means unknown (use whichever field is set)."""
    if datatype in _UNSUPPORTED:
        raise DecodeError(f"Sparkplug {_UNSUPPORTED[datatype]} metrics are not supported")
    which = metric.WhichOneof("value")
    if which is None:
        raise DecodeError("metric carries no value")
    raw = getattr(metric, which)
    if which in ("int_value", "long_value"):
        if datatype and datatype not in _INTEGER_TYPES:
            raise DecodeError(f"datatype {datatype} carried in {which}")
        bits = _SIGNED_BITS.get(datatype)
        if bits is not None:
            raw &= (1 << bits) - 1
            if raw >= 1 << (bits - 1):
                raw -= 1 << bits
        return float(raw)
    if which in ("float_value", "double_value"):
        if datatype and datatype not in (FLOAT, DOUBLE):
            raise DecodeError(f"datatype {datatype} carried in {which}")
        if not math.isfinite(raw):
            raise DecodeError("metric value is not a finite number")
        return float(raw)
    if which == "boolean_value":
        if datatype and datatype != BOOLEAN:
            raise DecodeError(f"datatype {datatype} carried in boolean_value")
        return bool(raw)
    if which == "string_value":
        if datatype and datatype not in _STRING_TYPES:
            raise DecodeError(f"datatype {datatype} carried in string_value")
        if not isinstance(raw, str):  # proto2 strings are not UTF-8 checked on parse
            raise DecodeError("metric string value is not UTF-8")
        return raw
    raise DecodeError(f"metric value in {which} is not supported")


@dataclass(frozen=True, slots=True)
class SparkplugMetric:
    """One decoded metric. `value` is None when the edge node says it is null or it could not be
    decoded; `error` then says why (empty for an explicit null)."""

    value: MetricValue | None
    ts_ns: int
    error: str = ""


@dataclass(slots=True)
class SparkplugMessage:
    topic: SparkplugTopic
    metrics: dict[str, list[SparkplugMetric]]  # by name; several values when history is batched
    death: bool = False  # a current NDEATH or a DDEATH: the node's / device's points go BAD
    problems: list[str] = field(default_factory=list)  # message-level: unknown aliases, bad names
    # No birth seen yet for the node (or for the device of a device message): aliases this message
    # uses are unknown because the births went by, not because the payload is wrong.
    waiting_for_birth: bool = False


@dataclass(slots=True)
class _NodeSession:
    aliases: dict[int, str] = field(default_factory=dict)
    datatypes: dict[tuple[str, str], int] = field(default_factory=dict)  # (device, name) -> datatype
    bd_seq: int | None = None
    born: bool = False  # an NBIRTH was seen (and no current NDEATH since)
    devices: set[str] = field(default_factory=set)  # devices whose DBIRTH was seen in this node session


class SparkplugDecoder:
    """Decodes Sparkplug B messages, remembering per edge node what its births declared."""

    def __init__(self) -> None:
        self._nodes: dict[tuple[str, str], _NodeSession] = {}

    def decode(self, topic: str, data: bytes, recv_ns: int) -> SparkplugMessage:
        t = parse_topic(topic)
        payload = decode_payload(data)
        node_key = (t.group, t.edge_node)
        if t.message_type == "NBIRTH":
            self._nodes[node_key] = _NodeSession(born=True)
        session = self._nodes.setdefault(node_key, _NodeSession())
        message = SparkplugMessage(t, {})
        if t.message_type in ("NCMD", "DCMD"):
            return message  # commands to the node, not data from it
        if t.message_type == "DBIRTH":
            session.devices.add(t.device)
        message.waiting_for_birth = not session.born or (
            t.message_type in ("DDATA", "DBIRTH") and t.device not in session.devices)
        default_ts = _ms_to_ns(payload.timestamp) if payload.HasField("timestamp") else recv_ns
        birth = t.message_type in ("NBIRTH", "DBIRTH")
        for metric in payload.metrics:
            name = self._metric_name(metric, session, birth, message)
            if name is None:
                continue
            if metric.HasField("datatype") and birth:
                session.datatypes[(t.device, name)] = metric.datatype
            datatype = metric.datatype if metric.HasField("datatype") else session.datatypes.get((t.device, name), 0)
            ts_ns = _ms_to_ns(metric.timestamp) if metric.HasField("timestamp") else default_ts
            if ts_ns is None:
                decoded = SparkplugMetric(None, recv_ns, "metric timestamp out of range")
            elif metric.is_null:
                decoded = SparkplugMetric(None, ts_ns)
            else:
                try:
                    decoded = SparkplugMetric(metric_value(metric, datatype), ts_ns)
                except DecodeError as exc:
                    decoded = SparkplugMetric(None, ts_ns, str(exc))
            message.metrics.setdefault(name, []).append(decoded)
        if t.message_type == "NBIRTH":
            session.bd_seq = _bd_seq(message)
        elif t.message_type == "NDEATH":
            bd_seq = _bd_seq(message)
            message.death = session.bd_seq is None or bd_seq is None or bd_seq == session.bd_seq
            if message.death:
                session.born = False
                session.devices.clear()
        elif t.message_type == "DDEATH":
            message.death = True
            session.devices.discard(t.device)
        message.waiting_for_birth = message.waiting_for_birth and not message.death
        return message

    def born(self, group: str, edge_node: str) -> bool:
        """Whether the node's NBIRTH has been seen (and no current NDEATH since)."""
        session = self._nodes.get((group, edge_node))
        return session is not None and session.born

    @staticmethod
    def _metric_name(metric: Any, session: _NodeSession, birth: bool, message: SparkplugMessage) -> str | None:
        if metric.HasField("name"):
            name = metric.name
            if not isinstance(name, str) or not name:
                message.problems.append("metric name is empty or not UTF-8")
                return None
            if birth and metric.HasField("alias"):
                session.aliases[metric.alias] = name
            return name
        if metric.HasField("alias"):
            name = session.aliases.get(metric.alias)
            if name is None and not message.waiting_for_birth:
                message.problems.append(f"unknown alias {metric.alias} (not declared by the births)")
            return name
        message.problems.append("metric has neither name nor alias")
        return None


def rebirth_request(group: str, edge_node: str, now_ms: int) -> tuple[str, bytes]:
    """The NCMD (topic, payload) that asks an edge node to publish its births again."""
    payload = sparkplug_b_pb2.Payload()
    payload.timestamp = now_ms
    metric = payload.metrics.add()
    metric.name = REBIRTH_METRIC
    metric.timestamp = now_ms
    metric.datatype = BOOLEAN
    metric.boolean_value = True
    return f"{NAMESPACE}/{group}/NCMD/{edge_node}", payload.SerializeToString()


def _ms_to_ns(ms: int) -> int | None:
    ns = ms * 1_000_000
    return ns if ns <= MAX_TS_NS else None


def _bd_seq(message: SparkplugMessage) -> int | None:
    values = message.metrics.get(BD_SEQ)
    if not values or isinstance(values[-1].value, bool) or not isinstance(values[-1].value, float):
        return None
    return int(values[-1].value)
