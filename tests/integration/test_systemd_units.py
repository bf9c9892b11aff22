"""The systemd units: `systemd-analyze verify` is silent on them, they are notify units with a
watchdog, hardened, and hold no secret; the daemons speak sd_notify as those units expect."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.daemons import collector_toml, pattern_agent_toml
from tests.servers import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
UNITS = {"twin-agent": ROOT / "systemd" / "twin-agent.service",
         "twin-collector": ROOT / "systemd" / "twin-collector.service"}
INSTALL_BIN = "/opt/facility-twin/bin/"
MAX_EXPOSURE = 2.5  # `systemd-analyze security`: 0 = fully sandboxed, 10 = fully exposed
SECRET_WORDS = re.compile(r"token|password|secret|passwd", re.IGNORECASE)

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None,
    reason="systemd-analyze is not installed (Debian package 'systemd'); the unit files are only parsed here")


def directives(path: Path) -> dict[str, list[str]]:
    """`Section.Key` -> values in order (systemd keys may repeat); comments and blanks skipped."""
    out: dict[str, list[str]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return out


def installed_copy(unit: str, workdir: Path) -> Path:
    """The unit as installed: ExecStart and friends point at this test environment's scripts,
    because `verify` checks that every command exists."""
    bindir = Path(sys.executable).parent
    assert (bindir / unit).exists(), f"{bindir / unit} missing: install the package (pip install -e .)"
    target = workdir / f"{unit}.service"
    target.write_text(UNITS[unit].read_text().replace(INSTALL_BIN, f"{bindir}/"))
    return target


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    return subprocess.run([SYSTEMD_ANALYZE, *args], capture_output=True, text=True, timeout=120)


@needs_systemd_analyze
@pytest.mark.parametrize("unit", sorted(UNITS))
def test_systemd_analyze_verify_is_silent(unit: str, tmp_path: Path) -> None:
    path = installed_copy(unit, tmp_path)
    result = analyze("verify", "--man=no", str(path))
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout + result.stderr
    # The check can fail: a misspelt key and a bad value in a copy are reported (as warnings only,
    # which is why silence is asserted above rather than the exit status alone).
    broken = tmp_path / f"broken-{unit}.service"
    broken.write_text(path.read_text().replace("Type=notify", "Type=notifyy\nWatchdgSec=5"))
    reported = analyze("verify", "--man=no", str(broken))
    assert "notifyy" in reported.stderr and "WatchdgSec" in reported.stderr


@needs_systemd_analyze
@pytest.mark.parametrize("unit", sorted(UNITS))
def test_sandbox_exposure_is_low(unit: str, tmp_path: Path) -> None:
    result = analyze("security", "--offline=yes", "--no-pager", str(installed_copy(unit, tmp_path)))
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout + result.stderr)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


@pytest.mark.parametrize("unit", sorted(UNITS))
def test_notify_watchdog_restart_and_hardening(unit: str) -> None:
    d = directives(UNITS[unit])
    service = {k.removeprefix("Service."): v for k, v in d.items() if k.startswith("Service.")}

    def one(key: str) -> str:
        assert key in service, f"{unit}: {key}= missing"
        return service[key][-1]

    assert one("Type") == "notify"
    assert one("NotifyAccess") == "main"
    assert re.fullmatch(r"\d+s", one("WatchdogSec")) and int(one("WatchdogSec")[:-1]) >= 10
    assert one("Restart") == "on-failure"
    assert one("ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one("User") == unit and one("Group") == unit, "a dedicated user"
    assert one("StateDirectory") == unit and one("ConfigurationDirectory") == unit
    for key, value in {"ProtectSystem": "strict", "NoNewPrivileges": "yes", "PrivateTmp": "yes",
                       "ProtectHome": "yes", "CapabilityBoundingSet": ""}.items():
        assert one(key) == value, f"{unit}: {key}={one(key)}"
    families = one("RestrictAddressFamilies").split()
    assert "AF_UNIX" in families, "sd_notify and the journal need AF_UNIX"
    assert set(families) <= {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert one("ExecStart").startswith(f"{INSTALL_BIN}{unit} run --config /etc/{unit}/")
    for key in ("Environment", "ExecStart", "ExecStartPre"):
        for value in service.get(key, []):
            checked = value.replace("--strict-secrets", "")  # the option that makes secrets required
            assert not SECRET_WORDS.search(checked), f"{unit}: {key}={value} looks like a secret in the unit"
    for credential in service.get("LoadCredential", []):
        source = credential.partition(":")[2]
        assert source.startswith(f"/etc/{unit}/"), "credentials are loaded from root-only files"


def test_agent_reaches_serial_ports_through_a_group_only() -> None:
    service = {k.removeprefix("Service."): v for k, v in directives(UNITS["twin-agent"]).items()
               if k.startswith("Service.")}
    assert service["SupplementaryGroups"] == ["dialout"]
    assert service["DevicePolicy"] == ["closed"]
    assert {v.split()[0] for v in service["DeviceAllow"]} == {"char-ttyUSB", "char-ttyS", "char-ttyACM"}
    assert service["LoadCredential"] == ["uplink-token:/etc/twin-agent/uplink.token"]


# ---- the daemons as systemd starts them ----------------------------------------------------------


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(60)
        yield sock, path


def _messages_until(sock: socket.socket, wanted: str) -> list[str]:
    seen: list[str] = []
    while wanted not in seen:
        seen += sock.recv(4096).decode().split("\n")
    return seen


@pytest.mark.parametrize("daemon", ["agent", "collector"])
def test_daemon_notifies_ready_watchdog_stopping(daemon: str, tmp_path: Path,
                                                 notify_socket: tuple[socket.socket, str]) -> None:
    """READY=1 does not wait for the collector or the devices: for the agent, neither is reachable here."""
    sock, path = notify_socket
    cfg = tmp_path / f"{daemon}.toml"
    cfg.write_text(pattern_agent_toml(tmp_path / "state", free_port(), free_port()) if daemon == "agent"
                   else collector_toml(tmp_path / "state", free_port()))
    env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC="2000000")
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen([sys.executable, "-m", daemon, "run", "--config", str(cfg)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        assert "READY=1" in _messages_until(sock, "READY=1")
        assert "WATCHDOG=1" in _messages_until(sock, "WATCHDOG=1")
        os.kill(proc.pid, signal.SIGTERM)
        assert "STOPPING=1" in _messages_until(sock, "STOPPING=1")
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)


@pytest.mark.parametrize("unit", sorted(UNITS))
def test_unit_comments_cite_readme_sections_that_exist(unit: str) -> None:
    headings = {line.lstrip("#").strip() for line in (ROOT / "README.md").read_text().splitlines()
                if line.startswith("#")}
    cited = re.findall(r'README "([^"]+)"', UNITS[unit].read_text())
    assert cited, f"{unit}: the comments should point at the README"
    assert set(cited) <= headings, f"{unit} cites {sorted(set(cited) - headings)}, not README headings"
    (doc,) = directives(UNITS[unit])["Unit.Documentation"]
    assert doc == "file:///usr/share/doc/facility-twin/README.md", "where the Debian package puts the README"
