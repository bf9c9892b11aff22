"""The real agent under journald: every line is one record with its syslog priority, and a device that
is down does not flood the journal through the libraries' own retry logs."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.servers import free_port

pytestmark = pytest.mark.integration

RECORD = re.compile(r"^<([0-7])>(DEBUG|INFO|WARNING|ERROR|CRITICAL) (\S+): ")


def test_agent_with_unreachable_devices_logs_prefixed_single_records(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(textwrap.dedent(f"""
        [agent]
        id = "gw-journal"
        state_dir = "{tmp_path / 'state'}"
        summary_interval_s = 1
        [uplink]
        collector = "127.0.0.1:{free_port()}"
        token = "token-for-gw-a-0123456789abcdef"
        backoff_initial_s = 0.1
        backoff_max_s = 0.2
        [[assets]]
        id = "ahu-1"
        type = "ahu"
        [[sources]]
        type = "modbus"
        name = "ahu-controller"
        host = "127.0.0.1"
        port = {free_port()}
        poll_interval_s = 0.2
        timeout_s = 0.1
        backoff_max_s = 0.2
          [[sources.points]]
          asset = "ahu-1"
          name = "r0"
          address = 0
          type = "uint16"
        """))
    err = tmp_path / "journal-stream"
    with err.open("wb") as f:
        st = os.fstat(f.fileno())
        env = dict(os.environ, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
        proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(config)], stderr=f,
                                stdout=subprocess.DEVNULL, env=env)
        try:
            deadline = time.monotonic() + 60
            # Until the device has been retried many times (every 0.2 s) and the uplink as often.
            while time.monotonic() < deadline and err.read_text().count("\n") < 8:
                time.sleep(0.2)
            time.sleep(3)
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
    lines = err.read_text().splitlines()
    assert all(RECORD.match(line) for line in lines), "\n".join(lines)
    records = [RECORD.match(line) for line in lines]
    warnings = [line for line, m in zip(lines, records, strict=True) if m and m.group(2) == "WARNING"]
    assert warnings and all(line.startswith("<4>") for line in warnings)
    assert any("ahu-controller" in line and "offline" in line for line in warnings), "\n".join(lines)
    infos = [line for line, m in zip(lines, records, strict=True) if m and m.group(2) == "INFO"]
    assert infos and all(line.startswith("<6>") for line in infos)
    pymodbus = [line for line in lines if " pymodbus" in line]
    # pymodbus logs each failed connect; the shapes it uses pass once each within the minute
    assert len(pymodbus) <= 3, "\n".join(pymodbus)
