"""SIGHUP reloads the collector's configuration (here: a new agent token); a broken file is refused."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import urllib.request
from pathlib import Path

import grpc
import pytest

from collector.config import hash_token
from tests.integration.daemons import TOKENS, exchange
from tests.integration.test_collector_auth import batch, hello
from tests.servers import ServerProcess, free_port, tcp_open, wait_for

pytestmark = pytest.mark.integration


def config(state: Path, port: int, metrics_port: int, agents: list[str]) -> str:
    text = f'[collector]\nlisten = "127.0.0.1:{port}"\nstate_dir = "{state}"\n'
    text += f'[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n'
    for a in agents:
        text += f'[[agents]]\nid = "{a}"\ntoken_sha256 = "{hash_token(TOKENS[a])}"\n'
    return text


def test_sighup_reload(tmp_path: Path) -> None:
    port, metrics_port = free_port(), free_port()
    cfg = tmp_path / "collector.toml"
    cfg.write_text(config(tmp_path / "state", port, metrics_port, ["gw-a"]))
    proc = ServerProcess("collector", [sys.executable, "-m", "collector", "run", "--config", str(cfg)], tmp_path,
                         lambda: tcp_open(port) and tcp_open(metrics_port), port).start()
    try:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            asyncio.run(exchange(port, TOKENS["gw-b"], hello("gw-b"), [batch(1, 1.0)]))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED

        cfg.write_text(config(tmp_path / "state", port, metrics_port, ["gw-a", "gw-b"]))
        os.kill(proc.pid, signal.SIGHUP)
        wait_for(lambda: proc.log_path.read_text().count("collector listening") >= 2, 20, "the reloaded collector")
        assert asyncio.run(exchange(port, TOKENS["gw-b"], hello("gw-b"), [batch(1, 1.0)])) == [0, 1]
        assert asyncio.run(exchange(port, TOKENS["gw-a"], hello("gw-a"), [batch(1, 1.0)])) == [0, 1]
        wait_for(lambda: tcp_open(metrics_port), 10, "metrics after reload")
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as resp:
            assert "twin_collector" in resp.read().decode()

        cfg.write_text("[collector\n")
        os.kill(proc.pid, signal.SIGHUP)
        wait_for(lambda: "reload refused" in proc.log_path.read_text(), 10, "the refusal")
        assert proc.running()
        assert asyncio.run(exchange(port, TOKENS["gw-b"], hello("gw-b"), [batch(2, 1.0)])) == [1, 2]
    finally:
        proc.stop()
