"""Bearing diagnosis from envelope evidence: is there a defect, where, and how sure (pure, no I/O).

Two questions, answered separately:

* **Is there a bearing defect?** A defect family is present when its fundamental and one harmonic or
  sideband stand SIGNIFICANT_DB (12 dB) above the local median of an envelope spectrum: noise does
  that with a probability of about 2e-5 per bin (agent.analytics.envelope). How far above sets the
  `severity` (0.5 at 12 dB to 1.0 at 22 dB), which caps the health score; it says how strong the
  defect is, not how sure the diagnosis is.
* **Where is it?** Only lines that one location family explains and no other can tell locations
  apart (agent.analytics.bearing_search.discriminating_lines). Each family's location score is the
  mean height of its discriminating lines in the envelope spectrum where it is highest; the
  location is named when the leading family is present and leads the next one by at least
  `z` times the scatter of that margin between consecutive blocks of one machine
  (`LocationCalibration.margin_sigma_db`). Otherwise the answer is `"bearing"`: a bearing defect
  whose location the evidence does not separate, with the candidate locations and their lines.

Cage-rate lines (FTF, its harmonics, 1x +/- FTF) and rolling-element lines that a cage harmonic
could be are read as a damaged rolling element carried by the cage through the load zone, but only
when no race family is present: balls of slightly different size passing a race defect modulate it
at the cage rate too. They point to the cage itself instead when FTF is also a line in the
vibration spectrum (a worn cage is a rotating mass and geometry fault) and the demodulated band
carries no impacts (spectral kurtosis <= IMPULSIVE_SK).

**Confidence is a probability, calibrated by leave-one-bearing-out cross-validation**
(bench/vibration_eval.py): a located answer's confidence is `locate_ceiling * Phi(margin / sigma)`
(Phi: the normal distribution function: how unlikely the scatter is to have produced the lead),
an undetermined answer's is `detect_ceiling`; both are scaled by `estimated_speed_ceiling` when the
shaft speed had to be estimated from the spectrum. The ceilings are Laplace's rule of succession on the
records the calibration saw ((right + 1) / (answers + 2)): after 16 of 16 records located right,
no answer can honestly claim more than 17/18. `CALIBRATION` is the fit on every development
record; the cross-validated figures refit it on each fold's training bearings.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from agent.analytics.bearing_search import (
    BEARING_FAMILIES,
    DEFAULT_SLIP_TOLERANCE,
    LOCATION_FAMILIES,
    BearingFindings,
    discriminating_lines,
)
from agent.analytics.bearings import BearingDefects
from agent.analytics.envelope import SIGNIFICANT_DB, FamilyEvidence

__all__ = [
    "BEARING_ANSWERS",
    "CALIBRATION",
    "IMPULSIVE_SK",
    "SECONDARY_CAP",
    "UNDETERMINED",
    "BearingAnswer",
    "DiagnosisEntry",
    "FamilyScore",
    "LocationCalibration",
    "LocationEvidence",
    "bearing_answer",
    "fit_location_calibration",
    "location_evidence",
    "margin_scatter_db",
    "merge_evidence",
    "severity_of",
]

UNDETERMINED = "bearing"  # the answer when the evidence does not separate the locations
BEARING_ANSWERS = (*BEARING_FAMILIES, UNDETERMINED)
# Band spectral kurtosis above which the envelope carries impacts. Amplitude modulation alone keeps
# a Gaussian carrier at or below 2 (100 % sinusoidal modulation: 1.9; a 50 % on/off gate: 2).
IMPULSIVE_SK = 3.0
SECONDARY_CAP = 0.45  # a candidate or second reading beside the answer is only a possibility
CAGE_ALTERNATIVE = 0.6  # weight of the less likely reading of cage-rate lines (ball vs cage)
SEVERITY_SPAN_DB = 10.0  # severity rises from 0.5 at SIGNIFICANT_DB to 1.0 this much higher
_NAMES = {"outer_race": "outer race", "inner_race": "inner race", "ball": "rolling element", "cage": "cage"}


@dataclass(frozen=True, slots=True)
class DiagnosisEntry:
    fault: str
    confidence: float
    evidence: str


@dataclass(frozen=True, slots=True)
class LocationCalibration:
    """What cross-validation fitted: how far a location must lead, and how sure any answer can be.

    margin_sigma_db: pooled scatter (standard deviation) of the true family's location margin
      between consecutive 0.68 s blocks of one record; z: a location is named when it leads by
      z sigmas (a policy: 1 sigma = the lead survives block-to-block scatter 84 % of the time).
    locate_ceiling / detect_ceiling: (right + 1) / (answers + 2) over the calibration records
      answered with a location / with any bearing fault.
    estimated_speed_ceiling: (right + 1) / (estimates + 2) over the calibration records' shaft
      speeds estimated from the spectrum, right meaning within the slip tolerance: defect lines
      found around a wrong speed are coincidences, so every bearing answer made with an
      estimated speed is scaled by it.
    """

    margin_sigma_db: float
    locate_ceiling: float
    detect_ceiling: float
    estimated_speed_ceiling: float = 1.0
    z: float = 1.0
    records: int = 0  # how many whole records the ceilings rest on

    def __post_init__(self) -> None:
        if not (self.margin_sigma_db > 0 and 0 < self.locate_ceiling <= 1 and 0 < self.detect_ceiling <= 1
                and 0 < self.estimated_speed_ceiling <= 1 and self.z >= 0):
            raise ValueError(f"invalid location calibration {self!r}")

    def location_probability(self, margin_db: float) -> float:
        """Probability that the leading family is the defect's location, given its lead in dB."""
        return self.locate_ceiling * _phi(margin_db / self.margin_sigma_db)


