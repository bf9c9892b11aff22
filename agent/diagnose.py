"""`twin-agent diagnose FILE...`: run the vibration analytics on recorded waveforms.

The same `agent.analytics.vibration.analyze_block` the agent runs on live blocks, applied to a
whole file, so that a person can check a machine (or the analytics) without a running agent:

    twin-agent diagnose rec.npz --bearing 6205-2RS --rpm 1797
    twin-agent diagnose rec.npz --bearing 6205-2RS --channel de --second-channel fe
    twin-agent diagnose a.csv b.wav --fs 25600 --bpfo 3.58 --bpfi 5.42 --bsf 2.36 --ftf 0.40 --json
    python -m agent.diagnose rec.npz --bearing 6205-2RS --plot rec.png

When the bearing evidence does not separate the defect's location, the diagnosis is `bearing`
(bearing fault, location undetermined) and the candidate locations are listed with their lines.
`--second-channel` names a second sensor on the same machine (another key, column or channel of
the same file): its envelope evidence joins the first's as a second opinion (the agent does the
same for an asset with two sensors).

Inputs (acceleration, in g unless --units says m/s^2):
* .npz: one array per channel (default: the first 1-D numeric array); the sample rate from
  --fs, else key `fs_<channel>`, else `fs_<suffix>` for a channel `<name>_<suffix>`, else
  `fs`; the speed from --rpm, else key `rpm`, else it is estimated from the spectrum.
* .csv: one column, or named columns with a header (--channel NAME or a 0-based index;
  default: the first column that is not time); --fs, or a time column in seconds.
* .wav: PCM 8/16/24/32-bit or IEEE float; --channel is a 0-based channel index. WAV carries no
  calibration: samples are scaled to +/-1 full scale and multiplied by --scale.

A file that cannot be read or analysed is reported on stderr and the others are still
processed; the exit code is 1 if any file failed (2 for bad arguments).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import struct
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.analytics.bearings import CATALOGUE, BearingDefects, bearing_defects
from agent.analytics.diagnosis import UNDETERMINED, merge_evidence
from agent.analytics.iso10816 import FOUNDATIONS, MACHINE_GROUPS
from agent.analytics.vibration import VibrationIndicators, analyze_block_evidence, with_bearing_evidence
from runtime.errors import DecodeError

__all__ = ["Waveform", "add_arguments", "main", "read_waveform", "run"]

PROG = "twin-agent diagnose"
TIME_COLUMNS = ("time", "t", "time_s", "seconds", "timestamp")
_METADATA_KEYS = ("fs", "rpm")


@dataclass(frozen=True, slots=True)
class Waveform:
    """One channel read from a file, with what the file says about it."""

    samples: np.ndarray
    fs: float | None
    rpm: float | None
    channel: str


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `diagnose`, for `twin-agent diagnose` and `python -m agent.diagnose`."""
    parser.add_argument("files", nargs="+", metavar="FILE", help="waveform files: .npz, .csv or .wav")
    parser.add_argument("--fs", type=float, metavar="HZ", help="sample rate (overrides the file)")
    parser.add_argument("--rpm", type=float, metavar="RPM",
                        help="shaft speed in r/min (overrides the file; estimated when neither gives it)")
    parser.add_argument("--bearing", metavar="MODEL",
                        help=f"bearing model from the catalogue ({', '.join(sorted(CATALOGUE))})")
    for name, what in (("bpfo", "outer race"), ("bpfi", "inner race"), ("bsf", "ball spin"), ("ftf", "cage")):
        parser.add_argument(f"--{name}", type=float, default=0.0, metavar="X",
                            help=f"{what} defect frequency in multiples of shaft speed (give all four)")
    parser.add_argument("--channel", metavar="KEY", help="npz key, csv column name or index, wav channel index")
    parser.add_argument("--second-channel", metavar="KEY",
                        help="a second sensor on the same machine in the same file (npz key, csv column, wav "
                        "channel): its bearing evidence is a second opinion")
    parser.add_argument("--units", default="g", choices=("g", "m/s^2"), help="acceleration units (default g)")
    parser.add_argument("--scale", type=float, default=1.0, metavar="X",
                        help="wav only: acceleration units per full scale (default 1.0)")
    parser.add_argument("--machine-group", type=int, default=2, choices=MACHINE_GROUPS,
                        help="ISO 10816-3 machine group (default 2)")
    parser.add_argument("--foundation", default="rigid", choices=FOUNDATIONS,
                        help="ISO 10816-3 foundation (default rigid)")
    parser.add_argument("--json", action="store_true", help="one JSON object per file, one per line")
    parser.add_argument("--plot", metavar="OUT.png",
                        help="write a diagnostic plot (needs the 'plot' extra: matplotlib); with several "
                        "files the file name is appended: OUT-<file>.png")


