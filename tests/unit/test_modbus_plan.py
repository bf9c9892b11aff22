"""Request coalescing: minimal request counts, limits honoured, fast and slow polls kept apart."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.connectors.modbus.plan import ReadRequest, Span, plan_reads


def span(key: int, address: int, width: int = 1, unit_id: int = 1, function: str = "holding",
         interval_s: float = 1.0) -> Span:
    return Span(key, unit_id, function, address, width, interval_s)  # type: ignore[arg-type]


def fewest_requests(spans: Sequence[Span], limit: int, max_gap: int) -> int:
    """Reference: dynamic programming over contiguous groups of the address-sorted points."""
    s = sorted(spans, key=lambda x: x.address)
    best = [0] + [len(s) + 1] * len(s)
    for end in range(1, len(s) + 1):
        for start in range(end - 1, -1, -1):
            group = s[start:end]
            if max(x.end for x in group) - group[0].address > limit:
                break
            gaps_ok = all(group[i + 1].address - max(x.end for x in group[:i + 1]) <= max_gap
                          for i in range(len(group) - 1))
            if gaps_ok:
                best[end] = min(best[end], best[start] + 1)
    return best[-1]


def check_covers(spans: Sequence[Span], requests: Sequence[ReadRequest], limit: int) -> None:
    keys = [s.key for r in requests for s in r.spans]
    assert sorted(keys) == sorted(s.key for s in spans)
    for r in requests:
        assert r.count <= limit
        for s in r.spans:
            assert r.address <= s.address and s.end <= r.address + r.count
            assert (s.unit_id, s.function, s.interval_s) == (r.unit_id, r.function, r.interval_s)


@st.composite
def layouts(draw: st.DrawFn) -> list[Span]:
    """Non-overlapping points of width 1, 2 or 4 at random gaps."""
    spans, address = [], draw(st.integers(0, 50))
    for key in range(draw(st.integers(1, 60))):
        width = draw(st.sampled_from([1, 2, 4]))
        spans.append(span(key, address, width))
        address += width + draw(st.integers(0, 30))
    return spans


@settings(max_examples=300, deadline=None)
@given(layouts(), st.integers(4, 125), st.integers(0, 20))
def test_greedy_is_minimal(spans: list[Span], limit: int, max_gap: int) -> None:
    requests = plan_reads(spans, limit, 2000, max_gap)
    check_covers(spans, requests, limit)
    assert len(requests) == fewest_requests(spans, limit, max_gap)


def test_gap_limit() -> None:
    spans = [span(0, 0), span(1, 11), span(2, 23)]  # gaps of 10 and 11 registers
    requests = plan_reads(spans, 125, 2000, max_gap=10)
    assert [(r.address, r.count) for r in requests] == [(0, 12), (23, 1)]


def test_max_registers_per_request() -> None:
    spans = [span(i, i) for i in range(300)]
    requests = plan_reads(spans, 125, 2000, max_gap=10)
    assert [(r.address, r.count) for r in requests] == [(0, 125), (125, 125), (250, 50)]
    assert len(plan_reads(spans, 10, 2000, 0)) == 30


def test_a_wide_point_is_never_split() -> None:
    spans = [span(0, 0, 2), span(1, 2, 2), span(2, 4, 2)]
    requests = plan_reads(spans, 5, 2000, max_gap=10)
    assert [(r.address, r.count) for r in requests] == [(0, 4), (4, 2)]


def test_fast_and_slow_points_are_never_merged() -> None:
    fast = [span(i, 2 * i, interval_s=1.0) for i in range(5)]
    slow = [span(10 + i, 2 * i + 1, 2, interval_s=60.0) for i in range(5)]  # interleaved addresses
    requests = plan_reads(fast + slow, 125, 2000, max_gap=10)
    assert len(requests) == 2
    assert {r.interval_s: {s.key for s in r.spans} for r in requests} == {
        1.0: set(range(5)), 60.0: set(range(10, 15))}


def test_units_and_functions_are_separate() -> None:
    spans = [span(0, 0, unit_id=1), span(1, 1, unit_id=2), span(2, 2, function="input"),
             span(3, 3, function="coil"), span(4, 4, function="coil")]
    requests = plan_reads(spans, 125, 2000, max_gap=10)
    assert sorted((r.unit_id, r.function, r.address, r.count) for r in requests) == [
        (1, "coil", 3, 2), (1, "holding", 0, 1), (1, "input", 2, 1), (2, "holding", 1, 1)]


def test_bits_use_the_bit_limit() -> None:
    spans = [span(i, i * 100, function="coil") for i in range(30)]  # 2900 bits, gaps of 99
    requests = plan_reads(spans, 125, 2000, max_gap=100)
    assert [(r.address, r.count) for r in requests] == [(0, 1901), (2000, 901)]


def test_overlapping_points_share_a_request() -> None:
    spans = [span(0, 10, 1), span(1, 10, 2), span(2, 10, 1), span(3, 11, 1)]  # int16, int32, bit, int16
    requests = plan_reads(spans, 125, 2000, max_gap=0)
    assert [(r.address, r.count, len(r.spans)) for r in requests] == [(10, 2, 4)]
