"""Early close of summary intervals: as soon as no point is due again before the boundary.

Times are injected (monotonic seconds), so these tests check the mechanism, not the scheduler's timing.
"""

from __future__ import annotations

from agent.intervals import IntervalCompletion
from agent.model import PointSpec, Reading


def reading(point: str) -> Reading:
    return Reading("ahu", point, 1.0, 0)


def specs(**periods: float) -> list[PointSpec]:
    return [PointSpec("ahu", name, expected_interval_s=p) for name, p in periods.items()]


def test_closes_once_every_point_due_has_been_read() -> None:
    c = IntervalCompletion(specs(a=1.0, b=1.0))
    # Interval [100, 101): a is polled at phase 0.3, b at phase 0.6 (one poll each per interval).
    c.start(101.0, 1.0, now_monotonic=100.0)
    c.observe([reading("a")], now_monotonic=100.3)
    c.observe([reading("b")], now_monotonic=100.6)
    assert c.complete.is_set(), "nothing is known yet about the points' phases: both read, close"
    c.closed(early=True)
    c.start(102.0, 1.0, now_monotonic=100.61)
    assert not c.complete.is_set()
    c.observe([reading("a")], now_monotonic=101.3)
    assert not c.complete.is_set(), "b is due at 101.6, before the boundary"
    c.observe([reading("b")], now_monotonic=101.6)
    assert c.complete.is_set(), "closed right after the last due reading, 0.4 s before the boundary"
    assert c.early_closes == 1


def test_slow_points_do_not_hold_an_interval_and_fast_ones_close_it_at_their_last_read() -> None:
    c = IntervalCompletion(specs(slow=10.0, fast=0.25))
    c.start(101.0, 1.0, now_monotonic=100.0)
    for t in (100.1, 100.35, 100.6):
        c.observe([reading("fast")], now_monotonic=t)
        assert not c.complete.is_set(), f"fast is read again before the boundary (after {t})"
    c.observe([reading("slow")], now_monotonic=100.7)
    assert not c.complete.is_set(), "fast is still due at 100.85"
    c.observe([reading("fast")], now_monotonic=100.85)
    assert c.complete.is_set(), "the last fast read before the boundary; slow is due in 10 s"
    c.closed(early=True)


def test_an_interval_closed_early_does_not_close_its_successor_before_its_window() -> None:
    c = IntervalCompletion(specs(a=2.0, b=10.0))
    c.start(101.0, 1.0, now_monotonic=100.0)
    c.observe([reading("a")], now_monotonic=100.9)
    assert c.complete.is_set()
    c.closed(early=True)
    c.start(102.0, 1.0, now_monotonic=100.91)  # the next interval's window begins at 101.0
    c.observe([reading("b")], now_monotonic=100.95)  # read before the boundary: it is the next interval's
    assert not c.complete.is_set(), "not before its own window begins"
    c.check(now_monotonic=101.0)
    assert c.complete.is_set(), "its window began and nothing more is due before 102"


def test_a_silent_point_holds_the_interval_until_it_is_stale_then_no_longer() -> None:
    c = IntervalCompletion(specs(a=1.0, gone=1.0))
    c.observe([reading("a"), reading("gone")], now_monotonic=99.5)
    c.start(101.0, 1.0, now_monotonic=100.0)
    c.observe([reading("a")], now_monotonic=100.5)
    assert not c.complete.is_set(), "'gone' is due at 100.5 and has not answered: wait for the boundary"
    c.closed(early=False)
    c.start(104.0, 1.0, now_monotonic=103.0)  # 'gone' silent for 3.5 periods: stale
    c.observe([reading("a")], now_monotonic=103.5)
    assert c.complete.is_set()


def test_period_is_learnt_from_the_gaps() -> None:
    """Declared 10 s, but the device publishes every second: after a few readings the point is
    expected again within the interval, so the interval waits for its last reading."""
    c = IntervalCompletion(specs(m=10.0))
    for i in range(12):
        c.observe([reading("m")], now_monotonic=90.0 + i)
    c.start(104.0, 2.0, now_monotonic=101.5)
    c.observe([reading("m")], now_monotonic=102.0)
    assert not c.complete.is_set(), "expected again at ~103, before the boundary"
    c.observe([reading("m")], now_monotonic=103.0)
    assert c.complete.is_set(), "expected next at ~104: this was the interval's last reading"


def test_waveforms_and_undeclared_points_are_ignored() -> None:
    c = IntervalCompletion([PointSpec("ahu", "w", kind="waveform", expected_interval_s=0.1)])
    c.start(101.0, 1.0, now_monotonic=100.0)
    c.observe([Reading("ahu", "w", 1.0, 0), Reading("ahu", "x", 1.0, 0)], now_monotonic=100.5)
    assert not c.complete.is_set(), "nothing the interval waits for was read"
