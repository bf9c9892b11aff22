"""Logging setup shared by both daemons: one line per event with level and component."""

from __future__ import annotations

import logging
import os
import sys

__all__ = ["setup_logging"]


def setup_logging(level: str = "info") -> None:
    # Under systemd the journal adds its own timestamp; elsewhere we print one.
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not os.environ.get("JOURNAL_STREAM"):
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(level=getattr(logging, level.upper()), format=fmt, stream=sys.stderr, force=True)
    for noisy in ("pymodbus", "asyncua", "grpc", "urllib3", "influxdb_client", "aiosqlite"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
