"""batch_to_points and line protocol encoding over hand-built Batch messages."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector.points import (
    AGENT_HEALTH_INT_FIELDS,
    VIBRATION_FLOAT_FIELDS,
    Point,
    batch_to_points,
    storable_fields,
    to_line_protocol,
    work_order_point,
)
from protos.twin.v1 import twin_pb2

T0 = 1_700_000_000_000_000_000
TYPES = {"ahu-1": "ahu", "pump 2": "pump"}


def numeric_summary(**overrides: object) -> twin_pb2.Summary:
    values: dict[str, object] = dict(
        asset="ahu-1", point="supply_temp", unit="degC", first_ns=T0 - 9_000_000_000,
        last_ns=T0 - 1_000_000_000, interval_end_ns=T0, mean=18.25, min=17.5, max=19.0, last=18.0,
        count=10, bad_count=1, quality=twin_pb2.GOOD,
    )
    values.update(overrides)
    return twin_pb2.Summary(**values)  # type: ignore[arg-type]


def convert(batch: twin_pb2.Batch) -> list[Point]:
    return batch_to_points(batch, agent_id="gw-1", site="plant a", asset_types=TYPES)


def by_measurement(points: list[Point], measurement: str) -> list[Point]:
    return [p for p in points if p.measurement == measurement]


def test_numeric_summary_is_a_telemetry_point_at_interval_end() -> None:
    [p] = convert(twin_pb2.Batch(seq=1, created_ns=T0 + 5, summaries=[numeric_summary()]))
    assert p.measurement == "telemetry"
    assert p.ts_ns == T0
    assert dict(p.tags) == {"site": "plant a", "agent": "gw-1", "asset": "ahu-1", "asset_type": "ahu",
                            "point": "supply_temp", "unit": "degC"}
    assert dict(p.fields) == {"mean": 18.25, "min": 17.5, "max": 19.0, "last": 18.0, "count": 10, "bad": 1}
    assert all(type(p.fields[k]) is float for k in ("mean", "min", "max", "last"))
    assert all(type(p.fields[k]) is int for k in ("count", "bad"))


def test_text_summary_carries_text_and_counts_only() -> None:
    s = numeric_summary(point="mode", unit="", last_text="cooling", mean=0, min=math.inf, max=-math.inf,
                        last=math.nan)
    [p] = convert(twin_pb2.Batch(seq=1, created_ns=T0, summaries=[s]))
    assert dict(p.fields) == {"text": "cooling", "count": 10, "bad": 1}
    assert "unit" not in p.tags  # empty tag values do not exist in line protocol


def test_empty_interval_carries_only_count_and_bad() -> None:
    s = numeric_summary(count=0, bad_count=4, mean=math.nan, last_text="stale", quality=twin_pb2.BAD,
                        reason="timeout")
    [p] = convert(twin_pb2.Batch(seq=1, created_ns=T0, summaries=[s]))
    assert dict(p.fields) == {"count": 0, "bad": 4}


def test_non_finite_statistics_and_unknown_asset_type_are_left_out() -> None:
    s = numeric_summary(asset="boiler", mean=math.nan, last=math.inf)
    [p] = convert(twin_pb2.Batch(seq=1, created_ns=T0, summaries=[s]))
    assert dict(p.fields) == {"min": 17.5, "max": 19.0, "count": 10, "bad": 1}
    assert "asset_type" not in p.tags


def test_vibration_fields_and_types() -> None:
    v = twin_pb2.VibrationIndicators(
        asset="pump 2", sensor="de_accel", ts_ns=T0 + 7, accel_rms=0.8, accel_peak=3.1, crest_factor=3.875,
        kurtosis=4.5, velocity_rms_mm_s=5.2, iso_zone="C", rpm=1800.0, rpm_source="nominal",
        amp_1x=0.2, amp_2x=0.05, amp_3x=0.01, bpfo=0.3, bpfi=0.02, bsf=0.01, ftf=0.0, health=42.0,
        fault="outer_race", confidence=0.9,
        diagnosis=[twin_pb2.DiagnosisEntry(fault="outer_race", confidence=0.9, evidence="BPFO 6 dB")],
    )
    [p] = convert(twin_pb2.Batch(seq=3, created_ns=T0, vibration=[v]))
    assert (p.measurement, p.ts_ns) == ("vibration", T0 + 7)
    assert dict(p.tags) == {"site": "plant a", "asset": "pump 2", "sensor": "de_accel"}
    assert set(p.fields) == {*VIBRATION_FLOAT_FIELDS, "iso_zone", "fault", "rpm_source"}
    assert all(type(p.fields[k]) is float for k in VIBRATION_FLOAT_FIELDS)
    assert (p.fields["iso_zone"], p.fields["fault"], p.fields["rpm"]) == ("C", "outer_race", 1800.0)
    line = to_line_protocol(p)
    assert "rpm=1800," in line and "ftf=0," in line and 'iso_zone="C"' in line
    assert not re.search(r"=\d+i", line)  # no vibration field is an integer


def test_vibration_without_fault_omits_the_empty_strings() -> None:
    v = twin_pb2.VibrationIndicators(asset="m1", sensor="s", ts_ns=T0, accel_rms=0.1, iso_zone="A")
    [p] = convert(twin_pb2.Batch(seq=1, created_ns=T0, vibration=[v]))
    assert p.fields["iso_zone"] == "A"
    assert "fault" not in p.fields and "rpm_source" not in p.fields


def test_asset_state_and_agent_health() -> None:
    batch = twin_pb2.Batch(
        seq=9, created_ns=T0,
        asset_states=[twin_pb2.AssetState(asset="ahu-1", state="degraded", health=71.5, ts_ns=T0 - 3)],
        health=twin_pb2.AgentHealth(ts_ns=T0 - 1, queue_batches=4, queue_bytes=2**64 - 1, dropped=2,
                                    sent=100, acked=96, connector_errors=1, stale_points=3,
                                    rss_mb=61.0, uptime_s=3600.5),
    )
    state, health = convert(batch)
    assert (state.measurement, state.ts_ns, dict(state.tags)) == (
        "asset_state", T0 - 3, {"site": "plant a", "asset": "ahu-1"})
    assert dict(state.fields) == {"state": "degraded", "health": 71.5}
    assert (health.measurement, health.ts_ns, dict(health.tags)) == (
        "agent_health", T0 - 1, {"site": "plant a", "agent": "gw-1"})
    assert health.fields["queue_bytes"] == 2**63 - 1  # clamped to the signed 64-bit line protocol range
    assert all(type(health.fields[k]) is int for k in AGENT_HEALTH_INT_FIELDS)
    assert type(health.fields["rss_mb"]) is float and health.fields["uptime_s"] == 3600.5


def test_batch_without_health_has_no_agent_health_point() -> None:
    points = convert(twin_pb2.Batch(seq=1, created_ns=T0, summaries=[numeric_summary()]))
    assert by_measurement(points, "agent_health") == []


def test_missing_timestamps_fall_back_to_batch_creation_time() -> None:
    batch = twin_pb2.Batch(
        seq=2, created_ns=T0 + 99, summaries=[numeric_summary(interval_end_ns=0)],
        asset_states=[twin_pb2.AssetState(asset="a", state="online", health=100)],
        health=twin_pb2.AgentHealth(sent=1),
    )
    assert {p.ts_ns for p in convert(batch)} == {T0 + 99}


def test_message_without_any_timestamp_is_an_error() -> None:
    batch = twin_pb2.Batch(seq=5, summaries=[numeric_summary(interval_end_ns=0)])
    with pytest.raises(ValueError, match="seq 5: summary ahu-1/supply_temp has no timestamp"):
        convert(batch)


def test_resent_batch_yields_identical_points() -> None:
    batch = twin_pb2.Batch(seq=4, created_ns=T0, summaries=[numeric_summary(), numeric_summary(point="x")],
                           health=twin_pb2.AgentHealth(ts_ns=T0, sent=3))
    resent = twin_pb2.Batch.FromString(batch.SerializeToString())
    assert convert(batch) == convert(resent)


def test_all_measurements_in_one_batch() -> None:
    batch = twin_pb2.Batch(
        seq=1, created_ns=T0, summaries=[numeric_summary(), numeric_summary(point="p2")],
        vibration=[twin_pb2.VibrationIndicators(asset="m", sensor="s", ts_ns=T0, accel_rms=1)],
        asset_states=[twin_pb2.AssetState(asset="m", state="online", health=100, ts_ns=T0)],
        changes=[twin_pb2.StateChange(asset="m", ts_ns=T0, kind="asset_state", new_value="online")],
        health=twin_pb2.AgentHealth(ts_ns=T0),
    )
    assert [p.measurement for p in convert(batch)] == [
        "telemetry", "telemetry", "vibration", "asset_state", "agent_health"]


def test_work_order_point() -> None:
    p = work_order_point(site="plant a", asset="pump 2", severity="high", rule="iso_zone", order_id=17,
                         title='Vibration zone "D"', status="open", opened_ns=T0)
    assert (p.measurement, p.ts_ns) == ("work_order", T0)
    assert dict(p.tags) == {"site": "plant a", "asset": "pump 2", "severity": "high", "rule": "iso_zone"}
    assert dict(p.fields) == {"id": "17", "title": 'Vibration zone "D"', "status": "open"}
    assert to_line_protocol(p) == (
        r'work_order,asset=pump\ 2,rule=iso_zone,severity=high,site=plant\ a '
        r'id="17",status="open",title="Vibration zone \"D\"" 1700000000000000000')
    with pytest.raises(ValueError, match="opened_ns"):
        work_order_point(site="s", asset="a", severity="low", rule="r", order_id="x", title="t",
                         status="open", opened_ns=0)


def test_line_protocol_escaping() -> None:
    p = Point(
        "tele metry,x",
        {"asset": "AHU 1,north", "unit": "m/s^2", "k=ey": "a=b", "path": r"C:\dir"},
        {"mean": 5.0, "count": 3, "ok": True, "text": 'say "hi" \\ bye', "odd key": 1.5},
        T0 + 1,
    )
    assert to_line_protocol(p) == (
        r"tele\ metry\,x,asset=AHU\ 1\,north,k\=ey=a\=b,path=C:\dir,unit=m/s^2 "
        r'count=3i,mean=5,odd\ key=1.5,ok=true,text="say \"hi\" \\ bye" 1700000000000000001')


def test_point_without_storable_field_cannot_be_encoded() -> None:
    with pytest.raises(ValueError, match="no storable field"):
        to_line_protocol(Point("telemetry", {"asset": "a"}, {"mean": math.nan}, T0))


def test_storable_fields_refuses_unknown_types() -> None:
    assert storable_fields({"a": 1, "b": math.inf, "c": "x"}) == {"a": 1, "c": "x"}
    with pytest.raises(ValueError, match="'d' has unsupported type list"):
        storable_fields({"d": [1]})  # type: ignore[dict-item]


@given(
    mean=st.floats(allow_nan=False, allow_infinity=False),
    spread=st.floats(min_value=0, max_value=1e6),
    count=st.integers(min_value=1, max_value=2**32 - 1),
)
def test_telemetry_field_types_never_change(mean: float, spread: float, count: int) -> None:
    """Whatever the values, statistics encode as floats and counters as integers."""
    s = numeric_summary(mean=mean, min=mean - spread, max=mean + spread, last=mean, count=count)
    [p] = convert(twin_pb2.Batch(seq=1, created_ns=T0, summaries=[s]))
    fields = to_line_protocol(p).rsplit(" ", 2)[1]
    for part in fields.split(","):
        key, value = part.split("=")
        if key in ("count", "bad"):
            assert re.fullmatch(r"\d+i", value), part
        elif key in ("mean", "min", "max", "last"):
            assert not value.endswith("i") and math.isfinite(float(value)), part
        else:
            raise AssertionError(f"unexpected field {part}")
