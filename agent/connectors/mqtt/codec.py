"""Pure MQTT payload decoders: plain numbers, JSON fields and timestamps, binary waveform blocks.

Every decoder takes bytes (or an already parsed JSON document) and either returns values or raises
`DecodeError`, never another exception type (tests/unit/test_mqtt_fuzz.py fuzzes them), so that
the connector can count and log a malformed payload and carry on with the next one.
Sparkplug B lives in sparkplug.py because it keeps state (aliases learned from births).

The `twin-v1` waveform header makes a block self-describing, so a sensor can change its scale or
sample rate without a config change going unnoticed. 36 bytes, little-endian, then the samples:

    offset  size  field
    0       4     magic b"TWV1"
    4       1     version, 1
    5       1     sample type: 1 = float32, 2 = int16
    6       1     flags: bit 0 set = samples are big-endian (the header itself is always little-endian)
    7       1     reserved, 0
    8       8     float64 sample rate in Hz
    16      8     float64 scale: engineering value = raw sample * scale
    24      8     int64 timestamp of the first sample, ns since the Unix epoch (0 = unknown)
    32      4     uint32 number of samples that follow
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np

from runtime.errors import DecodeError

__all__ = [
    "HEADER_V1",
    "JsonPath",
    "WaveformFormat",
    "decode_number",
    "decode_waveform",
    "encode_waveform",
    "json_field",
    "json_timestamp",
    "json_value",
    "parse_json",
    "parse_json_path",
    "parse_timestamp",
]

JsonPath = tuple[str | int, ...]
Dtype = Literal["float32", "int16"]
ByteOrder = Literal["little", "big"]
Header = Literal["none", "twin-v1"]

HEADER_V1 = struct.Struct("<4sBBBBddqI")
MAGIC_V1 = b"TWV1"
_DTYPE_CODES: dict[str, int] = {"float32": 1, "int16": 2}
_DTYPE_NAMES: dict[int, Dtype] = {1: "float32", 2: "int16"}
_FLAG_BIG_ENDIAN = 0x01
MAX_TS_NS = 2**63 - 1  # timestamps travel as int64 (protos, SQLite)
SAMPLE_RATE_TOLERANCE = 1e-6  # relative; header and config must agree on the sample rate

_PATH_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+)\]")
_PATH_FULL = re.compile(r"(?:[^.\[\]]+|\[\d+\])(?:\.[^.\[\]]+|\[\d+\])*")


# ---------------------------------------------------------------------------------------------
# plain numbers


def decode_number(payload: bytes) -> float | bool:
    """A plain-text number ("21.5", " 1e3 ") or boolean ("true"/"false", any case)."""
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise DecodeError("payload is not UTF-8 text") from None
    return _text_value(text)


def _text_value(text: str) -> float | bool:
    lowered = text.lower()
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    try:
        value = float(text)
    except ValueError:
        raise DecodeError(f"not a number: {_preview(text)}") from None
    if not math.isfinite(value):
        raise DecodeError(f"not a finite number: {_preview(text)}")
    return value


# ---------------------------------------------------------------------------------------------
# JSON


def parse_json_path(path: str) -> JsonPath:
    """`data.temp` -> ("data", "temp"); `values[2].v` -> ("values", 2, "v"). Raises ValueError."""
    if not _PATH_FULL.fullmatch(path):
        raise ValueError(f"not a field path: {path!r} (write e.g. data.temp or values[0].v)")
    return tuple(key if key else int(index) for key, index in _PATH_TOKEN.findall(path))


def _reject_constant(name: str) -> Any:
    raise DecodeError(f"JSON constant {name} is not a finite number")


def parse_json(payload: bytes) -> Any:
    """Parse a JSON document (UTF-8/16/32); NaN and Infinity are rejected."""
    try:
        return json.loads(payload, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, DecodeError):
            raise
        raise DecodeError(f"not valid JSON: {_preview(str(exc))}") from None


def json_field(doc: Any, path: JsonPath) -> Any:
    """The element of `doc` at `path`; DecodeError naming the path when it is missing."""
    node = doc
    for depth, part in enumerate(path):
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                raise DecodeError(f"no element {_format_path(path[:depth + 1])} in the JSON payload")
        elif not isinstance(node, dict) or part not in node:
            raise DecodeError(f"no field {_format_path(path[:depth + 1])} in the JSON payload")
        node = node[part]
    return node


def json_value(raw: Any, kind: str) -> float | bool | str:
    """A JSON element as a point value: numbers and booleans as they are; numeric strings as numbers;
    other strings only for `state` points."""
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int | float):
        try:
            value = float(raw)
        except OverflowError:
            raise DecodeError(f"number out of range: {_preview(str(raw))}") from None
        if not math.isfinite(value):
            raise DecodeError("not a finite number")
        return value
    if isinstance(raw, str):
        try:
            return _text_value(raw.strip())
        except DecodeError:
            if kind == "state":
                return raw
            raise
    if raw is None:
        raise DecodeError("value is null")
    raise DecodeError(f"value is a JSON {type(raw).__name__}, not a number, boolean or string")


def json_timestamp(doc: Any, path: JsonPath) -> int:
    return parse_timestamp(json_field(doc, path))


def parse_timestamp(raw: Any) -> int:
    """A timestamp as ns since the epoch, from epoch seconds, ms, us or ns (told apart by
    magnitude: any date between 1973 and 2262 is unambiguous) or an ISO 8601 string (naive = UTC)."""
    if isinstance(raw, bool) or raw is None:
        raise DecodeError(f"timestamp is {raw!r}, not a number or ISO 8601 string")
    if isinstance(raw, str):
        text = raw.strip()
        for number in (int, float):
            try:
                return _epoch_to_ns(number(text))
            except (ValueError, OverflowError):
                pass
        try:
            dt = datetime.fromisoformat(text)
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=UTC)
            delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
        except (ValueError, OverflowError):
            raise DecodeError(f"timestamp is not ISO 8601: {_preview(text)}") from None
        ns = (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
        return _checked_ts(ns)
    if isinstance(raw, int | float):
        try:
            return _epoch_to_ns(raw)
        except OverflowError:
            raise DecodeError("timestamp out of range") from None
    raise DecodeError(f"timestamp is a JSON {type(raw).__name__}, not a number or ISO 8601 string")


def _epoch_to_ns(value: int | float) -> int:
    if not math.isfinite(value) or value < 0:
        raise DecodeError(f"timestamp {value!r} is not a time after 1970")
    if value < 1e11:
        factor = 1_000_000_000
    elif value < 1e14:
        factor = 1_000_000
    elif value < 1e17:
        factor = 1_000
    else:
        factor = 1
    whole = int(value)  # integer arithmetic: a float64 cannot hold epoch ns exactly
    return _checked_ts(whole * factor + round((value - whole) * factor))


def _checked_ts(ns: int) -> int:
    if not 0 <= ns <= MAX_TS_NS:
        raise DecodeError("timestamp out of range (before 1970 or after 2262)")
    return ns


# ---------------------------------------------------------------------------------------------
# binary waveform blocks


@dataclass(frozen=True, slots=True)
class WaveformFormat:
    """How a point's waveform blocks are encoded (from its config)."""

    sample_rate_hz: float
    dtype: Dtype = "float32"
    byte_order: ByteOrder = "little"
    scale: float = 1.0
    header: Header = "none"


