"""MQTT payload decoders: plain numbers, JSON paths and timestamps, binary waveform blocks."""

from __future__ import annotations

import struct
from datetime import UTC, datetime

import numpy as np
import pytest

from agent.connectors.mqtt.codec import (
    HEADER_V1,
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
from runtime.errors import DecodeError

# 2024-05-01T12:00:00Z
T_S = 1_714_564_800
T_NS = T_S * 1_000_000_000


# ------------------------------------------------------------------ numbers


@pytest.mark.parametrize(("payload", "expected"), [
    (b"21.5", 21.5), (b" 1e3\n", 1000.0), (b"-0.25", -0.25), (b"42", 42.0),
    (b"true", True), (b"FALSE", False), (b" True ", True),
])
def test_number_payloads(payload: bytes, expected: float | bool) -> None:
    value = decode_number(payload)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize("payload", [b"", b"abc", b"12 13", b"nan", b"inf", b"-Infinity", b"\xff\xfe", b"1,5"])
def test_number_rejects_garbage(payload: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_number(payload)


# ------------------------------------------------------------------ JSON


@pytest.mark.parametrize(("path", "parts"), [
    ("temp", ("temp",)), ("data.temp", ("data", "temp")), ("values[2]", ("values", 2)),
    ("data.values[0].v", ("data", "values", 0, "v")), ("[1]", (1,)), ("a[0][1]", ("a", 0, 1)),
])
def test_json_path_parsing(path: str, parts: tuple[str | int, ...]) -> None:
    assert parse_json_path(path) == parts


@pytest.mark.parametrize("path", ["", ".a", "a.", "a..b", "a[x]", "a[", "a]", "a.[0]", "a[-1]"])
def test_json_path_rejects_bad_syntax(path: str) -> None:
    with pytest.raises(ValueError, match="not a field path"):
        parse_json_path(path)


def test_json_field_follows_objects_and_arrays() -> None:
    doc = parse_json(b'{"data": {"temp": 21.5, "values": [{"v": 1}, {"v": 2}]}, "ok": true}')
    assert json_field(doc, parse_json_path("data.temp")) == 21.5
    assert json_field(doc, parse_json_path("data.values[1].v")) == 2
    assert json_field(doc, parse_json_path("ok")) is True


def test_json_missing_field_names_the_path() -> None:
    doc = parse_json(b'{"data": {"temp": 1, "values": [1]}}')
    with pytest.raises(DecodeError, match=r"no field data\.pressure"):
        json_field(doc, parse_json_path("data.pressure"))
    with pytest.raises(DecodeError, match=r"no element data\.values\[3\]"):
        json_field(doc, parse_json_path("data.values[3]"))
    with pytest.raises(DecodeError, match=r"no field data\.temp\.x"):
        json_field(doc, parse_json_path("data.temp.x"))


@pytest.mark.parametrize(("raw", "kind", "expected"), [
    (21, "measurement", 21.0), (21.5, "setpoint", 21.5), (True, "state", True),
    ("12.5", "measurement", 12.5), ("running", "state", "running"), ("false", "state", False),
])
def test_json_values(raw: object, kind: str, expected: object) -> None:
    value = json_value(raw, kind)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize("raw", [None, "running", {"a": 1}, [1, 2], 10**400])
def test_json_value_rejects_non_scalars_for_measurements(raw: object) -> None:
    with pytest.raises(DecodeError):
        json_value(raw, "measurement")


@pytest.mark.parametrize("payload", [b"{", b'{"a": NaN}', b'{"a": Infinity}', b"\xff{}", b"[" * 100_000])
def test_json_rejects_malformed_documents(payload: bytes) -> None:
    with pytest.raises(DecodeError):
        parse_json(payload)


@pytest.mark.parametrize("raw", [
    T_S, float(T_S), T_S * 1000, T_S * 1_000_000, T_NS, str(T_S * 1000),
    "2024-05-01T12:00:00Z", "2024-05-01T14:00:00+02:00", "2024-05-01T12:00:00", "2024-05-01 12:00:00.000",
])
def test_timestamps_in_every_unit_and_iso8601(raw: object) -> None:
    assert parse_timestamp(raw) == T_NS


def test_timestamp_keeps_sub_second_precision() -> None:
    assert parse_timestamp(T_S + 0.25) == T_NS + 250_000_000
    assert parse_timestamp(T_S * 1000 + 123) == T_NS + 123_000_000
    assert parse_timestamp("2024-05-01T12:00:00.123456Z") == T_NS + 123_456_000


@pytest.mark.parametrize("raw", [True, None, -5, "yesterday", "2024-13-01T00:00:00Z", [T_S], {"t": T_S},
                                 1e30, float("nan")])
def test_bad_timestamps(raw: object) -> None:
    with pytest.raises(DecodeError):
        parse_timestamp(raw)


def test_json_timestamp_by_path() -> None:
    doc = parse_json(b'{"meta": {"ts": "2024-05-01T12:00:00Z"}, "v": 1}')
    assert json_timestamp(doc, parse_json_path("meta.ts")) == T_NS
    assert datetime.fromtimestamp(T_S, UTC).isoformat() == "2024-05-01T12:00:00+00:00"


# ------------------------------------------------------------------ waveforms

SAMPLES = np.array([0.0, 0.5, -1.25, 3.0, -0.001])


@pytest.mark.parametrize(("dtype", "order", "np_dtype"), [
    ("float32", "little", "<f4"), ("float32", "big", ">f4"), ("int16", "little", "<i2"), ("int16", "big", ">i2"),
])
def test_waveform_dtype_and_byte_order(dtype: str, order: str, np_dtype: str) -> None:
    raw = np.array([0, 100, -2000, 32767, -32768])
    payload = raw.astype(np_dtype).tobytes()
    fmt = WaveformFormat(sample_rate_hz=12800.0, dtype=dtype, byte_order=order, scale=0.5)  # type: ignore[arg-type]
    values, ts = decode_waveform(payload, fmt)
    assert values.dtype == np.float64 and values.ndim == 1
    np.testing.assert_allclose(values, raw * 0.5)
    assert ts is None


def test_waveform_wrong_byte_order_gives_other_values() -> None:
    payload = np.array([1.0, 2.0], dtype="<f4").tobytes()
    big, _ = decode_waveform(payload, WaveformFormat(12800.0, byte_order="big"))
    assert not np.allclose(big, [1.0, 2.0])


def test_waveform_header_twin_v1_layout() -> None:
    """The documented layout, built by hand rather than by encode_waveform."""
    body = np.array([1, -2, 3], dtype=">i2").tobytes()
    header = struct.pack("<4sBBBBddqI", b"TWV1", 1, 2, 1, 0, 25600.0, 0.001, T_NS, 3)
    assert len(header) == HEADER_V1.size == 36
    values, ts = decode_waveform(header + body, WaveformFormat(25600.0, header="twin-v1"))
    np.testing.assert_allclose(values, [0.001, -0.002, 0.003])
    assert ts == T_NS


@pytest.mark.parametrize("fmt", [
    WaveformFormat(12800.0), WaveformFormat(12800.0, "int16", "big", 1e-4),
    WaveformFormat(12800.0, header="twin-v1"), WaveformFormat(12800.0, "int16", "big", 1e-4, "twin-v1"),
])
def test_waveform_encode_decode_roundtrip(fmt: WaveformFormat) -> None:
    values, ts = decode_waveform(encode_waveform(SAMPLES, fmt, ts_ns=T_NS), fmt)
    tolerance = 1e-4 if fmt.dtype == "int16" else 1e-6
    np.testing.assert_allclose(values, SAMPLES, atol=tolerance)
    assert ts == (T_NS if fmt.header == "twin-v1" else None)


def test_waveform_header_timestamp_zero_means_unknown() -> None:
    fmt = WaveformFormat(12800.0, header="twin-v1")
    assert decode_waveform(encode_waveform(SAMPLES, fmt, ts_ns=0), fmt)[1] is None


def test_waveform_header_sample_rate_must_match_config() -> None:
    payload = encode_waveform(SAMPLES, WaveformFormat(25600.0, header="twin-v1"))
    with pytest.raises(DecodeError, match="25600 Hz but the point is configured with sample_rate_hz = 12800"):
        decode_waveform(payload, WaveformFormat(12800.0, header="twin-v1"))


@pytest.mark.parametrize(("payload", "fmt", "match"), [
    (b"", WaveformFormat(12800.0), "empty"),
    (b"\x00\x00\x80", WaveformFormat(12800.0), "whole number of float32"),
    (b"\x00\x00\x80", WaveformFormat(12800.0, dtype="int16"), "whole number of int16"),
    (np.array([1.0, np.nan], dtype="<f4").tobytes(), WaveformFormat(12800.0), "NaN"),
    (b"TWV1" + b"\x00" * 10, WaveformFormat(12800.0, header="twin-v1"), "shorter than"),
    (b"XXXX" + encode_waveform(SAMPLES, WaveformFormat(12800.0, header="twin-v1"))[4:],
     WaveformFormat(12800.0, header="twin-v1"), "not a twin-v1"),
    (encode_waveform(SAMPLES, WaveformFormat(12800.0, header="twin-v1"))[:-3],
     WaveformFormat(12800.0, header="twin-v1"), "announces 5 samples"),
    (struct.pack("<4sBBBBddqI", b"TWV1", 1, 9, 0, 0, 12800.0, 1.0, 0, 0), WaveformFormat(12800.0, header="twin-v1"),
     "unknown sample type 9"),
    (struct.pack("<4sBBBBddqI", b"TWV1", 1, 1, 0, 0, 12800.0, 0.0, 0, 0), WaveformFormat(12800.0, header="twin-v1"),
     "scale"),
])
def test_waveform_malformed(payload: bytes, fmt: WaveformFormat, match: str) -> None:
    with pytest.raises(DecodeError, match=match):
        decode_waveform(payload, fmt)
