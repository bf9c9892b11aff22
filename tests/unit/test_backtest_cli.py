"""`twin-collector backtest` as a user runs it (a subprocess) on small synthetic recordings: the JSON
contract, the readable timeline and plot, progress on stderr, bad input, and the documents the agent
would send."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agent.analytics.bearings import lookup
from agent.analytics.vibration import analyze_block
from agent.vibration_monitor import indicators_message
from collector.backtest import indicators_doc
from collector.workorders.history import vibration_doc

FS = 25600.0
N = 2048
STEP_S = 10.0
CONTRACT = {"file", "snapshots", "duration_s", "work_orders", "rul_s"}
WORK_ORDER_KEYS = {"t_s", "rule", "kind", "severity", "title"}
RULES = """
[[rules]]
name = "vibration_zone"
kind = "iso_zone"
asset_type = "machine"

[[rules]]
name = "remaining_life"
kind = "prognosis"
asset_type = "machine"
baseline_blocks = 30
smooth_blocks = 5
sustain_blocks = 5
failure_ratio = 6.0
fit_window_s = 600.0
horizon_s = 3600.0
life_scale_s = 20000.0
life_shape = 2.0

[[rules]]
name = "flow_low"
asset_type = "machine"
point = "flow"
below = 10.0
"""


def recording(path: Path, snapshots: int, *, grow_from: int | None = None, seed: int = 1) -> Path:
    """Broadband vibration of 0.3 g r.m.s.; from `grow_from` on it grows 1.5 % per snapshot."""
    rng = np.random.default_rng(seed)
    gain = np.ones(snapshots)
    if grow_from is not None:
        gain[grow_from:] = np.exp(0.015 * np.arange(snapshots - grow_from))
    accel = (0.3 * rng.standard_normal((snapshots, N)) * gain[:, None]).astype(np.float32)
    np.savez(path, accel=accel, t_s=np.arange(snapshots) * STEP_S, fs=FS, rpm=1800.0)
    return path


def backtest(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "collector", "backtest", *map(str, args)],
                          capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("recordings")
    rules = folder / "rules.toml"
    rules.write_text(RULES)
    return {"wearing": recording(folder / "wearing.npz", 220, grow_from=100),
            "healthy": recording(folder / "healthy.npz", 120, seed=2),
            "short": recording(folder / "short.npz", 10, seed=3), "rules": rules, "folder": folder}


def test_json_contract(files: dict[str, Path]) -> None:
    proc = backtest(files["wearing"], files["healthy"], files["short"], "--rules", files["rules"], "--json")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 3, "one object per recording, one per line"
    docs = [json.loads(line) for line in lines]
    for doc in docs:
        assert set(doc) == CONTRACT
        assert isinstance(doc["snapshots"], int) and isinstance(doc["duration_s"], float)
        for wo in doc["work_orders"]:
            assert set(wo) == WORK_ORDER_KEYS
            assert wo["kind"] in ("condition", "preventive", "data_quality")
            assert wo["severity"] in ("info", "minor", "major", "critical")
            assert isinstance(wo["t_s"], float) and wo["title"]
        if doc["rul_s"] is not None:
            assert set(doc["rul_s"]) == {"estimate", "low", "high"}
            assert doc["rul_s"]["low"] <= doc["rul_s"]["estimate"] <= doc["rul_s"]["high"]
    wearing, healthy, short = docs
    assert (wearing["file"], wearing["snapshots"], wearing["duration_s"]) == ("wearing.npz", 220, 2190.0)
    preventive = [w for w in wearing["work_orders"] if w["kind"] == "preventive"]
    assert preventive and preventive[0]["rule"] == "remaining_life"
    assert 1000 < preventive[0]["t_s"] < 2190, "after the wear starts, before the end of the recording"
    assert wearing["rul_s"]["estimate"] < healthy["rul_s"]["estimate"]
    assert healthy["work_orders"] == []
    assert short["rul_s"] is None, "no estimate before the baseline is complete"
    assert "wearing.npz: 220/220 snapshots (100 %" in proc.stderr, "progress goes to stderr"


def test_timeline_and_plot(files: dict[str, Path]) -> None:
    pytest.importorskip("matplotlib", reason="--plot needs the plot extra")
    png = files["folder"] / "out.png"
    proc = backtest(files["wearing"], "--rules", files["rules"], "--plot", png, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert "wearing.npz: 220 snapshots" in proc.stdout
    assert "PREVENTIVE" in proc.stdout and "remaining life at the last snapshot: ~" in proc.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_default_rules_and_bearing(files: dict[str, Path]) -> None:
    proc = backtest(files["healthy"], "--bearing", "6205-2RS", "--json", "--quiet")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["work_orders"] == [] and doc["rul_s"] is not None


def test_bad_input_is_named_and_the_rest_still_runs(files: dict[str, Path]) -> None:
    broken = files["folder"] / "broken.npz"
    np.savez(broken, accel=np.zeros((3, 512), dtype=np.float32), fs=FS, rpm=1800.0)
    proc = backtest(broken, files["healthy"], "--rules", files["rules"], "--json", "--quiet")
    assert proc.returncode == 1
    assert "broken.npz: missing key(s) t_s" in proc.stderr
    assert json.loads(proc.stdout)["file"] == "healthy.npz"

    bad_rules = files["folder"] / "bad.toml"
    bad_rules.write_text('[[rules]]\nname = "p"\nkind = "prognosis"\nasset_type = "machine"\nfailure_ratio = 0.5\n')
    proc = backtest(files["healthy"], "--rules", bad_rules)
    assert proc.returncode == 2 and "rules[0]" in proc.stderr and "failure_ratio" in proc.stderr

    proc = backtest(files["healthy"], "--bpfo", "3.5")
    assert proc.returncode == 2 and "missing bpfi" in proc.stderr

    proc = backtest(files["healthy"], "--rules", files["rules"], "--asset-type", "pump")
    assert proc.returncode == 1 and "no vibration rule applies" in proc.stderr


def test_documents_are_what_the_agent_sends() -> None:
    """The backtest's per-block document equals the agent's wire message as the collector stores it."""
    x = 0.3 * np.random.default_rng(4).standard_normal(8192)
    ind = analyze_block(x, 12800.0, rpm=1480.0, rpm_source="config", bearing=lookup("6205-2RS"))
    assert indicators_doc(ind, 123, "pump-1", "de") == vibration_doc(indicators_message("pump-1", "de", 123, ind))
