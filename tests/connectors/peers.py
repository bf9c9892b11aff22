"""Real peers for the connector tests: node_exporter, snmpd and the BACnet AHU, on loopback ports.

Each launcher starts its server with `tests.servers.ServerProcess` (its own log file, stopped by
PID, restartable on the same port) and fails loudly when the binary is missing or does not come up.
"""

from __future__ import annotations

from pathlib import Path

from tests.servers import LOOPBACK, ServerProcess, _require, free_port, http_ok

__all__ = ["node_exporter_server"]


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
