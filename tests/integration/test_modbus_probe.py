"""`python -m agent.connectors.modbus.probe` against a Modbus device running as its own process."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import ServerProcess, free_port, python_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def device(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    port = free_port()
    proc = python_server("modbus-device", ["-m", "simulator.modbus_device", "--port", str(port), "--units", "1-2",
                                           "--holding", "50", "--input", "50"],
                         tmp_path_factory.mktemp("modbus-device"), port)
    yield proc
    proc.stop()


def probe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.connectors.modbus.probe", *args],
                          capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[2])


def test_probe_prints_registers_and_decodings(device: ServerProcess) -> None:
    out = probe("--host", "127.0.0.1", "--port", str(device.port), "--unit", "2", "--address", "10",
                "--count", "4", "--function", "input")
    assert out.returncode == 0, out.stderr
    # simulator.modbus_device fills register a of unit u with u * 1000 + a.
    rows = {int(ln.split()[0]): ln.split() for ln in out.stdout.splitlines()
            if ln.strip()[:1].isdigit() and "0x" in ln and len(ln.split()) >= 6 and ln.split()[3].startswith("0x")}
    assert {a: int(r[4]) for a, r in rows.items()} == {10: 2010, 11: 2011, 12: 2012, 13: 2013}
    assert rows[10][2] == "30011"
    assert "64-bit windows" in out.stdout and "DCBA" in out.stdout
    assert "protocol address 10 is register 11" in out.stdout


def test_probe_reports_exceptions_and_silence(device: ServerProcess) -> None:
    out = probe("--host", "127.0.0.1", "--port", str(device.port), "--address", "49", "--count", "4")
    assert out.returncode == 1 and "exception 2 illegal data address" in out.stderr
    out = probe("--host", "127.0.0.1", "--port", str(device.port), "--unit", "9", "--address", "0",
                "--timeout", "0.3")
    assert out.returncode == 1 and "no answer from unit 9" in out.stderr
    out = probe("--host", "127.0.0.1", "--port", str(free_port()), "--address", "0")
    assert out.returncode == 1 and "cannot connect" in out.stderr