def read_waveform(path: Path, channel: str | None = None, *, scale: float = 1.0) -> Waveform:
    """Read one channel of a .npz, .csv or .wav file; DecodeError or OSError say what is wrong."""
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _read_npz(path, channel)
    if suffix == ".csv":
        return _read_csv(path, channel)
    if suffix == ".wav":
        return _read_wav(path, channel, scale)
    raise DecodeError(f"unsupported file type {path.suffix or '(none)'!r}: use .npz, .csv or .wav")


def _scalar(value: np.ndarray, key: str) -> float:
    try:
        number = float(np.asarray(value).reshape(-1)[0]) if np.asarray(value).size == 1 else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not (math.isfinite(number) and number > 0):
        raise DecodeError(f"key {key!r} must hold one positive number")
    return number


def _read_npz(path: Path, channel: str | None) -> Waveform:
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DecodeError(f"not a readable .npz file ({exc})") from None
    with archive:
        try:
            keys = list(archive.keys())
            arrays = {key: archive[key] for key in keys}
        except (ValueError, EOFError, zipfile.BadZipFile, OSError) as exc:
            raise DecodeError(f"corrupt .npz file ({exc})") from None
    waveforms = [key for key, arr in arrays.items()
                 if key not in _METADATA_KEYS and arr.ndim == 1 and arr.size > 1
                 and np.issubdtype(arr.dtype, np.number)]
    if channel is None:
        if not waveforms:
            raise DecodeError(f"no 1-D numeric array in the file (keys: {', '.join(keys) or 'none'})")
        channel = waveforms[0]
    elif channel not in waveforms:
        raise DecodeError(f"no waveform channel {channel!r}; channels in the file: {', '.join(waveforms) or 'none'}")
    fs = None
    candidates = [f"fs_{channel}"]
    if "_" in channel:
        candidates.append("fs_" + channel.rsplit("_", 1)[1])
    candidates.append("fs")
    for key in candidates:
        if key in arrays:
            fs = _scalar(arrays[key], key)
            break
    rpm = None
    if "rpm" in arrays:
        value = np.asarray(arrays["rpm"]).reshape(-1)
        if value.size == 1 and np.issubdtype(value.dtype, np.number) and math.isfinite(float(value[0])) \
                and float(value[0]) > 0:
            rpm = float(value[0])
    return Waveform(np.asarray(arrays[channel], dtype=np.float64), fs, rpm, channel)


def _read_csv(path: Path, channel: str | None) -> Waveform:
    text = path.read_text(encoding="utf-8-sig", errors="strict")
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise DecodeError("empty CSV file")
    first = lines[0]
    delimiter = next((d for d in (",", ";", "\t") if d in first), None)
    rows = list(csv.reader(io.StringIO("\n".join(lines)), delimiter=delimiter)) if delimiter else \
        [line.split() for line in lines]

    def is_number(cell: str) -> bool:
        try:
            float(cell)
        except ValueError:
            return False
        return True

    header = [cell.strip() for cell in rows[0]] if not all(is_number(c) for c in rows[0]) else None
    body = rows[1:] if header else rows
    if not body:
        raise DecodeError("CSV file has a header but no data rows")
    width = len(header) if header else len(body[0])
    names = header or [str(i) for i in range(width)]
    first_data_line = 2 if header else 1
    for i, row in enumerate(body):
        if len(row) != width:
            raise DecodeError(f"data row {i + first_data_line}: {len(row)} values, expected {width}")
        if not all(is_number(cell) for cell in row):
            raise DecodeError(f"data row {i + first_data_line}: not a number: {','.join(row)[:60]!r}")
    data = np.array([[float(cell) for cell in row] for row in body], dtype=np.float64)
    time_cols = [i for i, name in enumerate(names) if name.lower() in TIME_COLUMNS]
    if channel is None:
        choices = [i for i in range(width) if i not in time_cols]
        if not choices:
            raise DecodeError("no data column (only a time column)")
        col = choices[0]
    elif channel in names:
        col = names.index(channel)
    elif channel.isdigit() and int(channel) < width:
        col = int(channel)
    else:
        raise DecodeError(f"no column {channel!r}; columns: {', '.join(names)}")
    fs = None
    if time_cols and len(data) > 1:
        t = data[:, time_cols[0]]
        if not np.all(np.diff(t) > 0):
            raise DecodeError(f"time column {names[time_cols[0]]!r} must increase on every row")
        fs = (len(t) - 1) / float(t[-1] - t[0])  # the mean step: immune to rounding of the times
    return Waveform(data[:, col].copy(), fs, None, names[col])


