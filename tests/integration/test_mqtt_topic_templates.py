"""Topics that name the device, through a real Mosquitto: one template table serves a fleet of
identical sensors publishing to `site/sensors/<device>/<point>`; its devices are assets the Hello
declares; a device (or point) the template does not list is counted and reported in the
connector's stats, the agent's status and metrics, and a rate-limited log line."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from agent.batch import build_hello
from agent.config import build_agent_config
from agent.connectors.mqtt.connector import MqttConnector
from agent.daemon import AgentDaemon
from agent.metrics import agent_registry
from agent.model import Quality
from runtime.cancellation import cancel_and_wait
from tests.integration.test_mqtt_connector import Received, publisher, wait_until
from tests.servers import ServerProcess, mosquitto_server

pytestmark = pytest.mark.integration

FLEET = [f"ts-{i:02d}" for i in range(1, 21)]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[ServerProcess]:
    server = mosquitto_server(tmp_path / "mosquitto")
    try:
        yield server
    finally:
        server.stop()


def agent_config(port: int, state_dir: Path) -> dict[str, Any]:
    return {
        "agent": {"id": "gw-1", "state_dir": str(state_dir)},
        "uplink": {"collector": "127.0.0.1:1", "token": "unused"},
        "assets": [{"id": "ts-01", "type": "env_sensor", "name": "Sensor at the door", "depends_on": ["ahu-1"]}],
        "sources": [{
            "type": "mqtt", "name": "sensors", "port": port, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5,
            "templates": [{
                "topic": "site/sensors/+asset/+point", "asset_type": "env_sensor", "assets": FLEET,
                "points": [{"name": "temperature", "unit": "degC"}, {"name": "humidity", "unit": "%"}],
            }],
        }],
    }


def test_one_template_serves_a_fleet_and_undeclared_devices_are_reported(
        broker: ServerProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="twin.agent.mqtt")
    config = build_agent_config(agent_config(broker.port, tmp_path / "state"))
    [connector] = config.connectors
    assert isinstance(connector, MqttConnector)

    # The Hello declares every device of the template as an asset, with the template's points;
    # ts-01, also in [[assets]], keeps its name and dependencies from there.
    hello = build_hello("gw-1", "default", "test", "epoch", config.assets)
    declared = {a.id: a for a in hello.assets}
    assert sorted(declared) == FLEET
    assert {a.type for a in hello.assets} == {"env_sensor"}
    assert [(p.name, p.unit) for p in declared["ts-07"].points] == [("temperature", "degC"), ("humidity", "%")]
    assert (declared["ts-01"].name, list(declared["ts-01"].depends_on)) == ("Sensor at the door", ["ahu-1"])

    async def scenario() -> tuple[Received, dict[str, Any], str]:
        daemon = AgentDaemon(config)
        await daemon.twin.open()
        await daemon.queue.open()
        got = Received()

        def emit(readings: Any) -> None:
            got(readings)
            daemon.emit(readings)

        task = asyncio.create_task(connector.run(emit))
        try:
            await wait_until(lambda: connector.ready, "connected and subscribed")
            with publisher(broker.port) as pub:
                for i, device in enumerate(FLEET):
                    pub.publish(f"site/sensors/{device}/temperature", f"{20 + i / 10:.1f}")
                    pub.publish(f"site/sensors/{device}/humidity", f"{40 + i}")
                for _ in range(3):
                    pub.publish("site/sensors/ts-99/temperature", "19.5")  # a device nobody declared
                pub.publish("site/sensors/ts-02/pressure", "1013")  # a point the template lacks
                pub.publish("site/sensors/ts-03/temperature", "21.0")
            await wait_until(lambda: len(got.readings) == 2 * len(FLEET) + 1, "every declared reading")
            await wait_until(lambda: sum(connector.stats.unknown_devices.values()) == 4, "undeclared messages")
            status = daemon.status()
            metrics = generate_latest(agent_registry(daemon)).decode()
        finally:
            await cancel_and_wait([task])
            await daemon.twin.close()
            await daemon.queue.close()
        return got, status, metrics

    got, status, metrics = asyncio.run(scenario())
    assert all(r.quality is Quality.GOOD for r in got.readings)
    assert {(r.asset, r.point, r.value) for r in got.readings} >= {
        ("ts-01", "temperature", 20.0), ("ts-20", "humidity", 59.0), ("ts-03", "temperature", 21.0)}
    assert len({r.asset for r in got.readings}) == len(FLEET)
    # Nothing dropped silently: counted per device, in stats, status and metrics, and logged once each.
    assert connector.stats.unknown_devices == {"ts-99": 3, "ts-02/pressure": 1}
    assert connector.stats.decode_errors == 0
    assert status["connectors"]["sensors"]["unknown_devices"] == {"ts-99": 3, "ts-02/pressure": 1}
    assert status["assets"]["ts-20"]["points"]["humidity"]["value"] == "59"  # formatted for display
    assert 'twin_agent_connector_unknown_devices{connector="sensors"} 2.0' in metrics
    assert 'twin_agent_connector_unknown_device_messages_total{connector="sensors"} 4.0' in metrics
    logged = [r.getMessage() for r in caplog.records]
    assert len([m for m in logged if "device ts-99 is not declared" in m]) == 1, logged
    assert any("add it to templates[0].assets (asset type env_sensor) and reload" in m for m in logged)
    assert len([m for m in logged if "point 'pressure' of device ts-02" in m]) == 1, logged
