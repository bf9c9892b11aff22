"""What both command-line tools share: --config anywhere with /etc defaults, --version, UTC times, a
closed pipe, secrets read only where needed, and the lock that tells a running agent from a stopped one."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from agent import cli as agent_cli
from collector import cli as collector_cli
from runtime.command_line import age_text, utc_text
from runtime.errors import ConfigError
from runtime.instance_lock import InstanceLock, probe_instance
from runtime.secrets import SecretPolicy, read_secret, secret_policy

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("argv", [
    ["--config", "c.toml", "work-orders", "list"],
    ["work-orders", "--config", "c.toml", "list"],
    ["work-orders", "list", "--config", "c.toml"],
    ["-c", "c.toml", "work-orders", "show", "WO-000001"],
    ["work-orders", "ack", "WO-000001", "-c", "c.toml", "--note", "x"],
    ["assets", "release", "ahu-1", "--config", "c.toml"],
    ["simulate", "--rules", "p.toml", "--config", "c.toml"],
    ["check-config", "--config", "c.toml"],
])
def test_collector_config_before_or_after_the_subcommand(argv: list[str]) -> None:
    assert collector_cli.build_parser().parse_args(argv).config == Path("c.toml")


def test_defaults_are_the_packaged_paths() -> None:
    assert collector_cli.build_parser().parse_args(["work-orders", "list"]).config == \
        Path("/etc/twin-collector/collector.toml")
    assert agent_cli.build_parser(["status"]).parse_args(["status"]).config == Path("/etc/twin-agent/agent.toml")
    args = ["--config", "a.toml", "probe", "modbus", "--host", "h", "--address", "0"]
    parsed = agent_cli.build_parser(args).parse_args(args)
    assert parsed.config == Path("a.toml") and parsed.func.__module__ == "agent.connectors.modbus.probe"
    assert agent_cli.build_parser(["status", "-c", "x"]).parse_args(["status", "-c", "x"]).config == Path("x")


@pytest.mark.parametrize("tool", ["agent", "collector"])
def test_version(tool: str) -> None:
    out = subprocess.run([sys.executable, "-m", tool, "--version"], capture_output=True, text=True, check=True,
                         cwd=ROOT).stdout
    assert out.strip() == f"twin-{tool} 0.2.0"


def test_times_say_utc() -> None:
    assert utc_text(1_800_000_000 * 10**9) == "2027-01-15 08:00:00 UTC"
    assert utc_text(0) == "-"
    now = time.time_ns()
    assert age_text(now - 5 * 10**9, now) == "5s ago" and age_text(now - 3 * 3600 * 10**9, now) == "3.0 h ago"


def test_a_closed_pipe_ends_quietly() -> None:
    script = ("from runtime.command_line import run_command\n"
              "import sys\n"
              "sys.exit(run_command(lambda: [print('line', i) for i in range(200_000)] and 0, 'twin-x'))")
    proc = subprocess.run(f"{sys.executable} -c \"{script}\" | head -1", shell=True, capture_output=True,
                          text=True, cwd=ROOT, check=False)
    assert proc.stdout == "line 0\n" and proc.stderr == "", proc.stderr


def test_hash_token_reads_a_piped_token_without_a_warning() -> None:
    proc = subprocess.run([sys.executable, "-m", "collector", "hash-token"], input="token-0123456789abcdef\n",
                          capture_output=True, text=True, cwd=ROOT, check=True)
    assert proc.stdout.strip() == hashlib.sha256(b"token-0123456789abcdef").hexdigest()
    assert proc.stderr == "", "no GetPassWarning: the token was piped"


def test_secret_policies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = str(tmp_path / "absent" / "token")
    monkeypatch.delenv("TWIN_TEST_UNSET_SECRET", raising=False)
    with pytest.raises(ConfigError, match=r"uplink\.token_file: cannot read"):
        read_secret("uplink.token", file=missing)
    with secret_policy(SecretPolicy.CHECK) as noted:
        assert read_secret("uplink.token", file=missing).startswith("<uplink.token")
        assert read_secret("influx.password", env="TWIN_TEST_UNSET_SECRET").startswith("<influx.password")
    assert [u.key for u in noted] == ["uplink.token_file", "influx.password_env"]
    assert "in this shell" in noted[1].reason
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with secret_policy(SecretPolicy.CHECK), pytest.raises(ConfigError, match="is empty"):
        read_secret("uplink.token", file=str(empty))  # a readable but empty secret is broken, not hidden
    with secret_policy(SecretPolicy.SKIP) as noted:
        assert read_secret("uplink.token", file=str(empty)).startswith("<uplink.token")  # not even opened
    assert noted == []


def test_credentials_hint(tmp_path: Path) -> None:
    with secret_policy(SecretPolicy.CHECK) as noted:
        read_secret("uplink.token", file="/run/credentials/twin-agent.service/uplink-token")
    assert "only to the running twin-agent.service (LoadCredential=)" in noted[0].reason


def test_the_lock_tells_running_from_stopped_however_the_process_ends(tmp_path: Path) -> None:
    lock = tmp_path / "state" / "twin-agent.pid"
    assert probe_instance(lock).running is False
    holder = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from runtime.instance_lock import InstanceLock
        lock = InstanceLock(Path({str(lock)!r}), "twin-agent")
        lock.acquire()
        print("held", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "held\n"
        state = probe_instance(lock)
        assert state.running is True and state.pid == proc.pid and state.started_ns > 0
        with pytest.raises(ConfigError, match=f"another twin-agent \\(pid {proc.pid}\\) is running"):
            InstanceLock(lock, "twin-agent").acquire()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        state = probe_instance(lock)
        assert state.running is False and state.stopped_ns == 0, "killed: no clean stop recorded"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with InstanceLock(lock, "twin-agent"):
        assert probe_instance(lock).running is True
    state = probe_instance(lock)
    assert state.running is False and state.stopped_ns >= state.started_ns > 0


@pytest.mark.parametrize("sample", sorted((ROOT / "agent" / "connectors").glob("*/sample.toml")),
                         ids=lambda p: p.parent.name)
def test_each_connector_sample_is_checkable_on_its_own(sample: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "agent", "check-config", str(sample)], capture_output=True,
                          text=True, cwd=ROOT, check=False)
    assert proc.returncode == 0 and "OK (sources only)" in proc.stdout, proc.stdout + proc.stderr