def _read_wav(path: Path, channel: str | None, scale: float) -> Waveform:
    blob = path.read_bytes()
    if len(blob) < 12 or blob[:4] != b"RIFF" or blob[8:12] != b"WAVE":
        raise DecodeError("not a RIFF/WAVE file")
    fmt: tuple[int, int, int, int] | None = None
    data: bytes | None = None
    pos = 12
    while pos + 8 <= len(blob):
        chunk, size = blob[pos:pos + 4], struct.unpack("<I", blob[pos + 4:pos + 8])[0]
        body = blob[pos + 8:pos + 8 + size]
        if chunk == b"fmt ":
            if len(body) < 16:
                raise DecodeError("WAV fmt chunk too short")
            tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
            if tag == 0xFFFE and len(body) >= 26:
                tag = struct.unpack("<H", body[24:26])[0]  # WAVE_FORMAT_EXTENSIBLE: sub-format GUID
            fmt = (tag, channels, rate, bits)
        elif chunk == b"data":
            data = body
        pos += 8 + size + (size & 1)
    if fmt is None or data is None:
        raise DecodeError("WAV file without fmt or data chunk")
    tag, channels, rate, bits = fmt
    if channels < 1 or rate <= 0:
        raise DecodeError(f"WAV header has {channels} channels at {rate} Hz")
    width = bits // 8
    usable = len(data) - len(data) % (width * channels)
    raw = data[:usable]
    if tag == 1 and bits == 8:
        samples = (np.frombuffer(raw, np.uint8).astype(np.float64) - 128.0) / 128.0
    elif tag == 1 and bits in (16, 32):
        samples = np.frombuffer(raw, f"<i{width}").astype(np.float64) / 2.0 ** (bits - 1)
    elif tag == 1 and bits == 24:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        value = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        samples = np.where(value >= 1 << 23, value - (1 << 24), value).astype(np.float64) / 2.0**23
    elif tag == 3 and bits in (32, 64):
        samples = np.frombuffer(raw, f"<f{width}").astype(np.float64)
    else:
        raise DecodeError(f"unsupported WAV encoding (format tag {tag}, {bits} bits)")
    index = 0
    if channel is not None:
        if not channel.isdigit() or int(channel) >= channels:
            raise DecodeError(f"no channel {channel!r}: the file has channels 0..{channels - 1}")
        index = int(channel)
    return Waveform(samples.reshape(-1, channels)[:, index] * scale, float(rate), None, str(index))


def _candidates(ind: VibrationIndicators) -> list[dict[str, object]]:
    """The candidate locations of an undetermined bearing diagnosis (empty otherwise)."""
    if ind.fault != UNDETERMINED:
        return []
    return [{"fault": d.fault, "confidence": d.confidence, "evidence": d.evidence.removeprefix("candidate ")}
            for d in ind.diagnosis if d.evidence.startswith("candidate ")]


def _result(path: Path, channel: str, n: int, fs: float, ind: VibrationIndicators) -> dict[str, object]:
    indicators = ind.as_dict()
    diagnosis = indicators.pop("diagnosis")
    return {
        "file": str(path),
        "channel": channel,
        "fs": fs,
        "n_samples": n,
        "rpm": ind.rpm,
        "rpm_source": ind.rpm_source,
        "fault": ind.fault,
        "confidence": ind.confidence,
        "location_undetermined": ind.fault == UNDETERMINED,
        "candidates": _candidates(ind),
        "health": ind.health,
        "iso_zone": ind.iso_zone,
        "indicators": indicators,
        "diagnosis": diagnosis,
    }


