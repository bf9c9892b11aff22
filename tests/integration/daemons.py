"""Start the project's own daemons (collector, agent) as real processes for integration tests."""

from __future__ import annotations

import json
import sqlite3
import sys
import textwrap
from pathlib import Path
from typing import Any

import grpc

from agent.status_file import ask_for_status
from collector.config import hash_token
from protos.twin.v1 import twin_pb2, twin_pb2_grpc
from tests.servers import ServerProcess, free_port, tcp_open, wait_for

__all__ = [
    "TOKENS",
    "Processes",
    "agent_process",
    "collector_process",
    "collector_toml",
    "exchange",
    "fleet_token",
    "pattern_agent_toml",
    "pattern_device",
    "read_status",
    "status",
    "stored_points",
    "wait_acked",
    "wait_drained",
]

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


class Processes:
    """The processes a test starts, stopped in reverse order at the end, also when one of them fails
    to start (its predecessors would otherwise outlive the test)."""

    def __init__(self) -> None:
        self._started: list[ServerProcess] = []

    def add(self, proc: ServerProcess) -> ServerProcess:
        self._started.append(proc)
        return proc

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(self._started):
            proc.stop()


def collector_toml(state_dir: Path, port: int, influx: str = "", rules: str = FILTER_RULE,
                   collector_extra: str = "", state: str = "") -> str:
    """`state`: a `[state]` table (tests.conftest.state_toml), "" for the embedded SQLite file."""
    agents = "\n".join(f'[[agents]]\nid = "{a}"\ntoken_sha256 = "{hash_token(t)}"\n' for a, t in TOKENS.items())
    return textwrap.dedent(f"""
        [collector]
        listen = "127.0.0.1:{port}"
        state_dir = "{state_dir}"
        site = "test-site"
        log_level = "debug"
        sink_retry_max_s = 1.0
        """) + collector_extra + influx + "\n" + agents + rules + "\n" + state


def fleet_token(i: int) -> str:
    """The token of agent `fleet-<i>` of a collector started with `fleet_agents`."""
    return f"token-for-fleet-{i:04d}-0123456789abcdef"


def collector_process(workdir: Path, influx: str = "", rules: str = FILTER_RULE, port: int = 0,
                      collector_extra: str = "", fleet_agents: int = 0, state: str = "") -> ServerProcess:
    """The collector as a process; `fleet_agents` more agents `fleet-<i>` with `fleet_token(i)`; `state` a
    `[state]` table (tests.conftest.state_toml)."""
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / "collector.toml"
    fleet = "".join(f'[[agents]]\nid = "fleet-{i}"\ntoken_sha256 = "{hash_token(fleet_token(i))}"\n'
                    for i in range(fleet_agents))
    cfg.write_text(collector_toml(workdir / "state", port, influx, rules, collector_extra, state) + "\n" + fleet)
    proc = ServerProcess("collector", [sys.executable, "-m", "collector", "run", "--config", str(cfg)],
                         workdir, lambda: tcp_open(port), port)
    proc.config_path = cfg  # type: ignore[attr-defined]
    return proc.start()


def agent_process(workdir: Path, config_text: str, env: dict[str, str] | None = None) -> ServerProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / "agent.toml"
    cfg.write_text(config_text)
    status = workdir / "state" / "status.json"
    proc = ServerProcess("agent", [sys.executable, "-m", "agent", "run", "--config", str(cfg)], workdir,
                         status.exists, 0, env=env)
    proc.config_path = cfg  # type: ignore[attr-defined]
    return proc.start()


def read_status(agent_workdir: Path) -> dict[str, object]:
    path = agent_workdir / "state" / "status.json"
    wait_for(path.exists, 30, "agent status file")
    ask_for_status(agent_workdir / "state")
    return json.loads(path.read_text())


def pattern_device(workdir: Path) -> ServerProcess:
    """A Modbus TCP device whose holding register at address A of unit U reads U*1000 + A."""
    port = free_port()
    return ServerProcess("modbus-device", [sys.executable, "-m", "simulator.modbus_device", "--port", str(port),
                                           "--units", "1", "--holding", "20"], workdir / "device",
                         lambda: tcp_open(port), port).start()


