"""BACnet object state -> reading value, quality and unit; request sizing (pure; no I/O).

The link hands over plain Python values (floats, ints, bools, names), so nothing here depends on
BACpypes3:

    analog present-value        float x scale + offset
    binary present-value        True for active, False for inactive
    multi-state present-value   its state text (state-text[n - 1]) when the device has them, else n

Quality (the reading keeps its value unless BAD):

    status-flags fault, or reliability other than no-fault-detected   BAD, reason "fault: <reliability>"
    status-flags out-of-service, or out-of-service true                UNCERTAIN, reason "out of service"
    in-alarm, overridden                                              GOOD (the value is real)

ReadPropertyMultiple requests are sized so the answer fits the device's max APDU (or a few APDUs
when it can send segmented messages); an estimate per object is enough, since the encoding of
these four properties has a known upper bound.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from agent.model import Quality
from runtime.errors import DecodeError

__all__ = [
    "POLLED_PROPERTIES",
    "ObjectState",
    "decode_value",
    "objects_per_request",
    "quality_of",
    "split",
    "unit_symbol",
]

POLLED_PROPERTIES = ("present-value", "status-flags", "out-of-service", "reliability")
RESPONSE_BYTES_PER_OBJECT = 48  # object id + 4 x (property tag, opening/closing tags, value <= 5 octets)
RESPONSE_HEADER_BYTES = 8  # complex-ack header and service choice
SEGMENTED_APDUS = 4  # how many APDUs' worth one request may ask of a device that segments its answers
SEGMENTS_SENT = frozenset({"segmented-both", "segmented-transmit"})

T = TypeVar("T")

UNIT_SYMBOLS = {  # BACnet engineering units (ASHRAE 135, clause 21) -> the symbol a dashboard shows
    "degrees-celsius": "°C", "degrees-fahrenheit": "°F", "degrees-kelvin": "K", "delta-degrees-kelvin": "K",
    "percent": "%", "percent-relative-humidity": "%RH", "parts-per-million": "ppm",
    "pascals": "Pa", "kilopascals": "kPa", "bars": "bar", "millibars": "mbar", "pounds-force-per-square-inch": "psi",
    "inches-of-water": "inH2O", "volts": "V", "millivolts": "mV", "kilovolts": "kV", "amperes": "A",
    "milliamperes": "mA", "watts": "W", "kilowatts": "kW", "megawatts": "MW", "kilowatt-hours": "kWh",
    "megawatt-hours": "MWh", "watt-hours": "Wh", "volt-amperes": "VA", "kilovolt-amperes": "kVA",
    "hertz": "Hz", "revolutions-per-minute": "rpm", "seconds": "s", "minutes": "min", "hours": "h",
    "cubic-meters-per-hour": "m³/h", "cubic-meters-per-second": "m³/s", "liters-per-second": "l/s",
    "liters-per-minute": "l/min", "cubic-feet-per-minute": "cfm", "meters-per-second": "m/s",
    "kilowatts-per-ton": "kW/ton", "tons-refrigeration": "TR", "kilograms-per-hour": "kg/h", "lux": "lx",
    "meters": "m", "millimeters": "mm", "square-meters": "m²", "cubic-meters": "m³", "liters": "l",
    "joules": "J", "kilojoules": "kJ", "btus": "BTU", "degree-days-celsius": "°C·d", "no-units": "",
}


@dataclass(frozen=True, slots=True)
class ObjectState:
    """What one read (or COV notification) said about one object."""

    present_value: float | int | bool | None
    status_flags: tuple[bool, bool, bool, bool] | None = None  # in-alarm, fault, overridden, out-of-service
    out_of_service: bool | None = None
    reliability: str | None = None  # e.g. "no-fault-detected", "open-loop", "over-range"


def quality_of(state: ObjectState) -> tuple[Quality, str]:
    """Quality and reason from status flags, reliability and out-of-service."""
    fault = state.status_flags is not None and state.status_flags[1]
    unreliable = state.reliability not in (None, "no-fault-detected")
    if fault or unreliable:
        return Quality.BAD, f"fault: {state.reliability if unreliable else 'status-flags fault'}"
    out_of_service = (state.status_flags is not None and state.status_flags[3]) or bool(state.out_of_service)
    if out_of_service:
        return Quality.UNCERTAIN, "out of service"
    return Quality.GOOD, ""


def decode_value(object_type: str, value: float | int | bool | None, state_text: Sequence[str] = (),
                 scale: float = 1.0, offset: float = 0.0) -> float | bool | str:
    """A present value -> the reading's value; DecodeError if it does not fit the object type."""
    if value is None:
        raise DecodeError("no present-value")
    if object_type.startswith("analog"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DecodeError(f"{object_type} present-value {value!r} is not a number")
        return float(value) * scale + offset
    if object_type.startswith("binary"):
        if not isinstance(value, bool):
            raise DecodeError(f"{object_type} present-value {value!r} is not active/inactive")
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise DecodeError(f"{object_type} present-value {value!r} is not a state number")
    if state_text:
        if not 1 <= value <= len(state_text):
            raise DecodeError(f"state {value} is outside 1..{len(state_text)} (state-text has {len(state_text)})")
        return state_text[value - 1]
    return float(value)


def unit_symbol(units: str) -> str:
    """BACnet engineering units name -> symbol; an unlisted unit keeps its BACnet name."""
    return UNIT_SYMBOLS.get(units, units)


def objects_per_request(max_apdu: int, segmentation: str, override: int | None = None) -> int:
    """How many objects one ReadPropertyMultiple of POLLED_PROPERTIES may ask of this device."""
    if override is not None:
        return override
    budget = max_apdu * (SEGMENTED_APDUS if segmentation in SEGMENTS_SENT else 1) - RESPONSE_HEADER_BYTES
    return max(1, budget // RESPONSE_BYTES_PER_OBJECT)


def split(items: Sequence[T], size: int) -> list[list[T]]:
    return [list(items[i:i + size]) for i in range(0, len(items), max(1, size))]
