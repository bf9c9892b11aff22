"""The bearing diagnosis rules on hand-built evidence: located, undetermined, calibrated confidence, two sensors."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from agent.analytics.bearing_search import defect_families, discriminating_lines
from agent.analytics.bearings import lookup
from agent.analytics.diagnosis import (
    SECONDARY_CAP,
    UNDETERMINED,
    FamilyScore,
    LocationCalibration,
    LocationEvidence,
    bearing_answer,
    fit_location_calibration,
    location_evidence,
    margin_scatter_db,
    merge_evidence,
)
from agent.analytics.envelope import FamilyEvidence, LineEvidence
from agent.analytics.vibration import analyze_block, analyze_block_evidence, with_bearing_evidence
from tests.unit.test_vibration import FR, FS, impacts, noise

BEARING = lookup("6205-2RS")
CAL = LocationCalibration(margin_sigma_db=2.5, locate_ceiling=0.9, detect_ceiling=0.95, estimated_speed_ceiling=0.5)
DISC = discriminating_lines(BEARING)


def family(fault: str, heights: dict[str, float], *, source: str = "band 2000-4000 Hz") -> FamilyEvidence:
    """A family's evidence with the given line heights (dB) by label, 0 dB for the others."""
    base, specs = defect_families(BEARING, FR)[fault]
    lines = tuple(LineEvidence(spec.label, spec.order * base + spec.offset_hz, heights.get(spec.label, 0.0))
                  for spec in specs)
    return FamilyEvidence(fault, base, lines, source)


def evidence(heights: dict[str, dict[str, float]], *, sensor: str = "", cage_line: bool = False,
             impulsive: bool = True, speed_estimated: bool = False) -> LocationEvidence:
    families = {}
    for fault in ("outer_race", "inner_race", "ball", "cage"):
        ev = family(fault, heights.get(fault, {}))
        location = float(np.mean([max(ev.lines[i].snr_db, 0) for i in DISC[fault]])) if DISC.get(fault) else 0.0
        families[fault] = FamilyScore(fault, location, ev.present, ev.strength_db, ev, sensor)
    return LocationEvidence(families, ("outer_race", "inner_race"), impulsive, cage_line, FR, FR,
                            (sensor,) if sensor else (), speed_estimated)


OUTER = {"BPFO": 25.0, "2xBPFO": 22.0, "3xBPFO": 20.0}
INNER = {"BPFI": 25.0, "3xBPFI": 22.0, "2xBPFI": 20.0, "BPFI-1x": 18.0, "BPFI+1x": 17.0}


# --- which lines can tell the locations apart ------------------------------------------------------------


def test_discriminating_lines_leave_out_lines_another_family_explains() -> None:
    # 3 x BPFO (10.75 x shaft) is 0.7 % from 2 x BPFI (10.83 x): a defect of either makes that line.
    assert DISC["outer_race"] == (0, 1) and DISC["inner_race"] == (0, 2)
    # 2 x BSF = 11.83 FTF, 4 x BSF = 23.67 FTF: cage-rate lines could be them -> read via the cage rule.
    assert DISC["ball"] == ()
    # With no slip tolerance nothing coincides exactly, so every harmonic discriminates.
    exact = discriminating_lines(BEARING, 0.0)
    assert exact["outer_race"] == (0, 1, 2) and exact["inner_race"] == (0, 1, 2)


# --- the answer: located, undetermined, none --------------------------------------------------------------


def test_two_families_equally_strong_is_a_bearing_fault_with_both_candidates() -> None:
    answer = bearing_answer(evidence({"outer_race": OUTER, "inner_race": INNER}), CAL)
    assert answer is not None and answer.fault == UNDETERMINED
    assert answer.margin_db == pytest.approx(0.0, abs=1e-9)
    first, *candidates = answer.entries
    assert first.fault == UNDETERMINED and first.confidence == pytest.approx(CAL.detect_ceiling)
    assert "bearing fault, location undetermined" in first.evidence
    assert "outer race (50%" in first.evidence and "inner race (50%" in first.evidence
    assert "BPFO" in first.evidence and "BPFI" in first.evidence
    assert {c.fault for c in candidates} == {"outer_race", "inner_race"}
    assert all(c.confidence <= SECONDARY_CAP and c.evidence.startswith("candidate ") for c in candidates)
    assert answer.severity == 1.0  # both families stand 20 dB or more out: a strong defect, wherever it is


