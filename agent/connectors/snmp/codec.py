"""SNMP values -> readings (pure; no I/O): syntaxes, textual conventions, counters, entity sensors.

The session hands over each variable binding as an `SnmpValue` (its SMI syntax name and a plain
Python value), so nothing here depends on pysnmp. Decoding follows the SMI:

    Integer32, Gauge32, Unsigned32     number (scale, offset); `enum` -> text; `true_values` -> bool
    TimeTicks                          seconds (hundredths / 100)
    Counter32, Counter64               rate (default, per second) or increase between polls, or the
                                       raw value; a wrap (the new value is lower and the agent did
                                       not restart) counts modulo 2^32 / 2^64; a restart (sysUpTime
                                       went back) is a reset: a new baseline, no rate that poll
    OCTET STRING                       DisplayString text if printable UTF-8, else hex; or the
                                       textual convention named by `tc` (PhysAddress, DateAndTime...)
    OBJECT IDENTIFIER, IpAddress       dotted text (an OID may be named by `enum`)
    noSuchObject / noSuchInstance      BAD, with that reason

ENTITY-SENSOR-MIB rows combine several columns: value x 10^scale / 10^precision, and the sensor's
own operational status as quality.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from runtime.errors import DecodeError

__all__ = [
    "ABSENT",
    "COUNTER_BITS",
    "ENTITY_SENSOR_COLUMNS",
    "Decoding",
    "SnmpValue",
    "counter_delta",
    "decode",
    "entity_sensor",
]

ABSENT = frozenset({"noSuchObject", "noSuchInstance", "endOfMibView"})
COUNTER_BITS = {"Counter32": 32, "Counter64": 64}
NUMERIC = frozenset({"Integer32", "Integer", "Gauge32", "Unsigned32", "Counter32", "Counter64", "TimeTicks"})
TRUTH_VALUE = {1: True, 2: False}

# entPhySensorEntry columns (RFC 3433)
ENTITY_SENSOR_COLUMNS = {"type": 1, "scale": 2, "precision": 3, "value": 4, "status": 5, "units_display": 6}
ENTITY_SENSOR_SCALE = {  # EntitySensorDataScale -> power of ten (the RFC lists exa(14) before peta(15))
    1: -24, 2: -21, 3: -18, 4: -15, 5: -12, 6: -9, 7: -6, 8: -3, 9: 0,
    10: 3, 11: 6, 12: 9, 13: 12, 14: 18, 15: 15, 16: 21, 17: 24,
}
ENTITY_SENSOR_UNITS = {  # EntitySensorDataType -> unit
    1: "", 2: "", 3: "V", 4: "V", 5: "A", 6: "W", 7: "Hz", 8: "°C", 9: "%RH", 10: "rpm", 11: "m³/min", 12: "",
}
ENTITY_SENSOR_STATUS = {1: "ok", 2: "unavailable", 3: "nonoperational"}


@dataclass(frozen=True, slots=True)
class SnmpValue:
    """One variable binding's value: its SMI syntax and a plain value (int, bytes or an OID tuple)."""

    syntax: str
    value: int | bytes | tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class Decoding:
    """How a point's value is interpreted (from its config entry)."""

    function: Literal["value", "rate", "increase"] | None = None
    tc: str = "auto"
    enum: tuple[tuple[str, str], ...] = ()
    true_values: frozenset[int] = frozenset()
    scale: float = 1.0
    offset: float = 0.0


def _oid_text(oid: tuple[int, ...]) -> str:
    return ".".join(map(str, oid))


