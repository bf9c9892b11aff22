"""Wire v2 (protos/twin/v2): what the agent encodes, the collector decodes back to the same v1 batch."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.uplink.wire import V1Encoder, V2Encoder
from collector.wire import V1Decoder, V2Decoder, WireError
from protos.twin.v1 import twin_pb2
from protos.twin.v2 import twin_pb2 as twin_v2_pb2

T0 = 1_700_000_000_000_000_000
floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, 21.5]))


@st.composite
def summaries(draw: st.DrawFn) -> twin_pb2.Summary:
    mean = draw(floats)
    same_or = st.one_of(st.just(mean), floats)
    end = draw(st.sampled_from([T0, T0, 0, T0 - 3]))
    s = twin_pb2.Summary(
        asset=draw(st.sampled_from(["ahu-1", "pump 2"])), point=draw(st.sampled_from(["t", "p", "ü"])),
        unit=draw(st.sampled_from(["", "degC"])), first_ns=draw(st.sampled_from([0, T0 - 10**9, T0 + 5])),
        last_ns=draw(st.sampled_from([0, T0 - 1])), interval_end_ns=end, mean=mean, min=draw(same_or),
        max=draw(same_or), last=draw(same_or), count=draw(st.integers(0, 5)), bad_count=draw(st.integers(0, 2)),
        quality=draw(st.sampled_from([twin_pb2.GOOD, twin_pb2.BAD, twin_pb2.QUALITY_UNSPECIFIED])),
        reason=draw(st.sampled_from(["", "timeout"])), last_text=draw(st.sampled_from(["", "on"])))
    increase = draw(st.one_of(st.none(), floats))
    if increase is not None:  # a counter point
        s.increase, s.resets = increase, draw(st.integers(0, 3))
    return s


@st.composite
def batches(draw: st.DrawFn) -> twin_pb2.Batch:
    b = twin_pb2.Batch(seq=draw(st.integers(1, 10**6)), created_ns=T0,
                       summaries=draw(st.lists(summaries(), max_size=8)))
    if draw(st.booleans()):
        b.health.CopyFrom(twin_pb2.AgentHealth(ts_ns=T0, queue_batches=3, rss_mb=41.5))
    if draw(st.booleans()):
        b.vibration.add(asset="pump 2", sensor="de", ts_ns=T0, kurtosis=3.2, diagnosis=[
            twin_pb2.DiagnosisEntry(fault="outer_race", confidence=0.7)])
        b.changes.add(asset="ahu-1", point="mode", ts_ns=T0, kind="state", old_value="a", new_value="b")
        b.asset_states.add(asset="ahu-1", state="online", health=99.0, ts_ns=T0)
    return b


def same(a: twin_pb2.Batch, b: twin_pb2.Batch) -> bool:
    """Equal as stored: bit for bit (NaN equal to NaN, -0.0 not equal to 0.0)."""
    return a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True)


@settings(max_examples=200, deadline=None)
@given(st.lists(batches(), min_size=1, max_size=4))
def test_a_stream_of_v2_batches_decodes_to_the_v1_batches(stream: list[twin_pb2.Batch]) -> None:
    agent, collector = V2Encoder(), V2Decoder()
    for batch in stream:
        wire = agent.batch(batch.SerializeToString()).SerializeToString()
        decoded = collector.batch(wire)
        assert decoded is not None and same(decoded, batch)
    declared = {(s.asset, s.point, s.unit) for b in stream for s in b.summaries}
    assert len(collector.series) == agent.series == len(declared)


def test_series_are_declared_once_per_stream_and_again_on_a_new_stream() -> None:
    batch = twin_pb2.Batch(seq=1, created_ns=T0, summaries=[
        twin_pb2.Summary(asset="ahu-1", point="t", unit="degC", first_ns=T0 - 400_000_000, last_ns=T0 - 400_000_000,
                         interval_end_ns=T0, mean=1.0, min=1.0, max=1.0, last=1.0, count=1),
        twin_pb2.Summary(asset="ahu-1", point="p", unit="Pa", first_ns=T0 - 900_000_000, last_ns=T0 - 100_000_000,
                         interval_end_ns=T0, mean=2.0, min=1.0, max=2.0, last=2.0, count=2)])
    stream = V2Encoder()
    first = stream.batch(batch.SerializeToString()).batch
    again = stream.batch(batch.SerializeToString()).batch
    assert [s.point for s in first.new_series] == ["t", "p"] and not again.new_series
    assert [s.series for s in again.summaries] == [0, 1]
    # one reading: min, max and last equal the mean and are not sent; times are offsets from the end
    one = again.summaries[0]
    assert not one.HasField("min") and not one.HasField("last") and not one.HasField("interval_end_ns")
    assert again.summaries[1].HasField("min") and not again.summaries[1].HasField("max")
    assert len(again.SerializeToString()) < len(batch.SerializeToString()) / 2
    assert [s.point for s in V2Encoder().batch(batch.SerializeToString()).batch.new_series] == ["t", "p"]


def test_a_summary_of_an_undeclared_series_is_a_wire_error() -> None:
    msg = twin_v2_pb2.AgentMessage(batch=twin_v2_pb2.Batch(seq=4, created_ns=T0, summaries=[
        twin_v2_pb2.Summary(series=0, mean=1.0, count=1)]))
    with pytest.raises(WireError, match="series 0, but only 0 are declared"):
        V2Decoder().batch(msg.SerializeToString())


@pytest.mark.parametrize("decoder", [V1Decoder(), V2Decoder()])
def test_corrupt_bytes_are_a_wire_error(decoder) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(WireError, match="unparseable message"):
        decoder.first(b"\x0a\xff\xff\xff\xff\x0f garbage")
    with pytest.raises(WireError):
        decoder.batch(b"\x12\x05ab")


def test_hello_is_the_v1_hello_in_both_versions() -> None:
    hello = twin_pb2.Hello(agent_id="gw-a", site="s", queue_epoch="e", assets=[twin_pb2.AssetDescriptor(id="a")])
    for enc, dec in ((V1Encoder(), V1Decoder()), (V2Encoder(), V2Decoder())):
        assert dec.first(enc.hello(hello).SerializeToString()) == hello
        assert dec.batch(enc.hello(hello).SerializeToString()) is None, "a second Hello is not a batch"
    assert V1Decoder().first(twin_pb2.AgentMessage(batch=twin_pb2.Batch(seq=1)).SerializeToString()) is None


def test_nan_and_negative_zero_survive() -> None:
    batch = twin_pb2.Batch(seq=1, created_ns=T0, summaries=[twin_pb2.Summary(
        asset="a", point="p", interval_end_ns=T0, mean=-0.0, min=0.0, max=math.nan, last=-0.0, count=1)])
    decoded = V2Decoder().batch(V2Encoder().batch(batch.SerializeToString()).SerializeToString())
    assert decoded is not None
    s = decoded.summaries[0]
    assert math.copysign(1, s.mean) == -1 and math.copysign(1, s.min) == 1 and math.isnan(s.max)
    assert math.copysign(1, s.last) == -1
