"""Backoff of a unit that stopped answering: exponential, capped, jittered."""

from __future__ import annotations

import random

from agent.connectors.modbus.connector import backoff_delay


def test_grows_exponentially_up_to_the_cap() -> None:
    rng = random.Random(1)
    for failures, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (5, 16.0), (6, 30.0), (60, 30.0)]:
        delays = [backoff_delay(failures, 1.0, 30.0, rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)


def test_jitter_spreads_units_that_failed_together() -> None:
    rng = random.Random(2)
    delays = {round(backoff_delay(4, 0.5, 60.0, rng), 6) for _ in range(50)}
    assert len(delays) > 40
