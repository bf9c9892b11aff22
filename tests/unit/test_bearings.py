"""Bearing defect frequencies: geometry formulas and the catalogue against published values."""

from __future__ import annotations

import math

import pytest

from agent.analytics.bearings import CATALOGUE, BearingDefects, BearingGeometry, bearing_defects, lookup


def close(value: float, expected: float, rel: float = 0.005) -> bool:
    return math.isclose(value, expected, rel_tol=rel)


def test_6205_matches_the_cwru_published_multipliers() -> None:
    d = lookup("6205-2RS")
    assert close(d.bpfo, 3.5848) and close(d.bpfi, 5.4152) and close(d.bsf, 2.357) and close(d.ftf, 0.3983)


def test_6203_matches_the_cwru_published_multipliers() -> None:
    d = lookup("6203-2RS")
    # CWRU lists 2 x BSF ("rolling element") = 3.9874 for the fan-end bearing.
    assert close(d.bpfo, 3.0530) and close(d.bpfi, 4.9469) and close(2 * d.bsf, 3.9874) and close(d.ftf, 0.3817)


@pytest.mark.parametrize("name", ["SKF 6205-2RS JEM", "6205-2rs", "  skf   6205-2RS "])
def test_lookup_accepts_vendor_words_and_case(name: str) -> None:
    assert lookup(name) == lookup("6205-2RS")


def test_unknown_model_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="6203-2RS, 6205-2RS"):
        lookup("6309")


def test_geometry_identities_hold_with_a_contact_angle() -> None:
    g = BearingGeometry(n_elements=12, element_diameter=10.0, pitch_diameter=60.0, contact_angle_deg=40.0)
    d = g.defects()
    ratio = 10.0 / 60.0 * math.cos(math.radians(40.0))
    assert close(d.bpfo + d.bpfi, 12.0, 1e-12)  # Z/2 (1 - r) + Z/2 (1 + r) = Z
    assert close(d.bpfo, 12 * d.ftf, 1e-12)  # the outer race sees every element once per cage turn
    assert close(d.bsf, 60.0 / 20.0 * (1 - ratio**2), 1e-12)


def test_defect_frequencies_in_hz() -> None:
    hz = lookup("6205-2RS").hz(1797.0)
    assert close(hz["bpfo"], 107.4, 0.002) and close(hz["bpfi"], 162.2, 0.002) and close(hz["ftf"], 11.93, 0.003)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_elements": 2, "element_diameter": 1.0, "pitch_diameter": 5.0},
        {"n_elements": 9, "element_diameter": 5.0, "pitch_diameter": 5.0},
        {"n_elements": 9, "element_diameter": 1.0, "pitch_diameter": 5.0, "contact_angle_deg": 90.0},
    ],
)
def test_impossible_geometry_is_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BearingGeometry(**kwargs)  # type: ignore[arg-type]


def test_multipliers_must_be_positive() -> None:
    with pytest.raises(ValueError, match="bpfi"):
        BearingDefects(bpfo=3.0, bpfi=0.0, bsf=2.0, ftf=0.4)


def test_bearing_defects_resolves_a_vibration_spec() -> None:
    assert bearing_defects() is None
    assert bearing_defects("6205-2RS") == lookup("6205-2RS")
    given = bearing_defects(bpfo=3.1, bpfi=4.9, bsf=2.0, ftf=0.38)
    assert given == BearingDefects(3.1, 4.9, 2.0, 0.38)
    with pytest.raises(ValueError, match="not both"):
        bearing_defects("6205-2RS", bpfo=3.1)
    with pytest.raises(ValueError, match="missing bsf, ftf"):
        bearing_defects(bpfo=3.1, bpfi=4.9)
    with pytest.raises(ValueError, match="not in the catalogue"):
        bearing_defects("6309")


def test_catalogue_entries_are_valid_geometry() -> None:
    for name, geometry in CATALOGUE.items():
        assert geometry.defects(name).model == name
