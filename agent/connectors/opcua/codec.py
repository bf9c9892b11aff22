"""Pure mapping of OPC-UA DataValues to readings: value conversion, quality, timestamp.

No I/O here: everything takes asyncua's `ua` data classes and returns plain values, so the rules
(which status is BAD, which timestamp wins, what a waveform must look like) are unit-tested
without a server.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

import numpy as np
from asyncua import ua
from asyncua.ua import status_codes

from agent.model import Quality, Reading, Value
from runtime.errors import DecodeError

__all__ = ["convert_value", "quality_of", "reading_from_datavalue", "status_name", "timestamp_ns"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# OPC-UA encodes "no timestamp" as 0 (1601-01-01); some servers send that instead of omitting it.
_NO_TIMESTAMP_BEFORE = datetime(1971, 1, 1, tzinfo=UTC)


def status_name(status: ua.StatusCode) -> str:
    """Symbolic name of a status code (info bits ignored), or its hex value when unknown."""
    code = int(status.value) & 0xFFFF0000
    known = status_codes.code_to_name_doc.get(code)
    return known[0] if known else f"0x{int(status.value):08X}"


def quality_of(status: ua.StatusCode | None) -> tuple[Quality, str]:
    """Good -> GOOD, Uncertain -> UNCERTAIN, Bad (and the reserved severity) -> BAD with its name."""
    if status is None or status.is_good():
        return Quality.GOOD, ""
    if status.is_uncertain():
        return Quality.UNCERTAIN, status_name(status)
    return Quality.BAD, status_name(status)


def _to_ns(dt: datetime) -> int:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)  # OPC-UA DateTime is UTC by definition
    return (dt - _EPOCH) // _MICROSECOND * 1000


def _usable(dt: datetime | None) -> bool:
    if dt is None:
        return False
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt >= _NO_TIMESTAMP_BEFORE


def timestamp_ns(dv: ua.DataValue, received_ns: int) -> int:
    """The device's SourceTimestamp when present, else the ServerTimestamp, else the receive time."""
    if _usable(dv.SourceTimestamp):
        return _to_ns(dv.SourceTimestamp)  # type: ignore[arg-type]
    if _usable(dv.ServerTimestamp):
        return _to_ns(dv.ServerTimestamp)  # type: ignore[arg-type]
    return received_ns


def _number(raw: Any) -> float:
    value = float(raw)
    if not math.isfinite(value):
        raise DecodeError(f"non-finite value {value}")
    return value


def convert_value(raw: Any, kind: str, scale: float = 1.0, offset: float = 0.0) -> Value:
    """Turn a decoded Variant value into a Reading value (scale/offset applied to numbers).

    Waveform points need a 1-D numeric array and become float64 numpy arrays; other points need a
    scalar. Booleans and strings pass through unscaled. Anything else raises DecodeError.
    """
    if kind == "waveform":
        if not isinstance(raw, list | tuple | np.ndarray):
            raise DecodeError(f"waveform point got a scalar {type(raw).__name__}, expected an array")
        try:
            arr = np.asarray(raw, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise DecodeError(f"waveform array is not numeric: {exc}") from None
        if arr.ndim != 1:
            raise DecodeError(f"waveform array must be 1-D, got shape {arr.shape}")
        if arr.size == 0:
            raise DecodeError("waveform array is empty")
        if not np.all(np.isfinite(arr)):
            raise DecodeError("waveform array contains non-finite samples")
        if scale != 1.0 or offset != 0.0:
            arr = arr * scale + offset
        return arr
    if raw is None:
        raise DecodeError("no value (null variant) with a non-bad status")
    if isinstance(raw, list | tuple | np.ndarray):
        raise DecodeError(f"array of {len(raw)} values for a {kind} point; set kind = \"waveform\"")
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        return raw
    if isinstance(raw, ua.LocalizedText):
        return raw.Text or ""
    if isinstance(raw, Enum):
        raw = raw.value
    if isinstance(raw, int | float | np.integer | np.floating):
        return _number(raw) * scale + offset
    raise DecodeError(f"unsupported value type {type(raw).__name__}")


def reading_from_datavalue(
    asset: str,
    point: str,
    kind: str,
    dv: ua.DataValue,
    received_ns: int,
    scale: float = 1.0,
    offset: float = 0.0,
) -> Reading:
    """One DataValue -> one Reading. A BAD status yields no value; a bad payload raises DecodeError."""
    quality, reason = quality_of(dv.StatusCode)
    ts = timestamp_ns(dv, received_ns)
    if quality is Quality.BAD:
        return Reading(asset, point, None, ts, quality, reason)
    raw = dv.Value.Value if dv.Value is not None else None
    return Reading(asset, point, convert_value(raw, kind, scale, offset), ts, quality, reason)