def test_a_clear_lead_names_the_location_with_its_calibrated_confidence() -> None:
    weak_inner = {"BPFI": 13.0, "3xBPFI": 12.0, "2xBPFI": 20.0, "BPFI-1x": 12.5}
    answer = bearing_answer(evidence({"outer_race": OUTER, "inner_race": weak_inner}), CAL)
    assert answer is not None and answer.fault == "outer_race"
    margin = (25 + 22) / 2 - (13 + 12) / 2
    assert answer.margin_db == pytest.approx(margin)
    expected = CAL.locate_ceiling * 0.5 * (1 + math.erf(margin / CAL.margin_sigma_db / math.sqrt(2)))
    assert answer.confidence == pytest.approx(expected, abs=1e-3)
    assert answer.entries[1].fault == "inner_race" and answer.entries[1].confidence <= SECONDARY_CAP
    assert "lead inner race by 11 dB" in answer.entries[0].evidence


@pytest.mark.parametrize(("lead_db", "located"), [(2.4, False), (2.6, True)])
def test_a_location_is_named_only_beyond_z_sigmas(lead_db: float, located: bool) -> None:
    inner = {"BPFI": 22.0 - lead_db, "3xBPFI": 22.0 - lead_db, "BPFI-1x": 15.0}
    outer = {"BPFO": 22.0, "2xBPFO": 22.0}
    answer = bearing_answer(evidence({"outer_race": outer, "inner_race": inner}), CAL)
    assert answer is not None and (answer.fault == "outer_race") is located
    assert answer.fault in ("outer_race", UNDETERMINED)


def test_leading_lines_of_a_family_that_is_not_present_do_not_name_it() -> None:
    """Inner race present (fundamental and sidebands); outer's own lines higher but without a partner line."""
    outer = {"BPFO": 11.0, "2xBPFO": 11.5}
    inner = {"BPFI": 14.0, "3xBPFI": 3.0, "BPFI-1x": 13.0}
    answer = bearing_answer(evidence({"outer_race": outer, "inner_race": inner}), CAL)
    assert answer is not None and answer.fault == UNDETERMINED


def test_cage_rate_lines_alone_are_a_rolling_element_and_beside_a_race_defect_are_not() -> None:
    cage = {"FTF": 18.0, "3xFTF": 17.0, "1x-FTF": 14.0}
    alone = bearing_answer(evidence({"cage": cage}), CAL)
    assert alone is not None and alone.fault == "ball"
    assert "cage-rate modulation" in alone.entries[0].evidence
    assert [e.fault for e in alone.entries] == ["ball", "cage"]
    smooth = bearing_answer(evidence({"cage": cage}, cage_line=True, impulsive=False), CAL)
    assert smooth is not None and smooth.fault == "cage"
    with_race = bearing_answer(evidence({"cage": cage, "outer_race": OUTER}), CAL)
    assert with_race is not None and with_race.fault == "outer_race"


def test_nothing_present_is_no_answer() -> None:
    assert bearing_answer(evidence({"outer_race": {"BPFO": 11.9, "2xBPFO": 30.0}}), CAL) is None


def test_an_estimated_speed_scales_every_bearing_answer() -> None:
    given = bearing_answer(evidence({"outer_race": OUTER}), CAL)
    guessed = bearing_answer(evidence({"outer_race": OUTER}, speed_estimated=True), CAL)
    assert given is not None and guessed is not None and guessed.fault == given.fault
    assert guessed.confidence == pytest.approx(given.confidence * CAL.estimated_speed_ceiling, abs=1e-3)
    tie = bearing_answer(evidence({"outer_race": OUTER, "inner_race": INNER}, speed_estimated=True), CAL)
    assert tie is not None and tie.confidence == pytest.approx(CAL.detect_ceiling * CAL.estimated_speed_ceiling)


# --- calibration -----------------------------------------------------------------------------------------


def test_margin_scatter_is_the_pooled_within_record_standard_deviation() -> None:
    rng = np.random.default_rng(3)
    margins = {f"r{i}": list(10 * i + rng.normal(0, 2.0, 40)) for i in range(6)}  # record means differ
    assert margin_scatter_db(margins) == pytest.approx(2.0, rel=0.1)
    assert margin_scatter_db({"a": [1.0, 3.0, 5.0], "b": [0.0, 0.0], "c": [2.0, 2.0, 2.0]}) == pytest.approx(
        math.sqrt((2 * 4.0 + 2 * 0.0) / 4))  # "b" has too few blocks
    with pytest.raises(ValueError, match="3 or more blocks"):
        margin_scatter_db({"a": [1.0, 2.0]})


