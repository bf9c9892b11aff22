"""The Debian package as an administrator and an operator meet it.

Build it (`packaging/build_deb.py`, what `make deb` runs), `lintian` finds no error, `dpkg -i` on
this machine, `systemd-analyze verify` on the installed units, `check-config` from the installed
path. Then the production setup: the collector and the agent run as their system users with the
agent's token and the API token in LoadCredential-style files only the service user can read
(/run/credentials/<unit>/, as systemd lays them out) and passwords in the daemon's environment; an
operator (another user, in the groups twin-agent and twin-collector, without those variables) runs
every command of the README's "Run" section as printed, with the default configuration paths.
Finally `dpkg --purge`, after which nothing of the package is left: files, users, unit state.

It installs into /opt, /etc, /usr and creates users, so it needs root; one run at a time per machine.
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import hashlib
import os
import pwd
import re
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.servers import ServerProcess, free_port, influxd_server, tcp_open, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]  # the build takes minutes

ROOT = Path(__file__).resolve().parents[2]
UNITS = ["twin-agent.service", "twin-collector.service"]
AGENT_TOKEN = "package-test-agent-token-0123456789"
API_TOKEN = "package-test-api-token-0123456789"
ALICE_TOKEN = "package-test-alice-token-0123456789"
OPERATOR_UID = 64123  # an operator account; it needs no passwd entry for what it runs here
LEFTOVERS = ["/opt/facility-twin", "/etc/twin-agent", "/etc/twin-collector", "/var/lib/twin-agent",
             "/var/lib/twin-collector", "/usr/lib/systemd/system/twin-agent.service",
             "/usr/lib/systemd/system/twin-collector.service", "/usr/lib/sysusers.d/facility-twin.conf",
             "/usr/lib/tmpfiles.d/facility-twin.conf", "/usr/share/doc/facility-twin", "/usr/share/facility-twin",
             "/usr/share/lintian/overrides/facility-twin", "/usr/bin/twin-agent", "/usr/bin/twin-collector",
             "/usr/bin/twin-sim", "/usr/bin/twin-demo", "/run/credentials/twin-agent.service",
             "/run/credentials/twin-collector.service"]

needs_root = pytest.mark.skipif(os.geteuid() != 0 and not os.environ.get("CI"),
                                reason="installs a Debian package: run as root (CI does)")


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def run(argv: list[str] | str, timeout: float = 300, check: bool = True,
        **kw: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,  # type: ignore[call-overload]
                          **kw)
    if check:
        assert proc.returncode == 0, f"{argv}: exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The .deb and the wheel it was made from, built once for this module."""
    out = tmp_path_factory.mktemp("deb")
    run(["/usr/bin/python3", str(ROOT / "packaging" / "build_deb.py"), "--out", str(out), "--work",
         str(out / "work"), "--compression", "gzip"], timeout=1200)
    (deb,) = out.glob("facility-twin_*.deb")
    (wheel,) = (out / "work" / "wheel").glob("facility_twin-*.whl")
    return deb, wheel


def test_lintian_reports_no_error(build: tuple[Path, Path]) -> None:
    deb, _ = build
    proc = run(["lintian", "--fail-on", "error", "--tag-display-limit", "0", str(deb)], check=False, timeout=600)
    errors = [line for line in proc.stdout.splitlines() if line.startswith("E:")]
    assert proc.returncode == 0 and not errors, proc.stdout + proc.stderr


