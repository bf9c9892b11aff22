"""The fast sink encoders write exactly what batch_to_points defines, for any batch.

Ingest encodes summaries straight from the protobuf (LineProtocolEncoder for InfluxDB,
SummaryRowEncoder for the embedded SQLite store); `batch_to_points` + `to_line_protocol` / the
store's `_row` stay the definition. Every line and row must be byte-identical to it.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.points import LineProtocolEncoder, batch_to_points, to_line_protocol
from collector.summary_store import SummaryRowEncoder, _row
from protos.twin.v1 import twin_pb2

T0 = 1_700_000_000_000_000_000
TYPES = {"ahu-1": "ahu", "pump 2": "pump", "a,b=c": "odd type", "tail\\": "x"}

names = st.sampled_from(["ahu-1", "pump 2", "a,b=c", "tail\\", "quote\"d", "new\nline", "", "ünï"])
floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, 20.0, 1e16, 1e-7]))


@st.composite
def summaries(draw: st.DrawFn) -> twin_pb2.Summary:
    s = twin_pb2.Summary(
        asset=draw(names), point=draw(names), unit=draw(st.sampled_from(["", "degC", "m3/h", "a b"])),
        first_ns=T0 - 5, last_ns=T0 - 1, interval_end_ns=draw(st.sampled_from([0, T0, T0 + 7])),
        mean=draw(floats), min=draw(floats), max=draw(floats), last=draw(floats),
        count=draw(st.integers(0, 3)), bad_count=draw(st.integers(0, 2)), quality=twin_pb2.GOOD,
        last_text=draw(st.sampled_from(["", "cooling", 'say "hi"\\', "x,y=z"])))
    increase = draw(st.one_of(st.none(), floats))
    if increase is not None:  # a counter point
        s.increase, s.resets = increase, draw(st.integers(0, 3))
    return s


@st.composite
def batches(draw: st.DrawFn) -> twin_pb2.Batch:
    batch = twin_pb2.Batch(seq=3, created_ns=T0 + 1, summaries=draw(st.lists(summaries(), max_size=12)))
    if draw(st.booleans()):
        batch.vibration.add(asset="pump 2", sensor="de", ts_ns=T0, velocity_rms_mm_s=draw(floats),
                            iso_zone=draw(st.sampled_from(["", "B"])))
    if draw(st.booleans()):
        batch.asset_states.add(asset="ahu-1", state=draw(st.sampled_from(["", "online"])), health=draw(floats),
                               ts_ns=T0)
    if draw(st.booleans()):
        batch.health.CopyFrom(twin_pb2.AgentHealth(ts_ns=T0, queue_batches=2, rss_mb=draw(floats)))
    return batch


def reference(batch: twin_pb2.Batch, encode):  # type: ignore[no-untyped-def]
    """What the definition gives: (encoded points, reasons of the points no store accepts)."""
    out, refused = [], []
    for p in batch_to_points(batch, agent_id="gw 1", site="plant,a", asset_types=TYPES):
        try:
            out.append(encode(p))
        except ValueError as exc:
            refused.append(str(exc))
    return out, refused


@settings(max_examples=300, deadline=None)
@given(batches())
def test_line_protocol_encoder_is_identical_to_the_definition(batch: twin_pb2.Batch) -> None:
    encoder = LineProtocolEncoder("gw 1", "plant,a", TYPES)
    assert encoder.encode(batch) == reference(batch, to_line_protocol)
    assert encoder.encode(batch) == reference(batch, to_line_protocol), "the second time, from the tag cache"


@settings(max_examples=300, deadline=None)
@given(batches())
def test_sqlite_row_encoder_is_identical_to_the_definition(batch: twin_pb2.Batch) -> None:
    encoder = SummaryRowEncoder("gw 1", "plant,a", TYPES)
    assert encoder.encode(batch) == reference(batch, _row)
    assert encoder.encode(batch) == reference(batch, _row), "the second time, from the series cache"


@pytest.mark.parametrize("make", [lambda: LineProtocolEncoder("gw", "s", {}), lambda: SummaryRowEncoder("gw", "s", {})])
def test_a_summary_without_any_timestamp_makes_the_batch_malformed(make) -> None:  # type: ignore[no-untyped-def]
    batch = twin_pb2.Batch(seq=9, summaries=[twin_pb2.Summary(asset="a", point="p", count=1, mean=1.0)])
    with pytest.raises(ValueError, match="batch seq 9: summary a/p has no timestamp"):
        make().encode(batch)
    with pytest.raises(ValueError):
        batch_to_points(batch, agent_id="gw", site="s", asset_types={})


def test_typical_line() -> None:
    batch = twin_pb2.Batch(seq=1, created_ns=T0, summaries=[twin_pb2.Summary(
        asset="ahu-1", point="supply_temp", unit="degC", interval_end_ns=T0, mean=20.0, min=19.5, max=-0.0,
        last=math.inf, count=10, bad_count=1)])
    # min > max: no numeric statistics; -0.0 > 19.5 is false, so these are left out entirely
    assert LineProtocolEncoder("gw-1", "s", TYPES).encode(batch) == (
        [f"telemetry,agent=gw-1,asset=ahu-1,asset_type=ahu,point=supply_temp,site=s,unit=degC bad=1i,count=10i {T0}"],
        [])
    batch.summaries[0].max = 21.0
    assert LineProtocolEncoder("gw-1", "s", TYPES).encode(batch)[0] == [
        f"telemetry,agent=gw-1,asset=ahu-1,asset_type=ahu,point=supply_temp,site=s,unit=degC "
        f"bad=1i,count=10i,max=21,mean=20,min=19.5 {T0}"]


@pytest.mark.parametrize("make, encode", [(lambda: LineProtocolEncoder("gw 1", "plant,a", TYPES), to_line_protocol),
                                          (lambda: SummaryRowEncoder("gw 1", "plant,a", TYPES), _row)])
def test_an_agent_inventing_point_names_cannot_grow_the_series_cache(make, encode, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr("collector.points.MAX_CACHED_SERIES", 5)
    encoder = make()
    for i in range(12):
        batch = twin_pb2.Batch(seq=i + 1, created_ns=T0, summaries=[twin_pb2.Summary(
            asset="ahu-1", point=f"p{i}", unit="degC", interval_end_ns=T0, mean=1.0, min=1.0, max=1.0, last=1.0,
            count=1)])
        assert encoder.encode(batch) == reference(batch, encode)
        assert len(encoder.series.cached) <= 5