def _text(path: Path, channel: str, n: int, fs: float, ind: VibrationIndicators, rpm_from: str,
          args: argparse.Namespace, bearing: BearingDefects | None) -> str:
    fault = "bearing (bearing fault, location undetermined)" if ind.fault == UNDETERMINED else ind.fault
    out = [
        f"{path} [{channel}]  {fs:g} Hz, {n} samples ({n / fs:.1f} s), {ind.rpm:.0f} r/min ({rpm_from})",
        f"  fault {fault} (confidence {ind.confidence:.2f})   health {ind.health:.0f}/100   "
        f"ISO 10816-3 zone {ind.iso_zone}: {ind.velocity_rms_mm_s:.2f} mm/s r.m.s. "
        f"(group {args.machine_group}, {args.foundation})",
        f"  acceleration r.m.s. {ind.accel_rms:.3f} g, peak {ind.accel_peak:.3f} g, crest factor "
        f"{ind.crest_factor:.1f}, kurtosis {ind.kurtosis:.1f}",
        f"  velocity at 1x {ind.amp_1x:.3f}, 2x {ind.amp_2x:.3f}, 3x {ind.amp_3x:.3f} mm/s r.m.s.",
    ]
    if bearing is not None:
        out.append(f"  envelope band {ind.envelope_band_hz[0]:.0f}-{ind.envelope_band_hz[1]:.0f} Hz "
                   f"(spectral kurtosis {ind.band_kurtosis:.1f}); defect lines above background: "
                   f"BPFO {ind.bpfo:.0f} dB, BPFI {ind.bpfi:.0f} dB, 2xBSF {ind.bsf:.0f} dB, FTF {ind.ftf:.0f} dB")
    for entry in ind.diagnosis:
        out.append(f"  - {entry.fault} {entry.confidence:.2f}: {entry.evidence}")
    candidates = _candidates(ind)
    if candidates:
        out.append("  candidate locations: " + ", ".join(f"{c['fault']}" for c in candidates)
                   + " (the evidence does not separate them: inspect the whole bearing)")
    return "\n".join(out)


def _plot_path(template: str, path: Path, several: bool) -> Path:
    out = Path(template)
    return out.with_name(f"{out.stem}-{path.stem}{out.suffix or '.png'}") if several else out


def run(args: argparse.Namespace) -> int:
    """Diagnose every file; 0 if all succeeded, 1 if any failed, 2 for inconsistent options."""
    try:
        bearing = bearing_defects(args.bearing or "", bpfo=args.bpfo, bpfi=args.bpfi, bsf=args.bsf, ftf=args.ftf)
        for name in ("fs", "rpm"):
            value = getattr(args, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"--{name} must be a positive number, got {value}")
    except ValueError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    failed = 0
    several = len(args.files) > 1
    for name in args.files:
        path = Path(name)
        try:
            wave = read_waveform(path, args.channel, scale=args.scale)
            fs = args.fs or wave.fs
            if fs is None:
                raise DecodeError("the file gives no sample rate: pass --fs")
            rpm, rpm_from = (args.rpm, "--rpm") if args.rpm else (wave.rpm, "file") if wave.rpm else (None, "")
            options = {"bearing": bearing, "machine_group": args.machine_group, "foundation": args.foundation,
                       "units": args.units}
            first = analyze_block_evidence(wave.samples, fs, rpm=rpm, rpm_source="given", sensor=wave.channel,
                                           **options)
            ind, channel = first.indicators, wave.channel
            if args.second_channel:
                other = read_waveform(path, args.second_channel, scale=args.scale)
                other_fs = args.fs or other.fs or fs
                second = analyze_block_evidence(other.samples, other_fs, rpm=ind.rpm, rpm_source=ind.rpm_source,
                                                sensor=other.channel, **options)
                channel = f"{wave.channel}+{other.channel}"
                if first.evidence is not None and second.evidence is not None:
                    ind = with_bearing_evidence(ind, merge_evidence([first.evidence, second.evidence]))
            if args.plot:
                from agent.analytics.plot import plot_diagnosis

                plot_diagnosis(_plot_path(args.plot, path, several), wave.samples, fs, ind, bearing,
                               units=args.units, title=f"{path.name} [{wave.channel}]")
        except (OSError, DecodeError, ValueError, RuntimeError) as exc:
            failed += 1
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            print(f"{PROG}: {path}: {reason}", file=sys.stderr)
            continue
        n = len(wave.samples)
        if args.json:
            print(json.dumps(_result(path, channel, n, fs, ind), allow_nan=False), flush=True)
        else:
            print(_text(path, channel, n, fs, ind, rpm_from or "estimated", args, bearing), flush=True)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