def test_package_contents(build: tuple[Path, Path]) -> None:
    deb, _ = build
    files = {line.split()[-1].lstrip(".") if " -> " not in line else line.split()[-3].lstrip(".")
             for line in run(["dpkg-deb", "--contents", str(deb)]).stdout.splitlines()}
    for path in ["/opt/facility-twin/bin/twin-agent", "/opt/facility-twin/bin/twin-collector", "/usr/bin/twin-agent",
                 "/usr/lib/systemd/system/twin-agent.service", "/usr/lib/systemd/system/twin-collector.service",
                 "/etc/twin-agent/agent.toml", "/etc/twin-collector/collector.toml",
                 "/usr/share/doc/facility-twin/README.md", "/usr/share/doc/facility-twin/copyright",
                 "/usr/share/doc/facility-twin/changelog.gz",
                 "/usr/share/doc/facility-twin/examples/agent.example.toml",
                 "/usr/share/facility-twin/grafana/dashboards/fleet-overview.json",
                 "/usr/share/facility-twin/grafana/provisioning/dashboards/facility-twin.yaml",
                 "/usr/lib/sysusers.d/facility-twin.conf", "/usr/lib/tmpfiles.d/facility-twin.conf"]:
        assert path in files, f"{path} is not in the package"
    assert not [f for f in files if "__pycache__" in f], "byte-code is compiled on install, not shipped"
    assert run(["dpkg-deb", "--info", str(deb), "conffiles"]).stdout.split() == [
        "/etc/twin-agent/agent.toml", "/etc/twin-collector/collector.toml"]
    control = run(["dpkg-deb", "--field", str(deb)]).stdout
    assert re.search(r"^Depends: .*python3 \(>= 3\.11\)", control, re.M), control


