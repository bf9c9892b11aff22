"""The monitoring's own outages never blame the field; real field losses raise one work order per cause.

Real InfluxDB 1.x, real collector and agent processes, real simulated devices. Limits are configured
short so the tests take seconds, and each fault lasts longer than every stale and offline limit, which
is what the semantics depend on; no process's clock is faked.

- InfluxDB stopped (demo configs, simulator without faults): zero field work orders, one collector
  incident, /ready and /health 503 during and 200 after, the recovery logged once, every summary stored
  once.
- The collector SIGKILLed and restarted later than every limit: zero field work orders, nothing lost.
- The collector restarted with a backlog from 20 agents: zero field work orders (see its docstring for
  how the hour is scaled).
- A device stopped: one device_offline work order per device with its points as evidence; the agent
  stopped: exactly one agent_offline work order, nothing for its points.
"""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from collector.config import hash_token
from simulator.demo import render_configs
from tests.integration.daemons import pattern_device
from tests.integration.influx_query import influxql
from tests.servers import (
    ServerProcess,
    free_port,
    influxd_server,
    mosquitto_server,
    tcp_open,
    wait_for,
)

pytestmark = pytest.mark.integration

DB = "facility_twin"

# Limits of the pattern plant (seconds): stale after 3 x 0.25 s polls, at least 1 s; BAD or device offline
# after 1 s; agent offline after 2 s. Every fault below lasts several times longer.
PLANT_RULES = """
[[rules]]
name = "stale_data"
kind = "stale"
asset_type = "ahu"
factor = 3
min_silence_s = 1

[[rules]]
name = "bad_data"
kind = "bad_quality"
asset_type = "ahu"
max_bad_s = 1

[[rules]]
name = "device_offline"
kind = "device_offline"
asset_type = "ahu"
offline_after_s = 1

[[rules]]
name = "agent_offline"
kind = "agent_offline"
offline_after_s = 2

[[rules]]
name = "collector_health"
kind = "collector_health"
"""


def token(agent: str) -> str:
    return f"token-for-{agent}-0123456789abcdef"


def collector_config(workdir: Path, agents: list[str], influx_port: int, rules: str = PLANT_RULES) -> ServerProcess:
    port, api = free_port(), free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / "collector.toml"
    cfg.write_text(textwrap.dedent(f"""
        [collector]
        listen = "127.0.0.1:{port}"
        state_dir = "{workdir / 'state'}"
        site = "test-site"
        log_level = "debug"
        sink_retry_max_s = 0.5
        check_interval_s = 0.25

        [influx]
        api = "v1"
        url = "http://127.0.0.1:{influx_port}"
        database = "{DB}"
        timeout_s = 2.0

        [api]
        listen = "127.0.0.1:{api}"
        """) + "".join(f'\n[[agents]]\nid = "{a}"\ntoken_sha256 = "{hash_token(token(a))}"\n' for a in agents)
        + rules)
    proc = ServerProcess("collector", [sys.executable, "-m", "collector", "run", "--config", str(cfg)], workdir,
                         lambda: tcp_open(port) and tcp_open(api), port)
    proc.api_port = api  # type: ignore[attr-defined]
    proc.config_path = cfg  # type: ignore[attr-defined]
    return proc


def agent_config(workdir: Path, agent: str, collector_port: int, devices: dict[str, int],
                 summary_interval_s: float = 1.0, backoff_max_s: float = 0.4) -> ServerProcess:
    """An agent with one asset per device (`{asset: device port}`), two registers each, polled every 0.25 s."""
    workdir.mkdir(parents=True, exist_ok=True)
    text = textwrap.dedent(f"""
        [agent]
        id = "{agent}"
        site = "plant-a"
        state_dir = "{workdir / 'state'}"
        summary_interval_s = {summary_interval_s}
        status_interval_s = 1  # agent_status() reads status.json as it is

        [uplink]
        collector = "127.0.0.1:{collector_port}"
        token = "{token(agent)}"
        shutdown_drain_s = 10
        backoff_initial_s = 0.1
        backoff_max_s = {backoff_max_s}
        """)
    for asset, port in devices.items():
        text += textwrap.dedent(f"""
            [[assets]]
            id = "{asset}"
            type = "ahu"

            [[sources]]
            type = "modbus"
            name = "{asset}-controller"
            host = "127.0.0.1"
            port = {port}
            poll_interval_s = 0.25
            timeout_s = 0.2
            retries = 0
            backoff_max_s = 0.5
              [[sources.points]]
              asset = "{asset}"
              name = "r0"
              address = 0
              type = "uint16"
              [[sources.points]]
              asset = "{asset}"
              name = "r5"
              address = 5
              type = "int16"
              scale = 0.1
            """)
    cfg = workdir / "agent.toml"
    cfg.write_text(text)
    return ServerProcess(f"agent-{agent}", [sys.executable, "-m", "agent", "run", "--config", str(cfg)], workdir,
                         (workdir / "state" / "status.json").exists, 0)


