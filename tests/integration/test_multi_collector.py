"""Several collectors, one fleet: three collector processes share a real PostgreSQL 15 state database
and a real InfluxDB 1.6; fifty agents spread over them and fail over when one is SIGKILLed
mid-stream and restarted.

The agents: 47 light agents (tests/integration/light_fleet.py: the agent's real queue and uplink,
failover included, fed with synthetic batches, all in one process) and 3 real twin-agent processes
reading a Modbus device. Collectors listen on 127.0.0.1:P, [::1]:P and 127.0.0.1:Q; the light
agents and two real agents have the list of the three, the third real agent has the name
`localhost:P`, which resolves to two of them (gRPC tries the records in turn).

What it proves, after everything is delivered:
- every summary each agent produced is in InfluxDB (none lost), and every batch was committed
  exactly once across the collectors (the watermark table counts commits; the rule history's
  summed counts would double for a batch committed twice);
- one work order per (asset, rule), with its changes once: raised, then escalated;
- each ITSM change reached the webhook, delivered by one collector: a change POSTed twice can only
  be one whose POST was in flight when its collector was killed (same Idempotency-Key, same body),
  and the outbox holds nothing undelivered.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import textwrap
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from collector.config import hash_token
from collector.state import PostgresLocation
from tests.conftest import new_postgres_database, query_state, state_toml
from tests.integration.daemons import pattern_device, status
from tests.integration.influx_query import influxql
from tests.integration.light_fleet import FILTER_ESCALATE_AT
from tests.integration.webhook_receiver import serve_webhook
from tests.servers import LOOPBACK, PostgresServer, ServerProcess, free_port, influxd_server, tcp_open, wait_for

pytestmark = pytest.mark.integration

DB = "facility_twin"
REPO = Path(__file__).resolve().parents[2]
LIGHT_AGENTS = 47
REAL_AGENTS = 3
LIGHT_INTERVAL_S = 0.25
PRODUCE_S = 20.0
LIGHT_POINTS = 4
ESCALATING = {f"lt-{i:02d}" for i in range(0, LIGHT_AGENTS, 5)}  # their filter_dp raises and escalates

RULES = """
[[rules]]
name = "filter_clogged"
asset_type = "ahu"
point = "filter_dp"
above = 300.0
clear_at = 250.0
escalate_at = 420.0
severity = "major"
title = "Air filter clogged on {asset}"

