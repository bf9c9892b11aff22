"""Evaluate the vibration diagnosis on real bearing records (CWRU Bearing Data Center .npz files).

    python bench/vibration_eval.py [FOLDER]      (default: ../shared/data/cwru next to the repo)

Every record is diagnosed as the agent would diagnose it: `analyze_block` on the whole record
with the bearing (SKF 6205-2RS for drive-end records, 6203-2RS for fan-end ones) and the record's
nominal speed as the configured speed. A normal record that also holds a 12 kHz decimated copy
(`de_12k`) is diagnosed at both sample rates. Nothing is tuned to the files: the same code and
thresholds run on any folder of records.

Printed: a per-record table (with the published diagnosability grade of Smith & Randall 2015
when the folder's README.md has it), the confusion matrix, the accuracy of normal vs faulty and of
the fault location (inner / outer / ball), and two things the agent meets in the field: the share
of short blocks (0.68 s and 5.5 s, i.e. 8192 and 65536 samples at 12 kHz) diagnosed correctly,
the same 0.68 s blocks diagnosed as the agent does with `average_blocks = 8` (each block's
indicators plus the bearing diagnosis on the envelope spectra of the last 8 blocks,
agent.analytics.averaging; one decision per full window, windows rolling by one block; a record
shorter than 8 blocks gives one decision on all its blocks), and the diagnosis when the speed must
be estimated from the spectrum (no speed point, no config).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.analytics.averaging import EnvelopeAverager, with_averaged
from agent.analytics.bearings import BearingDefects, lookup
from agent.analytics.vibration import analyze_block

DEFAULT_FOLDER = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cwru"
LABEL_TO_FAULT = {"normal": "normal", "inner": "inner_race", "outer": "outer_race", "ball": "ball"}
FAULT_SHORT = {"normal": "normal", "inner_race": "inner", "outer_race": "outer", "ball": "ball", "cage": "cage",
               "unbalance": "unbal.", "misalignment": "misal.", "looseness": "loose"}
BLOCK_SECONDS = (8192 / 12000, 65536 / 12000)
AVERAGE_BLOCKS = 8
BEARINGS = {"drive_end": ("6205-2RS", "de"), "fan_end": ("6203-2RS", "fe")}


@dataclass
class Row:
    record: str
    channel: str
    fs: float
    label: str
    predicted: str
    confidence: float
    health: float
    zone: str
    lines: tuple[float, float, float, float]
    band: tuple[float, float]
    grade: str
    blocks: list[tuple[int, int]]
    averaged: tuple[int, int, int]  # (correct, decisions, blocks per decision)
    rpm_estimated: float
    rpm_measured: float
    predicted_estimated: str


def published_grades(folder: Path) -> dict[str, tuple[str, str]]:
    """file name -> (best grade, per-method detail) from the README's markdown table, if any."""
    readme = folder / "README.md"
    if not readme.is_file():
        return {}
    grades: dict[str, tuple[str, str]] = {}
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
            grades[row["file"]] = (best, detail)
    return grades


def record_label(path: Path, data: np.lib.npyio.NpzFile) -> str:
    if "label" in data:
        return str(data["label"])
    name = path.stem.upper()
    for token, label in (("NORMAL", "normal"), ("IR", "inner"), ("OR", "outer"), ("_B", "ball")):
        if token in name:
            return label
    raise ValueError(f"{path.name}: no 'label' key and no label in the file name")


def block_score(x: np.ndarray, fs: float, rpm: float, bearing: BearingDefects, fault: str,
                seconds: float) -> tuple[int, int]:
    n = round(seconds * fs)
    starts = range(0, len(x) - n + 1, n)
    good = sum(analyze_block(x[s:s + n], fs, rpm=rpm, rpm_source="config", bearing=bearing).fault == fault
               for s in starts)
    return good, len(starts)