# Fitted by `python bench/vibration_eval.py --fit` on all 18 development analyses (16 seeded-fault
# records and the normal record at 48 and 12 kHz, drive-end channel); the test
# tests/unit/test_vibration_cwru.py checks that this is what the fit gives.
CALIBRATION = LocationCalibration(margin_sigma_db=2.68, locate_ceiling=0.944, detect_ceiling=0.944,
                                  estimated_speed_ceiling=0.5, records=18)


@dataclass(frozen=True, slots=True)
class FamilyScore:
    """One defect family across all envelope spectra (and sensors) looked at.

    location_db: mean height (dB, negatives as 0) of its discriminating lines in the spectrum where
      that is highest; 0 for a family without discriminating lines.
    present / strength_db / evidence: from the spectrum where it is present and strongest.
    sensor: the sensor that spectrum came from ("" for a single sensor).
    """

    fault: str
    location_db: float
    present: bool
    strength_db: float
    evidence: FamilyEvidence
    sensor: str = ""


@dataclass(frozen=True, slots=True)
class LocationEvidence:
    """The bearing evidence of a block (or an average, or several sensors) that the answer rests on."""

    families: dict[str, FamilyScore]
    contenders: tuple[str, ...]  # location families with discriminating lines
    impulsive: bool  # an envelope band carries impacts (spectral kurtosis > IMPULSIVE_SK)
    cage_line: bool  # FTF is a line in the vibration spectrum itself
    shaft_hz: float  # shaft rate the families were searched around
    given_shaft_hz: float  # shaft rate the analysis was given
    sensors: tuple[str, ...] = ()
    speed_estimated: bool = False  # the shaft rate was estimated from the spectrum, not given
    parts: tuple[LocationEvidence, ...] = ()  # merged evidence: each sensor's own

    def margin_db(self, fault: str) -> float:
        """How far `fault` leads the other location families (negative: it trails).

        For a family that is not a contender (a rolling element located through cage-rate
        lines), its reading strength against the best contender's location score.
        """
        rivals = [self.families[f].location_db for f in self.contenders if f != fault]
        best_rival = max(rivals, default=0.0)
        if fault in self.contenders:
            return self.families[fault].location_db - best_rival
        reading = max((self.families[f].strength_db for f in (fault, "cage") if f in self.families), default=0.0)
        return reading - best_rival


