"""Cross-validated evaluation of the bearing diagnosis on real records (CWRU Bearing Data Center .npz).

    python bench/vibration_eval.py [FOLDER] [--fit] [--methods]
                                   (default FOLDER: ../shared/data/cwru next to the repository)

**Leave one bearing out.** The records of one seeded-fault bearing (its 0-3 hp records, named
e.g. IR007_0..IR007_3) form one fold; the normal baseline is a fold of its own. For each fold,
everything the diagnosis fits (agent.analytics.diagnosis.LocationCalibration: the block-to-block
scatter of the location margin and the two confidence ceilings) is fitted on the other folds'
drive-end (`de`) records only, and the held-out fold is diagnosed with it. The thresholds that are
not fitted (12 dB for a present line, the slip tolerance, the one-sigma rule for naming a location)
come from noise statistics and physics and are the same in every fold. Nothing is ever fitted on
the fan-end channel (`fe`): it is scored with each fold's drive-end calibration, as a machine
whose sensor sits on the other bearing.

Each record is diagnosed as the agent diagnoses it: the same `analyze_block` code (through
`analyze_block_evidence`, which also returns the evidence so that a fold's calibration can decide),
the bearing SKF 6205-2RS (the drive-end bearing, which carries the seeded fault) and the record's
nominal speed as the configured speed; as whole records, as 0.68 s blocks (8192 samples at
12 kHz), and as 0.68 s blocks with the agent's envelope averaging (`average_blocks = 8`: each
block's own diagnosis plus the one on the last 8 blocks' averaged envelope spectra, one decision
per full window, windows rolling by one block; a record shorter than that gives one decision on all
its blocks). `de+fe` treats the two accelerometers as two sensors of one machine (the fan-end
channel a second opinion, agent.analytics.diagnosis.merge_evidence).

Printed: per record and per fold, the cross-validated answer; the confusion matrices; located,
undetermined, missed and wrong per class; a reliability table of the confidence (held-out answers
only); and, beside them and labelled so, the in-sample figures (the calibration fitted on every
record, which is what the agent ships: `--fit` prints that fit and whether it matches
agent.analytics.diagnosis.CALIBRATION). `--methods` also cross-validates the alternatives the
diagnosis was chosen from (whole records and 0.68 s blocks, both channels).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agent.analytics.averaging import EnvelopeAverager, redecided, with_averaged
from agent.analytics.bearing_search import (
    DEFAULT_SLIP_TOLERANCE,
    BearingFindings,
    defect_families,
    envelope_limits,
    findings_from_spectra,
)
from agent.analytics.bearings import BearingDefects, lookup
from agent.analytics.diagnosis import (
    CALIBRATION,
    UNDETERMINED,
    LocationCalibration,
    LocationEvidence,
    bearing_answer,
    fit_location_calibration,
    location_evidence,
    merge_evidence,
)
from agent.analytics.envelope import band_envelope_spectrum, whitened_envelope_spectrum
from agent.analytics.kurtogram import select_band
from agent.analytics.vibration import (
    BlockAnalysis,
    VibrationIndicators,
    _line_rms,
    _plan,
    analyze_block_evidence,
    with_bearing_evidence,
)

DEFAULT_FOLDER = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cwru"
LABEL_TO_FAULT = {"normal": "normal", "inner": "inner_race", "outer": "outer_race", "ball": "ball"}
SHORT = {"normal": "normal", "inner_race": "inner", "outer_race": "outer", "ball": "ball", "cage": "cage",
         UNDETERMINED: "bearing?", "unbalance": "unbal.", "misalignment": "misal.", "looseness": "loose"}
CLASSES = ("normal", "inner_race", "outer_race", "ball")
BLOCK_SECONDS = 8192 / 12000  # 0.68 s
AVERAGE_BLOCKS = 8
BEARING = "6205-2RS"  # the drive-end bearing: the seeded faults are in it, whichever channel looks
CONFIDENT = 0.8
SEGMENTS = ("whole", "block", "averaged")


@dataclass
class Record:
    name: str  # file stem
    group: str  # the physical bearing (fold): CWRU name without the load suffix
    truth: str  # normal / inner_race / outer_race / ball
    rpm: float
    grade: str
    channels: dict[str, tuple[np.ndarray, float]]  # sensor -> (samples, fs); de, fe (and *_12k copies)


@dataclass
class Analyses:
    """One record's analyses on one channel, decided later with any calibration."""

    whole: BlockAnalysis
    blocks: list[BlockAnalysis]
    averaged: list[tuple[int, object]]  # (block index, AveragedDiagnosis) for each decision
    speed_not_given: BlockAnalysis | None = None  # the whole record with the speed estimated from the spectrum


