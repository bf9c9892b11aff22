"""BACnet object state -> value, quality and unit, and request sizing, against known answers."""

from __future__ import annotations

import pytest

from agent.connectors.bacnet.codec import (
    ObjectState,
    decode_value,
    objects_per_request,
    quality_of,
    split,
    unit_symbol,
)
from agent.model import Quality
from runtime.errors import DecodeError

CLEAR = (False, False, False, False)


def test_quality_from_status_flags_reliability_and_out_of_service() -> None:
    assert quality_of(ObjectState(21.5, CLEAR, False, "no-fault-detected")) == (Quality.GOOD, "")
    assert quality_of(ObjectState(21.5, (True, False, True, False), False, None)) == (Quality.GOOD, "")  # alarm
    assert quality_of(ObjectState(21.5, (False, True, False, False), False, "open-loop")) == \
        (Quality.BAD, "fault: open-loop")
    assert quality_of(ObjectState(21.5, (False, True, False, False))) == (Quality.BAD, "fault: status-flags fault")
    assert quality_of(ObjectState(21.5, CLEAR, False, "over-range")) == (Quality.BAD, "fault: over-range")
    assert quality_of(ObjectState(21.5, (False, False, False, True), True, None)) == \
        (Quality.UNCERTAIN, "out of service")
    assert quality_of(ObjectState(21.5, None, True, None)) == (Quality.UNCERTAIN, "out of service")


def test_present_values_by_object_type() -> None:
    assert decode_value("analog-input", 23.5, scale=2.0, offset=1.0) == 48.0
    assert decode_value("binary-output", True) is True
    assert decode_value("multi-state-value", 3, ["off", "heating", "cooling"]) == "cooling"
    assert decode_value("multi-state-input", 2) == 2.0  # no state text: the number
    with pytest.raises(DecodeError, match=r"state 4 is outside 1..3"):
        decode_value("multi-state-value", 4, ["off", "heating", "cooling"])
    with pytest.raises(DecodeError, match="not a number"):
        decode_value("analog-value", "high")  # type: ignore[arg-type]
    with pytest.raises(DecodeError, match="not active/inactive"):
        decode_value("binary-input", 1)
    with pytest.raises(DecodeError, match="no present-value"):
        decode_value("analog-input", None)


def test_engineering_units_become_symbols() -> None:
    assert unit_symbol("degrees-celsius") == "°C"
    assert unit_symbol("percent-relative-humidity") == "%RH"
    assert unit_symbol("pascals") == "Pa"
    assert unit_symbol("kilowatt-hours") == "kWh"
    assert unit_symbol("pounds-mass-per-day") == "pounds-mass-per-day"  # unlisted: its BACnet name


def test_requests_are_sized_to_the_devices_apdu_and_segmentation() -> None:
    assert objects_per_request(1476, "no-segmentation") == 30
    assert objects_per_request(206, "no-segmentation") == 4
    assert objects_per_request(50, "no-segmentation") == 1
    assert objects_per_request(480, "segmented-both") == 39  # four APDUs' worth
    assert objects_per_request(480, "segmented-receive") == 9  # it can take segments, not send them
    assert objects_per_request(1476, "segmented-both", override=5) == 5
    assert split(list(range(11)), 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]
