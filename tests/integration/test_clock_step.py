"""The gateway's wall clock steps back (NTP, a board without RTC): delivery must not stop.

The agent runs under Debian's libfaketime with an offset read from a file, so the test can step
its CLOCK_REALTIME while it runs; CLOCK_MONOTONIC is left alone (FAKETIME_DONT_FAKE_MONOTONIC), as
the kernel leaves it alone when the real clock is stepped. The collector and the Modbus device run
on the real clock. After a 60 s and then a one-hour step back, batches keep arriving every interval,
and every interval is stored under its own timestamp, after the one before (InfluxDB would
silently overwrite a point written twice under the same timestamp: the collector's store, which
merges such points the same way, holds exactly as many summaries as the agent stored).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.daemons import (
    Processes,
    agent_process,
    collector_process,
    pattern_agent_toml,
    pattern_device,
    status,
    stored_points,
    wait_acked,
)

pytestmark = pytest.mark.integration



def faketime_env(offset_file: Path) -> dict[str, str]:
    """Environment that runs a process under libfaketime, its clock offset read from `offset_file`."""
    found = sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))
    if not found:
        raise RuntimeError("libfaketime.so.1 missing: Debian's faketime is not installed (make test installs it)")
    offset_file.write_text("+0\n")
    return {"LD_PRELOAD": str(found[0]), "FAKETIME_TIMESTAMP_FILE": str(offset_file),
            "FAKETIME_CACHE_DURATION": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


def test_clock_stepped_back_does_not_stop_delivery(tmp_path: Path) -> None:
    agent_dir = tmp_path / "a"
    offset = tmp_path / "faketime.rc"
    with Processes() as procs:
        device = procs.add(pattern_device(tmp_path))
        collector = procs.add(collector_process(tmp_path / "c"))
        agent = procs.add(agent_process(agent_dir, pattern_agent_toml(agent_dir / "state", collector.port,
                                                                      device.port), env=faketime_env(offset)))
        wait_acked(agent_dir, 3)
        for step_s, offset_s in ((60, 60), (3600, 3660)):  # the offset file holds the total offset
            acked = int(status(agent_dir)["uplink"]["acked"])
            offset.write_text(f"-{offset_s}s\n")
            # A stall would last as long as the step (60 s, 1 h): 5 batches in 30 s show it did not.
            wait_acked(agent_dir, acked + 5, timeout=30)
            st = status(agent_dir)
            assert st["intervals"]["clock_behind_s"] > step_s * 0.9, "the step is visible in the status"
        agent.stop()
    assert "crashed" not in agent.log_path.read_text()
    st = status(agent_dir)
    telemetry = stored_points(tmp_path / "c", "telemetry")
    assert len(telemetry) == st["queue"]["summaries_total"], "no interval overwrote another"
    assert len(stored_points(tmp_path / "c", "agent_health")) == st["queue"]["next_seq"] - 1 >= 13