@dataclass
class Outcome:
    record: str
    group: str
    truth: str
    channel: str
    segment: str
    fault: str
    confidence: float
    margin: float = 0.0

    @property
    def asserts_bearing_fault(self) -> bool:
        return self.fault in ("outer_race", "inner_race", "ball", "cage", UNDETERMINED)

    @property
    def correct(self) -> bool:
        if self.fault == UNDETERMINED:
            return self.truth != "normal"
        return self.fault == self.truth


@dataclass
class Evaluation:
    outcomes: list[Outcome] = field(default_factory=list)
    calibrations: dict[str, LocationCalibration] = field(default_factory=dict)


# --- reading the records ------------------------------------------------------------------------


def published_grades(folder: Path) -> dict[str, str]:
    """file name -> Smith & Randall grade (best, with per-method detail) from the README's table, if any."""
    readme = folder / "README.md"
    if not readme.is_file():
        return {}
    grades: dict[str, str] = {}
    header: list[str] | None = None
    for line in readme.read_text(encoding="utf-8").splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = [c.lower() for c in cells]
            continue
        if set("".join(cells)) <= set("-: "):
            continue
        row = dict(zip(header, cells, strict=False))
        best = next((v for k, v in row.items() if k.startswith("s&r best")), None)
        if "file" in row and best is not None:
            detail = next((v for k, v in row.items() if k.startswith("s&r detail")), "")
            grades[row["file"]] = f"{best} {detail}".strip() if detail not in ("", "-") else best
    return grades


def read_records(folder: Path) -> list[Record]:
    grades = published_grades(folder)
    records = []
    for path in sorted(folder.glob("*.npz")):
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        label = str(arrays["label"])
        name = str(arrays["record_name"]) if "record_name" in arrays else path.stem
        group = re.sub(r"_\d+$", "", name)  # IR007_2 -> IR007: one physical bearing at 0-3 hp
        channels = {}
        for key in ("de", "fe"):
            if key in arrays:
                channels[key] = (np.asarray(arrays[key], dtype=np.float64), float(arrays["fs"]))
            if f"{key}_12k" in arrays:
                channels[f"{key}_12k"] = (np.asarray(arrays[f"{key}_12k"], dtype=np.float64), float(arrays["fs_12k"]))
        records.append(Record(path.stem, group, LABEL_TO_FAULT[label], float(arrays["rpm"]),
                              grades.get(path.name, "-"), channels))
    return records


# --- analysing (once) and deciding (per fold) -------------------------------------------------------


Analyser = Callable[[np.ndarray, float, float, BearingDefects, str], BlockAnalysis]


def agent_analysis(x: np.ndarray, fs: float, rpm: float, bearing: BearingDefects, sensor: str) -> BlockAnalysis:
    return analyze_block_evidence(x, fs, rpm=rpm, rpm_source="config", bearing=bearing, sensor=sensor)


def analyse(record: Record, channel: str, bearing: BearingDefects, analyser: Analyser = agent_analysis, *,
            averaged: bool = True) -> Analyses:
    x, fs = record.channels[channel]
    sensor = channel.split("_")[0]
    whole = analyser(x, fs, record.rpm, bearing, sensor)
    n = round(BLOCK_SECONDS * fs)
    starts = range(0, len(x) - n + 1, n)
    blocks = [analyser(x[s:s + n], fs, record.rpm, bearing, sensor) for s in starts]
    decisions: list[tuple[int, object]] = []
    if averaged:
        averager = EnvelopeAverager(bearing, blocks=AVERAGE_BLOCKS)
        results = [(i, averager.add(x[s:s + n], fs, record.rpm)) for i, s in enumerate(starts)]
        decisions = [(i, avg) for i, avg in results if avg.blocks == AVERAGE_BLOCKS] or results[-1:]
    estimated = None
    if channel.startswith("de") and analyser is agent_analysis:
        estimated = analyze_block_evidence(x, fs, rpm=None, bearing=bearing, sensor=sensor)
    return Analyses(whole, blocks, decisions, estimated)


