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

import pytest

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