def _numpy_dtype(dtype: str, byte_order: str) -> np.dtype[Any]:
    return np.dtype(("<" if byte_order == "little" else ">") + ("f4" if dtype == "float32" else "i2"))


def decode_waveform(payload: bytes, fmt: WaveformFormat) -> tuple[np.ndarray, int | None]:
    """A block of samples -> (float64 array in engineering units, first-sample ts_ns or None)."""
    ts_ns: int | None = None
    dtype, byte_order, scale, body = fmt.dtype, fmt.byte_order, fmt.scale, payload
    if fmt.header == "twin-v1":
        if len(payload) < HEADER_V1.size:
            raise DecodeError(f"waveform shorter than the {HEADER_V1.size}-byte twin-v1 header")
        magic, version, code, flags, _, fs, scale, ts, n = HEADER_V1.unpack_from(payload)
        if magic != MAGIC_V1 or version != 1:
            raise DecodeError(f"not a twin-v1 waveform header (magic {magic!r}, version {version})")
        if code not in _DTYPE_NAMES:
            raise DecodeError(f"twin-v1 header: unknown sample type {code}")
        dtype, byte_order = _DTYPE_NAMES[code], "big" if flags & _FLAG_BIG_ENDIAN else "little"
        if not (math.isfinite(fs) and fs > 0):
            raise DecodeError(f"twin-v1 header: sample rate {fs!r} is not positive")
        if abs(fs - fmt.sample_rate_hz) > SAMPLE_RATE_TOLERANCE * fmt.sample_rate_hz:
            raise DecodeError(f"twin-v1 header says {fs:g} Hz but the point is configured with "
                              f"sample_rate_hz = {fmt.sample_rate_hz:g}")
        if not (math.isfinite(scale) and scale != 0):
            raise DecodeError(f"twin-v1 header: scale {scale!r} is not a finite non-zero number")
        if ts < 0:
            raise DecodeError(f"twin-v1 header: negative timestamp {ts}")
        ts_ns = ts or None
        body = memoryview(payload)[HEADER_V1.size:]  # no copy of the samples
        itemsize = 4 if dtype == "float32" else 2
        if len(body) != n * itemsize:
            raise DecodeError(f"twin-v1 header announces {n} samples ({n * itemsize} bytes), "
                              f"payload carries {len(body)} bytes")
    np_dtype = _numpy_dtype(dtype, byte_order)
    if len(body) == 0:
        raise DecodeError("empty waveform block")
    if len(body) % np_dtype.itemsize:
        raise DecodeError(f"waveform of {len(body)} bytes is not a whole number of {dtype} samples")
    raw = np.frombuffer(body, dtype=np_dtype)
    if dtype == "float32" and not np.isfinite(raw).all():  # int16 samples are always finite
        raise DecodeError("waveform contains NaN or infinite samples")
    values = raw.astype(np.float64)
    if scale != 1.0:
        values *= scale
        if abs(scale) > 1e30 and not np.isfinite(values).all():  # only a huge scale can overflow
            raise DecodeError("waveform samples overflow when scaled")
    return values, ts_ns


def encode_waveform(samples: np.ndarray, fmt: WaveformFormat, ts_ns: int = 0) -> bytes:
    """The inverse of `decode_waveform` (used by the simulator and tests): engineering values ->
    raw samples (value / scale; int16 rounded and clipped) with the header `fmt` asks for."""
    raw = np.asarray(samples, dtype=np.float64) / fmt.scale
    np_dtype = _numpy_dtype(fmt.dtype, fmt.byte_order)
    if fmt.dtype == "int16":
        raw = np.clip(np.rint(raw), -32768, 32767)
    body = raw.astype(np_dtype).tobytes()
    if fmt.header == "none":
        return body
    flags = _FLAG_BIG_ENDIAN if fmt.byte_order == "big" else 0
    header = HEADER_V1.pack(MAGIC_V1, 1, _DTYPE_CODES[fmt.dtype], flags, 0, fmt.sample_rate_hz,
                            fmt.scale, ts_ns, len(raw))
    return header + body


# ---------------------------------------------------------------------------------------------


def _format_path(path: JsonPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _preview(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")