def decide(analysis: BlockAnalysis, calibration: LocationCalibration,
           second: BlockAnalysis | None = None) -> VibrationIndicators:
    """The block's indicators decided with `calibration` (and a second sensor's evidence, if given)."""
    if analysis.evidence is None:
        return analysis.indicators
    evidence = analysis.evidence if second is None or second.evidence is None else \
        merge_evidence([analysis.evidence, second.evidence])
    return with_bearing_evidence(analysis.indicators, evidence, calibration)


def _margin(ind: VibrationIndicators, evidence: LocationEvidence | None) -> float:
    if evidence is None or ind.fault not in ("outer_race", "inner_race", "ball", "cage", UNDETERMINED):
        return 0.0
    answer = bearing_answer(evidence, CALIBRATION)
    return answer.margin_db if answer else 0.0


def fit(records: Iterable[Record], analyses: dict[tuple[str, str], Analyses]) -> LocationCalibration:
    """The calibration from these records' drive-end analyses (whole records and their 0.68 s blocks)."""
    block_margins: dict[str, list[float]] = {}
    whole: list[tuple[str, LocationEvidence | None]] = []
    speeds: list[tuple[float, float]] = []
    for record in records:
        for channel in record.channels:
            if not channel.startswith("de"):
                continue
            a = analyses[(record.name, channel)]
            whole.append((record.truth, a.whole.evidence))
            if a.speed_not_given is not None:
                speeds.append((a.speed_not_given.indicators.rpm, record.rpm))
            if record.truth != "normal":
                block_margins[f"{record.name}/{channel}"] = [b.evidence.margin_db(record.truth) for b in a.blocks
                                                             if b.evidence is not None]
    return fit_location_calibration(block_margins, whole, speed_estimates=speeds)


def score(record: Record, analyses: dict[tuple[str, str], Analyses], calibration: LocationCalibration,
          *, averaged: bool = True) -> list[Outcome]:
    out: list[Outcome] = []

    def add(channel: str, segment: str, ind: VibrationIndicators, evidence: LocationEvidence | None) -> None:
        out.append(Outcome(record.name, record.group, record.truth, channel, segment, ind.fault, ind.confidence,
                           _margin(ind, evidence)))

    for channel in record.channels:
        a = analyses[(record.name, channel)]
        add(channel, "whole", decide(a.whole, calibration), a.whole.evidence)
        for b in a.blocks:
            add(channel, "block", decide(b, calibration), b.evidence)
        if averaged:
            for i, avg in a.averaged:
                merged = with_averaged(decide(a.blocks[i], calibration), redecided(avg, calibration))
                add(channel, "averaged", merged, avg.evidence)
        if channel.startswith("de") and channel.replace("de", "fe") in record.channels:
            other = analyses[(record.name, channel.replace("de", "fe"))]
            pair = channel.replace("de", "de+fe")
            ind = decide(a.whole, calibration, other.whole)
            add(pair, "whole", ind, merge_evidence([a.whole.evidence, other.whole.evidence])
                if a.whole.evidence and other.whole.evidence else None)
            for b, c in zip(a.blocks, other.blocks, strict=True):
                add(pair, "block", decide(b, calibration, c), None)
    return out


def cross_validate(records: list[Record], analyses: dict[tuple[str, str], Analyses], *,
                   averaged: bool = True) -> Evaluation:
    result = Evaluation()
    for group in sorted({r.group for r in records}):
        training = [r for r in records if r.group != group]
        calibration = fit(training, analyses)
        result.calibrations[group] = calibration
        for record in records:
            if record.group == group:
                result.outcomes += score(record, analyses, calibration, averaged=averaged)
    return result


def in_sample(records: list[Record], analyses: dict[tuple[str, str], Analyses]) -> Evaluation:
    calibration = fit(records, analyses)
    result = Evaluation(calibrations={"all": calibration})
    for record in records:
        result.outcomes += score(record, analyses, calibration)
    return result


# --- reporting ------------------------------------------------------------------------------------------


