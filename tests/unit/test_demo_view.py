"""The demo's live view fits an 80x24 terminal: the header (time, link, queue) always shows, the rest
is cut with a count; the end summary does not call a clean stop a disconnection; no internal keys."""

from __future__ import annotations

import re
from typing import Any

from simulator.demo import render

NS = 1_800_000_000 * 10**9


def agent_status(assets: int, points: int, connected: bool = True) -> dict[str, Any]:
    return {
        "agent": "gw-demo", "queue": {"batches": 3, "bytes": 4096, "dropped": 0},
        "uplink": {"connected": connected, "sent": 40, "acked": 38},
        "assets": {f"asset-{a}": {"state": "online", "points": {
            f"a_rather_long_point_name_{p}": {"value": "123.456", "unit": "degC", "quality": "BAD",
                                              "reason": "timeout after 0.5 s waiting for unit 1 " * 2}
            for p in range(points)}} for a in range(assets)},
        "vibration": {"de_accel": {"velocity_rms_mm_s": 4.2, "iso_zone": "B", "rpm": 1797.0, "fault": "outer_race",
                                   "confidence": 0.93, "health": 61.0}},
    }


def collector_status(work_orders: int) -> dict[str, Any]:
    wo = {"id": "WO-000001", "severity": "major", "title": "Bearing outer race defect on pump-1 " * 3,
          "category": "corrective", "status": "open", "description": "x " * 100,
          "evidence": {}, "context": {"state": {"state": "online", "health": 61},
                                      "trend": {"series": "vibration:de_accel:confidence",
                                                "values": [[NS, 0.5], [NS + 1, 0.93]]},
                                      "depends_on": [], "recent_changes": []}}
    orders = [dict(wo, id=f"WO-{i:06d}") for i in range(work_orders)]
    return {"points_stored": 1234, "assets": {}, "work_orders": orders}


def test_a_busy_facility_fits_80x24_with_the_header_first() -> None:
    screen = render(35, 60, agent_status(6, 8), collector_status(5), (80, 24))
    lines = screen.split("\n")
    assert len(lines) <= 24 and max(len(line) for line in lines) <= 80
    assert re.match(r"facility-twin demo  \d\d:\d\d:\d\d UTC  t=35s / 60s", lines[0])
    assert lines[1] == "agent gw-demo: link connected, acked 38/40, queue 3 (4.0 KiB), dropped 0"
    assert lines[2] == "collector: 1234 points stored, 5 work orders"
    assert re.match(r"\.\.\. \d+ more lines", lines[-1]), lines[-1]
    assert "WO-000000" in screen, "work orders come first"


def test_a_small_facility_is_shown_whole() -> None:
    screen = render(5, 60, agent_status(1, 2), collector_status(0), (80, 24))
    assert "more lines" not in screen and "a_rather_long_point_name_1" in screen


def test_the_end_summary_after_a_clean_stop() -> None:
    summary = render(60, 60, agent_status(2, 2, connected=False), collector_status(1), stopped="agent stopped cleanly")
    assert "DISCONNECTED" not in summary and "agent stopped cleanly" in summary
    assert "vibration:de_accel" not in summary and "de_accel bearing fault confidence" in summary
    live = render(30, 60, agent_status(2, 2, connected=False), collector_status(0), (80, 24))
    assert "link DISCONNECTED" in live, "a link that drops while the demo runs is news"
