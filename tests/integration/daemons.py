"""Start the project's own daemons (collector, agent) as real processes for integration tests."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

from collector.config import hash_token
from tests.servers import ServerProcess, free_port, tcp_open, wait_for

__all__ = ["TOKENS", "agent_process", "collector_process", "collector_toml", "read_status"]

TOKENS = {"gw-a": "token-for-gw-a-0123456789abcdef", "gw-b": "token-for-gw-b-0123456789abcdef"}

FILTER_RULE = """
[[rules]]
name = "filter_clogged"
asset_type = "ahu"
point = "filter_dp"
field = "mean"
above = 300.0
clear_at = 250.0
min_duration_s = 4
severity = "major"
escalate_at = 420.0
title = "Air filter clogged on {asset}"
"""


def collector_toml(state_dir: Path, port: int, influx: str = "", rules: str = FILTER_RULE) -> str:
    agents = "\n".join(f'[[agents]]\nid = "{a}"\ntoken_sha256 = "{hash_token(t)}"\n' for a, t in TOKENS.items())
    return textwrap.dedent(f"""
        [collector]
        listen = "127.0.0.1:{port}"
        state_dir = "{state_dir}"
        site = "test-site"
        log_level = "debug"
        sink_retry_max_s = 1.0
        """) + influx + "\n" + agents + rules


def collector_process(workdir: Path, influx: str = "", rules: str = FILTER_RULE, port: int = 0) -> ServerProcess:
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / "collector.toml"
    cfg.write_text(collector_toml(workdir / "state", port, influx, rules))
    proc = ServerProcess("collector", [sys.executable, "-m", "collector", "run", "--config", str(cfg)],
                         workdir, lambda: tcp_open(port), port)
    proc.config_path = cfg  # type: ignore[attr-defined]
    return proc.start()


def agent_process(workdir: Path, config_text: str) -> ServerProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / "agent.toml"
    cfg.write_text(config_text)
    status = workdir / "state" / "status.json"
    proc = ServerProcess("agent", [sys.executable, "-m", "agent", "run", "--config", str(cfg)], workdir,
                         status.exists, 0)
    proc.config_path = cfg  # type: ignore[attr-defined]
    return proc.start()


def read_status(agent_workdir: Path) -> dict[str, object]:
    path = agent_workdir / "state" / "status.json"
    wait_for(path.exists, 30, "agent status file")
    return json.loads(path.read_text())