def channel_family(channel: str) -> str:
    return channel.replace("_12k", "")


def _pct(good: int, total: int) -> str:
    return f"{good}/{total} = {100 * good / total:.0f} %" if total else "n/a"


def class_line(outcomes: Sequence[Outcome]) -> str:
    parts = []
    for truth in CLASSES:
        group = [o for o in outcomes if o.truth == truth]
        if not group:
            continue
        right = sum(o.fault == truth for o in group)
        if truth == "normal":
            parts.append(f"normal {right}/{len(group)} healthy")
            continue
        undetermined = sum(o.fault == UNDETERMINED for o in group)
        wrong = sum(o.asserts_bearing_fault and o.fault not in (truth, UNDETERMINED) for o in group)
        missed = len(group) - right - undetermined - wrong
        extra = ", ".join(f"{v} {k}" for k, v in (("undetermined", undetermined), ("wrong", wrong),
                                                    ("missed", missed)) if v)
        parts.append(f"{SHORT[truth]} {right}/{len(group)} located" + (f" ({extra})" if extra else ""))
    return "; ".join(parts)


def confident_wrong(outcomes: Sequence[Outcome]) -> int:
    return sum(o.asserts_bearing_fault and not o.correct and o.confidence >= CONFIDENT for o in outcomes)


def summary_table(title: str, outcomes: Sequence[Outcome], insample: Sequence[Outcome] | None = None) -> None:
    print(f"\n{title}")
    channels = sorted({channel_family(o.channel) for o in outcomes}, key=lambda c: ("de", "fe", "de+fe").index(c))
    for channel in channels:
        for segment in SEGMENTS:
            sub = [o for o in outcomes if channel_family(o.channel) == channel and o.segment == segment]
            if not sub:
                continue
            line = f"  {channel:5} {segment:8} {class_line(sub)}; wrong at conf >= {CONFIDENT}: {confident_wrong(sub)}"
            print(line)
            if insample is not None:
                ins = [o for o in insample if channel_family(o.channel) == channel and o.segment == segment]
                print(f"  {'':5} {'':8} in-sample: {class_line(ins)}")


def confusion(outcomes: Sequence[Outcome], title: str) -> None:
    answers = ["normal", "inner_race", "outer_race", "ball", UNDETERMINED]
    answers += sorted({o.fault for o in outcomes} - set(answers))
    matrix = Counter((o.truth, o.fault) for o in outcomes)
    print(f"\n{title} (rows: truth, columns: answer)")
    print(f"{'':8}" + "".join(f"{SHORT.get(a, a):>9}" for a in answers))
    for truth in CLASSES:
        if any(o.truth == truth for o in outcomes):
            print(f"{SHORT[truth]:8}" + "".join(f"{matrix[(truth, a)]:9d}" for a in answers))


def reliability(outcomes: Sequence[Outcome], title: str) -> None:
    """Held-out answers that assert a bearing fault, by confidence: how often they are right."""
    edges = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0001)
    asserting = [o for o in outcomes if o.asserts_bearing_fault]
    print(f"\n{title}")
    print(f"  {'confidence':>12} {'answers':>8} {'right':>6} {'fraction':>9}   (located: right location; "
          "'bearing?': a bearing fault is there)")
    for lo, hi in itertools.pairwise(edges):
        sub = [o for o in asserting if lo <= o.confidence < hi]
        if sub:
            right = sum(o.correct for o in sub)
            print(f"  {lo:5.2f}-{min(hi, 1.0):4.2f}  {len(sub):8d} {right:6d} {right / len(sub):9.3f}")
    top = [o for o in asserting if o.confidence >= CONFIDENT]
    right = sum(o.correct for o in top)
    print(f"  >= {CONFIDENT:<8} {len(top):8d} {right:6d} {right / len(top) if top else float('nan'):9.3f}"
          f"   (target >= 0.95)")
    normal = [o for o in outcomes if o.fault == "normal"]
    if normal:
        print(f"  'normal' answers: {len(normal)}, {sum(o.correct for o in normal)} on healthy records: what a "
              "'normal' is worth depends on how many machines are healthy, which these records (16 of 17 faulty) "
              "cannot tell")


