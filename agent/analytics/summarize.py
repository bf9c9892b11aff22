"""Per-point interval statistics: what the uplink carries instead of every raw reading.

Pure and synchronous: `add` is called on the hot path for every scalar reading, `drain` once per
summary interval. Statistics cover GOOD and UNCERTAIN readings; BAD readings are only counted, so a
device that went offline shows up as `count == 0, bad_count > 0` rather than as a repeated value.

Counter points (`kind = "counter"`: energy, pulses, run hours) also get the increase over the
interval, computed as Prometheus' `increase()` does: the sum of the rises between consecutive
readings, where a fall is a reset (a device restart, a wrap) after which the counter counted up
from zero, so the new value is the rise. The reading before the interval's first one (the last of
an earlier interval) is the starting point, so consecutive intervals add up to the total increase;
the first reading after the agent starts is only a starting point.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from agent.model import Quality, Reading

__all__ = ["PointSummary", "Summarizer", "counter_increase"]


@dataclass(slots=True)
class PointSummary:
    asset: str
    point: str
    first_ns: int
    last_ns: int
    count: int = 0
    bad_count: int = 0
    total: float = 0.0
    min: float = float("inf")
    max: float = float("-inf")
    last: float = float("nan")
    last_text: str = ""
    quality: Quality = Quality.GOOD
    reason: str = ""
    increase: float | None = None  # counter points only
    resets: int = 0

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else float("nan")


def counter_increase(previous: float | None, value: float) -> tuple[float, bool]:
    """The rise from `previous` to `value`, and whether the counter was reset in between."""
    if previous is None:
        return 0.0, False
    if value < previous:
        return value, True
    return value - previous, False


class Summarizer:
    def __init__(self, counters: Iterable[tuple[str, str]] = ()) -> None:
        self._acc: dict[tuple[str, str], PointSummary] = {}
        self._counters = set(counters)
        self._counter_last: dict[tuple[str, str], float] = {}  # kept across intervals

    def add(self, readings: Iterable[Reading]) -> None:
        for r in readings:
            if isinstance(r.value, np.ndarray):
                continue  # waveforms are summarised by the vibration analytics
            key = (r.asset, r.point)
            s = self._acc.get(key)
            if s is None:
                s = self._acc[key] = PointSummary(r.asset, r.point, r.ts_ns, r.ts_ns)
            s.first_ns = min(s.first_ns, r.ts_ns)
            s.last_ns = max(s.last_ns, r.ts_ns)
            s.quality, s.reason = r.quality, r.reason
            if r.quality == Quality.BAD or r.value is None:
                s.bad_count += 1
                continue
            if isinstance(r.value, str):
                s.last_text = r.value
                s.count += 1
                continue
            v = float(r.value)
            s.count += 1
            s.total += v
            s.min = min(s.min, v)
            s.max = max(s.max, v)
            s.last = v
            if key in self._counters and math.isfinite(v):
                rise, reset = counter_increase(self._counter_last.get(key), v)
                s.increase = (s.increase or 0.0) + rise
                s.resets += reset
                self._counter_last[key] = v

    def drain(self) -> list[PointSummary]:
        out = list(self._acc.values())
        self._acc.clear()
        return out
