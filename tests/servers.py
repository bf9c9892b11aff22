"""Real servers for integration tests: started on free loopback ports in temp dirs, stopped by PID.

Every launcher fails loudly (RuntimeError with the server's log tail) when it cannot start its
server; nothing here skips. `ServerProcess.stop()` / `.start()` let fault tests take a server
away for a while and bring it back on the same port with the same data directory.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = [
    "ServerProcess",
    "free_port",
    "http_ok",
    "influxd_server",
    "mosquitto_server",
    "node_opcua_server",
    "postgres_server",
    "python_server",
    "victoria_metrics_server",
    "wait_for",
    "wait_tcp",
]

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def tcp_open(port: int, host: str = LOOPBACK) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_tcp(port: int, timeout: float = 20.0) -> None:
    wait_for(lambda: tcp_open(port), timeout, f"tcp {LOOPBACK}:{port}")


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as resp:
            return 200 <= resp.status < 300
    except (OSError, urllib.error.URLError):
        return False


class ServerProcess:
    """One server process with its own log file; restartable with the same argv and data."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        workdir: Path,
        ready: Callable[[], bool],
        port: int,
        env: dict[str, str] | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.workdir = workdir
        self.ready = ready
        self.port = port
        self.env = env
        self.start_timeout = start_timeout
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} is not running"
        return self.proc.pid

    def start(self) -> ServerProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        env = dict(os.environ, **(self.env or {}))
        self.proc = subprocess.Popen(
            self.argv, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self.ready():
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} did not become ready in {self.start_timeout}s:\n{self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = None
            return
        try:
            os.kill(self.proc.pid, sig)
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=timeout)
        except ProcessLookupError:
            pass
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _require(binary: str) -> str:
    path = shutil.which(binary) or next(
        (p for p in (f"/usr/sbin/{binary}", f"/usr/bin/{binary}") if os.path.exists(p)), None
    )
    if path is None:
        raise RuntimeError(f"{binary} is not installed (make test installs it with apt-get)")
    return path


def mosquitto_server(workdir: Path, extra_conf: str = "") -> ServerProcess:
    """Mosquitto on a free loopback port, with persistence so a restart keeps queued messages."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"listener {port} {LOOPBACK}\n"
        "allow_anonymous true\n"
        "persistence true\n"
        f"persistence_location {workdir}/\n"
        "autosave_interval 1\n"
        "user root\n"
        f"{extra_conf}\n"
    )
    proc = ServerProcess("mosquitto", [_require("mosquitto"), "-c", str(conf)], workdir,
                         lambda: tcp_open(port), port)
    return proc.start()


def influxd_server(workdir: Path) -> ServerProcess:
    """InfluxDB 1.x (Debian's influxd) with HTTP and RPC bound to loopback ports."""
    http_port, rpc_port = free_port(), free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "influxdb.conf"
    conf.write_text(
        "reporting-disabled = true\n"
        f'bind-address = "{LOOPBACK}:{rpc_port}"\n'
        f'[meta]\n  dir = "{workdir}/meta"\n'
        f'[data]\n  dir = "{workdir}/data"\n  wal-dir = "{workdir}/wal"\n  query-log-enabled = false\n'
        "[monitor]\n  store-enabled = false\n"
        f'[http]\n  bind-address = "{LOOPBACK}:{http_port}"\n  log-enabled = false\n'
        "[continuous_queries]\n  enabled = false\n"
    )
    proc = ServerProcess(
        "influxd", [_require("influxd"), "-config", str(conf)], workdir,
        lambda: http_ok(f"http://{LOOPBACK}:{http_port}/ping"), http_port,
    )
    return proc.start()


def victoria_metrics_server(workdir: Path) -> ServerProcess:
    """VictoriaMetrics: accepts the InfluxDB v2 write API (/api/v2/write) used by influxdb-client."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [
        _require("victoria-metrics"),
        f"-storageDataPath={workdir}/data",
        f"-httpListenAddr={LOOPBACK}:{port}",
        "-retentionPeriod=100y",
        "-search.latencyOffset=0s",
        "-search.disableCache",
        # Without deduplication VictoriaMetrics keeps both copies of a resent write; InfluxDB
        # overwrites. With it, "same series + timestamp = one point" holds for both.
        "-dedup.minScrapeInterval=1ms",
    ]
    proc = ServerProcess("victoria-metrics", argv, workdir,
                         lambda: http_ok(f"http://{LOOPBACK}:{port}/health"), port)
    return proc.start()


def python_server(name: str, module_args: Sequence[str], workdir: Path, port: int,
                  ready: Callable[[], bool] | None = None, env: dict[str, str] | None = None
                  ) -> ServerProcess:
    """A project daemon (`python -m ...`) run by the test's interpreter."""
    proc = ServerProcess(name, [sys.executable, *module_args], workdir,
                         ready or (lambda: tcp_open(port)), port, env=env)
    return proc.start()


NODE_PEERS = Path(__file__).resolve().parent / "peers"


def node_opcua_server(workdir: Path, certificate: Path, private_key: Path, application_uri: str,
                      trusted: Sequence[Path]) -> ServerProcess:
    """node-opcua (a third-party OPC-UA stack) with strict trust: Basic256Sha256 Sign/SignAndEncrypt,
    only the `trusted` client certificates are accepted. Serves `ns=1;s=Voltage` (a Double)."""
    peer = NODE_PEERS / "node-opcua"
    if not (peer / "node_modules").is_dir():
        raise RuntimeError(f"node-opcua is not installed in {peer} (make test runs npm ci there)")
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [_require("node"), str(peer / "strict_server.js"), "--port", str(port), "--pki", str(workdir / "pki"),
            "--cert", str(certificate), "--key", str(private_key), "--uri", application_uri]
    for path in trusted:
        argv += ["--trust", str(path)]
    proc = ServerProcess("node-opcua", argv, workdir, lambda: "READY opc.tcp://" in proc.log_tail(), port,
                         start_timeout=60.0)
    return proc.start()


POSTGRES_USER = "twin"
POSTGRES_PASSWORD = "twin-test-password"


def _postgres_bindir() -> Path:
    """Debian keeps the server binaries out of PATH, per major version: take the newest."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name))
    if not found:
        raise RuntimeError("PostgreSQL is not installed (make test installs Debian's postgresql package)")
    return found[-1].parent


def _as_server_user(argv: Sequence[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as `nobody` (setpriv ships with util-linux)."""
    if os.geteuid() != 0:
        return list(argv)
    return [_require("setpriv"), "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--", *argv]


class PostgresServer(ServerProcess):
    """A PostgreSQL cluster of its own: `dsn(db)` and `create_database()` for tests."""

    home: Path

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30.0) -> None:
        """SIGINT is PostgreSQL's fast shutdown (SIGTERM would wait for every client to leave)."""
        super().stop(sig, timeout)

    def remove(self) -> None:
        """Stop and delete the cluster's files."""
        self.stop()
        shutil.rmtree(self.home, ignore_errors=True)

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{POSTGRES_USER}@{LOOPBACK}:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        out = subprocess.run(
            [str(_postgres_bindir() / "psql"), "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1",
             "-h", LOOPBACK, "-p", str(self.port), "-U", POSTGRES_USER, "-d", database, "-c", sql],
            env=dict(os.environ, PGPASSWORD=POSTGRES_PASSWORD), capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"psql failed: {out.stderr.strip()}")
        return out.stdout

    def create_database(self, name: str) -> str:
        """A new empty database (names are made by the tests: letters, digits, underscores)."""
        self.psql(f"CREATE DATABASE {name}")
        return self.dsn(name)