def per_record(outcomes: Sequence[Outcome], records: list[Record]) -> None:
    print(f"\n{'record':20} {'fold':9} {'truth':6} {'S&R grade':14} "
          + " ".join(f"{c + ' whole':>22}" for c in ("de", "fe", "de+fe"))
          + f" {'de 0.68 s blocks':>20} {'de averaged':>14}")
    for record in records:
        cells = []
        for channel in ("de", "fe", "de+fe"):
            whole = [o for o in outcomes if o.record == record.name and channel_family(o.channel) == channel
                     and o.segment == "whole"]
            cells.append(" ".join(f"{SHORT.get(o.fault, o.fault) + ('' if o.correct else ' X')} {o.confidence:.2f}"
                                  for o in whole))
        blocks = [o for o in outcomes if o.record == record.name and o.channel == "de" and o.segment == "block"]
        averaged = [o for o in outcomes if o.record == record.name and o.channel == "de" and o.segment == "averaged"]
        right_b = sum(o.fault == record.truth for o in blocks)
        right_a = sum(o.fault == record.truth for o in averaged)
        located = f"{right_b}/{len(blocks)}", f"{right_a}/{len(averaged)}"
        print(f"{record.name:20} {record.group:9} {SHORT[record.truth]:6} {record.grade[:14]:14} "
              + " ".join(f"{c:>22}" for c in cells) + f" {located[0]:>20} {located[1]:>14}")
    print("(X = wrong; 'bearing?' = bearing fault, location undetermined; normal record: 48 kHz and 12 kHz copy)")


def speed_not_given(records: list[Record], analyses: dict[tuple[str, str], Analyses],
                    calibrations: dict[str, LocationCalibration]) -> None:
    """Whole drive-end records with the speed estimated from the spectrum (no speed point, no config)."""
    rows = []
    for record in records:
        for channel in (c for c in record.channels if c.startswith("de")):
            a = analyses[(record.name, channel)].speed_not_given
            if a is not None:
                rows.append((record, decide(a, calibrations[record.group])))
    close = sum(abs(ind.rpm / r.rpm - 1) <= DEFAULT_SLIP_TOLERANCE for r, ind in rows)
    right = sum(ind.fault == r.truth for r, ind in rows)
    undetermined = sum(ind.fault == UNDETERMINED for r, ind in rows)
    wrong = [ind for r, ind in rows if ind.fault not in (r.truth, UNDETERMINED, "normal")]
    print(f"\nSpeed not given (estimated from the spectrum), de whole records, cross-validated: estimate within 2 % "
          f"of the nominal speed on {_pct(close, len(rows))}; diagnosis right on {_pct(right, len(rows))}, "
          f"undetermined on {undetermined}, wrong location on {len(wrong)} (confidence "
          f"{', '.join(f'{ind.confidence:.2f}' for ind in wrong) or '-'}); bearing answers' confidence is scaled by "
          "the fold's estimated-speed ceiling")


MIXTURE_WEIGHTS = (0.0, 0.2, 0.3, 0.35, 0.4, 0.45, 0.5, 1.0, 3.0)


def two_defects(records: list[Record], analyses: dict[tuple[str, str], Analyses], bearing: BearingDefects) -> None:
    """A bearing with two defects, from real records: inner race (IR007) + w x outer race (OR021@6), same load.

    Where one defect dominates the diagnosis should name it; where their lines are about as strong
    it should say "bearing" (location undetermined) rather than pick one with confidence. Decided
    with a calibration fitted without either bearing (the other folds only).
    """
    inner = {r.name[-1]: r for r in records if r.group == "IR007"}
    outer = {r.name[-1]: r for r in records if r.group == "OR021@6"}
    loads = sorted(set(inner) & set(outer))
    if not loads:
        return
    calibration = fit([r for r in records if r.group not in ("IR007", "OR021@6")], analyses)
    print("\nTwo defects (real records summed: IR007 + w x OR021@6 at the same load, de, whole records; calibration "
          "fitted on the other folds): answer (confidence) per weight w")
    print(f"{'load':>4} " + " ".join(f"{'w=' + format(w, 'g'):>13}" for w in MIXTURE_WEIGHTS))
    for load in loads:
        (xi, fs), (xo, _) = inner[load].channels["de"], outer[load].channels["de"]
        n = min(len(xi), len(xo))
        cells = []
        for w in MIXTURE_WEIGHTS:
            a = analyze_block_evidence(xi[:n] + w * xo[:n], fs, rpm=inner[load].rpm, rpm_source="config",
                                       bearing=bearing, sensor="de")
            ind = decide(a, calibration)
            cells.append(f"{SHORT.get(ind.fault, ind.fault)} {ind.confidence:.2f}")
        print(f"{load:>4} " + " ".join(f"{c:>13}" for c in cells))


