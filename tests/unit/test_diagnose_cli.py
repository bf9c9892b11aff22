"""`twin-agent diagnose`: file formats, output, and errors that name the file and keep the others going."""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from agent.diagnose import main, read_waveform

FS = 12800.0
RPM = 1800.0


def outer_race_signal(n: int = 65536, seed: int = 1) -> np.ndarray:
    """Impacts at BPFO of a 6205 (3.5848 x shaft rate) ringing 3 kHz, plus noise, in g."""
    rng = np.random.default_rng(seed)
    t = np.arange(160) / FS
    ring = np.exp(-400 * t) * np.sin(2 * np.pi * 3000 * t)
    x = 0.05 * rng.standard_normal(n)
    period = FS / (3.5848 * RPM / 60)
    for start in np.arange(0, n - len(ring), period):
        i = int(start + rng.normal(0, 0.01 * period))
        if 0 <= i < n - len(ring):
            x[i:i + len(ring)] += 0.5 * ring
    return x


@pytest.fixture
def npz_file(tmp_path: Path) -> Path:
    path = tmp_path / "motor.npz"
    np.savez(path, de=outer_race_signal(), fe=outer_race_signal(seed=2) * 0.3, fs=FS, rpm=RPM)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_npz_text_report(capsys: pytest.CaptureFixture[str], npz_file: Path) -> None:
    code, out, err = run(capsys, str(npz_file), "--bearing", "6205-2RS")
    assert code == 0 and err == ""
    assert "[de]" in out and "12800 Hz" in out and "1800 r/min (file)" in out
    assert "fault outer_race" in out and "BPFO" in out


def test_json_lines_have_the_documented_keys(capsys: pytest.CaptureFixture[str], npz_file: Path) -> None:
    code, out, _ = run(capsys, str(npz_file), str(npz_file), "--bearing", "SKF 6205-2RS JEM", "--json")
    lines = out.strip().splitlines()
    assert code == 0 and len(lines) == 2
    record = json.loads(lines[0])
    assert {"file", "fault", "confidence", "health", "iso_zone", "indicators", "diagnosis"} <= record.keys()
    assert record["fault"] == "outer_race" and record["indicators"]["bpfo"] >= 12
    assert record["rpm_source"] == "given" and record["channel"] == "de"


def test_multipliers_instead_of_a_model(capsys: pytest.CaptureFixture[str], npz_file: Path) -> None:
    code, out, _ = run(capsys, str(npz_file), "--bpfo", "3.5848", "--bpfi", "5.4152", "--bsf", "2.357",
                       "--ftf", "0.3983", "--json")
    assert code == 0 and json.loads(out)["fault"] == "outer_race"


def test_channel_and_overrides(capsys: pytest.CaptureFixture[str], npz_file: Path) -> None:
    code, out, _ = run(capsys, str(npz_file), "--channel", "fe", "--rpm", "1750", "--fs", "12800", "--json")
    record = json.loads(out)
    assert code == 0 and record["channel"] == "fe" and record["rpm"] == 1750.0


