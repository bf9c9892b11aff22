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
