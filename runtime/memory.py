"""Resident memory of this process, for health reports and metrics."""

from __future__ import annotations

import os
import resource

__all__ = ["rss_mb"]


def rss_mb() -> float:
    """Current resident set size in MB (peak RSS where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
