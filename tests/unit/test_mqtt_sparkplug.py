"""Sparkplug B: topics, datatypes, alias learning from births, deaths, and the generated module."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from agent.connectors.mqtt import sparkplug_b_pb2
from agent.connectors.mqtt.connector import build
from agent.connectors.mqtt.sparkplug import (
    SparkplugDecoder,
    SparkplugTopic,
    decode_payload,
    metric_value,
    parse_topic,
    rebirth_request,
)
from agent.model import Quality, Reading
from runtime.errors import DecodeError

ROOT = Path(__file__).resolve().parents[2]
PROTO = "agent/connectors/mqtt/sparkplug_b.proto"
GENERATED = ROOT / "agent/connectors/mqtt/sparkplug_b_pb2.py"
GENERATED_HEADER = "# ruff: noqa\n"  # generated code follows protoc's style, not ours

Metric = tuple[Any, ...]


def payload(*metrics: dict[str, Any], ts_ms: int | None = 1_714_564_800_000, seq: int = 0) -> bytes:
    p = sparkplug_b_pb2.Payload(seq=seq)
    if ts_ms is not None:
        p.timestamp = ts_ms
    for m in metrics:
        p.metrics.add(**m)
    return p.SerializeToString()


def test_generated_module_is_fresh(tmp_path: Path) -> None:
    """sparkplug_b_pb2.py is what protoc makes of sparkplug_b.proto today (plus the ruff marker)."""
    from grpc_tools import protoc

    assert protoc.main(["protoc", f"-I{ROOT}", f"--python_out={tmp_path}", str(ROOT / PROTO)]) == 0
    fresh = (tmp_path / "agent/connectors/mqtt/sparkplug_b_pb2.py").read_text()
    assert GENERATED.read_text() == GENERATED_HEADER + fresh, (
        f"stale: regenerate with `{Path(sys.executable).name} -m grpc_tools.protoc -I. --python_out=. {PROTO}` "
        "and put the ruff marker back (see agent/connectors/mqtt/README.md)")


@pytest.mark.parametrize(("topic", "expected"), [
    ("spBv1.0/plant/NBIRTH/gw01", SparkplugTopic("plant", "NBIRTH", "gw01")),
    ("spBv1.0/plant/DDATA/gw01/pump1", SparkplugTopic("plant", "DDATA", "gw01", "pump1")),
])
def test_topics(topic: str, expected: SparkplugTopic) -> None:
    assert parse_topic(topic) == expected


@pytest.mark.parametrize("topic", ["spBv1.0/plant/NBIRTH", "spAv1.0/plant/NDATA/gw01", "spBv1.0/plant/XDATA/gw01",
                                   "spBv1.0/plant/NDATA/gw01/pump1", "spBv1.0/plant/DDATA/gw01",
                                   "spBv1.0//NDATA/gw01", "plant/pump-1/speed"])
def test_bad_topics(topic: str) -> None:
    with pytest.raises(DecodeError):
        parse_topic(topic)


@pytest.mark.parametrize(("datatype", "field", "raw", "expected"), [
    (1, "int_value", 0xFF, -1.0),  # Int8 as an 8-bit pattern
    (1, "int_value", 0xFFFFFFFF, -1.0),  # Int8 sign-extended to 32 bits
    (2, "int_value", 0xFFFE, -2.0),
    (3, "int_value", 0x80000000, -2147483648.0),
    (4, "long_value", 2**64 - 5, -5.0),
    (5, "int_value", 200, 200.0),
    (7, "int_value", 0xFFFFFFFF, 4294967295.0),
    (8, "long_value", 2**63, 9.223372036854776e18),
    (9, "float_value", 1.5, 1.5),
    (10, "double_value", -2.25, -2.25),
    (11, "boolean_value", True, True),
    (12, "string_value", "RUN", "RUN"),
    (13, "long_value", 1_714_564_800_000, 1_714_564_800_000.0),
    (0, "double_value", 7.0, 7.0),  # datatype unknown: the value field decides
])
def test_metric_values_by_datatype(datatype: int, field: str, raw: Any, expected: Any) -> None:
    m = sparkplug_b_pb2.Payload.Metric(**{field: raw})
    value = metric_value(m, datatype)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(("datatype", "field", "raw"), [
    (17, "bytes_value", b"abc"), (16, "dataset_value", b""), (9, "int_value", 3), (11, "string_value", "x"),
    (10, None, None), (9, "float_value", float("nan")),
])
def test_unsupported_or_inconsistent_metrics(datatype: int, field: str | None, raw: Any) -> None:
    m = sparkplug_b_pb2.Payload.Metric(**({field: raw} if field else {}))
    with pytest.raises(DecodeError):
        metric_value(m, datatype)


def test_aliases_and_datatypes_learned_from_births() -> None:
    d = SparkplugDecoder()
    birth = d.decode("spBv1.0/plant/NBIRTH/gw01", payload(
        {"name": "bdSeq", "datatype": 8, "long_value": 3},
        {"name": "Pump1/Speed", "alias": 10, "datatype": 10, "double_value": 1480.0},
        {"name": "Pump1/Trip", "alias": 11, "datatype": 1, "int_value": 0}), recv_ns=1)
    assert birth.metrics["Pump1/Speed"][0].value == 1480.0
    assert birth.metrics["Pump1/Speed"][0].ts_ns == 1_714_564_800_000 * 1_000_000
    data = d.decode("spBv1.0/plant/NDATA/gw01", payload(
        {"alias": 10, "double_value": 1479.5, "timestamp": 1_714_564_801_000},
        {"alias": 11, "int_value": 0xFFFFFFFF}), recv_ns=1)
    assert data.problems == []
    assert data.metrics["Pump1/Speed"][0].value == 1479.5
    assert data.metrics["Pump1/Speed"][0].ts_ns == 1_714_564_801_000 * 1_000_000
    assert data.metrics["Pump1/Trip"][0].value == -1.0  # Int8 learned from the birth


def test_device_birth_aliases_belong_to_the_node() -> None:
    d = SparkplugDecoder()
    d.decode("spBv1.0/plant/DBIRTH/gw01/pump1", payload({"name": "Speed", "alias": 5, "datatype": 9,
                                                         "float_value": 10.0}), recv_ns=1)
    same_node = d.decode("spBv1.0/plant/DDATA/gw01/pump1", payload({"alias": 5, "float_value": 11.0}), recv_ns=1)
    other_node = d.decode("spBv1.0/plant/DDATA/gw02/pump1", payload({"alias": 5, "float_value": 12.0}), recv_ns=1)
    assert same_node.metrics["Speed"][0].value == 11.0
    assert other_node.metrics == {}
    # gw02's births went by before the decoder started: not malformed, waiting for its birth.
    assert other_node.problems == [] and other_node.waiting_for_birth


def test_data_before_any_birth_waits_for_it_and_an_alias_the_births_lack_is_malformed() -> None:
    d = SparkplugDecoder()
    early = d.decode("spBv1.0/g/DDATA/n/dev", payload({"alias": 1, "double_value": 1.0}), 1)
    assert early.waiting_for_birth and early.problems == [] and not d.born("g", "n")
    d.decode("spBv1.0/g/NBIRTH/n", payload({"name": "bdSeq", "datatype": 8, "long_value": 0}), 1)
    no_device_birth = d.decode("spBv1.0/g/DDATA/n/dev", payload({"alias": 1, "double_value": 1.0}), 1)
    assert no_device_birth.waiting_for_birth and d.born("g", "n")
    d.decode("spBv1.0/g/DBIRTH/n/dev", payload({"name": "T", "alias": 1, "datatype": 10, "double_value": 1.0}), 1)
    ok = d.decode("spBv1.0/g/DDATA/n/dev", payload({"alias": 1, "double_value": 2.0}), 1)
    wrong = d.decode("spBv1.0/g/DDATA/n/dev", payload({"alias": 7, "double_value": 2.0}), 1)
    assert not ok.waiting_for_birth and ok.metrics["T"][0].value == 2.0
    assert not wrong.waiting_for_birth and wrong.problems == ["unknown alias 7 (not declared by the births)"]
    d.decode("spBv1.0/g/NDEATH/n", payload({"name": "bdSeq", "datatype": 8, "long_value": 0}), 1)
    assert not d.born("g", "n")
    assert d.decode("spBv1.0/g/DDATA/n/dev", payload({"alias": 1, "double_value": 1.0}), 1).waiting_for_birth


def test_rebirth_request_is_the_node_control_ncmd() -> None:
    topic, data = rebirth_request("plant", "gw01", now_ms=1_700_000_000_000)
    assert topic == "spBv1.0/plant/NCMD/gw01"
    msg = decode_payload(data)
    assert msg.timestamp == 1_700_000_000_000
    [metric] = msg.metrics
    assert (metric.name, metric.datatype, metric.boolean_value) == ("Node Control/Rebirth", 11, True)


def test_rebirth_forgets_old_aliases() -> None:
    d = SparkplugDecoder()
    d.decode("spBv1.0/g/NBIRTH/n", payload({"name": "A", "alias": 1, "datatype": 10, "double_value": 1.0}), 1)
    d.decode("spBv1.0/g/NBIRTH/n", payload({"name": "B", "alias": 2, "datatype": 10, "double_value": 2.0}), 1)
    msg = d.decode("spBv1.0/g/NDATA/n", payload({"alias": 1, "double_value": 3.0}), 1)
    assert msg.metrics == {} and "unknown alias 1" in msg.problems[0]


def test_null_and_history_and_payload_timestamp_fallback() -> None:
    d = SparkplugDecoder()
    msg = d.decode("spBv1.0/g/NDATA/n", payload(
        {"name": "T", "datatype": 10, "is_null": True},
        {"name": "H", "datatype": 10, "double_value": 1.0, "timestamp": 1000, "is_historical": True},
        {"name": "H", "datatype": 10, "double_value": 2.0, "timestamp": 2000, "is_historical": True},
        ts_ms=None), recv_ns=42)
    assert msg.metrics["T"][0].value is None and msg.metrics["T"][0].error == "" and msg.metrics["T"][0].ts_ns == 42
    assert [(m.value, m.ts_ns) for m in msg.metrics["H"]] == [(1.0, 1_000_000_000), (2.0, 2_000_000_000)]


def test_stale_node_death_is_ignored() -> None:
    d = SparkplugDecoder()
    d.decode("spBv1.0/g/NBIRTH/n", payload({"name": "bdSeq", "datatype": 8, "long_value": 4}), 1)
    assert not d.decode("spBv1.0/g/NDEATH/n", payload({"name": "bdSeq", "datatype": 8, "long_value": 3}), 1).death
    assert d.decode("spBv1.0/g/NDEATH/n", payload({"name": "bdSeq", "datatype": 8, "long_value": 4}), 1).death
    assert d.decode("spBv1.0/g/DDEATH/n/dev", payload(), 1).death


def test_garbage_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        decode_payload(b"\x12\x05\x0a\x09")  # metric whose name claims more bytes than there are


# ------------------------------------------------------------------ through the connector's decoding


def _connector() -> Any:
    return build({"name": "sp", "points": [
        {"asset": "pump-1", "name": "speed", "topic": "spBv1.0/plant/DDATA/gw01/pump1", "format": "sparkplug",
         "metric": "Speed"},
        {"asset": "gw01", "name": "uptime", "topic": "spBv1.0/plant/NDATA/gw01", "format": "sparkplug",
         "metric": "Uptime"},
    ]}, "sources[0]")


def _decode(c: Any, topic: str, data: bytes) -> list[Reading]:
    out: list[Reading] = []
    c.decode_message(topic, data, 7, out)
    return out


def test_connector_reads_metrics_by_alias_and_marks_deaths_once() -> None:
    c = _connector()
    assert _decode(c, "spBv1.0/plant/NBIRTH/gw01", payload(
        {"name": "bdSeq", "datatype": 8, "long_value": 0},
        {"name": "Uptime", "alias": 1, "datatype": 10, "double_value": 5.0})) == [
        Reading("gw01", "uptime", 5.0, 1_714_564_800_000_000_000)]
    _decode(c, "spBv1.0/plant/DBIRTH/gw01/pump1", payload({"name": "Speed", "alias": 2, "datatype": 9,
                                                            "float_value": 1480.0}))
    [r] = _decode(c, "spBv1.0/plant/DDATA/gw01/pump1", payload({"alias": 2, "float_value": 1479.0}))
    assert (r.asset, r.point, r.value, r.quality) == ("pump-1", "speed", 1479.0, Quality.GOOD)
    [dead] = _decode(c, "spBv1.0/plant/DDEATH/gw01/pump1", payload())
    assert (dead.point, dead.value, dead.quality, dead.reason) == ("speed", None, Quality.BAD, "Sparkplug DDEATH")
    assert _decode(c, "spBv1.0/plant/DDEATH/gw01/pump1", payload()) == []  # once
    [node_dead] = _decode(c, "spBv1.0/plant/NDEATH/gw01", payload({"name": "bdSeq", "datatype": 8, "long_value": 0}))
    assert (node_dead.point, node_dead.quality, node_dead.reason) == ("uptime", Quality.BAD, "Sparkplug NDEATH")
    assert c.stats.decode_errors == 0


def test_connector_counts_malformed_sparkplug() -> None:
    c = _connector()
    [bad] = _decode(c, "spBv1.0/plant/DDATA/gw01/pump1", b"\xff\xff\xff")
    assert bad.quality == Quality.BAD and bad.reason.startswith("decode error")
    # Before any birth an unknown alias is not malformed: the connector waits for the birth.
    assert _decode(c, "spBv1.0/plant/DDATA/gw01/pump1", payload({"alias": 9, "float_value": 1.0})) == []
    assert c.stats.decode_errors == 1
    _decode(c, "spBv1.0/plant/NBIRTH/gw01", payload({"name": "bdSeq", "datatype": 8, "long_value": 0}))
    _decode(c, "spBv1.0/plant/DBIRTH/gw01/pump1", payload({"name": "Speed", "alias": 1, "datatype": 9,
                                                          "float_value": 1.0}))
    assert _decode(c, "spBv1.0/plant/DDATA/gw01/pump1", payload({"alias": 9, "float_value": 1.0})) == []
    assert c.stats.decode_errors == 2


def test_a_source_with_topic_templates_still_learns_sparkplug_births() -> None:
    c = build({"name": "sp", "points": [
        {"asset": "pump-1", "name": "speed", "topic": "spBv1.0/plant/DDATA/gw01/pump1", "format": "sparkplug",
         "metric": "Speed"}],
        "templates": [{"topic": "+/+asset/+point", "asset_type": "sensor", "assets": ["s1"],
                       "points": [{"name": "t"}]}]}, "sources[0]")
    _decode(c, "spBv1.0/plant/NBIRTH/gw01", payload({"name": "bdSeq", "datatype": 8, "long_value": 0}))
    _decode(c, "spBv1.0/plant/DBIRTH/gw01/pump1", payload({"name": "Speed", "alias": 1, "datatype": 10,
                                                          "double_value": 1.0}))
    [r] = _decode(c, "spBv1.0/plant/DDATA/gw01/pump1", payload({"alias": 1, "double_value": 2.0}))
    assert (r.point, r.value) == ("speed", 2.0)
    assert c.stats.unknown_devices == {} and c.stats.decode_errors == 0
    assert _decode(c, "x/s2/t", b"1") == [] and c.stats.unknown_devices == {"s2": 1}
