"""Backoff of reconnecting loops (uplink, Modbus units, OPC-UA sessions, MQTT): exponential, capped, jittered."""

from __future__ import annotations

import random

from runtime.backoff import Backoff, backoff_delay


def test_grows_exponentially_up_to_the_cap() -> None:
    rng = random.Random(1)
    for attempt, ceiling in [(0, 1.0), (1, 2.0), (2, 4.0), (4, 16.0), (5, 30.0), (60, 30.0), (10_000, 30.0)]:
        delays = [backoff_delay(attempt, 1.0, 30.0, rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)


def test_jitter_spreads_peers_that_failed_together() -> None:
    rng = random.Random(2)
    delays = {round(backoff_delay(4, 0.5, 60.0, rng), 6) for _ in range(50)}
    assert len(delays) > 40


def test_stateful_backoff_resets_on_success() -> None:
    b = Backoff(0.5, 4.0, random.Random(3))
    first = [b.next_delay() for _ in range(6)]
    assert first[0] <= 0.5 and all(d <= 4.0 for d in first) and first[-1] >= 2.0
    b.reset()
    assert b.next_delay() <= 0.5
