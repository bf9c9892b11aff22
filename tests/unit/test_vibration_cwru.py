"""The diagnosis on real bearing records from the CWRU Bearing Data Center (../shared/data/cwru).

Covers one record of each kind, including the hard ones: a ball fault graded only partially
diagnosable by Smith & Randall (2015), an outer-race fault opposite the load zone, a clipped
record, and the healthy baseline at its original 48 kHz and decimated to 12 kHz.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from agent.analytics.bearings import lookup
from agent.analytics.vibration import analyze_block

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "cwru"

requires_cwru = pytest.mark.skipif(not DATA.is_dir() and not os.environ.get("CI"),
                                   reason=f"CWRU records not present in {DATA.resolve()} (in CI they must be)")
pytestmark = requires_cwru


@pytest.mark.parametrize(
    ("file", "channel", "fault"),
    [
        ("097_Normal_0_part1.npz", "de", "normal"),
        ("097_Normal_0_part1.npz", "de_12k", "normal"),
        ("105_IR007_0.npz", "de", "inner_race"),
        ("156_OR007at12_0.npz", "de", "outer_race"),
        ("236_OR021at6_2.npz", "de", "outer_race"),
        ("187_B014_2.npz", "de", "ball"),
    ],
)
def test_record_is_diagnosed(file: str, channel: str, fault: str) -> None:
    with np.load(DATA / file, allow_pickle=False) as data:
        x = data[channel]
        fs = float(data["fs_12k"] if channel.endswith("_12k") else data["fs"])
        rpm = float(data["rpm"])
    ind = analyze_block(x, fs, rpm=rpm, rpm_source="config", bearing=lookup("6205-2RS"))
    assert ind.fault == fault, ind.diagnosis
    if fault == "normal":
        assert ind.health >= 90
    else:
        assert ind.confidence >= 0.5 and ind.health < 70
