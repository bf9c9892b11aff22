"""The poll loop of scheduled connectors, on a fake clock: slots a slow cycle missed are skipped (no
burst), a crash is reported and the schedule goes on, a cycle can ask for a longer delay (backoff),
and the first cycle is spread by at most START_SPREAD_S whatever the interval."""

from __future__ import annotations

import asyncio
import random

import pytest

from agent.connectors import periodic

REAL_SLEEP = asyncio.sleep


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)
        await REAL_SLEEP(0)


@pytest.fixture()
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(periodic.time, "monotonic", fake.monotonic)
    monkeypatch.setattr(periodic.asyncio, "sleep", fake.sleep)
    return fake


def run(clock: FakeClock, durations: list[float | Exception], asked: dict[int, float] | None = None
        ) -> tuple[list[float], int]:
    """Start times of each cycle (relative to the first due time) and the number of crashes."""
    starts: list[float] = []
    crashes = 0
    done = asyncio.Event()

    async def cycle() -> float | None:
        i = len(starts)
        starts.append(clock.now - 1000.0)
        if i == len(durations) - 1:
            done.set()
            raise asyncio.CancelledError
        d = durations[i]
        if isinstance(d, Exception):
            raise d
        clock.now += d
        return (asked or {}).get(i)

    def crashed() -> None:
        nonlocal crashes
        crashes += 1

    async def main() -> None:
        with pytest.raises(asyncio.CancelledError):
            await periodic.run_periodic(cycle, 10.0, 1000.0, crashed)

    asyncio.run(main())
    return starts, crashes


def test_on_schedule(clock: FakeClock) -> None:
    starts, crashes = run(clock, [1.0, 1.0, 1.0, 0.0])
    assert starts == [0.0, 10.0, 20.0, 30.0] and crashes == 0


def test_a_slow_cycle_skips_the_missed_slots_instead_of_bursting(clock: FakeClock) -> None:
    starts, _ = run(clock, [35.0, 1.0, 0.0])
    assert starts == [0.0, 45.0, 55.0], "the next cycle an interval after the slow one ended, then on schedule"


def test_a_crash_is_reported_and_the_schedule_goes_on(clock: FakeClock) -> None:
    starts, crashes = run(clock, [RuntimeError("surprise"), 1.0, 0.0])
    assert starts == [0.0, 10.0, 20.0] and crashes == 1


def test_a_cycle_may_ask_for_a_longer_delay(clock: FakeClock) -> None:
    starts, _ = run(clock, [1.0, 1.0, 0.0], asked={0: 60.0})
    assert starts == [0.0, 60.0, 70.0]


@pytest.mark.parametrize("interval", [1.0, 10.0, 3600.0])
def test_the_first_cycle_is_spread_by_at_most_a_second(clock: FakeClock, interval: float) -> None:
    rng = random.Random(1)
    offsets = [periodic.first_due(rng, interval) - clock.now for _ in range(500)]
    assert 0.0 <= min(offsets) and max(offsets) <= min(0.1 * interval, periodic.START_SPREAD_S)
    assert max(offsets) > 0.5 * min(0.1 * interval, periodic.START_SPREAD_S), "it does spread"
