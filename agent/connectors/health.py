"""Connection health of one device, target or agent: one state, one log line per transition.

Every failure of a peer (refused, silent, HTTP error, SNMP timeout) goes through `failed`, every
answer through `answered`; the object keeps `stats.devices_online` true to the state, counts the
failure, logs "offline (reason)" once when the peer goes away and "answering again" once when it
comes back (a changed reason while offline is logged once more), and owns the peer's backoff: the
delay before the next attempt comes from `failed`, and an answer resets it.
"""

from __future__ import annotations

import logging
import random

from agent.connectors.base import ConnectorStats
from runtime.backoff import Backoff

__all__ = ["PeerHealth"]


class PeerHealth:
    def __init__(self, source: str, peer: str, stats: ConnectorStats, log: logging.Logger,
                 backoff_initial_s: float, backoff_max_s: float, rng: random.Random | None = None) -> None:
        self.source, self.peer = source, peer
        self.online: bool | None = None  # None until the first attempt
        self.failures = 0
        self.reason = ""
        self._stats = stats
        self._log = log
        self._backoff = Backoff(backoff_initial_s, backoff_max_s, rng)

    def answered(self) -> None:
        """The peer answered: online, backoff reset."""
        if self.online is False:
            self._log.info("%s/%s: answering again after %d failed attempt(s)", self.source, self.peer,
                           self.failures)
        elif self.online is None:
            self._log.info("%s/%s: online", self.source, self.peer)
        self.online, self.failures, self.reason = True, 0, ""
        self._backoff.reset()
        self._stats.devices_online[self.peer] = True

    def failed(self, reason: str) -> float:
        """The peer did not answer usefully: offline; returns the backoff delay before the next try."""
        self.failures += 1
        self._stats.errors += 1
        self._stats.last_error = f"{self.peer}: {reason}"
        if self.online is not False or reason != self.reason:
            self._log.warning("%s/%s: offline (%s)", self.source, self.peer, reason)
        self.online, self.reason = False, reason
        self._stats.devices_online[self.peer] = False
        return self._backoff.next_delay()
