"""Logging setup shared by both daemons: one line per event with level and component."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable

__all__ = ["RateLimitedLog", "setup_logging"]


def setup_logging(level: str = "info") -> None:
    # Under systemd the journal adds its own timestamp; elsewhere we print one.
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not os.environ.get("JOURNAL_STREAM"):
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(level=getattr(logging, level.upper()), format=fmt, stream=sys.stderr, force=True)
    for noisy in ("pymodbus", "asyncua", "grpc", "urllib3", "influxdb_client", "aiosqlite"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


class RateLimitedLog:
    """At most one warning per key per `interval_s`; the next one says how many were suppressed."""

    def __init__(self, logger: logging.Logger, interval_s: float,
                 clock: Callable[[], float] = time.monotonic, max_keys: int = 10_000) -> None:
        self._logger, self._interval_s, self._clock, self._max_keys = logger, interval_s, clock, max_keys
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, message: str) -> bool:
        """Log `message` unless `key` was logged less than `interval_s` ago; True if logged."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._interval_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False
        if len(self._last) >= self._max_keys:
            self._last.clear()
            self._suppressed.clear()
        suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            message += f" ({suppressed} similar suppressed in the last {self._interval_s:g}s)"
        self._logger.warning("%s", message)
        self._last[key] = now
        return True