[[rules]]
name = "pressure_high"
asset_type = "pump"
point = "r0"
above = 500.0
severity = "minor"
"""


def token(agent: str) -> str:
    return f"token-for-{agent}-0123456789abcdef"


def dual_stack_port() -> int:
    """A port free on both 127.0.0.1 and ::1 (two collectors listen on it, one per address)."""
    for _ in range(50):
        port = free_port()
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            try:
                s.bind(("::1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no port free on both 127.0.0.1 and ::1")


class Receiver:
    """The ITSM side: an HTTP server on its own thread that records every POST and answers 200."""

    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[tuple[str, bytes]] = []  # (Idempotency-Key, body)
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def handle(request: web.Request) -> web.Response:
            body = await request.read()
            with self._lock:
                self.requests.append((request.headers["Idempotency-Key"], body))
            return web.json_response({"result": "ok"})

        self._runner = self._loop.run_until_complete(serve_webhook(handle, self.port))
        self._ready.set()
        self._loop.run_forever()

    def keys(self) -> Counter[str]:
        with self._lock:
            return Counter(k for k, _ in self.requests)

    def bodies(self, key: str) -> set[bytes]:
        with self._lock:
            return {b for k, b in self.requests if k == key}

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def collector_config(workdir: Path, listen: str, influx_port: int, hook_port: int, state: str,
                     agents: list[str]) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    text = textwrap.dedent(f"""
        [collector]
        listen = "{listen}"
        state_dir = "{workdir / 'state'}"
        site = "plant-m"
        log_level = "info"
        sink_retry_max_s = 1.0

        [influx]
        api = "v1"
        url = "http://{LOOPBACK}:{influx_port}"
        database = "{DB}"
        timeout_s = 5.0

        [[webhooks]]
        name = "ops"
        url = "http://{LOOPBACK}:{hook_port}/hook"
        retry_initial_s = 0.1
        retry_max_s = 1.0
        """)
    text += "".join(f'[[agents]]\nid = "{a}"\ntoken_sha256 = "{hash_token(token(a))}"\n' for a in agents)
    text += RULES + "\n" + state
    path = workdir / "collector.toml"
    path.write_text(text)
    return path


def collector(workdir: Path, listen: str, config: Path) -> ServerProcess:
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    return ServerProcess(f"collector-{workdir.name}", [sys.executable, "-m", "collector", "run", "--config",
                                                       str(config)],
                         workdir, lambda: tcp_open(int(port), host), int(port)).start()


def real_agent_toml(state_dir: Path, agent: str, asset: str, collectors: str | list[str], device_port: int) -> str:
    return textwrap.dedent(f"""
        [agent]
        id = "{agent}"
        site = "plant-m"
        state_dir = "{state_dir}"
        summary_interval_s = 1.0

        [uplink]
        collector = {json.dumps(collectors)}
        token = "{token(agent)}"
        shutdown_drain_s = 10
        backoff_initial_s = 0.2
        backoff_max_s = 1.0

        [[assets]]
        id = "{asset}"
        type = "pump"
        name = "{asset}"

        [[sources]]
        type = "modbus"
        name = "{asset}-controller"
        host = "127.0.0.1"
        port = {device_port}
        poll_interval_s = 0.5
        timeout_s = 0.4
          [[sources.points]]
          asset = "{asset}"
          name = "r0"
          unit = "kPa"
          address = 0
          type = "uint16"
          [[sources.points]]
          asset = "{asset}"
          name = "r5"
          unit = "degC"
          address = 5
          type = "int16"
          scale = 0.1
        """)


def test_three_collectors_fifty_agents_one_killed(tmp_path: Path, postgres: PostgresServer) -> None:
    location: PostgresLocation = new_postgres_database(postgres)
    influx = influxd_server(tmp_path / "influx")
    device = pattern_device(tmp_path)
    receiver = Receiver()
    light = [f"lt-{i:02d}" for i in range(LIGHT_AGENTS)]
    real = [f"rg-{i}" for i in range(1, REAL_AGENTS + 1)]
    p, q = dual_stack_port(), free_port()
    listens = [f"127.0.0.1:{p}", f"[::1]:{p}", f"127.0.0.1:{q}"]
    state = state_toml(location, tmp_path)
    collectors = [collector(tmp_path / f"c{i + 1}", listen,
                            collector_config(tmp_path / f"c{i + 1}", listen, influx.port, receiver.port, state,
                                             light + real))
                  for i, listen in enumerate(listens)]
    procs: list[ServerProcess] = []
    try:
        fleet_cfg = tmp_path / "fleet.json"
        fleet_status = tmp_path / "fleet-status.json"
        fleet_cfg.write_text(json.dumps({
            "state_dir": str(tmp_path / "fleet"), "status_file": str(fleet_status), "site": "plant-m",
            "collectors": listens, "interval_s": LIGHT_INTERVAL_S, "produce_s": PRODUCE_S, "points": LIGHT_POINTS,
            "agents": [{"id": a, "token": token(a), "asset": f"ahu-{a}", "escalating": a in ESCALATING}
                       for a in light]}))
        fleet = ServerProcess("light-fleet", [sys.executable, "-m", "tests.integration.light_fleet", str(fleet_cfg)],
                              tmp_path, fleet_status.exists, 0, env={"PYTHONPATH": str(REPO)}).start()
        procs.append(fleet)
        agent_dirs = []
        for i, agent in enumerate(real):
            workdir = tmp_path / agent
            workdir.mkdir()
            addresses: str | list[str] = f"localhost:{p}" if i == 0 else listens
            (workdir / "agent.toml").write_text(real_agent_toml(workdir / "state", agent, f"pump-{i + 1}", addresses,
                                                               device.port))
            procs.append(ServerProcess(agent, [sys.executable, "-m", "agent", "run", "--config",
                                               str(workdir / "agent.toml")],
                                       workdir, (workdir / "state" / "status.json").exists, 0).start())
            agent_dirs.append(workdir)

        def light_status() -> dict[str, Any]:
            try:
                return json.loads(fleet_status.read_text())
            except (OSError, ValueError):
                return {}

        def light_acked() -> int:
            return sum(a["acked"] for a in light_status().get("agents", {}).values())

        # mid-stream: a third of the light fleet's production acked, work orders being raised
        wait_for(lambda: light_acked() >= LIGHT_AGENTS * PRODUCE_S / LIGHT_INTERVAL_S / 3, 60,
                 "the fleet streaming to the three collectors")
        on_c1 = [a for a, s in light_status()["agents"].items() if s["collector"] == listens[0]]
        collectors[0].kill()  # SIGKILL: streams and transactions cut wherever they are
        acked_at_kill = light_acked()
        wait_for(lambda: light_acked() > acked_at_kill + 2 * LIGHT_AGENTS, 30, "the fleet acked by the others")
        collectors[0].start()  # same addresses, same shared state

        def drained() -> bool:
            st = light_status()
            return bool(st) and not st["producing"] and all(a["queued"] == 0 for a in st["agents"].values())

        wait_for(drained, 90, "the light fleet produced everything and had it acked")
        for proc, workdir in zip(procs[1:], agent_dirs, strict=True):
            proc.stop()  # SIGTERM: the agent drains what it queued
            assert status(workdir)["queue"]["batches"] == 0, f"{workdir.name} delivered everything"
        fleet.stop()
        final = light_status()["agents"]
        real_final = {agent: status(workdir)["queue"] for agent, workdir in zip(real, agent_dirs, strict=True)}

        # --- failover happened ------------------------------------------------------------------------
        assert on_c1, "some light agents had started on the collector that was killed"
        assert all(final[a]["failovers"] >= 1 for a in on_c1), "each agent on the killed collector moved on"
        assert all(s["dropped"] == 0 for s in final.values())

        # --- every summary in InfluxDB, every batch committed once ------------------------------------
        url = f"http://{LOOPBACK}:{influx.port}"
        counts = {r["agent"]: r["count"] for r in influxql(url, DB, "SELECT count(mean) FROM telemetry GROUP BY agent")}
        expected = {a: s["summaries_total"] for a, s in final.items()} | {
            a: s["summaries_total"] for a, s in real_final.items()}
        assert counts == expected, "InfluxDB holds every summary each agent produced"
        committed = dict(query_state(location, "SELECT agent_id, SUM(batches) FROM watermarks GROUP BY agent_id"))
        produced = {a: s["batches"] for a, s in final.items()} | {a: s["next_seq"] - 1 for a, s in real_final.items()}
        assert {a: int(n) for a, n in committed.items()} == produced, "each batch committed exactly once"
        history = dict(query_state(location, "SELECT asset, SUM(count) FROM summary_history WHERE asset LIKE 'ahu-%' "
                                             "GROUP BY asset"))
        assert {a: int(n) for a, n in history.items()} == {
            f"ahu-{a}": s["batches"] * LIGHT_POINTS * 5 for a, s in final.items()}, "no batch's history twice"

        # --- one work order per (asset, rule), each change once -----------------------------------
        orders = query_state(location, "SELECT id, asset, rule, severity FROM work_orders ORDER BY id")
        by_key = Counter((asset, rule) for _, asset, rule, _ in orders)
        assert set(by_key) == {(f"ahu-{a}", "filter_clogged") for a in ESCALATING} | {
            (f"pump-{i}", "pressure_high") for i in range(1, REAL_AGENTS + 1)}
        assert set(by_key.values()) == {1}, "no duplicate work orders"
        assert all(final[a]["batches"] > FILTER_ESCALATE_AT for a in ESCALATING)
        events = query_state(location, "SELECT e.id, w.id, w.rule, e.action FROM work_order_events e "
                                       "JOIN work_orders w ON w.id = e.work_order ORDER BY e.id")
        actions: dict[int, list[str]] = {}
        for _, wo, _, action in events:
            actions.setdefault(wo, []).append(action)
        for wo, _, rule, severity in orders:
            want = ["raised", "escalated"] if rule == "filter_clogged" else ["raised"]
            assert actions[wo] == want, f"WO-{wo:06d}: each change once"
            assert severity == ("critical" if rule == "filter_clogged" else "minor")

        # --- each ITSM change delivered by one collector --------------------------------------------
        keys = {f"WO-{wo:06d}-{event}" for event, wo, _, _ in events}
        wait_for(lambda: set(receiver.keys()) >= keys, 30, "every change at the webhook")
        wait_for(lambda: query_state(location, "SELECT COUNT(*) FROM outbox WHERE delivered_ns IS NULL")[0][0] == 0,
                 30, "the outbox delivered")
        received = receiver.keys()
        assert set(received) == keys
        twice = [k for k, n in received.items() if n > 1]
        assert len(twice) <= 1 and all(received[k] == 2 for k in twice), \
            f"only a POST in flight when its collector was killed may come twice: {twice}"
        assert all(len(receiver.bodies(k)) == 1 for k in twice), "a resend is the same change"
    finally:
        for proc in [*procs, *collectors]:
            proc.stop()
        receiver.stop()
        device.stop()
        influx.stop()
