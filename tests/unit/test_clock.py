"""Device clocks ahead and gateway clocks behind must not corrupt stored history."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agent.daemon import MAX_CLOCK_AHEAD_NS, guard_clock_skew
from agent.model import Quality, Reading
from agent.uplink.queue import StoreAndForwardQueue

NOW = 1_800_000_000 * 10**9


def test_device_timestamps_far_ahead_get_the_receive_time() -> None:
    ok = Reading("a", "p", 1.0, NOW - 10**9)
    slightly_ahead = Reading("a", "p", 1.0, NOW + 10**9)  # clocks differ a little: trusted
    year_ahead = Reading("a", "q", 2.0, NOW + 365 * 86400 * 10**9)
    bad = Reading("a", "r", None, NOW + MAX_CLOCK_AHEAD_NS + 1, Quality.BAD, "timeout")
    out = guard_clock_skew([ok, slightly_ahead, year_ahead, bad], NOW)
    assert out[0] is ok and out[1] is slightly_ahead
    assert (out[2].ts_ns, out[2].quality, out[2].value) == (NOW, Quality.UNCERTAIN, 2.0)
    assert "ahead" in out[2].reason
    assert out[3].quality == Quality.BAD and out[3].ts_ns == NOW
    readings = [ok]
    assert guard_clock_skew(readings, NOW) is readings, "the common case allocates nothing"


def test_last_interval_end_survives_a_restart(tmp_path: Path) -> None:
    async def scenario() -> int:
        q = StoreAndForwardQueue(tmp_path / "q.sqlite", 10_000)
        await q.open()
        await q.put(lambda seq: b"x", 0, interval_end_ns=NOW)
        await q.put(lambda seq: b"y", 0, interval_end_ns=NOW - 10)  # never goes back
        await q.close()
        q2 = StoreAndForwardQueue(tmp_path / "q.sqlite", 10_000)
        await q2.open()
        value = q2.last_interval_end_ns
        await q2.close()
        return value

    assert asyncio.run(scenario()) == NOW


def test_next_target_is_exact_never_repeats_and_never_far() -> None:
    from agent.intervals import interval_label_ns, next_target_ns

    s = 10**9
    first = next_target_ns(100 * s + 1, 10 * s, 0)
    assert first == 110 * s, "the first boundary ahead, in whole seconds"
    assert next_target_ns(110 * s + 1000, 10 * s, first) == 120 * s, "woken a hair late: the next one"
    assert next_target_ns(107 * s, 10 * s, first) == 120 * s, "closed early: the one after, not the same"
    assert next_target_ns(500 * s, 10 * s, first) == 510 * s, "far behind (suspend, step forward): skip ahead"
    stepped_back = next_target_ns(50 * s, 10 * s, first)
    assert stepped_back == 60 * s, "clock stepped back: a boundary one interval away, not 60 s away"
    assert interval_label_ns(stepped_back, first) == first + 1_000_000, "stored just after the last one"
    assert interval_label_ns(130 * s, first) == 130 * s
