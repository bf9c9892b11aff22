"""Real peers for the connector tests: node_exporter, snmpd and the BACnet AHU, on loopback ports.

Each launcher starts its server with `tests.servers.ServerProcess` (its own log file, stopped by
PID, restartable on the same port) and fails loudly when the binary is missing or does not come up.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

from tests.servers import LOOPBACK, ServerProcess, _require, free_port, http_ok

__all__ = [
    "SNMP_AUTH_KEY",
    "SNMP_COMMUNITY",
    "SNMP_PRIV_KEY",
    "SNMP_USER",
    "bacnet_ahu_server",
    "free_udp_port",
    "node_exporter_server",
    "snmpd_server",
]

SNMP_COMMUNITY = "twin-test"
SNMP_USER = "twinops"
SNMP_AUTH_KEY = "auth-key-0123"
SNMP_PRIV_KEY = "priv-key-4567"
PASS_PERSIST = Path(__file__).parent / "snmp" / "pass_persist_fixture.py"
ROOT = Path(__file__).resolve().parents[2]
UNPRIVILEGED = "nobody"
SYSTEM_PYTHON = "/usr/bin/python3"


def node_exporter_server(workdir: Path, textfile_dir: Path) -> ServerProcess:
    """Debian's prometheus-node-exporter with a few collectors and a textfile directory of known values."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    textfile_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        _require("prometheus-node-exporter"),
        f"--web.listen-address={LOOPBACK}:{port}",
        "--collector.disable-defaults",
        "--collector.textfile", f"--collector.textfile.directory={textfile_dir}",
        "--collector.loadavg", "--collector.cpu", "--collector.meminfo",
    ]
    proc = ServerProcess("node-exporter", argv, workdir, lambda: http_ok(f"http://{LOOPBACK}:{port}/metrics"), port)
    return proc.start()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


class SnmpdProcess(ServerProcess):
    """snmpd in its own world-readable directory (it drops to `nobody`, who cannot enter pytest's tmp)."""

    def start(self) -> SnmpdProcess:
        if self.log_path.exists():  # readiness is the start line in a fresh log
            self.log_path.replace(self.log_path.with_suffix(".log.previous"))
        super().start()
        return self

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def fixture(self, name: str) -> Path:
        """The copy of a JSON fixture that the pass_persist program serves (rewrite it to change values)."""
        return self.workdir / name


def snmpd_server(fixtures: dict[str, Path]) -> SnmpdProcess:
    """Debian's snmpd (net-snmp) on a loopback UDP port > 1024, v2c community and a v3 authPriv user (SHA/AES).

    `fixtures` maps a subtree (e.g. "1.3.6.1.2.1.33") to a JSON file served there by
    pass_persist_fixture.py; everything else (system, IF-MIB, ...) is snmpd's own. Run as root, snmpd
    reads its config and then drops to the unprivileged user `nobody`.
    """
    port = free_udp_port()
    root = os.geteuid() == 0
    # The fixture program runs as snmpd's user: as `nobody` it needs an interpreter outside /root
    # (Debian's python3; the program uses only the standard library).
    interpreter = SYSTEM_PYTHON if root else sys.executable
    if root and not os.access(SYSTEM_PYTHON, os.X_OK):
        raise RuntimeError(f"{SYSTEM_PYTHON} is missing: make test installs python3 with apt-get")
    workdir = Path(tempfile.mkdtemp(prefix="twin-snmpd-"))
    workdir.chmod(0o755)
    lines = [
        f"agentaddress udp:{LOOPBACK}:{port}",
        f"rocommunity {SNMP_COMMUNITY} {LOOPBACK}",
        f'createUser {SNMP_USER} SHA "{SNMP_AUTH_KEY}" AES "{SNMP_PRIV_KEY}"',
        f"rouser {SNMP_USER} priv",
        "master no",
    ]
    for subtree, source in fixtures.items():
        served = workdir / source.name
        shutil.copy(source, served)
        lines.append(f"pass_persist .{subtree} {interpreter} {PASS_PERSIST} {served}")
    conf = workdir / "agent.conf"  # not snmpd.conf: snmpd writes its persistent state under that name
    conf.write_text("\n".join(lines) + "\n")
    argv = [_require("snmpd"), "-f", "-Lo", "-C", "-c", str(conf), "-p", str(workdir / "snmpd.pid")]
    (workdir / "state").mkdir()
    if root:
        shutil.chown(workdir / "state", UNPRIVILEGED)
        shutil.chown(workdir, UNPRIVILEGED)
        for f in workdir.iterdir():
            shutil.chown(f, UNPRIVILEGED)
        argv += ["-u", UNPRIVILEGED, "-g", "nogroup"]
    log_path = workdir / "snmpd.log"

    def ready() -> bool:
        try:
            return "NET-SNMP version" in log_path.read_text(errors="replace")
        except OSError:
            return False

    env = {"SNMP_PERSISTENT_DIR": str(workdir / "state"), "MIBS": ""}
    proc = SnmpdProcess("snmpd", argv, workdir, ready, port, env=env)
    try:
        return proc.start()
    except Exception:
        shutil.rmtree(workdir, ignore_errors=True)
        raise


def bacnet_ahu_server(workdir: Path, instance: int, *extra: str) -> ServerProcess:
    """simulator.bacnet_ahu (a BACpypes3 device) in its own process on a free loopback UDP port.

    `extra` are its options (`--no-cov`, `--max-apdu 206`, `--faults FILE`, ...). Stop and start it
    again for a device restart: same port, same instance.
    """
    port = free_udp_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"bacnet-{instance}.log"
    argv = [sys.executable, "-m", "simulator.bacnet_ahu", "--address", f"{LOOPBACK}:{port}", "--instance",
            str(instance), *extra]
    started = {"lines": 0}

    def ready() -> bool:
        try:
            lines = log_path.read_text(errors="replace").count("bacnet ahu device")
        except OSError:
            return False
        return lines > started["lines"]

    class AhuProcess(ServerProcess):
        def start(self) -> AhuProcess:
            with contextlib.suppress(OSError):
                started["lines"] = log_path.read_text(errors="replace").count("bacnet ahu device")
            super().start()
            return self

    proc = AhuProcess(f"bacnet-{instance}", argv, workdir, ready, port, env={"PYTHONPATH": str(ROOT)})
    return proc.start()
