"""Logging shared by both daemons: one record per event, with level and component, rate-limited.

Under systemd (`JOURNAL_STREAM` names our stderr) each line starts with its syslog priority in the
sd-daemon(3) form (`<3>` error, `<4>` warning, `<6>` info, `<7>` debug), which journald turns into
the record's PRIORITY, so `journalctl -u twin-agent -p warning` selects warnings. journald makes a
record of every line, so a multi-line message (a traceback) is folded into one line there: the
lines are joined with " | " instead of arriving as level-less records of their own. Uncaught
exceptions and Python warnings go through the same path. Elsewhere (a terminal, a file) lines carry
a timestamp and tracebacks keep their lines.

Libraries log their own retries on every attempt (pymodbus "Failed to connect", "Repeating....",
asyncua reconnect errors, grpc): records of loggers that are not ours pass at most once per
(logger, message shape) and `THIRD_PARTY_INTERVAL_S`, the next one saying how many were suppressed,
like `RateLimitedLog` does for ours. One `RateLimiter` serves both.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

__all__ = [
    "JOURNAL_PRIORITY",
    "JournalFormatter",
    "RateLimitedLog",
    "RateLimiter",
    "ThirdPartyRateLimit",
    "setup_logging",
    "under_journald",
]

OWN_LOGGERS = "twin"  # our loggers are twin.agent..., twin.collector..., twin.connector...
THIRD_PARTY = ("pymodbus", "asyncua", "grpc", "urllib3", "influxdb_client", "aiosqlite", "aiohttp", "paho")
THIRD_PARTY_INTERVAL_S = 60.0
# sd-daemon(3): SD_CRIT <2>, SD_ERR <3>, SD_WARNING <4>, SD_INFO <6>, SD_DEBUG <7>
JOURNAL_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}
FOLD = " | "


def under_journald(stream: TextIO | None = None) -> bool:
    """True when `stream` (stderr) is the journal stream systemd connected: `JOURNAL_STREAM` is its
    `device:inode`. A child whose stderr was redirected inherits the variable; it must not count."""
    value = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        st = os.fstat((stream or sys.stderr).fileno())
    except (OSError, ValueError):
        return False
    return (st.st_dev, st.st_ino) == (int(device), int(inode))


def journal_priority(levelno: int) -> int:
    for level in sorted(JOURNAL_PRIORITY, reverse=True):
        if levelno >= level:
            return JOURNAL_PRIORITY[level]
    return JOURNAL_PRIORITY[logging.DEBUG]


class JournalFormatter(logging.Formatter):
    """`<priority>LEVEL logger: message`, everything (traceback included) on one line."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        lines = [line for line in text.splitlines() if line.strip()]
        return f"<{journal_priority(record.levelno)}>" + FOLD.join(lines)


class RateLimiter:
    """At most one event per key per `interval_s`; says how many were held back since the last one."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic, max_keys: int = 10_000) -> None:
        self.interval_s, self._clock, self._max_keys = interval_s, clock, max_keys
        self._last: dict[object, float] = {}
        self._suppressed: dict[object, int] = {}
        self._lock = threading.Lock()  # library threads (paho, prometheus) log too

    def admit(self, key: object) -> int | None:
        """None when the event is suppressed, else how many similar ones were suppressed before it."""
        with self._lock:
            now = self._clock()
            last = self._last.get(key)
            if last is not None and now - last < self.interval_s:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return None
            if len(self._last) >= self._max_keys:
                self._last.clear()
                self._suppressed.clear()
            self._last[key] = now
            return self._suppressed.pop(key, 0)


class RateLimitedLog:
    """At most one warning per key per `interval_s`; the next one says how many were suppressed."""

    def __init__(self, logger: logging.Logger, interval_s: float,
                 clock: Callable[[], float] = time.monotonic, max_keys: int = 10_000) -> None:
        self._logger = logger
        self._interval_s = interval_s
        self._limiter = RateLimiter(interval_s, clock, max_keys)

    def warning(self, key: str, message: str) -> bool:
        """Log `message` unless `key` was logged less than `interval_s` ago; True if logged."""
        suppressed = self._limiter.admit(key)
        if suppressed is None:
            return False
        if suppressed:
            message += f" ({suppressed} similar suppressed in the last {self._interval_s:g}s)"
        self._logger.warning("%s", message)
        return True


_DIGITS = re.compile(r"\d+")


class ThirdPartyRateLimit(logging.Filter):
    """Rate-limits records of loggers that are not ours, by logger, level and message shape
    (the message with its numbers blanked, so "attempt 3" and "attempt 4" are one shape)."""

    def __init__(self, interval_s: float = THIRD_PARTY_INTERVAL_S, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._limiter = RateLimiter(interval_s, clock, max_keys=1000)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == OWN_LOGGERS or record.name.startswith(OWN_LOGGERS + "."):
            return True
        message = record.getMessage()
        suppressed = self._limiter.admit((record.name, record.levelno, _DIGITS.sub("#", message)[:200]))
        if suppressed is None:
            return False
        if suppressed:
            record.msg, record.args = (f"{message} ({suppressed} similar suppressed in the last "
                                       f"{self._limiter.interval_s:g}s)"), None
        return True


def setup_logging(level: str = "info", stream: TextIO | None = None) -> None:
    stream = stream or sys.stderr
    journal = under_journald(stream)
    handler = logging.StreamHandler(stream)
    # The journal adds its own timestamp; elsewhere we print one.
    fmt = "%(levelname)s %(name)s: %(message)s"
    handler.setFormatter(JournalFormatter(fmt) if journal else logging.Formatter("%(asctime)s " + fmt))
    handler.addFilter(ThirdPartyRateLimit())
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler], force=True)
    for noisy in THIRD_PARTY:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    logging.captureWarnings(True)  # warnings.warn() becomes one record like the rest
    if journal:
        sys.excepthook = _log_uncaught
        threading.excepthook = _log_uncaught_in_thread


def _log_uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, tb)
        return
    logging.getLogger("twin").critical("uncaught exception", exc_info=(kind, exc, tb))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None:
        return
    name = args.thread.name if args.thread is not None else "?"
    logging.getLogger("twin").critical("uncaught exception in thread %s", name,
                                       exc_info=(args.exc_type, args.exc_value, args.exc_traceback))
