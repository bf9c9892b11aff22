"""Fuzzing the MQTT decoders: whatever arrives, the only exception is DecodeError."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.connectors.mqtt import sparkplug_b_pb2
from agent.connectors.mqtt.codec import (
    WaveformFormat,
    decode_number,
    decode_waveform,
    encode_waveform,
    json_field,
    json_timestamp,
    json_value,
    parse_json,
    parse_json_path,
    parse_timestamp,
)
from agent.connectors.mqtt.connector import build
from agent.connectors.mqtt.sparkplug import SparkplugDecoder
from agent.model import Quality, Reading
from runtime.errors import DecodeError

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20,
)
FORMATS = [WaveformFormat(12800.0, dtype, order, scale, header)
           for dtype in ("float32", "int16") for order in ("little", "big")
           for scale in (1.0, 1e-3) for header in ("none", "twin-v1")]
PATHS = [parse_json_path(p) for p in ("v", "data.temp", "values[0]", "a.b[1].c", "ts")]


def only_decode_errors(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except DecodeError:
        return None


@FUZZ
@given(st.binary(max_size=64) | st.text(max_size=32).map(str.encode))
def test_number_decoder(payload: bytes) -> None:
    value = only_decode_errors(decode_number, payload)
    assert value is None or isinstance(value, bool | float)


@FUZZ
@given(st.binary(max_size=128) | json_values.map(lambda v: json.dumps(v).encode()))
def test_json_decoder_and_fields(payload: bytes) -> None:
    doc = only_decode_errors(parse_json, payload)
    for path in PATHS:
        raw = only_decode_errors(json_field, doc, path)
        for kind in ("measurement", "state"):
            value = only_decode_errors(json_value, raw, kind)
            assert value is None or isinstance(value, bool | float | str)
        ts = only_decode_errors(json_timestamp, doc, path)
        assert ts is None or 0 <= ts < 2**63


@FUZZ
@given(json_values | st.text(max_size=40) | st.floats() | st.integers())
def test_timestamps(raw: Any) -> None:
    ts = only_decode_errors(parse_timestamp, raw)
    assert ts is None or (isinstance(ts, int) and 0 <= ts < 2**63)


@FUZZ
@given(st.binary(max_size=300), st.sampled_from(FORMATS))
def test_waveform_random_bytes(payload: bytes, fmt: WaveformFormat) -> None:
    result = only_decode_errors(decode_waveform, payload, fmt)
    if result is not None:
        values, _ = result
        assert values.dtype == np.float64 and values.ndim == 1 and np.isfinite(values).all()


@FUZZ
@given(st.lists(st.floats(-8, 8), min_size=1, max_size=64), st.sampled_from(FORMATS), st.data())
def test_waveform_truncated_or_corrupted(samples: list[float], fmt: WaveformFormat, data: st.DataObject) -> None:
    good = encode_waveform(np.array(samples), fmt, ts_ns=1_700_000_000_000_000_000)
    cut = data.draw(st.integers(0, len(good)))
    position = data.draw(st.integers(0, len(good) - 1))
    flipped = bytearray(good)
    flipped[position] ^= data.draw(st.integers(1, 255))
    for payload in (good[:cut], bytes(flipped)):
        only_decode_errors(decode_waveform, payload, fmt)


def sparkplug_payloads() -> st.SearchStrategy[bytes]:
    metric = st.fixed_dictionaries({}, optional={
        "name": st.text(max_size=8), "alias": st.integers(0, 2**64 - 1), "datatype": st.integers(0, 40),
        "timestamp": st.integers(0, 2**64 - 1), "is_null": st.booleans(), "int_value": st.integers(0, 2**32 - 1),
    })
    Payload = sparkplug_b_pb2.Payload
    return st.lists(metric, max_size=5).map(
        lambda ms: Payload(metrics=[Payload.Metric(**m) for m in ms]).SerializeToString())


TOPICS = st.sampled_from([
    "spBv1.0/g/NBIRTH/n", "spBv1.0/g/NDATA/n", "spBv1.0/g/DBIRTH/n/d", "spBv1.0/g/DDATA/n/d",
    "spBv1.0/g/NDEATH/n", "spBv1.0/g/DDEATH/n/d", "spBv1.0/g/NDATA", "x/y",
]) | st.text(max_size=30)


@FUZZ
@given(st.lists(st.tuples(TOPICS, st.binary(max_size=200) | sparkplug_payloads()), max_size=6))
def test_sparkplug_decoder(messages: list[tuple[str, bytes]]) -> None:
    decoder = SparkplugDecoder()
    for topic, payload in messages:
        msg = only_decode_errors(decoder.decode, topic, payload, 1)
        if msg is not None:
            for values in msg.metrics.values():
                assert all(m.value is None or isinstance(m.value, bool | float | str) for m in values)


CONNECTOR_TOPICS = ["t/num", "t/json", "t/wave", "t/wave1", "spBv1.0/g/DDATA/n/d", "spBv1.0/g/NBIRTH/n"]


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(CONNECTOR_TOPICS), st.binary(max_size=200) | sparkplug_payloads()),
                min_size=1, max_size=8))
def test_connector_turns_every_payload_into_readings_or_counted_errors(messages: list[tuple[str, bytes]]) -> None:
    """decode_message never raises; each malformed message is counted once and its points go BAD."""
    c = build({"name": "fuzz", "points": [
        {"asset": "a", "name": "num", "topic": "t/num"},
        {"asset": "a", "name": "json", "topic": "t/json", "format": "json", "value_path": "data.v",
         "timestamp_path": "data.ts"},
        {"asset": "a", "name": "wave", "kind": "waveform", "topic": "t/wave", "format": "waveform",
         "sample_rate_hz": 12800.0, "dtype": "int16"},
        {"asset": "a", "name": "wave1", "kind": "waveform", "topic": "t/wave1", "format": "waveform",
         "sample_rate_hz": 12800.0, "header": "twin-v1"},
        {"asset": "a", "name": "sp", "topic": "spBv1.0/g/DDATA/n/d", "format": "sparkplug", "metric": "m"},
    ]}, "sources[0]")
    for i, (topic, payload) in enumerate(messages):
        out: list[Reading] = []
        before = c.stats.decode_errors
        c.decode_message(topic, payload, 1_700_000_000_000_000_000, out)
        assert c.stats.decode_errors in (before, before + 1), f"message {i} counted more than once"
        if any(r.quality == Quality.BAD for r in out):
            assert c.stats.decode_errors == before + 1
        assert all(r.quality == Quality.BAD or r.value is not None for r in out)
