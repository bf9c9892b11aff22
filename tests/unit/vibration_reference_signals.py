"""The signals whose indicators are recorded in tests/cases/vibration_indicators_reference/expected.json.

The fast path (vectorised line search, local median, single precision where it changes nothing)
must give the indicators the straightforward code gave before it: `python -m
tests.unit.vibration_reference_signals` wrote the file from that code; test_vibration_fast_path.py
compares. Deterministic: fixed seeds, fixed lengths.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from agent.analytics.averaging import EnvelopeAverager
from agent.analytics.bearings import lookup
from agent.analytics.vibration import analyze_block
from tests.unit.test_vibration import FR, FS, cage_modulated, impacts, noise, noise_with_machine_tones, velocity_tone
from tests.unit.test_vibration_average import weak_ball_fault

EXPECTED = Path(__file__).resolve().parents[1] / "cases" / "vibration_indicators_reference" / "expected.json"
BEARING = lookup("6205-2RS")


def _load_zone(t: float) -> float:
    return 0.5 * (1 + math.cos(2 * math.pi * FR * t))


def signals() -> dict[str, Callable[[], np.ndarray]]:
    return {
        "white_noise_8192": lambda: noise(0.1, seed=5, n=8192),
        "healthy_machine_8192": lambda: noise_with_machine_tones(np.random.default_rng(11), 8192),
        "outer_race_8192": lambda: impacts(BEARING.bpfo * FR, seed=6, n=8192) + noise(0.1, seed=7, n=8192),
        "outer_race_65536": lambda: impacts(BEARING.bpfo * FR, seed=6) + noise(0.1, seed=7),
        "inner_race_65536": lambda: impacts(BEARING.bpfi * FR, seed=8, modulation=_load_zone) + noise(0.1, seed=9),
        "two_races_65536": lambda: impacts(BEARING.bpfo * FR, seed=31) + noise(0.1, seed=32)
        + 1.6 * impacts(BEARING.bpfi * FR, seed=33, modulation=_load_zone),
        "ball_65536": lambda: cage_modulated(impulsive=True, seed=26),
        "cage_65536": lambda: cage_modulated(impulsive=False, seed=27),
        "unbalance_65536": lambda: velocity_tone(FR, 6.0) + velocity_tone(2 * FR, 0.5) + noise(0.02, seed=14),
        "healthy_machine_65536": lambda: noise_with_machine_tones(np.random.default_rng(12), 65536),
    }


def indicators() -> dict[str, Any]:
    """Every recorded case: analyze_block with the speed given and estimated, and an averaged window."""
    out: dict[str, Any] = {}
    for name, make in signals().items():
        x = make()
        out[f"{name}/given"] = analyze_block(x, FS, rpm=FR * 60, rpm_source="config", bearing=BEARING).as_dict()
        out[f"{name}/estimated"] = analyze_block(x, FS, rpm=None, bearing=BEARING).as_dict()
    x = weak_ball_fault(8, seed=3)
    averager = EnvelopeAverager(BEARING, blocks=8)
    for i in range(8):
        avg = averager.add(x[i * 8192:(i + 1) * 8192], FS, FR * 60)
    out["averaged_8x8192"] = {
        "fault": avg.fault, "confidence": avg.confidence, "severity": avg.severity,
        "bpfo": avg.bpfo, "bpfi": avg.bpfi, "bsf": avg.bsf, "ftf": avg.ftf,
        "diagnosis": [[d.fault, d.confidence, d.evidence] for d in avg.diagnosis],
    }
    return out


if __name__ == "__main__":
    EXPECTED.parent.mkdir(parents=True, exist_ok=True)
    EXPECTED.write_text(json.dumps(indicators(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {EXPECTED}", file=sys.stderr)
