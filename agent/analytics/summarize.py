"""Per-point interval statistics: what the uplink carries instead of every raw reading.

Pure and synchronous: `add` is called on the hot path for every scalar reading, `drain` once per
summary interval. Statistics cover GOOD and UNCERTAIN readings; BAD readings are only counted, so a
device that went offline shows up as `count == 0, bad_count > 0` rather than as a repeated value.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from agent.model import Quality, Reading

__all__ = ["PointSummary", "Summarizer"]


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

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else float("nan")


class Summarizer:
    def __init__(self) -> None:
        self._acc: dict[tuple[str, str], PointSummary] = {}

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

    def drain(self) -> list[PointSummary]:
        out = list(self._acc.values())
        self._acc.clear()
        return out