def averaged_score(x: np.ndarray, fs: float, rpm: float, bearing: BearingDefects, fault: str,
                   seconds: float) -> tuple[int, int, int]:
    """0.68 s blocks, each diagnosed with the envelope spectra of the last AVERAGE_BLOCKS averaged.

    Returns (correct, decisions, blocks averaged per decision). Only full windows count; a record
    with fewer blocks than that gives one decision on all of them.
    """
    n = round(seconds * fs)
    averager = EnvelopeAverager(bearing, blocks=AVERAGE_BLOCKS)
    decisions: list[tuple[int, bool]] = []
    for s in range(0, len(x) - n + 1, n):
        block = x[s:s + n]
        ind = analyze_block(block, fs, rpm=rpm, rpm_source="config", bearing=bearing)
        avg = averager.add(block, fs, rpm)
        decisions.append((avg.blocks, with_averaged(ind, avg).fault == fault))
    if not decisions:
        return 0, 0, 0
    full = [ok for count, ok in decisions if count == AVERAGE_BLOCKS]
    if full:
        return sum(full), len(full), AVERAGE_BLOCKS
    return int(decisions[-1][1]), 1, decisions[-1][0]


def evaluate(folder: Path) -> list[Row]:
    grades = published_grades(folder)
    rows: list[Row] = []
    for path in sorted(folder.glob("*.npz")):
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
            label = record_label(path, data)
        where = str(arrays["fault_bearing"]) if "fault_bearing" in arrays else "drive_end"
        model, channel = BEARINGS.get(where, BEARINGS["drive_end"])
        bearing = lookup(model)
        rpm = float(arrays["rpm"])
        measured = float(arrays["rpm_measured"]) if "rpm_measured" in arrays else float("nan")
        channels = [(channel, float(arrays["fs"]))]
        if f"{channel}_12k" in arrays:
            channels.append((f"{channel}_12k", float(arrays["fs_12k"])))
        grade, detail = grades.get(path.name, ("-", ""))
        for key, fs in channels:
            x = np.asarray(arrays[key], dtype=np.float64)
            fault = LABEL_TO_FAULT[label]
            ind = analyze_block(x, fs, rpm=rpm, rpm_source="config", bearing=bearing)
            est = analyze_block(x, fs, rpm=None, bearing=bearing)
            blocks = [block_score(x, fs, rpm, bearing, fault, s) for s in BLOCK_SECONDS]
            averaged = averaged_score(x, fs, rpm, bearing, fault, BLOCK_SECONDS[0])
            rows.append(Row(
                record=path.stem, channel=key, fs=fs, label=label, predicted=ind.fault,
                confidence=ind.confidence, health=ind.health, zone=ind.iso_zone,
                lines=(ind.bpfo, ind.bpfi, ind.bsf, ind.ftf), band=ind.envelope_band_hz,
                grade=f"{grade} {detail}".strip() if detail not in ("", "-") else grade,
                blocks=blocks, averaged=averaged, rpm_estimated=est.rpm, rpm_measured=measured,
                predicted_estimated=est.fault,
            ))
    return rows


def _pct(good: int, total: int) -> str:
    return f"{good}/{total} = {100 * good / total:.0f} %" if total else "n/a"