def test_modbus_only_install_has_no_other_protocol_and_names_the_missing_extra(
        build: tuple[Path, Path], tmp_path: Path) -> None:
    """`facility-twin[modbus]` in a fresh venv: no OPC-UA, MQTT, HTTP server or InfluxDB client, and a
    configuration that needs them says which extra to install."""
    _, wheel = build
    venv = tmp_path / "modbus-only"
    run([sys.executable, "-m", "venv", str(venv)])
    run([str(venv / "bin/python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", f"{wheel}[modbus]"],
        timeout=900)
    installed = {line.split("==")[0].lower() for line in
                 run([str(venv / "bin/python"), "-m", "pip", "freeze"]).stdout.splitlines()}
    assert {"pymodbus", "pyserial", "numpy", "grpcio"} <= installed
    assert not installed & {"asyncua", "cryptography", "paho-mqtt", "aiohttp", "influxdb-client"}, installed
    base = textwrap.dedent(f"""
        [agent]
        id = "gw-edge"
        state_dir = "{tmp_path / 'state'}"
        [uplink]
        collector = "127.0.0.1:50051"
        token = "token-0123456789abcdef"
        [[assets]]
        id = "ahu-1"
        type = "ahu"
        """)
    modbus = base + '[[sources]]\ntype = "modbus"\nname = "m"\nhost = "127.0.0.1"\n' \
        '[[sources.points]]\nasset = "ahu-1"\nname = "r0"\naddress = 0\ntype = "uint16"\n'
    opcua = modbus + '[[sources]]\ntype = "opcua"\nname = "pm"\nendpoint = "opc.tcp://127.0.0.1:4840"\n' \
        '[[sources.points]]\nasset = "ahu-1"\nname = "p"\nnode_id = "ns=2;i=2"\n'
    (tmp_path / "modbus.toml").write_text(modbus)
    (tmp_path / "opcua.toml").write_text(opcua)
    agent = str(venv / "bin/twin-agent")
    assert "OK: agent gw-edge" in run([agent, "check-config", str(tmp_path / "modbus.toml")]).stdout
    proc = run([agent, "check-config", str(tmp_path / "opcua.toml")], check=False)
    assert proc.returncode == 2 and "sources[1].type: the opcua connector needs the [opcua] extra" in proc.stderr, \
        proc.stderr
    assert "pip install 'facility-twin[opcua]'" in proc.stderr and "Traceback" not in proc.stderr
    proc = run([str(venv / "bin/twin-collector"), "check-config", str(tmp_path / "modbus.toml")], check=False)
    assert proc.returncode == 2 and "twin-collector needs the 'collector' extra" in proc.stderr, proc.stderr


# ---- install, operate, purge ---------------------------------------------------------------------


@contextlib.contextmanager
def machine_lock() -> Iterator[None]:
    """Several checkouts on one machine may run this test; the package paths are global."""
    with open(Path(tempfile.gettempdir()) / "facility-twin-package-test.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def assert_not_installed() -> None:
    status = run(["dpkg-query", "-W", "-f=${db:Status-Status}", "facility-twin"], check=False).stdout
    assert status in ("", "not-installed"), "facility-twin is installed on this machine: the test will not touch it"
    for user in ("twin-agent", "twin-collector"):
        with pytest.raises(KeyError):
            pwd.getpwnam(user)


def leftovers() -> list[str]:
    found = [p for p in LEFTOVERS if os.path.lexists(p)]
    for user in ("twin-agent", "twin-collector"):
        for db in (pwd.getpwnam, grp.getgrnam):
            with contextlib.suppress(KeyError):
                db(user)
                found.append(f"{db.__name__}({user})")
    for folder in ("/etc/systemd/system", "/var/lib/systemd/deb-systemd-helper-enabled",
                   "/var/lib/systemd/deb-systemd-helper-masked"):
        if os.path.isdir(folder):
            found += [str(p) for p in Path(folder).rglob("*twin-*")]
    status = run(["dpkg-query", "-W", "-f=${db:Status-Status}", "facility-twin"], check=False).stdout
    if status not in ("", "not-installed"):
        found.append(f"dpkg status {status}")
    return found


def readme_run_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text[text.index("\n## Run\n"):]
    block = block[block.index("```sh\n") + 6:]
    block = block[:block.index("```")]
    commands = []
    for line in block.splitlines():
        line = re.split(r"\s{2,}#", line)[0].strip()
        if line and not line.startswith("#"):
            commands.append(line)
    return commands


class Daemon:
    """A daemon started the way its unit starts it: as its user, with the unit's umask and environment."""

    def __init__(self, name: str, argv: list[str], user: str, umask: int, env: dict[str, str], log: Path) -> None:
        self.name, self.log = name, log
        pw = pwd.getpwnam(user)
        with log.open("ab") as out:
            self.proc = subprocess.Popen(argv, user=pw.pw_uid, group=pw.pw_gid, extra_groups=[], umask=umask,
                                         env=env, stdout=out, stderr=subprocess.STDOUT, cwd="/",
                                         start_new_session=True)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                return self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(timeout=60)


def service_env(unit: str, **extra: str) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "CREDENTIALS_DIRECTORY": f"/run/credentials/{unit}", **extra}


def load_credential(unit: str, name: str, value: str, user: str) -> None:
    """What LoadCredential= gives a unit: /run/credentials/<unit>/<name>, readable by its user only."""
    pw = pwd.getpwnam(user)
    folder = Path("/run/credentials") / unit
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(value + "\n")
    os.chown(folder / name, pw.pw_uid, pw.pw_gid)
    (folder / name).chmod(0o400)
    os.chown(folder, pw.pw_uid, pw.pw_gid)
    folder.chmod(0o500)


def write_root_file(path: Path, text: str, mode: int, group: str = "root") -> None:
    path.write_text(text)
    os.chown(path, 0, grp.getgrnam(group).gr_gid)
    path.chmod(mode)


@needs_root
def test_install_operate_and_purge(build: tuple[Path, Path], tmp_path: Path) -> None:
    deb, _ = build
    with machine_lock():
        assert_not_installed()
        daemons: list[Daemon] = []
        servers: list[ServerProcess] = []
        had_credentials = Path("/run/credentials").exists()
        try:
            run(["dpkg", "-i", str(deb)], timeout=600)
            check_installed_layout()
            run(["systemd-analyze", "verify", "--man=no", *(f"/usr/lib/systemd/system/{u}" for u in UNITS)])
            check_config_from_the_installed_path()
            operate(tmp_path, daemons, servers)
        finally:
            for d in daemons:
                d.stop()
            for s in servers:
                s.stop()
            purge = run(["dpkg", "--purge", "facility-twin"], check=False, timeout=300)
            for unit in UNITS:  # what systemd would remove when the unit stops
                shutil.rmtree(Path("/run/credentials") / unit, ignore_errors=True)
            if not had_credentials:
                with contextlib.suppress(OSError):
                    Path("/run/credentials").rmdir()
        assert purge.returncode == 0, purge.stdout + purge.stderr
        assert leftovers() == []


def check_installed_layout() -> None:
    for user, mode in (("twin-agent", 0o750), ("twin-collector", 0o2770)):
        pw = pwd.getpwnam(user)
        assert pw.pw_shell == "/usr/sbin/nologin"
        state = os.stat(f"/var/lib/{user}")
        assert (state.st_uid, state.st_mode & 0o7777) == (pw.pw_uid, mode), f"/var/lib/{user}"
        conf = os.stat(f"/etc/{user}")
        assert (conf.st_uid, conf.st_gid, conf.st_mode & 0o777) == (0, pw.pw_gid, 0o750)
    agent_toml = os.stat("/etc/twin-agent/agent.toml")
    assert (agent_toml.st_gid, agent_toml.st_mode & 0o777) == (grp.getgrnam("twin-agent").gr_gid, 0o640)
    assert run(["/usr/bin/twin-agent", "--version"]).stdout.strip().startswith("twin-agent ")
    assert Path("/usr/share/doc/facility-twin/README.md").exists(), "the units' Documentation="


def check_config_from_the_installed_path() -> None:
    """The shipped example configurations pass; the token the example reads through LoadCredential=
    is not there outside the unit, which is a warning, or an error with --strict-secrets."""
    proc = run(["/opt/facility-twin/bin/twin-agent", "check-config"])
    assert "/etc/twin-agent/agent.toml: OK" in proc.stdout
    assert "warning: uplink.token_file: cannot read /run/credentials/twin-agent.service/uplink-token" in proc.stderr
    assert run(["/opt/facility-twin/bin/twin-agent", "check-config", "--strict-secrets"], check=False).returncode == 2
    assert "OK" in run(["/opt/facility-twin/bin/twin-collector", "check-config"]).stdout


def operate(tmp: Path, daemons: list[Daemon], servers: list[ServerProcess]) -> None:
    grpc_port, api_port, modbus_port, opcua_port = free_port(), free_port(), free_port(), free_port()
    influx = influxd_server(tmp / "influxd")
    servers.append(influx)
    sim = ServerProcess("twin-sim", ["/usr/bin/twin-sim", "--modbus-port", str(modbus_port), "--opcua-port",
                                     str(opcua_port), "--fault", "clogging_filter@0"], tmp / "sim",
                        lambda: tcp_open(modbus_port), modbus_port, start_timeout=60)
    servers.append(sim.start())

    write_root_file(Path("/etc/twin-collector/collector.toml"), textwrap.dedent(f"""
        [collector]
        listen = "127.0.0.1:{grpc_port}"
        site = "plant-pkg"
        check_interval_s = 1
        [influx]
        api = "v1"
        url = "http://127.0.0.1:{influx.port}"
        database = "facility_twin"
        username = "twin"
        password_env = "TWIN_INFLUX_PASSWORD"
        [api]
        listen = "127.0.0.1:{api_port}"
        token_file = "/run/credentials/twin-collector.service/api-token"
        [api.users]
        alice = "{sha256(ALICE_TOKEN)}"
        [[webhooks]]
        name = "itsm"
        url = "http://127.0.0.1:{free_port()}/hook"
        secret_env = "TWIN_WEBHOOK_SECRET"
        [[agents]]
        id = "gw-pkg"
        token_sha256 = "{sha256(AGENT_TOKEN)}"
        [[rules]]
        name = "filter_clogged"
        asset_type = "ahu"
        point = "filter_dp"
        above = 100.0
        clear_at = 90.0
        min_duration_s = 0
        severity = "major"
        title = "Air filter clogged on {{asset}}"
        """), 0o640, "twin-collector")
    write_root_file(Path("/etc/twin-agent/agent.toml"), textwrap.dedent(f"""
        [agent]
        id = "gw-pkg"
        site = "plant-pkg"
        summary_interval_s = 1
        [uplink]
        collector = "127.0.0.1:{grpc_port}"
        token_file = "/run/credentials/twin-agent.service/uplink-token"
        backoff_initial_s = 0.2
        backoff_max_s = 1
        [[assets]]
        id = "ahu-1"
        type = "ahu"
        name = "Air handling unit 1"
        [[sources]]
        type = "modbus"
        name = "ahu-1-controller"
        host = "127.0.0.1"
        port = {modbus_port}
        poll_interval_s = 0.5
        timeout_s = 0.4
          [[sources.points]]
          asset = "ahu-1"
          name = "filter_dp"
          unit = "Pa"
          function = "input"
          address = 5
          type = "uint16"
          scale = 0.1
          [[sources.points]]
          asset = "ahu-1"
          name = "supply_air_temp"
          unit = "degC"
          function = "input"
          address = 0
          type = "float32"
        """), 0o640, "twin-agent")
    write_root_file(Path("/etc/twin-agent/uplink.token"), AGENT_TOKEN + "\n", 0o600)
    load_credential("twin-agent.service", "uplink-token", AGENT_TOKEN, "twin-agent")
    load_credential("twin-collector.service", "api-token", API_TOKEN, "twin-collector")
    collector_env = service_env("twin-collector.service", TWIN_INFLUX_PASSWORD="influx-password",
                                TWIN_WEBHOOK_SECRET="webhook-secret-0123456789")
    agent_env = service_env("twin-agent.service")

    # ExecStartPre: inside the unit every secret is readable, so the strict check passes.
    for user, env in (("twin-collector", collector_env), ("twin-agent", agent_env)):
        pw = pwd.getpwnam(user)
        proc = run([f"/opt/facility-twin/bin/{user}", "check-config", "--strict-secrets"], check=False,
                   user=pw.pw_uid, group=pw.pw_gid, extra_groups=[], env=env, cwd="/")
        assert proc.returncode == 0 and not proc.stderr, proc.stderr
    daemons.append(Daemon("collector", ["/opt/facility-twin/bin/twin-collector", "run"], "twin-collector", 0o007,
                          collector_env, tmp / "collector.log"))
    wait_for(lambda: tcp_open(grpc_port), 60, "the collector")
    daemons.append(Daemon("agent", ["/opt/facility-twin/bin/twin-agent", "run"], "twin-agent", 0o027, agent_env,
                          tmp / "agent.log"))

    def work_order_raised() -> bool:
        db = Path("/var/lib/twin-collector/collector.sqlite")
        if not db.exists():
            return False
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
            try:
                return conn.execute("SELECT COUNT(*) FROM work_orders").fetchone()[0] >= 1
            except sqlite3.OperationalError:
                return False
    try:
        wait_for(work_order_raised, 90, "WO-000001 from the agent's data")
    except TimeoutError:
        raise AssertionError("\n".join((tmp / f"{n}.log").read_text()[-2000:] for n in ("collector", "agent"))) \
            from None

    operator_dir = Path(tempfile.mkdtemp(prefix="twin-operator-"))
    try:
        as_operator(operator_dir, modbus_port)
        # A stopped agent: not running, since when, and the rest as the last known state.
        assert daemons[1].stop() == 0
        proc = operator(operator_dir, "twin-agent status", check=False)
        assert proc.returncode == 3, proc.stdout + proc.stderr
        assert "NOT RUNNING, stopped" in proc.stdout and "UTC" in proc.stdout and "last known state" in proc.stdout
        assert "was online" in proc.stdout or "was connected" in proc.stdout
    finally:
        shutil.rmtree(operator_dir, ignore_errors=True)


def operator(workdir: Path, command: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    groups = [grp.getgrnam("twin-agent").gr_gid, grp.getgrnam("twin-collector").gr_gid]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(workdir), "USER": "alice", "LOGNAME": "alice", "LANG": "C.UTF-8",
           "AGENT_TOKEN": AGENT_TOKEN}
    proc = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=timeout, check=False,
                          user=OPERATOR_UID, group=OPERATOR_UID, extra_groups=groups, umask=0o022, env=env,
                          cwd=workdir)
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, f"{command}\n{proc.stderr}"
    if check:
        assert proc.returncode == 0, f"{command}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def as_operator(workdir: Path, modbus_port: int) -> None:
    """Every README "Run" command, as printed; only the device address and the simulator's ports differ."""
    workdir.chmod(0o755)
    os.chown(workdir, OPERATOR_UID, OPERATOR_UID)
    t = np.arange(8192) / 12_800.0
    np.savez(workdir / "recording.npz", de_accel=0.05 * np.sin(2 * np.pi * 29.95 * t), fs=12_800.0)
    rng = np.random.default_rng(1)  # a machine's snapshots, one an hour, for the backtest
    np.savez(workdir / "snapshots.npz", accel=0.05 * np.sin(2 * np.pi * 29.95 * t) + rng.normal(0, 0.01, (6, t.size)),
             t_s=np.arange(6) * 3600.0, fs=12_800.0, rpm=1797.0)
    (workdir / "proposed.toml").write_text('[[rules]]\nname = "filter_clogged"\nabove = 120.0\n')
    outputs: dict[str, subprocess.CompletedProcess[str]] = {}
    commands = readme_run_commands()
    assert len(commands) >= 15, commands
    for command in commands:
        argv = shlex.split(command.split("|")[0])
        if argv[:3] == ["twin-agent", "probe", "modbus"]:
            command = command.replace("10.0.0.5", "127.0.0.1") + f" --port {modbus_port}"
        if argv[0] == "twin-sim":
            for option in re.findall(r"--\w+-port \d+", command):
                command = command.replace(option, f"{option.split()[0]} {free_port()}")
            proc = operator(workdir, f"timeout 10 {command}", check=False)
            assert proc.returncode == 124, f"twin-sim should run until stopped:\n{proc.stderr}"
            assert "hvac simulator started" in proc.stderr
            continue
        outputs[command] = operator(workdir, command)

    def out(prefix: str) -> subprocess.CompletedProcess[str]:
        return next(p for c, p in outputs.items() if c.startswith(prefix))

    check = out("twin-agent check-config")
    assert "/etc/twin-agent/agent.toml: OK" in check.stdout
    assert "warning: uplink.token_file: cannot read /run/credentials/twin-agent.service/uplink-token: " \
           "Permission denied" in check.stderr, check.stderr
    assert out("twin-agent status").stdout.startswith("twin-agent gw-pkg (site plant-pkg): running, pid ")
    assert "ahu-1 (ahu): " in out("twin-agent status").stdout
    collector_check = out("twin-collector check-config").stderr
    for key in ("api.token_file", "influx.password_env", "webhooks[0].secret_env"):
        assert f"warning: {key}: " in collector_check, collector_check
    assert "WO-000001" in out("twin-collector work-orders list").stdout
    assert out("twin-collector work-orders ack").stdout.strip() == "WO-000001 is now acknowledged"
    assert out("twin-collector work-orders close").stdout.strip() == "WO-000001 is now closed"
    shown = operator(workdir, "twin-collector work-orders show WO-000001").stdout
    assert "acknowledged by alice at " in shown and "closed by alice at " in shown and " UTC" in shown
    assert "ahu-1" in out("twin-collector assets list").stdout
    assert out("echo").stdout.strip() == sha256(AGENT_TOKEN)
    assert "proposed" in out("twin-collector simulate").stdout
    assert "velocity" in out("twin-agent diagnose").stdout
    assert "0x" in out("twin-agent probe modbus").stdout
    assert out("twin-collector backtest").stdout.lstrip().startswith(("{", "["))