def test_speed_is_estimated_when_nobody_gives_it(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "no_rpm.npz"
    t = np.arange(65536) / FS
    np.savez(path, accel=sum(np.sin(2 * np.pi * h * 24.0 * t) / h for h in range(1, 6)), fs=FS)
    code, out, _ = run(capsys, str(path), "--json")
    record = json.loads(out)
    assert code == 0 and record["rpm_source"] == "estimated"
    assert record["rpm"] == pytest.approx(1440, rel=0.01)


def test_csv_with_header_and_time_column(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    x = outer_race_signal(32768)
    path = tmp_path / "log.csv"
    rows = "\n".join(f"{i / FS:.8f},{v:.6f},0" for i, v in enumerate(x))
    path.write_text("time,accel_g,temp\n" + rows + "\n")
    wave_ = read_waveform(path)
    assert wave_.channel == "accel_g" and wave_.fs == pytest.approx(FS, rel=1e-6)
    code, out, _ = run(capsys, str(path), "--bearing", "6205-2RS", "--rpm", "1800", "--json")
    assert code == 0 and json.loads(out)["fault"] == "outer_race"


def test_csv_single_column_needs_fs(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "one.csv"
    path.write_text("\n".join(f"{v:.6f}" for v in outer_race_signal(16384)) + "\n")
    code, _, err = run(capsys, str(path))
    assert code == 1 and "pass --fs" in err
    code, out, _ = run(capsys, str(path), "--fs", "12800", "--rpm", "1800", "--json")
    assert code == 0 and json.loads(out)["fs"] == FS


def test_csv_bad_value_names_the_row(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("accel\n0.1\n0.2\noops\n0.3\n")
    code, _, err = run(capsys, str(path), "--fs", "1000")
    assert code == 1 and "data row 4" in err and "oops" in err


def test_wav_pcm16_and_float32(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    x = outer_race_signal(65536)
    scale = float(np.max(np.abs(x))) * 1.01  # g at full scale
    pcm = tmp_path / "pcm.wav"
    with wave.open(str(pcm), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(int(FS))
        frames = np.stack([np.round(x / scale * 32767), np.zeros_like(x)], axis=1).astype("<i2")
        w.writeframes(frames.tobytes())
    flt = tmp_path / "float.wav"
    data = (x / scale).astype("<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, int(FS), int(FS) * 4, 4, 32)
    flt.write_bytes(b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(data)) + b"WAVE"
                    + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data)
    for path in (pcm, flt):
        read = read_waveform(path, scale=scale)
        assert read.fs == FS and np.max(np.abs(read.samples - x)) < 2 * scale / 32767
    code, out, _ = run(capsys, str(pcm), str(flt), "--bearing", "6205-2RS", "--rpm", "1800",
                       "--scale", str(scale), "--json")
    records = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["fault"] for r in records] == ["outer_race", "outer_race"]
    assert math.isclose(records[0]["indicators"]["accel_rms"], records[1]["indicators"]["accel_rms"], rel_tol=1e-3)
    code, _, err = run(capsys, str(pcm), "--channel", "2")
    assert code == 1 and "channels 0..1" in err


def test_bad_files_are_reported_and_the_others_still_processed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, npz_file: Path
) -> None:
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 this is not really a zip archive")
    unknown = tmp_path / "notes.txt"
    unknown.write_text("hello")
    missing = tmp_path / "missing.npz"
    code, out, err = run(capsys, str(missing), str(corrupt), str(npz_file), str(unknown), "--json")
    assert code == 1
    assert [json.loads(line)["file"] for line in out.splitlines()] == [str(npz_file)]
    errors = err.strip().splitlines()
    assert len(errors) == 3
    assert str(missing) in errors[0] and "No such file" in errors[0]
    assert str(corrupt) in errors[1] and "npz" in errors[1]
    assert str(unknown) in errors[2] and "unsupported file type" in errors[2]


def test_wrong_channel_lists_the_channels(capsys: pytest.CaptureFixture[str], npz_file: Path) -> None:
    code, out, err = run(capsys, str(npz_file), "--channel", "drive_end")
    assert code == 1 and out == ""
    assert "no waveform channel 'drive_end'" in err and "de, fe" in err


def test_unanalysable_waveform_is_an_error_for_that_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "flat.npz"
    np.savez(path, accel=np.zeros(4096), fs=FS)
    code, _, err = run(capsys, str(path))
    assert code == 1 and "constant" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--bearing", "6205-2RS", "--bpfo", "3.5"], "not both"),
        (["--bpfo", "3.5"], "missing bpfi, bsf, ftf"),
        (["--bearing", "6309"], "not in the catalogue"),
        (["--rpm", "-10"], "--rpm must be a positive number"),
    ],
)
def test_inconsistent_options_exit_2(capsys: pytest.CaptureFixture[str], npz_file: Path, argv: list[str],
                                     message: str) -> None:
    code, out, err = run(capsys, str(npz_file), *argv)
    assert code == 2 and out == "" and message in err


def test_plot_is_written(capsys: pytest.CaptureFixture[str], tmp_path: Path, npz_file: Path) -> None:
    pytest.importorskip("matplotlib")
    code, _, _ = run(capsys, str(npz_file), str(npz_file), "--bearing", "6205-2RS", "--plot",
                     str(tmp_path / "out.png"))
    png = tmp_path / "out-motor.png"
    assert code == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_module_entry_point(npz_file: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "agent.diagnose", str(npz_file), "--bearing", "6205-2RS",
                           "--json"], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["fault"] == "outer_race"


# --- unsure is an answer; a second sensor -------------------------------------------------------------------


def inner_race_signal(n: int = 65536, seed: int = 3) -> np.ndarray:
    """Impacts at BPFI of a 6205 (5.4152 x shaft rate), modulated by the load zone once per turn, in g."""
    rng = np.random.default_rng(seed)
    t = np.arange(160) / FS
    ring = np.exp(-400 * t) * np.sin(2 * np.pi * 3000 * t)
    x = np.zeros(n)
    fr = RPM / 60
    period = FS / (5.4152 * fr)
    for start in np.arange(0, n - len(ring), period):
        i = int(start + rng.normal(0, 0.01 * period))
        if 0 <= i < n - len(ring):
            x[i:i + len(ring)] += 0.5 * ring * 0.5 * (1 + math.cos(2 * math.pi * fr * i / FS))
    return x


@pytest.fixture
def two_races(tmp_path: Path) -> Path:
    path = tmp_path / "two_races.npz"
    np.savez(path, both=outer_race_signal() + 1.5 * inner_race_signal(), de=outer_race_signal(),
             fe=inner_race_signal() + 0.05 * np.random.default_rng(9).standard_normal(65536), fs=FS, rpm=RPM)
    return path


def test_undetermined_location_in_text_and_json(capsys: pytest.CaptureFixture[str], two_races: Path) -> None:
    code, out, err = run(capsys, str(two_races), "--channel", "both", "--bearing", "6205-2RS")
    assert code == 0 and err == ""
    assert "fault bearing (bearing fault, location undetermined)" in out
    assert "candidate locations: outer_race, inner_race" in out or "candidate locations: inner_race, outer_race" in out
    code, out, _ = run(capsys, str(two_races), "--channel", "both", "--bearing", "6205-2RS", "--json")
    record = json.loads(out)
    assert record["fault"] == "bearing" and record["location_undetermined"] is True
    assert {c["fault"] for c in record["candidates"]} == {"outer_race", "inner_race"}
    assert all(c["evidence"].startswith(("outer race defect", "inner race defect")) for c in record["candidates"])
    assert record["diagnosis"][0]["fault"] == "bearing"


def test_second_channel_is_a_second_opinion(capsys: pytest.CaptureFixture[str], two_races: Path) -> None:
    code, out, _ = run(capsys, str(two_races), "--channel", "de", "--bearing", "6205-2RS", "--json")
    alone = json.loads(out)
    assert code == 0 and alone["fault"] == "outer_race" and alone["candidates"] == []
    code, out, _ = run(capsys, str(two_races), "--channel", "de", "--second-channel", "fe", "--bearing",
                       "6205-2RS", "--json")
    both = json.loads(out)
    assert code == 0 and both["channel"] == "de+fe" and both["fault"] == "bearing"
    assert "the sensors disagree" in both["diagnosis"][0]["evidence"]
    code, _, err = run(capsys, str(two_races), "--second-channel", "nde", "--bearing", "6205-2RS")
    assert code == 1 and "no waveform channel 'nde'" in err