def _octets(raw: bytes, tc: str) -> str:
    if tc == "PhysAddress":
        return ":".join(f"{b:02x}" for b in raw)
    if tc == "OctetHex":
        return raw.hex()
    if tc == "DateAndTime":
        return date_and_time(raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        if tc == "DisplayString":
            raise DecodeError(f"DisplayString is not valid text: {raw[:16].hex()}") from None
        return raw.hex()
    if tc == "auto" and not all(c.isprintable() or c in "\r\n\t" for c in text.rstrip("\x00")):
        return raw.hex()
    return text.rstrip("\x00")


def date_and_time(raw: bytes) -> str:
    """SNMPv2-TC DateAndTime (8 or 11 octets) -> ISO 8601."""
    if len(raw) not in (8, 11):
        raise DecodeError(f"DateAndTime has 8 or 11 octets, got {len(raw)}")
    year = int.from_bytes(raw[0:2], "big")
    text = f"{year:04d}-{raw[2]:02d}-{raw[3]:02d}T{raw[4]:02d}:{raw[5]:02d}:{raw[6]:02d}.{raw[7]}"
    if len(raw) == 11:
        text += f"{chr(raw[8])}{raw[9]:02d}:{raw[10]:02d}"
    return text


def decode(v: SnmpValue, d: Decoding) -> float | bool | str:
    """A non-counter value (or a counter read as `value`) -> reading value; DecodeError if it does not fit."""
    if v.syntax in ABSENT:
        raise DecodeError(v.syntax)
    if v.syntax == "ObjectIdentifier":
        assert isinstance(v.value, tuple)
        text = _oid_text(v.value)
        return dict(d.enum).get(text, dict(d.enum).get("." + text, text)) if d.enum else text
    if v.syntax == "IpAddress":
        assert isinstance(v.value, bytes)
        return ".".join(map(str, v.value))
    if v.syntax in ("OctetString", "Opaque"):
        assert isinstance(v.value, bytes)
        if d.true_values or d.enum or d.tc == "TruthValue":
            raise DecodeError(f"an {v.syntax} is not an enumeration")
        return _octets(v.value, d.tc)
    if v.syntax not in NUMERIC:
        raise DecodeError(f"unsupported syntax {v.syntax}")
    assert isinstance(v.value, int)
    n = v.value
    if d.tc == "TruthValue":
        if n not in TRUTH_VALUE:
            raise DecodeError(f"TruthValue is 1 (true) or 2 (false), got {n}")
        return TRUTH_VALUE[n]
    if d.true_values:
        return n in d.true_values
    if d.enum:
        names = dict(d.enum)
        if str(n) not in names:
            raise DecodeError(f"{n} is not one of the enumeration's values {sorted(names, key=int)}")
        return names[str(n)]
    if d.tc not in ("auto",):
        raise DecodeError(f"tc = {d.tc} does not apply to a {v.syntax}")
    number = n / 100.0 if v.syntax == "TimeTicks" else float(n)
    return number * d.scale + d.offset


def counter_delta(now: int, before: int, bits: int) -> int:
    """Increase of a counter between two polls of the same agent run (a lower value wrapped once).

    After an agent restart (sysUpTime went back) there is no `before`: the connector starts a new
    baseline instead, since a restarted agent's counters are discontinuous, not wrapped.
    """
    if now >= before:
        return now - before
    return now + (1 << bits) - before  # wrapped once


@dataclass(frozen=True, slots=True)
class SensorReading:
    value: float | None
    unit: str
    status: str  # ok | unavailable | nonoperational | unknown(n)


def entity_sensor(columns: dict[int, SnmpValue]) -> SensorReading:
    """One entPhySensorEntry row (column number -> value) -> scaled value, unit and status."""
    def integer(col: str) -> int:
        v = columns.get(ENTITY_SENSOR_COLUMNS[col])
        if v is None or v.syntax in ABSENT or not isinstance(v.value, int):
            raise DecodeError(f"entPhySensor row lacks {col}")
        return v.value

    kind, scale, precision, raw, status_code = (integer(c) for c in ("type", "scale", "precision", "value", "status"))
    status = ENTITY_SENSOR_STATUS.get(status_code, f"unknown({status_code})")
    if scale not in ENTITY_SENSOR_SCALE:
        raise DecodeError(f"entPhySensorScale {scale} is not 1..17")
    if not -8 <= precision <= 9:
        raise DecodeError(f"entPhySensorPrecision {precision} is not -8..9")
    unit = ENTITY_SENSOR_UNITS.get(kind, "")
    if kind == 12:  # truthvalue
        return SensorReading(float(raw == 1), unit, status)
    return SensorReading(raw * 10.0 ** ENTITY_SENSOR_SCALE[scale] / 10.0 ** precision, unit, status)
