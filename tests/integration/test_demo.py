"""`twin-demo` as a user runs it: separate processes on loopback, a work order within a minute."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from simulator.demo import mosquitto_binary

pytestmark = pytest.mark.integration


def test_demo_raises_filter_work_order(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "simulator.demo", "--duration", "55", "--report", str(report),
         "--workdir", str(tmp_path / "demo")],
        capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(report.read_text())
    assert isinstance(doc["points_stored"], int) and doc["points_stored"] > 100
    assert isinstance(doc["batches_acked"], int) and doc["batches_acked"] >= 20
    assert doc["batches_dropped"] == 0
    wos = {(w["asset"], w["rule"]): w for w in doc["work_orders"]}
    wo = wos[("ahu-1", "filter_clogged")]
    assert wo["severity"] in ("major", "critical") and "filter" in wo["title"].lower()
    assert wo["evidence"]["value"] > 300
    assert wo["context"]["state"]["state"] == "online"
    assert "filter_dp" in wo["context"]["points"]
    assert [d["asset"] for d in wo["context"]["depends_on"]] == ["msb-meter"]
    assert "NEW WO-" in proc.stdout, "the live view announces the work order"
    if mosquitto_binary() is not None:  # the pump's vibration sensors ran: its remaining life is shown
        rl = doc["remaining_life"]["pump-1"]["de_accel"]
        assert rl["rule"] == "remaining_life" and rl["estimate_s"] is not None
        assert rl["low_s"] <= rl["estimate_s"] <= rl["high_s"]
        assert "remaining life pump-1/de_accel: ~" in proc.stdout, "the live view shows it"
    summary = proc.stdout[proc.stdout.rindex("facility-twin demo"):]
    assert "DISCONNECTED" not in summary and "agent stopped cleanly" in summary, summary[:500]
    assert not re.search(r"\b(point|vibration):[\w.-]+:\w+", proc.stdout), "internal series keys shown"
