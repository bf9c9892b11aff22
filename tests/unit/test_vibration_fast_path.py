"""The fast analysis path gives the indicators the straightforward code gave (recorded before it was made fast).

tests/cases/vibration_indicators_reference/expected.json was written by
`python -m tests.unit.vibration_reference_signals` before the line search and the local median were
vectorised and single precision was used: every indicator, the diagnosis text and the averaged
diagnosis must come out the same (floats to 1e-9 relative: summation order may differ in the last bit).
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from agent.analytics.envelope import MIN_BACKGROUND_BINS, _local_medians
from agent.analytics.vibration import _line_rms, _lines_rms, _plan
from tests.unit.vibration_reference_signals import EXPECTED, indicators

RECORDED: dict[str, Any] = json.loads(EXPECTED.read_text(encoding="utf-8"))


def _same(now: Any, then: Any, where: str) -> None:
    if isinstance(then, float) or isinstance(now, float):
        assert math.isclose(float(now), float(then), rel_tol=1e-9, abs_tol=1e-9), f"{where}: {now} != {then}"
    elif isinstance(then, list | tuple):
        assert len(now) == len(then), f"{where}: {now} != {then}"
        for i, (a, b) in enumerate(zip(now, then, strict=True)):
            _same(a, b, f"{where}[{i}]")
    elif isinstance(then, dict):
        assert set(now) == set(then), f"{where}: keys {sorted(now)} != {sorted(then)}"
        for key in then:
            _same(now[key], then[key], f"{where}.{key}")
    else:
        assert now == then, f"{where}: {now!r} != {then!r}"


@pytest.fixture(scope="module")
def computed() -> dict[str, Any]:
    return json.loads(json.dumps(indicators()))  # the same JSON round trip as the recording


@pytest.mark.parametrize("case", sorted(RECORDED))
def test_indicators_are_unchanged(computed: dict[str, Any], case: str) -> None:
    _same(computed[case], RECORDED[case], case)


# --- the vectorised pieces against one-at-a-time references --------------------------------------------------


def test_lines_rms_at_once_equals_one_line_at_a_time() -> None:
    rng = np.random.default_rng(5)
    plan = _plan(8192, 12800.0)
    for trial in range(20):
        power = rng.exponential(1.0, len(plan.freqs)) * (1 + 50 * (rng.random(len(plan.freqs)) > 0.995))
        hz = np.concatenate((rng.uniform(-5, 6400, 30), [0.0, 0.5, 3.0, 6398.0, 6400.0]))
        search = rng.uniform(0.1, 20, len(hz))
        rms, is_line = _lines_rms(power, plan.velocity_weight, plan.df, hz, search)
        for i in range(len(hz)):
            one = _line_rms(power, plan.velocity_weight, plan.df, float(hz[i]), float(search[i]))
            assert (float(rms[i]), bool(is_line[i])) == one, (trial, hz[i], search[i])


def test_local_medians_equal_a_window_by_window_median() -> None:
    rng = np.random.default_rng(6)
    df = 1.5625
    amps = rng.exponential(1.0, (3, 400))
    freqs = np.concatenate((rng.uniform(-10, 700, 40), [0.0, 5.0, 620.0, 624.0]))
    got = _local_medians(amps, df, freqs, 15.0)
    for s in range(3):
        for j, f in enumerate(freqs):
            half = max(min(15.0, 0.5 * abs(f)), MIN_BACKGROUND_BINS * df)
            lo = max(int(np.rint(f / df)) - int(np.rint(half / df)), 1)
            hi = min(int(np.rint(f / df)) + int(np.rint(half / df)) + 1, 400)
            if f <= 0 or hi - lo < 2 * MIN_BACKGROUND_BINS:
                assert got[s, j] == np.inf
            else:
                window = np.sort(amps[s, lo:hi])
                assert got[s, j] == window[(hi - lo) // 2]  # the upper median for an even width