@dataclass(frozen=True, slots=True)
class BearingAnswer:
    """The bearing diagnosis: entries (answer first, then possibilities), and the defect's severity."""

    fault: str
    confidence: float
    severity: float
    margin_db: float
    entries: tuple[DiagnosisEntry, ...]


def _phi(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def severity_of(strength_db: float) -> float:
    """0.5 for a line pair just at SIGNIFICANT_DB, rising to 1.0 SEVERITY_SPAN_DB higher."""
    return 0.5 + 0.5 * float(min(max((strength_db - SIGNIFICANT_DB) / SEVERITY_SPAN_DB, 0.0), 1.0))


def _location_db(ev: FamilyEvidence, lines: tuple[int, ...]) -> float:
    if not lines:
        return 0.0
    heights = [max(ev.lines[i].snr_db, 0.0) for i in lines]
    if len(heights) < 8:  # what numpy.mean gives, without its overhead: its pairwise sum is sequential below 8
        return sum(heights) / len(heights)
    return float(np.mean(heights))


def location_evidence(findings: BearingFindings, defects: BearingDefects, *, cage_line: bool,
                      given_shaft_hz: float, tolerance: float = DEFAULT_SLIP_TOLERANCE,
                      sensor: str = "", lines: Mapping[str, tuple[int, ...]] | None = None,
                      speed_estimated: bool = False) -> LocationEvidence:
    """Score every family of one sensor's findings (every envelope spectrum it has).

    lines: which of each family's lines (indices into `defect_families`) count for its location;
    default `discriminating_lines` (another choice is for comparing methods, bench/vibration_eval.py).
    """
    disc = discriminating_lines(defects, tolerance) if lines is None else lines
    per_spectrum = findings.per_spectrum or (findings.families,)
    families: dict[str, FamilyScore] = {}
    for fault in BEARING_FAMILIES:
        options = [spectrum[fault] for spectrum in per_spectrum]
        shown = max(options, key=lambda ev: (ev.present, ev.strength_db))
        location = max(_location_db(ev, disc.get(fault, ())) for ev in options)
        families[fault] = FamilyScore(fault, location, shown.present, shown.strength_db, shown, sensor)
    contenders = tuple(f for f in LOCATION_FAMILIES if disc.get(f))
    impulsive = max((es.kurtosis for es in findings.spectra), default=0.0) > IMPULSIVE_SK
    return LocationEvidence(families, contenders, impulsive, cage_line, findings.shaft_hz, given_shaft_hz,
                            (sensor,) if sensor else (), speed_estimated)


def merge_evidence(evidences: Sequence[LocationEvidence]) -> LocationEvidence:
    """Several sensors on one bearing as one: per family the highest location score, present in any.

    A second sensor is a second opinion: a line clearer there counts, and when the sensors each
    locate a different family on their own, the answer is undetermined (`bearing_answer`).
    """
    if not evidences:
        raise ValueError("no evidence to merge")
    first = evidences[0]
    families: dict[str, FamilyScore] = {}
    for fault in first.families:
        scores = [ev.families[fault] for ev in evidences]
        shown = max(scores, key=lambda s: (s.present, s.strength_db))
        families[fault] = dataclasses.replace(shown, location_db=max(s.location_db for s in scores))
    sensors = tuple(s for ev in evidences for s in ev.sensors)
    parts = tuple(part for ev in evidences for part in (ev.parts or (ev,)))
    return LocationEvidence(families, first.contenders, any(ev.impulsive for ev in evidences),
                            any(ev.cage_line for ev in evidences), first.shaft_hz, first.given_shaft_hz, sensors,
                            any(ev.speed_estimated for ev in evidences), parts)


def _describe(score: FamilyScore, fault: str, several_sensors: bool) -> str:
    ev = score.evidence
    support = sorted((ln for ln in ev.lines[1:] if ln.snr_db >= SIGNIFICANT_DB), key=lambda ln: -ln.snr_db)
    shown = [ev.lines[0], *support[:3]]
    parts = ", ".join(f"{ln.label} {ln.hz:.1f} Hz +{ln.snr_db:.0f} dB" for ln in shown)
    via = " (cage-rate modulation)" if ev.fault == "cage" and fault == "ball" else ""
    where = f"{ev.source} on {score.sensor}" if several_sensors and score.sensor else ev.source
    return f"{_NAMES[fault]} defect{via}: {parts} above envelope background ({where})"


def bearing_answer(evidence: LocationEvidence, calibration: LocationCalibration = CALIBRATION
                   ) -> BearingAnswer | None:
    """The bearing diagnosis, or None when no defect family is present.

    The answer entry comes first: a located defect (`outer_race`, `inner_race`, `ball`, `cage`)
    or `UNDETERMINED` ("bearing") listing the candidates; then the candidates or the other reading
    as possibilities (confidence at most SECONDARY_CAP).
    """
    fam = evidence.families
    several = len(evidence.sensors) > 1
    own: dict[str, str] = {}  # sensor -> the location it names on its own (merged evidence only)
    for part in evidence.parts:
        alone = bearing_answer(part, calibration)
        if alone is not None and alone.fault != UNDETERMINED:
            own[", ".join(part.sensors) or "?"] = alone.fault
    disagree = len(set(own.values())) > 1
    contest = [f for f in evidence.contenders if fam[f].present]
    if contest:
        ranked = sorted(evidence.contenders, key=lambda f: -fam[f].location_db)
        leader = ranked[0]
        runner = ranked[1] if len(ranked) > 1 else None
        margin = evidence.margin_db(leader)
        located = fam[leader].present and margin >= calibration.z * calibration.margin_sigma_db and not disagree
        strongest = max((fam[f] for f in LOCATION_FAMILIES if fam[f].present), key=lambda s: s.strength_db)
        others = [f for f in ranked[1:] if fam[f].present]
        alternative_weight = 1.0
        readings = [leader, *others]
    else:
        ball, cage = fam["ball"], fam["cage"]
        if not (ball.present or cage.present):
            return None
        cage_first = cage.present and evidence.cage_line and not evidence.impulsive
        leader = "cage" if cage_first else "ball"
        margin = evidence.margin_db("ball")
        located = margin >= calibration.z * calibration.margin_sigma_db and not disagree
        strongest = max((s for s in (ball, cage) if s.present), key=lambda s: s.strength_db)
        others = ["ball" if cage_first else "cage"] if cage.present else []
        alternative_weight = CAGE_ALTERNATIVE
        readings = [leader, *others]
        runner = max(evidence.contenders, key=lambda f: fam[f].location_db, default=None)
    severity = severity_of(strongest.strength_db)
    speed_note = ""
    if evidence.given_shaft_hz > 0 and abs(evidence.shaft_hz / evidence.given_shaft_hz - 1) > 0.002:
        speed_note = f"; shaft {evidence.shaft_hz * 60:.0f} r/min from envelope lines"
    speed_factor = calibration.estimated_speed_ceiling if evidence.speed_estimated else 1.0
    p_lead = calibration.location_probability(margin) * speed_factor

    def shown_score(fault: str) -> FamilyScore:
        if fault == "ball" and fault not in evidence.contenders and fam["cage"].strength_db > fam["ball"].strength_db:
            return fam["cage"]  # the rolling element read through its cage-rate lines
        return fam[fault]

    entries: list[DiagnosisEntry] = []
    if located:
        confidence = round(p_lead, 3)
        lead_text = _describe(shown_score(leader), leader, several)
        if runner is not None and leader in evidence.contenders:
            lead_text += (f"; its own lines lead {_NAMES[runner]} by {margin:.0f} dB "
                          f"(block-to-block scatter {calibration.margin_sigma_db:.1f} dB)")
        entries.append(DiagnosisEntry(leader, confidence, lead_text + speed_note))
        for fault in others:  # other present families: the cage reading of the same lines, or a weaker family
            if alternative_weight < 1:
                share, prefix = alternative_weight, "possible "
            else:
                share = 1.0 - _phi(margin / calibration.margin_sigma_db)
                prefix = "also present, less likely the location: "
            entries.append(DiagnosisEntry(fault, round(min(confidence * share, SECONDARY_CAP), 3),
                                          prefix + _describe(shown_score(fault), fault, several) + speed_note))
        return BearingAnswer(leader, confidence, severity, margin, tuple(entries))
    candidates = list(dict.fromkeys([*readings, *own.values(), *([runner] if runner else [])]))
    share = {leader: _phi(margin / calibration.margin_sigma_db)}
    for fault in candidates[1:]:
        share[fault] = (1.0 - share[leader]) / (len(candidates) - 1)
    detected = calibration.detect_ceiling * speed_factor
    confidence = round(detected, 3)
    listed = " or ".join(f"{_NAMES[f]} ({share[f]:.0%}: {_describe(shown_score(f), f, several).split(': ', 1)[1]})"
                         for f in candidates)
    if disagree:
        why = "the sensors disagree: " + ", ".join(f"{sensor} alone names the {_NAMES[fault]}"
                                                   for sensor, fault in own.items())
    elif fam[leader].present or leader not in evidence.contenders:
        why = (f"{_NAMES[leader]} leads by {margin:.1f} dB, within the block-to-block scatter "
               f"({calibration.z * calibration.margin_sigma_db:.1f} dB)")
    else:
        why = f"{_NAMES[leader]} lines stand highest but not as a present family (fundamental and a partner line)"
    entries.append(DiagnosisEntry(UNDETERMINED, confidence,
                                  f"bearing fault, location undetermined: {listed}; {why}{speed_note}"))
    for fault in candidates:
        entries.append(DiagnosisEntry(fault, round(min(detected * share[fault], SECONDARY_CAP), 3),
                                      "candidate " + _describe(shown_score(fault), fault, several) + speed_note))
    return BearingAnswer(UNDETERMINED, confidence, severity, margin, tuple(entries))


def margin_scatter_db(block_margins: Mapping[str, Sequence[float]]) -> float:
    """Pooled within-record standard deviation of the true family's margin across blocks.

    Records with fewer than 3 blocks are skipped. ValueError if none is left.
    """
    variances = [(len(m) - 1, float(np.var(m, ddof=1))) for m in block_margins.values() if len(m) >= 3]
    if not variances:
        raise ValueError("need at least one record with 3 or more blocks to measure the margin scatter")
    dof = sum(d for d, _ in variances)
    return math.sqrt(sum(d * v for d, v in variances) / dof)


def fit_location_calibration(block_margins: Mapping[str, Sequence[float]],
                             records: Sequence[tuple[str, LocationEvidence | None]], *,
                             speed_estimates: Sequence[tuple[float, float]] = (),
                             tolerance: float = DEFAULT_SLIP_TOLERANCE, z: float = 1.0) -> LocationCalibration:
    """The calibration from training records only (the cross-validation refits it per fold).

    block_margins: per faulty record, `LocationEvidence.margin_db(true fault)` of each of its short
      blocks; records: (true fault or "normal", whole-record evidence or None without a bearing
      finding); speed_estimates: (estimated, actual) shaft speeds of whole records analysed without
      a speed. The margin scatter comes from the blocks; the ceilings count the whole records'
      answers under that scatter: located ones that name the true fault, and bearing answers on
      records that really have a bearing defect; and the estimates within `tolerance`.
    """
    sigma = margin_scatter_db(block_margins)
    provisional = LocationCalibration(sigma, 1.0, 1.0, z)
    located = located_right = detected = detected_right = 0
    for truth, evidence in records:
        answer = bearing_answer(evidence, provisional) if evidence is not None else None
        if answer is None:
            continue
        detected += 1
        detected_right += truth != "normal"
        if answer.fault != UNDETERMINED:
            located += 1
            located_right += answer.fault == truth
    speed_right = sum(abs(estimated / actual - 1) <= tolerance for estimated, actual in speed_estimates)
    return LocationCalibration(
        margin_sigma_db=round(sigma, 2),
        locate_ceiling=round((located_right + 1) / (located + 2), 3),
        detect_ceiling=round((detected_right + 1) / (detected + 2), 3),
        estimated_speed_ceiling=round((speed_right + 1) / (len(speed_estimates) + 2), 3),
        z=z, records=len(records),
    )
