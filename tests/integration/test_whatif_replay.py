"""What-if on a recorded history: `twin-collector simulate` replays two days of stored indicators
through proposed rules and reports added, removed, earlier and later work orders, without touching
the production database."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

from collector.fleet import FleetTwin
from collector.whatif import compare, replay, run_whatif
from collector.workorders.evaluate import parse_rules
from collector.workorders.history import HistorySettings
from protos.twin.v1 import twin_pb2
from tests.integration.test_workorders_lifecycle import hello, summary, vibration

S = 10**9
H = 3600 * S
CURRENT_RULES = """
[[rules]]
name = "filter_clogged"
asset_type = "ahu"
point = "filter_dp"
above = 300.0
clear_at = 250.0
min_duration_s = 600
severity = "major"

[[rules]]
name = "vib_zone"
kind = "iso_zone"
asset_type = "pump"
min_blocks = 3
"""
PROPOSED_RULES = """
[[rules]]   # lower limit: raises earlier
name = "filter_clogged"
asset_type = "ahu"
point = "filter_dp"
above = 260.0
clear_at = 230.0
min_duration_s = 600
severity = "major"

[[rules]]   # new: forecast when the pump reaches zone D (7.1 mm/s)
name = "vib_forecast"
kind = "trend"
asset_type = "pump"
vibration = "velocity_rms_mm_s"
above = 7.1
window_days = 1
horizon_days = 3
evaluate_every_s = 3600
"""


def record_history(db: Path, start: int) -> None:
    """Two days: the AHU filter clogs linearly (200 -> 400 Pa), the pump's vibration grows (2 -> 6 mm/s)."""
    async def main() -> None:
        fleet = FleetTwin(db, parse_rules([]), HistorySettings(summary_resolution_s=300))
        await fleet.open()
        await fleet.register_hello(hello())
        rng = np.random.default_rng(5)
        seq = 0
        for k in range(0, 48 * 12):  # a batch every 5 minutes
            ts = start + k * 300 * S
            days = k * 300 / 86_400
            velocity = 2.0 + 2.0 * days + rng.normal(0, 0.1)
            zone = "B" if velocity < 4.5 else "C"
            seq += 1
            await fleet.commit_batch("gw-a", "e1", twin_pb2.Batch(
                seq=seq, summaries=[summary("ahu-1", "filter_dp", ts, 200 + 100 * days + rng.normal(0, 3))],
                vibration=[vibration("pump-1", "de", ts, zone, velocity)]))
        await fleet.close()

    asyncio.run(main())


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_simulate_cli_on_a_recorded_history(tmp_path: Path) -> None:
    state = tmp_path / "state"
    start = time.time_ns() - 50 * H
    record_history(state / "collector.sqlite", start)
    config = tmp_path / "collector.toml"
    config.write_text(textwrap.dedent(f"""
        [collector]
        state_dir = "{state}"
        [[agents]]
        id = "gw-a"
        token_sha256 = "{"a" * 64}"
        """) + CURRENT_RULES)
    proposed = tmp_path / "proposed.toml"
    proposed.write_text(PROPOSED_RULES)
    before = digest(state / "collector.sqlite")

    proc = subprocess.run([sys.executable, "-m", "collector", "simulate", "--config", str(config), "--rules",
                           str(proposed), "--replace-all", "--since", "3d", "--json"], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["summary"] == {"current": 2, "proposed": 2, "added": 1, "removed": 1, "earlier": 1, "later": 0,
                                 "unchanged": 0}
    (earlier,) = report["earlier"]
    # 300 Pa is reached after 24 h, 260 Pa after 14.4 h (+ 10 min minimum duration each): ~9.6 h earlier
    assert earlier["proposed"]["rule"] == "filter_clogged"
    assert -11 * 3600 < earlier["shift_s"] < -8 * 3600
    (removed,) = report["removed"]
    assert removed["rule"] == "vib_zone" and removed["asset"] == "pump-1"
    (added,) = report["added"]
    assert added["rule"] == "vib_forecast" and added["category"] == "preventive"
    # zone D (7.1 mm/s) is reached at 2.55 days; the forecast says so before the data ends
    eta_day = (added["raised_ns"] - start) / (24 * H) + added["evidence"]["eta_days"]
    assert 2.1 < eta_day < 3.1
    assert (added["raised_ns"] - start) / (24 * H) < 2.0
    assert report["recorded"] == [], "no rules ran in production while recording"
    assert digest(state / "collector.sqlite") == before, "the production database is untouched"

    text = subprocess.run([sys.executable, "-m", "collector", "simulate", "--config", str(config), "--rules",
                           str(proposed), "--replace-all", "--since", "3d"], capture_output=True, text=True,
                          timeout=120, check=True)
    assert "added (only the proposed rules raise these): 1" in text.stdout
    assert "earlier: 1" in text.stdout

    # Without --replace-all the file changes only the rules it names: a lower filter limit, nothing else.
    change = tmp_path / "change.toml"
    change.write_text('[[rules]]\nname = "filter_clogged"\nabove = 260.0\nclear_at = 230.0\n')
    proc = subprocess.run([sys.executable, "-m", "collector", "simulate", "--rules", str(change), "--since", "3d",
                           "--json", "--config", str(config)], capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    summary_ = json.loads(proc.stdout)["summary"]
    assert summary_ == {"current": 2, "proposed": 2, "added": 0, "removed": 0, "earlier": 1, "later": 0,
                        "unchanged": 1}, summary_

    bad = tmp_path / "bad.toml"
    bad.write_text('[[rules]]\nname = "x"\nkind = "trend"\nasset_type = "pump"\npoint = "p"\nabove = 1.0\n'
                   'horizon_days = -2\n')
    proc = subprocess.run([sys.executable, "-m", "collector", "simulate", "--config", str(config), "--rules",
                           str(bad)], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and "rules[0].horizon_days" in proc.stderr
    bad.write_text('[[rules]]\nname = "filter_clogged"\nabvoe = 260.0\n')
    proc = subprocess.run([sys.executable, "-m", "collector", "simulate", "--config", str(config), "--rules",
                           str(bad)], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and "rules[0].abvoe: unknown key" in proc.stderr


def test_replay_matches_production_for_the_same_rules(tmp_path: Path) -> None:
    """A replay of the production rules raises what production raised, at the same data times."""
    db = tmp_path / "collector.sqlite"
    rules = parse_rules([{"name": "filter_clogged", "asset_type": "ahu", "point": "filter_dp", "above": 300.0,
                          "clear_at": 250.0, "min_duration_s": 60},
                         {"name": "filter_rising", "kind": "rate_of_change", "asset_type": "ahu",
                          "point": "filter_dp", "rise_per_h": 40.0, "window_s": 1800}])
    start = time.time_ns() - 10 * H

    async def produce() -> list[tuple[str, int]]:
        fleet = FleetTwin(db, rules, HistorySettings(summary_resolution_s=0))
        await fleet.open()
        await fleet.register_hello(hello())
        values = [200.0] * 30 + [200.0 + 5 * k for k in range(30)] + [350.0] * 20 + [200.0] * 20
        for k, v in enumerate(values):
            await fleet.commit_batch("gw-a", "e1", twin_pb2.Batch(seq=k + 1, summaries=[
                summary("ahu-1", "filter_dp", start + k * 60 * S, v)]))
        out = [(w.rule, w.created_ns) for w in await fleet.work_orders.list()]  # type: ignore[union-attr]
        await fleet.close()
        return sorted(out)

    produced = asyncio.run(produce())
    assert [r for r, _ in produced] == ["filter_clogged", "filter_rising"]
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    replayed = sorted((w.rule, w.raised_ns) for w in replay(conn, rules, start))
    conn.close()
    assert replayed == produced
    report = run_whatif(db, rules, rules, start)
    assert report.to_dict()["summary"]["unchanged"] == 2 and compare(report.current, report.proposed)["added"] == []