def report(records: list[Record], cv: Evaluation, ins: Evaluation, seconds: float) -> None:
    print(f"Leave-one-bearing-out cross-validation on {len(records)} records ({len(cv.calibrations)} folds), "
          f"bearing {BEARING}, nominal speed as configured; {seconds:.0f} s")
    print("\nFolds: calibration fitted on the other folds' drive-end records (sigma = margin scatter, ceilings)")
    for group, cal in cv.calibrations.items():
        held = [o for o in cv.outcomes if o.group == group]
        whole = {c: class_line([o for o in held if channel_family(o.channel) == c and o.segment == "whole"])
                 for c in ("de", "fe")}
        print(f"  {group:9} sigma {cal.margin_sigma_db:.2f} dB, ceilings: locate {cal.locate_ceiling:.3f}, "
              f"detect {cal.detect_ceiling:.3f}, estimated speed {cal.estimated_speed_ceiling:.3f}\n"
              f"  {'':9} held out, whole records: de {whole['de']}; fe {whole['fe']}")
    per_record(cv.outcomes, records)
    summary_table("Cross-validated (held-out folds), by channel and segment; in-sample figures beside them",
                  cv.outcomes, ins.outcomes)
    for channel in ("de", "fe"):
        confusion([o for o in cv.outcomes if channel_family(o.channel) == channel and o.segment == "whole"],
                  f"Confusion matrix, {channel}, whole records, cross-validated")
        confusion([o for o in cv.outcomes if channel_family(o.channel) == channel and o.segment == "block"],
                  f"Confusion matrix, {channel}, 0.68 s blocks, cross-validated")
    for channel in ("de", "fe"):
        reliability([o for o in cv.outcomes if channel_family(o.channel) == channel],
                    f"Reliability of the confidence, {channel}, held-out answers (whole records, blocks, averaged)")
    cal = ins.calibrations["all"]
    print(f"\nIn-sample calibration (fitted on every record, what the agent ships): sigma {cal.margin_sigma_db} dB, "
          f"ceilings: locate {cal.locate_ceiling}, detect {cal.detect_ceiling}, "
          f"estimated speed {cal.estimated_speed_ceiling}")


# --- alternative methods, for the choice the analytics README explains ----------------------------------


def _custom_analyser(spectra: str, *, refine: bool = True,
                     lines: dict[str, tuple[int, ...]] | None = None) -> Analyser:
    """An analyser that differs from the agent's only in its envelope spectra, speed refinement or location lines."""

    def run(x: np.ndarray, fs: float, rpm: float, bearing: BearingDefects, sensor: str) -> BlockAnalysis:
        base = analyze_block_evidence(x, fs, rpm=rpm, rpm_source="config", bearing=bearing, sensor=sensor,
                                      refine_speed=refine)
        if spectra == "agent" and lines is None:
            return base
        xg = x - x.mean()
        n, fr = len(xg), rpm / 60.0
        df = fs / n
        spectrum = np.fft.rfft(xg)
        min_width, max_hz = envelope_limits(bearing, fr, DEFAULT_SLIP_TOLERANCE)
        band = select_band(spectrum, df, min_width_hz=min_width)
        whitened = spectrum / np.maximum(np.abs(spectrum), 1e-300)
        options = {
            "band": lambda: band_envelope_spectrum(spectrum, n, df, band.start, band.stop, band.kurtosis,
                                                   max_hz=max_hz),
            "whitened": lambda: whitened_envelope_spectrum(spectrum, df, max_hz=max_hz),
            "whitened band": lambda: (lambda b: band_envelope_spectrum(whitened, n, df, b.start, b.stop, b.kurtosis,
                                                                       max_hz=max_hz))(
                select_band(whitened, df, min_width_hz=min_width)),
            "raw": lambda: band_envelope_spectrum(spectrum, n, df, 1, len(spectrum), 0.0, max_hz=max_hz),
        }
        chosen = {"agent": ("band", "whitened"), "band": ("band",), "whitened": ("whitened",),
                  "band+whitened+whitened band": ("band", "whitened", "whitened band"), "raw": ("raw",)}[spectra]
        found: BearingFindings = findings_from_spectra(band, tuple(options[k]() for k in chosen), n / fs, fr,
                                                       bearing, refine_speed=refine)
        plan = _plan(n, fs)
        hann = np.fft.rfft(xg * (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)))
        power = (hann.real**2 + hann.imag**2) * (2.0 / (n * plan.window_power))
        ftf_hz = bearing.ftf * found.shaft_hz
        _, cage_line = _line_rms(power, plan.velocity_weight, plan.df, ftf_hz, max(0.02 * ftf_hz, plan.df))
        evidence = location_evidence(found, bearing, cage_line=cage_line, given_shaft_hz=fr, sensor=sensor,
                                     lines=lines)
        return dataclasses.replace(base, evidence=evidence, findings=found)

    return run


