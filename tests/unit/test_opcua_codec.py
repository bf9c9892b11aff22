"""OPC-UA DataValue -> Reading: status code to quality, timestamp choice, value conversion."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from asyncua import ua

from agent.connectors.opcua.codec import (
    convert_value,
    quality_of,
    reading_from_datavalue,
    status_name,
    timestamp_ns,
)
from agent.model import Quality
from runtime.errors import DecodeError

SOURCE = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
SERVER = SOURCE + timedelta(milliseconds=40)
SOURCE_NS = 1714564800_123456000
SERVER_NS = SOURCE_NS + 40_000_000
RECEIVED_NS = SOURCE_NS + 90_000_000


@pytest.mark.parametrize(("code", "quality", "reason"), [
    (ua.StatusCodes.Good, Quality.GOOD, ""),
    (ua.StatusCodes.GoodClamped, Quality.GOOD, ""),
    (ua.StatusCodes.Good | 0x0400, Quality.GOOD, ""),  # info bits (limit: low) on a good value
    (ua.StatusCodes.UncertainLastUsableValue, Quality.UNCERTAIN, "UncertainLastUsableValue"),
    (ua.StatusCodes.UncertainSensorNotAccurate, Quality.UNCERTAIN, "UncertainSensorNotAccurate"),
    (ua.StatusCodes.BadNodeIdUnknown, Quality.BAD, "BadNodeIdUnknown"),
    (ua.StatusCodes.BadNoCommunication, Quality.BAD, "BadNoCommunication"),
    (ua.StatusCodes.BadSensorFailure | 0x0080, Quality.BAD, "BadSensorFailure"),  # overflow bit ignored
    (0xC0120000, Quality.BAD, "0xC0120000"),  # reserved severity 11: treat as bad, name unknown
])
def test_status_code_maps_to_quality(code: int, quality: Quality, reason: str) -> None:
    assert quality_of(ua.StatusCode(code)) == (quality, reason)


def test_missing_status_is_good() -> None:
    assert quality_of(None) == (Quality.GOOD, "")


def test_status_name_of_unknown_code_is_hex() -> None:
    assert status_name(ua.StatusCode(0x80FF0000)) == "0x80FF0000"


def dv(value: object = 230.5, *, source: datetime | None = SOURCE, server: datetime | None = SERVER,
       status: int = ua.StatusCodes.Good) -> ua.DataValue:
    variant = value if isinstance(value, ua.Variant) else ua.Variant(value)
    return ua.DataValue(variant, StatusCode=ua.StatusCode(status), SourceTimestamp=source, ServerTimestamp=server)


def test_source_timestamp_wins() -> None:
    assert timestamp_ns(dv(), RECEIVED_NS) == SOURCE_NS


def test_server_timestamp_when_no_source_timestamp() -> None:
    assert timestamp_ns(dv(source=None), RECEIVED_NS) == SERVER_NS


def test_receive_time_when_no_timestamps() -> None:
    assert timestamp_ns(dv(source=None, server=None), RECEIVED_NS) == RECEIVED_NS


def test_encoded_null_timestamp_counts_as_missing() -> None:
    null = datetime(1601, 1, 1, tzinfo=UTC)  # DateTime 0 on the wire
    assert timestamp_ns(dv(source=null), RECEIVED_NS) == SERVER_NS
    assert timestamp_ns(dv(source=null, server=null), RECEIVED_NS) == RECEIVED_NS


def test_naive_timestamp_is_utc() -> None:
    assert timestamp_ns(dv(source=SOURCE.replace(tzinfo=None)), RECEIVED_NS) == SOURCE_NS


def test_numbers_are_scaled_floats() -> None:
    assert convert_value(1234, "measurement", scale=0.1, offset=-3.0) == pytest.approx(120.4)
    assert isinstance(convert_value(7, "measurement"), float)
    assert convert_value(np.float32(1.5), "setpoint", scale=2.0) == 3.0


def test_bool_string_and_text_pass_through_unscaled() -> None:
    assert convert_value(True, "state", scale=10.0) is True
    assert convert_value("RUN", "state", scale=10.0) == "RUN"
    assert convert_value(ua.LocalizedText("Auto", "en"), "state") == "Auto"


def test_enum_values_become_numbers() -> None:
    assert convert_value(ua.ServerState.Running, "state") == 0.0


def test_waveform_is_float64_array_scaled() -> None:
    out = convert_value([1, 2, 3.5], "waveform", scale=2.0, offset=1.0)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    np.testing.assert_array_equal(out, [3.0, 5.0, 8.0])


@pytest.mark.parametrize(("raw", "kind", "message"), [
    (1.0, "waveform", "scalar"),
    ([[1.0, 2.0], [3.0, 4.0]], "waveform", "1-D"),
    ([], "waveform", "empty"),
    (["a", "b"], "waveform", "not numeric"),
    ([1.0, float("nan")], "waveform", "non-finite"),
    ([1.0, 2.0], "measurement", 'kind = "waveform"'),
    (float("inf"), "measurement", "non-finite"),
    (None, "measurement", "no value"),
    (datetime(2024, 1, 1, tzinfo=UTC), "measurement", "unsupported value type datetime"),
    (b"\x00\x01", "measurement", "unsupported value type bytes"),
])
def test_bad_values_raise_decode_error(raw: object, kind: str, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        convert_value(raw, kind)


def test_reading_from_good_datavalue() -> None:
    r = reading_from_datavalue("msb-meter", "voltage_l1", "measurement", dv(230.5), RECEIVED_NS, scale=2.0)
    assert (r.asset, r.point, r.value, r.ts_ns, r.quality, r.reason) == (
        "msb-meter", "voltage_l1", 461.0, SOURCE_NS, Quality.GOOD, "")


def test_bad_status_drops_the_value() -> None:
    r = reading_from_datavalue("a", "p", "measurement", dv(230.5, status=ua.StatusCodes.BadSensorFailure),
                               RECEIVED_NS)
    assert (r.value, r.quality, r.reason, r.ts_ns) == (None, Quality.BAD, "BadSensorFailure", SOURCE_NS)


def test_bad_status_without_value_is_not_a_decode_error() -> None:
    r = reading_from_datavalue("a", "p", "waveform", dv(ua.Variant(None), status=ua.StatusCodes.BadNoCommunication),
                               RECEIVED_NS)
    assert (r.value, r.quality, r.reason) == (None, Quality.BAD, "BadNoCommunication")


def test_uncertain_keeps_the_value_and_says_why() -> None:
    r = reading_from_datavalue("a", "p", "measurement",
                               dv(49.9, status=ua.StatusCodes.UncertainLastUsableValue), RECEIVED_NS)
    assert (r.value, r.quality, r.reason) == (49.9, Quality.UNCERTAIN, "UncertainLastUsableValue")


def test_array_datavalue_becomes_numpy_waveform() -> None:
    samples = [float(i) for i in range(256)]
    r = reading_from_datavalue("a", "w", "waveform", dv(ua.Variant(samples, ua.VariantType.Double)), RECEIVED_NS)
    assert isinstance(r.value, np.ndarray) and r.value.shape == (256,)
    assert r.value[-1] == 255.0