def http_json(port: int, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def work_orders(state_dir: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(f"file:{state_dir / 'collector.sqlite'}?mode=ro", uri=True, timeout=10) as conn:
        rows = conn.execute("SELECT id, asset, rule, category, status, title, evidence, condition_cleared_ns "
                            "FROM work_orders ORDER BY id").fetchall()
    return [{"id": r[0], "asset": r[1], "rule": r[2], "category": r[3], "status": r[4], "title": r[5],
             "evidence": json.loads(r[6]), "cleared": r[7] is not None} for r in rows]


def field(orders: list[dict[str, Any]]) -> list[str]:
    return [f"{w['asset']} {w['rule']}: {w['title']}" for w in orders if w["category"] != "collector"]


def agent_status(state_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((state_dir / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def wait_drained(state_dir: Path, timeout: float = 60.0) -> None:
    """Until the agent has caught up: connected, and only the batch just produced queued."""
    def drained() -> bool:
        st = agent_status(state_dir)
        return bool(st) and st["queue"]["batches"] <= 1 and st["uplink"]["connected"]
    wait_for(drained, timeout, f"{state_dir} to drain its queue")


def stored_once(influx_port: int, state_dir: Path) -> None:
    """After a clean stop of the agent: InfluxDB holds each summary and each batch's health exactly once."""
    st = agent_status(state_dir)
    assert st["queue"]["batches"] == 0 and st["queue"]["dropped"] == 0
    url = f"http://127.0.0.1:{influx_port}"
    stored = influxql(url, DB, f"SELECT count(\"count\") FROM telemetry WHERE agent = '{st['agent']}'")
    health = influxql(url, DB, f"SELECT count(queue_batches) FROM agent_health WHERE agent = '{st['agent']}'")
    assert stored[0]["count"] == st["queue"]["summaries_total"], "every summary stored, none twice"
    assert health[0]["count"] == st["queue"]["next_seq"] - 1, "every batch stored, none twice"


def test_influxdb_stopped_with_the_demo_configs(tmp_path: Path) -> None:
    """The issue's setup: demo configs, real InfluxDB 1.6, InfluxDB stopped longer than every limit."""
    influx = influxd_server(tmp_path / "influx")
    mqtt = mosquitto_server(tmp_path / "mqtt")
    ports = {"modbus": free_port(), "collector": free_port(), "opcua": free_port(), "mqtt": mqtt.port}
    # the demo's own configs, written for a real InfluxDB as `twin-demo --influx-url` does
    agent_cfg, collector_cfg = render_configs(tmp_path, ports, mqtt=True,
                                              influx_url=f"http://127.0.0.1:{influx.port}")
    api, metrics = free_port(), free_port()
    text = collector_cfg.read_text()
    # the demo's rules (stale pump points after 5 s, agent offline after 30 s: shortened to 5 s so the outage
    # below outlasts every limit in seconds), plus the API, metrics, and a quicker check and sink retry
    text = re.sub(r"offline_after_s = \d+", "offline_after_s = 5", text)
    text = re.sub(r"check_interval_s = \d+", "check_interval_s = 0.5\nsink_retry_max_s = 1.0", text)
    text = text.replace('[influx]\napi = "v1"\n', f'[api]\nlisten = "127.0.0.1:{api}"\n\n[metrics]\n'
                        f'listen = "127.0.0.1:{metrics}"\n\n[influx]\napi = "v1"\ntimeout_s = 2.0\n', 1)
    collector_cfg.write_text(text)
    py = sys.executable
    sim = ServerProcess("simulator", [py, "-m", "simulator.cli", "--modbus-port", str(ports["modbus"]),
                                      "--opcua-port", str(ports["opcua"]), "--mqtt-port", str(ports["mqtt"])],
                        tmp_path / "sim", lambda: tcp_open(ports["modbus"]) and tcp_open(ports["opcua"]),
                        ports["modbus"]).start()
    collector = ServerProcess("collector", [py, "-m", "collector", "run", "--config", str(collector_cfg)],
                              tmp_path / "c", lambda: tcp_open(ports["collector"]) and tcp_open(api),
                              ports["collector"]).start()
    agent_dir = tmp_path / "agent"
    agent = ServerProcess("agent", [py, "-m", "agent", "run", "--config", str(agent_cfg)], tmp_path / "a",
                          (agent_dir / "status.json").exists, 0).start()
    state = tmp_path / "collector"
    try:
        wait_for(lambda: agent_status(agent_dir).get("uplink", {}).get("acked", 0) >= 5, 60,
                 "the demo agent delivering")
        assert http_json(api, "/ready") == (200, {"status": "ready"})
        influx.stop()
        stopped = time.monotonic()
        wait_for(lambda: http_json(api, "/ready")[0] == 503, 30, "/ready to report the sink")
        code, ready = http_json(api, "/ready")
        assert code == 503 and "InfluxDB v1 at" in ready["reasons"][0] and "failing since" in ready["reasons"][0]
        code, health = http_json(api, "/health")
        assert code == 503 and health["status"] == "failing" and health["reasons"] == ready["reasons"]
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        assert "twin_collector_ready 0.0" in text
        assert 'twin_collector_dependency_up{dependency="sink"} 0.0' in text
        wait_for(lambda: any(w["category"] == "collector" for w in work_orders(state)), 30, "the collector incident")
        # longer than every limit: stale pump points (5 s) and the agent offline (5 s)
        time.sleep(max(0.0, 12.0 - (time.monotonic() - stopped)))
        assert field(work_orders(state)) == []
        influx.start()
        wait_for(lambda: http_json(api, "/ready")[0] == 200, 60, "/ready after InfluxDB is back")
        assert http_json(api, "/health")[0] == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5) as resp:
            assert "twin_collector_ready 1.0" in resp.read().decode()
        wait_drained(agent_dir)
        wait_for(lambda: all(w["cleared"] for w in work_orders(state) if w["category"] == "collector"), 30,
                 "the incident to note the recovery")
        time.sleep(3)  # the agent keeps sending: still nothing for the field
        agent.stop()
        orders = work_orders(state)
        assert field(orders) == [], "an outage of InfluxDB raises no field work order"
        (incident,) = [w for w in orders if w["category"] == "collector"]
        assert incident["asset"] == "collector" and incident["title"].startswith("InfluxDB unreachable since ")
        assert incident["evidence"]["dependency"] == "sink"
        log = collector.log_path.read_text()
        assert len(re.findall(r"sink recovered after \d+ s, \d+ batches stored late", log)) == 1, \
            "the recovery is logged once"
        assert len(re.findall(r"sink failing: ", log)) == 1, "and the outage once"
        stored_once(influx.port, agent_dir)
    finally:
        for p in (agent, collector, sim, mqtt, influx):
            p.stop()


class Plant:
    """InfluxDB, Modbus devices (one per asset), a collector and agents, each a real process."""

    def __init__(self, tmp: Path, agents: dict[str, list[str]], summary_interval_s: float = 1.0) -> None:
        self.tmp = tmp
        self.procs: list[ServerProcess] = []
        self.influx = self._keep(influxd_server(tmp / "influx"))
        assets = sorted({a for names in agents.values() for a in names})
        self.devices = {a: self._keep(pattern_device(tmp / a)) for a in assets}
        self.collector = self._keep(collector_config(tmp / "c", sorted(agents), self.influx.port).start())
        self.agents = {a: self._keep(agent_config(tmp / a, a, self.collector.port,
                                                  {n: self.devices[n].port for n in names}, summary_interval_s))
                       for a, names in agents.items()}
        for agent in self.agents.values():  # started together: their interpreters load in parallel
            agent.proc = subprocess.Popen(agent.argv, cwd=agent.workdir, stdout=open(agent.log_path, "ab"),
                                          stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: all(agent_status(self.state(a)).get("uplink", {}).get("acked", 0) >= 2
                             for a in self.agents), 120, "every agent delivering")

    def _keep(self, proc: ServerProcess) -> ServerProcess:
        self.procs.append(proc)
        return proc

    def state(self, agent: str) -> Path:
        return self.tmp / agent / "state"

    @property
    def api(self) -> int:
        return int(self.collector.api_port)  # type: ignore[attr-defined]

    def orders(self) -> list[dict[str, Any]]:
        return work_orders(self.tmp / "c" / "state")

    def stop_agents(self) -> None:
        """SIGTERM to every agent at once (each stores its last interval and drains), then wait for all."""
        running = [p for p in self.agents.values() if p.running()]
        for p in running:
            assert p.proc is not None
            p.proc.send_signal(signal.SIGTERM)
        for p in running:
            p.stop()  # already exiting: this waits for it

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()


@pytest.fixture
def plant_factory(tmp_path: Path) -> Any:
    plants: list[Plant] = []

    def make(agents: dict[str, list[str]], summary_interval_s: float = 1.0) -> Plant:
        plants.append(Plant(tmp_path, agents, summary_interval_s))
        return plants[-1]
    yield make
    for p in plants:
        p.stop()


def test_collector_sigkilled_and_restarted_later_than_every_limit(plant_factory: Any) -> None:
    """The collector dies without a goodbye and comes back after 6 s: three times the agent-offline limit
    and six times the stale limit (a minute against limits of seconds). The agent queues meanwhile."""
    plant = plant_factory({"gw-a": ["ahu-1"]})
    plant.collector.kill()
    time.sleep(6.0)
    assert agent_status(plant.state("gw-a"))["queue"]["batches"] >= 4, "the agent queued while the collector was away"
    plant.collector.start()
    wait_drained(plant.state("gw-a"))
    time.sleep(3.0)  # several limits more of live data after the catch-up
    assert field(plant.orders()) == [], "a collector restart raises no field work order"
    assert [w for w in plant.orders() if w["category"] == "collector"] == [], "and the collector was never failing"
    plant.agents["gw-a"].stop()  # (a gateway really leaving: not part of what is judged here)
    stored_once(plant.influx.port, plant.state("gw-a"))


def test_collector_restarted_with_a_backlog_from_20_agents(plant_factory: Any) -> None:
    """An hour's backlog from 20 agents, scaled down by the ratios that matter, honestly produced.

    In the field: agents send every 10 s, the collector is away for an hour (360 batches per agent,
    7,200 in all), an agent is offline after 300 s and a point stale after 60 s at least. Here: 20 real
    agent processes sending every 0.2 s queue for 12 s while the collector is stopped (60 batches each,
    1,200 in all), with the agent-offline limit 2 s and the stale limit 1 s: the backlog is 6 and 12 times
    those limits (an hour is 12 and 60 times them), and while the collector catches up the batches it
    stores are many limits older than the wall clock, which is what used to look like silence.
    """
    agents = {f"gw-{i:02d}": [f"ahu-{i:02d}"] for i in range(20)}
    plant = plant_factory(agents, summary_interval_s=0.2)
    plant.collector.stop()
    time.sleep(12.0)
    queued = sum(agent_status(plant.state(a))["queue"]["batches"] for a in agents)
    assert queued >= 20 * 40, f"a backlog of {queued} batches built up"
    plant.collector.start()
    for a in agents:
        wait_drained(plant.state(a), 180)
    time.sleep(2.0)
    assert field(plant.orders()) == [], "catching up on a backlog raises no field work order"
    plant.stop_agents()  # (gateways really leaving: not part of what is judged here)
    for a in agents:
        stored_once(plant.influx.port, plant.state(a))


def test_device_loss_and_gateway_loss_raise_one_work_order_per_cause(plant_factory: Any) -> None:
    plant = plant_factory({"gw-a": ["ahu-1", "ahu-2"]})
    plant.devices["ahu-1"].stop()
    wait_for(lambda: any(w["rule"] == "device_offline" for w in plant.orders()), 30, "ahu-1 offline")
    time.sleep(3.0)  # longer than the BAD and stale limits of its points
    (device,) = field(plant.orders())
    assert device.startswith("ahu-1 device_offline: ahu-1: device offline (")
    (wo,) = plant.orders()
    assert sorted(p["point"] for p in wo["evidence"]["points"]) == ["r0", "r5"], "its points are the evidence"
    plant.devices["ahu-2"].stop()
    wait_for(lambda: len(plant.orders()) == 2, 30, "ahu-2 offline")
    time.sleep(3.0)
    assert [(w["asset"], w["rule"]) for w in plant.orders()] == [("ahu-1", "device_offline"),
                                                                ("ahu-2", "device_offline")], "one per device"
    # the gateway goes away: one work order for it, none for its points
    plant.agents["gw-a"].stop()
    wait_for(lambda: len(plant.orders()) == 3, 30, "the agent offline")
    time.sleep(3.0)
    orders = plant.orders()
    assert [(w["asset"], w["rule"]) for w in orders] == [("ahu-1", "device_offline"), ("ahu-2", "device_offline"),
                                                         ("gw-a", "agent_offline")]
    assert orders[2]["title"] == "Agent gw-a offline" and orders[2]["evidence"]["assets"] == ["ahu-1", "ahu-2"]
    code, assets = http_json(plant.api, "/assets")
    assert code == 200 and {a["id"]: a["link"] for a in assets} == {"ahu-1": "offline", "ahu-2": "offline"}
    listing = subprocess.run([sys.executable, "-m", "collector", "assets", "--config",
                              str(plant.collector.config_path), "list"],  # type: ignore[attr-defined]
                             capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0
    assert "ahu-1            ahu          gw-a         offline   good      link: gateway gw-a gone for" \
        in listing.stdout, listing.stdout