def postgres_server(workdir: Path, durable: bool = False, settings: Sequence[str] = ()) -> PostgresServer:
    """PostgreSQL (Debian's) initialised in a directory of its own, on a free loopback port, with
    password authentication for the `twin` superuser (password POSTGRES_PASSWORD).

    The data directory is a fresh directory under the system temp dir that the server's user owns
    (pytest's temp dirs are private to root). `durable=False` turns fsync off: tests crash the
    collector, never PostgreSQL; benches keep the default durability. Stopped by PID (SIGINT: fast
    shutdown); `workdir` holds the log.
    """
    import tempfile

    bindir = _postgres_bindir()
    workdir.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="twin-pg-"))
    home.chmod(0o755)
    data = home / "data"
    pwfile = home / "pwfile"
    pwfile.write_text(POSTGRES_PASSWORD + "\n")
    if os.geteuid() == 0:
        import pwd

        nobody = pwd.getpwnam("nobody")
        for path in (home, pwfile):
            os.chown(path, nobody.pw_uid, nobody.pw_gid)
    init = subprocess.run(
        _as_server_user([str(bindir / "initdb"), "-D", str(data), "-U", POSTGRES_USER, "--pwfile", str(pwfile),
                         "--auth=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"]),
        capture_output=True, text=True, timeout=120, cwd=home)
    if init.returncode != 0:
        raise RuntimeError(f"initdb failed ({init.returncode}):\n{init.stdout[-2000:]}\n{init.stderr[-2000:]}")
    port = free_port()
    conf = [f"listen_addresses={LOOPBACK}", f"port={port}", f"unix_socket_directories={home}",
            "max_connections=200", "shared_buffers=128MB", "logging_collector=off"]
    if not durable:
        conf += ["fsync=off", "synchronous_commit=off", "full_page_writes=off"]
    conf += list(settings)
    argv = _as_server_user([str(bindir / "postgres"), "-D", str(data), *[a for c in conf for a in ("-c", c)]])
    def ready() -> bool:
        return tcp_open(port) and subprocess.run(
            [str(bindir / "pg_isready"), "-q", "-h", LOOPBACK, "-p", str(port)], timeout=10).returncode == 0

    server = PostgresServer("postgres", argv, workdir, ready, port, start_timeout=60.0)
    server.home = home
    server.start()
    return server