def compare_methods(records: list[Record], bearing: BearingDefects) -> None:
    every_harmonic = {fault: tuple(i for i, spec in enumerate(specs) if spec.offset_hz == 0 and spec.order >= 1)
                      for fault, (_, specs) in defect_families(bearing, 1.0).items()}
    variants: list[tuple[str, Analyser]] = [
        ("agent: SK band + whitened, discriminating lines", agent_analysis),
        ("SK band only", _custom_analyser("band")),
        ("whitened (cepstral pre-whitening) only", _custom_analyser("whitened")),
        ("+ SK band of the whitened signal", _custom_analyser("band+whitened+whitened band")),
        ("raw full-band envelope (S&R method 1)", _custom_analyser("raw")),
        ("every harmonic counts for location", _custom_analyser("agent", lines=every_harmonic)),
        ("no speed refinement from envelope lines", _custom_analyser("agent", refine=False)),
    ]
    print("\nMethods compared (cross-validated the same way; whole records and 0.68 s blocks, no averaging):")
    for name, analyser in variants:
        analyses = {(r.name, c): analyse(r, c, bearing, analyser, averaged=False) for r in records for c in r.channels}
        cv = cross_validate(records, analyses, averaged=False)
        print(f"  {name}")
        for channel in ("de", "fe"):
            for segment in ("whole", "block"):
                sub = [o for o in cv.outcomes if channel_family(o.channel) == channel and o.segment == segment]
                print(f"    {channel} {segment:5} {class_line(sub)}; wrong at conf >= {CONFIDENT}: "
                      f"{confident_wrong(sub)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_FOLDER,
                        help="folder of CWRU .npz records (default: ../shared/data/cwru)")
    parser.add_argument("--fit", action="store_true",
                        help="print the calibration fitted on every record and compare it with the shipped one")
    parser.add_argument("--methods", action="store_true", help="also cross-validate the alternative methods")
    args = parser.parse_args(argv)
    folder = args.folder.resolve()
    if not folder.is_dir() or not any(folder.glob("*.npz")):
        print(f"no .npz records in {folder}", file=sys.stderr)
        return 1
    start = time.perf_counter()
    bearing = lookup(BEARING)
    records = read_records(folder)
    analyses = {(r.name, c): analyse(r, c, bearing) for r in records for c in r.channels}
    if args.fit:
        fitted = fit(records, analyses)
        same = dataclasses.replace(fitted, records=CALIBRATION.records) == CALIBRATION
        print(f"fitted on every record: {fitted}\nshipped: {CALIBRATION}\n"
              + ("the same" if same else "DIFFERENT: update agent/analytics/diagnosis.py CALIBRATION"))
        return 0 if same else 1
    cv = cross_validate(records, analyses)
    ins = in_sample(records, analyses)
    report(records, cv, ins, time.perf_counter() - start)
    speed_not_given(records, analyses, cv.calibrations)
    two_defects(records, analyses, bearing)
    if args.methods:
        compare_methods(records, bearing)
    return 0


if __name__ == "__main__":
    sys.exit(main())