def pattern_agent_toml(state_dir: Path, collector_port: int, device_port: int, agent_id: str = "gw-a",
                       summary_interval_s: float = 1.0, max_queue_mb: float = 16.0, max_in_flight: int = 16,
                       agent_extra: str = "", uplink_extra: str = "", poll_interval_s: float = 0.25,
                       r0_kind: str = "measurement") -> str:
    """An agent reading two registers of `pattern_device`: r0 = 1000 Pa, r5 = 100.5 degC (scale 0.1)."""
    return textwrap.dedent(f"""
        [agent]
        id = "{agent_id}"
        site = "plant-a"
        state_dir = "{state_dir}"
        summary_interval_s = {summary_interval_s}
        {agent_extra}

        [uplink]
        collector = "127.0.0.1:{collector_port}"
        token = "{TOKENS[agent_id]}"
        max_queue_mb = {max_queue_mb}
        max_in_flight = {max_in_flight}
        shutdown_drain_s = 10
        backoff_initial_s = 0.2
        backoff_max_s = 1.0
        {uplink_extra}

        [[assets]]
        id = "ahu-1"
        type = "ahu"
        name = "AHU 1"

        [[sources]]
        type = "modbus"
        name = "ahu-1-controller"
        host = "127.0.0.1"
        port = {device_port}
        poll_interval_s = {poll_interval_s}
        timeout_s = 0.2
        retries = 0
        backoff_max_s = 0.5
          [[sources.points]]
          asset = "ahu-1"
          name = "r0"
          unit = "Pa"
          kind = "{r0_kind}"
          address = 0
          type = "uint16"
          [[sources.points]]
          asset = "ahu-1"
          name = "r5"
          unit = "degC"
          address = 5
          type = "int16"
          scale = 0.1
        """)


def stored_points(collector_workdir: Path, measurement: str) -> list[tuple[dict[str, str], int, dict[str, Any]]]:
    """(tags, ts_ns, fields) of every point in the collector's embedded store, in time order."""
    path = collector_workdir / "state" / "summaries.sqlite"
    if not path.exists():
        return []
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as conn:
        rows = conn.execute("SELECT series, ts_ns, fields FROM summary_points WHERE measurement = ? "
                            "ORDER BY ts_ns, series", (measurement,)).fetchall()
    return [(json.loads(series), int(ts), json.loads(fields)) for series, ts, fields in rows]


def status(agent_workdir: Path) -> dict[str, Any]:
    """The agent's status: asked for fresh when it runs (it rewrites the file only now and then)."""
    ask_for_status(agent_workdir / "state")
    try:
        return json.loads((agent_workdir / "state" / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def wait_acked(agent_workdir: Path, at_least: int, timeout: float = 60.0) -> None:
    wait_for(lambda: status(agent_workdir).get("uplink", {}).get("acked", 0) >= at_least, timeout,
             f"{at_least} batches acked")


def wait_drained(agent_workdir: Path, timeout: float = 60.0) -> None:
    """Until the agent has caught up: its link is up and only the batch just produced is queued.

    A batch just stored may not be acked yet, so one batch in the queue is the steady state of a
    connected agent.
    """
    def drained() -> bool:
        st = status(agent_workdir)
        return bool(st) and st["queue"]["batches"] <= 1 and st["uplink"]["connected"]
    wait_for(drained, timeout, "the agent's queue to drain")


async def exchange(port: int, token: str, first: twin_pb2.Hello, batches: list[twin_pb2.Batch],
                   authorization: str | None = None) -> list[int]:
    """Send Hello + batches on one stream; return the acked seqs (the first ack answers the Hello).

    A refused stream raises AioRpcError with the collector's status: when the collector aborts
    while the client is still writing, the write fails with a generic INTERNAL error, so the
    stream's own final status is what is raised.
    """
    header = authorization if authorization is not None else f"Bearer {token}"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = twin_pb2_grpc.CollectorStub(channel).Connect(metadata=(("authorization", header),))
        try:
            await call.write(twin_pb2.AgentMessage(hello=first))
            acks = [(await call.read()).ack.seq]
            for b in batches:
                await call.write(twin_pb2.AgentMessage(batch=b))
                acks.append((await call.read()).ack.seq)
            await call.done_writing()
        except grpc.aio.AioRpcError:
            code = await call.code()
            raise grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                       await call.details()) from None
        return acks