def report(rows: list[Row], folder: Path, seconds: float) -> None:
    print(f"Vibration diagnosis on {len({r.record for r in rows})} records ({len(rows)} analyses) in {folder}")
    print("bearing from the record (6205-2RS drive end), nominal rpm as configured speed, whole record per "
          f"analysis; {seconds:.1f} s in total\n")
    head = (f"{'record':22} {'chan':6} {'fs':>6} {'label':6} {'predicted':9} {'conf':>4} {'health':>6} "
            f"{'ISO':3} {'BPFO':>4} {'BPFI':>4} {'2BSF':>4} {'FTF':>4} {'band Hz':>11}  "
            f"{'S&R grade':14} {'0.68 s blk':>10} {'avg 8':>7} {'5.5 s blk':>9}  "
            f"{'est. rpm':>8} {'(meas.)':>7} {'-> pred.':8}")
    print(head)
    print("-" * len(head))
    for r in rows:
        ok = "" if LABEL_TO_FAULT[r.label] == r.predicted else " X"
        blk = [f"{g}/{t}" if t else "-" for g, t in r.blocks]
        good, total, count = r.averaged
        avg = (f"{good}/{total}" + ("" if count == AVERAGE_BLOCKS else f"({count})")) if total else "-"
        meas = f"{r.rpm_measured:.0f}" if np.isfinite(r.rpm_measured) else "-"
        print(f"{r.record:22} {r.channel:6} {r.fs:6.0f} {r.label:6} {FAULT_SHORT[r.predicted] + ok:9} "
              f"{r.confidence:4.2f} {r.health:6.0f} {r.zone:3} "
              + " ".join(f"{v:4.0f}" for v in r.lines)
              + f" {r.band[0]:5.0f}-{r.band[1]:<5.0f}  {r.grade[:14]:14} {blk[0]:>10} {avg:>7} {blk[1]:>9}  "
              f"{r.rpm_estimated:8.0f} {meas:>7} {FAULT_SHORT[r.predicted_estimated]:8}")
    print("\nBPFO/BPFI/2BSF/FTF: dB of the defect line above the envelope-spectrum background "
          "(present line >= 12 dB). X = wrong.")
    print(f"avg {AVERAGE_BLOCKS}: 0.68 s blocks diagnosed with the envelope spectra of the last {AVERAGE_BLOCKS} "
          "averaged, one decision per full window (rolling); (k): the record holds only k blocks, all averaged.")

    classes = ["normal", "inner", "outer", "ball"]
    predicted_classes = sorted({FAULT_SHORT[r.predicted] for r in rows} | set(classes),
                               key=lambda c: (c not in classes, classes.index(c) if c in classes else 0, c))
    matrix = Counter((r.label, FAULT_SHORT[r.predicted]) for r in rows)
    print("\nConfusion matrix (rows: true label, columns: diagnosis)")
    print(f"{'':8}" + "".join(f"{c:>8}" for c in predicted_classes))
    for true in classes:
        if any(r.label == true for r in rows):
            print(f"{true:8}" + "".join(f"{matrix[(true, c)]:8d}" for c in predicted_classes))

    healthy_ok = sum((r.label == "normal") == (r.predicted == "normal") for r in rows)
    faulty = [r for r in rows if r.label != "normal"]
    located = sum(LABEL_TO_FAULT[r.label] == r.predicted for r in faulty)
    print(f"\nnormal vs faulty:            {_pct(healthy_ok, len(rows))}")
    print(f"fault location (faulty only): {_pct(located, len(faulty))}")
    for label in classes:
        group = [r for r in rows if r.label == label]
        if group:
            good = sum(LABEL_TO_FAULT[r.label] == r.predicted for r in group)
            print(f"  {label:7} {_pct(good, len(group))}")
    for i, secs in enumerate(BLOCK_SECONDS):
        good = sum(r.blocks[i][0] for r in rows)
        total = sum(r.blocks[i][1] for r in rows)
        parts = []
        for label in classes:
            group = [r.blocks[i] for r in rows if r.label == label and r.blocks[i][1]]
            if group:
                parts.append(f"{label} {_pct(sum(g for g, _ in group), sum(t for _, t in group))}")
        by = ", ".join(parts)
        print(f"blocks of {secs:.2f} s correct: {_pct(good, total)} ({by})")
        if i == 0:
            parts = []
            for label in classes:
                group = [r.averaged for r in rows if r.label == label and r.averaged[1]]
                if group:
                    short = sorted({c for _, _, c in group if c != AVERAGE_BLOCKS})
                    note = f" (records of {', '.join(map(str, short))} blocks: all averaged)" if short else ""
                    parts.append(f"{label} {_pct(sum(g for g, _, _ in group), sum(t for _, t, _ in group))}{note}")
            good = sum(r.averaged[0] for r in rows)
            total = sum(r.averaged[1] for r in rows)
            print(f"blocks of {secs:.2f} s averaged over {AVERAGE_BLOCKS}: {_pct(good, total)} ({', '.join(parts)})")
    measured = [r for r in rows if np.isfinite(r.rpm_measured)]
    est_ok = sum(abs(r.rpm_estimated / r.rpm_measured - 1) < 0.02 for r in measured)
    with_meas = len(measured)
    diag_est = sum(LABEL_TO_FAULT[r.label] == r.predicted_estimated for r in rows)
    print(f"speed estimated from the spectrum within 2 % of the measured speed: {_pct(est_ok, with_meas)}; "
          f"diagnosis correct with the estimated speed: {_pct(diag_est, len(rows))}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_FOLDER,
                        help="folder of CWRU .npz records (default: ../shared/data/cwru)")
    args = parser.parse_args(argv)
    folder = args.folder.resolve()
    if not folder.is_dir() or not any(folder.glob("*.npz")):
        print(f"no .npz records in {folder}", file=sys.stderr)
        return 1
    start = time.perf_counter()
    rows = evaluate(folder)
    report(rows, folder, time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
