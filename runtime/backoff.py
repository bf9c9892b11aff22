"""Exponential backoff with jitter, shared by every reconnecting loop of the agent.

The n-th delay (n from 0) is uniform in [d/2, d] with d = min(max_s, initial_s * 2^n): the jitter
spreads out gateways, units or sessions that failed together (a collector restart, a gateway
power cut) so they do not come back in lockstep, and the floor of d/2 keeps a flapping peer from
being hammered.
"""

from __future__ import annotations

import random

__all__ = ["Backoff", "backoff_delay"]


def backoff_delay(attempt: int, initial_s: float, max_s: float, rng: random.Random) -> float:
    ceiling = min(max_s, initial_s * 2 ** min(max(attempt, 0), 30))
    return rng.uniform(ceiling / 2, ceiling)


class Backoff:
    """Stateful form of `backoff_delay`: `next_delay()` after each failure, `reset()` on success."""

    def __init__(self, initial_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self.initial_s, self.max_s = initial_s, max_s
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        delay = backoff_delay(self.attempt, self.initial_s, self.max_s, self._rng)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0
