from __future__ import annotations

import math

import numpy as np

from agent.analytics.summarize import Summarizer
from agent.model import Quality, Reading


def test_statistics_over_good_readings_bad_only_counted() -> None:
    s = Summarizer()
    s.add([Reading("a", "t", 1.0, 10), Reading("a", "t", 3.0, 20), Reading("a", "t", None, 30, Quality.BAD, "timeout"),
           Reading("a", "t", 2.0, 40), Reading("a", "w", np.zeros(8), 40), Reading("a", "mode", "auto", 50)])
    out = {x.point: x for x in s.drain()}
    t = out["t"]
    assert (t.count, t.bad_count, t.min, t.max, t.last, t.first_ns, t.last_ns) == (3, 1, 1.0, 3.0, 2.0, 10, 40)
    assert t.mean == 2.0
    assert "w" not in out, "waveforms are summarised by the vibration analytics, not here"
    assert out["mode"].last_text == "auto"
    assert s.drain() == []


def test_offline_interval_has_no_values() -> None:
    s = Summarizer()
    s.add([Reading("a", "t", None, 10, Quality.BAD, "timeout")] * 3)
    (t,) = s.drain()
    assert t.count == 0 and t.bad_count == 3 and math.isnan(t.mean) and t.reason == "timeout"


def test_counter_increase_across_a_reset_and_across_intervals() -> None:
    """Prometheus' increase(): rises add up, a fall is a reset after which the counter counted from 0."""
    s = Summarizer(counters=[("m", "energy")])
    s.add([Reading("m", "energy", v, i) for i, v in enumerate((1000.0, 1002.5, 1003.0))])
    s.add([Reading("m", "power", 5.0, 3)])
    first = {x.point: x for x in s.drain()}
    assert first["energy"].increase == 3.0 and first["energy"].resets == 0, "the first reading is the start"
    assert first["power"].increase is None, "not a counter"
    # Next interval: +1 from the last reading of the previous one, then the meter restarts at 0.5
    # (counted as 0.5 since the reset), then +2.
    s.add([Reading("m", "energy", 1004.0, 10), Reading("m", "energy", None, 11, Quality.BAD, "timeout"),
           Reading("m", "energy", 0.5, 12), Reading("m", "energy", 2.5, 13)])
    (second,) = s.drain()
    assert second.increase == 1.0 + 0.5 + 2.0 and second.resets == 1
    assert second.min == 0.5 and second.max == 1004.0, "the usual statistics are kept"
    s.add([Reading("m", "energy", None, 20, Quality.BAD, "timeout")])
    (offline,) = s.drain()
    assert offline.increase is None, "no reading, no known increase"
    s.add([Reading("m", "energy", 3.0, 30)])
    (back,) = s.drain()
    assert back.increase == 0.5, "counted from the last good reading, across the offline interval"
