"""When a summary interval closes, and under which timestamp it is stored.

Two clocks, two jobs. The wall clock names intervals: each is stored under a whole multiple of the
summary interval (its boundary), so every agent's intervals line up in Grafana. The monotonic clock
decides when to close: the wait for a boundary is computed from the wall clock but slept on the
monotonic clock (asyncio's), and is never longer than two intervals. A wall clock stepped back
(NTP, a gateway without RTC booting in the past) therefore cannot stall delivery; the labels stay
strictly after the last stored interval (1 ms apart) until the wall clock has caught up with it,
because InfluxDB would silently overwrite a point stored twice under the same timestamp.

An interval closes early, as soon as no point is expected to be read again before its boundary
(`IntervalCompletion`): a value read just before the boundary is delivered right away, and one
read long before it no longer waits for it. A point's next reading is expected one period after
its last one; the period is learnt from the gaps between its readings (seeded with the point's
configured interval). Points that went silent (stale) or were never read hold nothing up: the
interval then closes at its boundary, as it would without this.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence

from agent.model import PointSpec, Reading

__all__ = ["MIN_STEP_NS", "IntervalCompletion", "interval_label_ns", "next_target_ns"]

MIN_STEP_NS = 1_000_000  # labels at least 1 ms apart: stores with ms resolution keep both
STALE_FACTOR = 3.0  # a point silent for this many periods no longer holds an interval open
GAP_WEIGHT = 0.3  # weight of the newest gap in a point's period estimate
EARLY_MARGIN_S = 0.05  # a reading expected this close to the boundary counts as the next interval's


def next_target_ns(wall_ns: int, interval_ns: int, previous_target_ns: int) -> int:
    """The boundary the interval being opened at `wall_ns` closes at.

    Normally the next whole boundary after `wall_ns`. An interval closed early leaves the wall
    clock still before its boundary: the next one is the boundary after that, not the same one.
    A wall clock stepped back or forward gives the boundary after the new time, so the wait
    (target - wall_ns) is always in (0, 2 * interval_ns].
    """
    target = (wall_ns // interval_ns + 1) * interval_ns
    if previous_target_ns and target <= previous_target_ns and wall_ns >= previous_target_ns - interval_ns:
        target = previous_target_ns + interval_ns
    return target


def interval_label_ns(target_ns: int, last_label_ns: int) -> int:
    """The timestamp an interval is stored under: its boundary, kept strictly after the last one."""
    return max(target_ns, last_label_ns + MIN_STEP_NS)


class IntervalCompletion:
    """Tracks which scalar points are still expected before the current interval's deadline.

    `observe` is on the hot path (every reading), O(1) per reading; `start` is once per interval,
    O(points). `complete` is set when the interval may close early.
    """

    def __init__(self, points: Iterable[PointSpec]) -> None:
        self._period = {(p.asset, p.name): p.expected_interval_s for p in points if p.kind != "waveform"}
        self._last: dict[tuple[str, str], float] = {}
        self._pending: set[tuple[str, str]] = set()
        self._earliest = self._deadline = 0.0
        self._seen = False  # a reading arrived since the last interval closed
        self.complete = asyncio.Event()
        self.early_closes = 0

    def start(self, deadline_monotonic: float, interval_s: float, now_monotonic: float | None = None) -> None:
        """A new interval, ending at `deadline_monotonic`: which points must be read before it closes.

        It may close early only once its own window (the interval before its deadline) has begun:
        an interval closed early leaves readings arriving before its boundary to the next one,
        which must not close on them alone.
        """
        now = time.monotonic() if now_monotonic is None else now_monotonic
        self._deadline = deadline_monotonic
        self._earliest = deadline_monotonic - interval_s
        self.complete.clear()
        self._pending = {key for key, last in self._last.items() if self._expected(key, last, now)}
        self.check(now)

    @property
    def earliest(self) -> float:
        """Monotonic time from which the current interval may close early."""
        return self._earliest

    def check(self, now_monotonic: float | None = None) -> None:
        """Set `complete` when something was read, nothing more is due and the window has begun."""
        now = time.monotonic() if now_monotonic is None else now_monotonic
        if self._seen and not self._pending and self._earliest <= now < self._deadline:
            self.complete.set()

    def _expected(self, key: tuple[str, str], last: float, now: float) -> bool:
        """Read recently (not stale) and due again before the deadline."""
        period = self._period[key]
        return now - last <= STALE_FACTOR * period and last + period < self._deadline - EARLY_MARGIN_S

    def observe(self, readings: Sequence[Reading], now_monotonic: float | None = None) -> None:
        now = time.monotonic() if now_monotonic is None else now_monotonic
        for r in readings:
            key = (r.asset, r.point)
            period = self._period.get(key)
            if period is None:
                continue  # a waveform or an undeclared point
            last = self._last.get(key)
            if last is not None and now > last:
                self._period[key] = (1 - GAP_WEIGHT) * period + GAP_WEIGHT * (now - last)
            self._last[key] = now
            if self._period[key] + now < self._deadline - EARLY_MARGIN_S:
                self._pending.add(key)  # read again before the boundary
            else:
                self._pending.discard(key)
            self._seen = True
        self.check(now)

    def closed(self, early: bool) -> None:
        self._seen = False
        if early:
            self.early_closes += 1