def test_fit_counts_answers_with_laplace_and_confidence_is_monotone_in_the_lead() -> None:
    clear = evidence({"outer_race": OUTER})
    tie = evidence({"outer_race": OUTER, "inner_race": INNER})
    records = [("outer_race", clear)] * 5 + [("inner_race", clear)] + [("ball", tie), ("normal", None),
                                                                       ("normal", tie)]
    cal = fit_location_calibration({"r": [10.0, 12.0, 14.0]}, records, speed_estimates=[(1800, 1790), (3600, 1790)])
    assert cal.margin_sigma_db == pytest.approx(2.0)
    assert cal.locate_ceiling == pytest.approx((5 + 1) / (6 + 2), abs=1e-3)  # 5 of 6 located right
    assert cal.detect_ceiling == pytest.approx((7 + 1) / (8 + 2), abs=1e-3)  # 8 answers, one on a healthy record
    assert cal.estimated_speed_ceiling == pytest.approx((1 + 1) / (2 + 2), abs=1e-3)
    leads = [cal.location_probability(m) for m in np.linspace(-5, 20, 26)]
    assert all(b >= a for a, b in itertools.pairwise(leads))
    assert cal.location_probability(0.0) == pytest.approx(cal.locate_ceiling / 2)
    assert cal.location_probability(100.0) == pytest.approx(cal.locate_ceiling)
    with pytest.raises(ValueError, match="invalid location calibration"):
        LocationCalibration(margin_sigma_db=0.0, locate_ceiling=0.9, detect_ceiling=0.9)


# --- a second sensor ---------------------------------------------------------------------------------------


def test_two_sensors_that_disagree_leave_the_location_undetermined() -> None:
    de = evidence({"outer_race": OUTER}, sensor="de")
    fe = evidence({"inner_race": INNER}, sensor="fe")
    assert bearing_answer(de, CAL).fault == "outer_race"  # type: ignore[union-attr]
    both = bearing_answer(merge_evidence([de, fe]), CAL)
    assert both is not None and both.fault == UNDETERMINED
    assert " on de" in both.entries[0].evidence and " on fe" in both.entries[0].evidence
    with pytest.raises(ValueError, match="no evidence"):
        merge_evidence([])


def test_a_line_clearer_on_the_second_sensor_counts() -> None:
    de = evidence({"outer_race": {"BPFO": 11.0, "2xBPFO": 10.0}}, sensor="de")
    fe = evidence({"outer_race": {"BPFO": 18.0, "2xBPFO": 16.0}}, sensor="fe")
    assert bearing_answer(de, CAL) is None
    both = bearing_answer(merge_evidence([de, fe]), CAL)
    assert both is not None and both.fault == "outer_race" and "on fe" in both.entries[0].evidence


# --- end to end on synthetic blocks ---------------------------------------------------------------------------


def test_outer_and_inner_impacts_of_equal_strength_give_an_undetermined_location() -> None:
    load_zone = lambda t: 0.5 * (1 + math.cos(2 * math.pi * FR * t))  # noqa: E731
    outer = impacts(BEARING.bpfo * FR, seed=31) + noise(0.1, seed=32)
    inner = impacts(BEARING.bpfi * FR, seed=33, modulation=load_zone, resonance_hz=3000.0)
    results = {weight: analyze_block(outer + weight * inner, FS, rpm=FR * 60, rpm_source="config", bearing=BEARING)
               for weight in (0.0, 1.3, 1.6, 2.0, 2.5, 10.0)}
    answers = [ind.fault for ind in results.values()]
    assert answers[0] == "outer_race" and answers[-1] == "inner_race"
    undetermined = [ind for ind in results.values() if ind.fault == UNDETERMINED]
    assert undetermined, answers
    assert all(ind.health < 70 for ind in undetermined)  # a strong defect, whatever its location
    assert all({d.fault for d in ind.diagnosis} >= {UNDETERMINED, "outer_race", "inner_race"} for ind in undetermined)


def test_merging_a_second_block_keeps_the_mechanical_entries_and_never_raises_health() -> None:
    x = impacts(BEARING.bpfo * FR, seed=6) + noise(0.1, seed=7)
    de = analyze_block_evidence(x, FS, rpm=FR * 60, rpm_source="config", bearing=BEARING, sensor="de")
    fe = analyze_block_evidence(noise(0.1, seed=8), FS, rpm=FR * 60, rpm_source="config", bearing=BEARING,
                                sensor="fe")
    assert de.evidence is not None and fe.evidence is not None and fe.indicators.fault == "normal"
    merged = with_bearing_evidence(de.indicators, merge_evidence([de.evidence, fe.evidence]))
    assert merged.fault == "outer_race" and merged.health <= de.indicators.health
    assert location_evidence(de.findings, BEARING, cage_line=False, given_shaft_hz=FR).families[  # type: ignore[arg-type]
        "outer_race"].location_db == pytest.approx(de.evidence.families["outer_race"].location_db)
