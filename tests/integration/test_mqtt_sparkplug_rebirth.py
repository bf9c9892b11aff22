"""Sparkplug B births that went by: an edge node (simulator/sparkplug_edge.py, its own process)
publishes its births once, not retained, then alias-only DDATA, through a real Mosquitto. A
connector that starts late, and one that starts again (as after an agent restart or a reload),
must ask for a rebirth and read the data, instead of rejecting it as "unknown alias" for good."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.connectors.mqtt import sparkplug_b_pb2
from agent.connectors.mqtt.connector import MqttConnector
from agent.model import Quality
from tests.integration.test_mqtt_connector import Received, running, source, wait_until
from tests.servers import ServerProcess, mosquitto_server

pytestmark = pytest.mark.integration

WAIT_S = 20.0


class Wire:
    """A bare paho subscriber counting the Sparkplug messages on the broker, by type."""

    def __init__(self, port: int) -> None:
        self.counts: Counter[str] = Counter()
        self.ncmd: list[tuple[str, list[tuple[str, bool]]]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("spBv1.0/#", qos=0)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        kind = msg.topic.split("/")[2]
        with self._lock:
            self.counts[kind] += 1
            if kind == "NCMD":
                payload = sparkplug_b_pb2.Payload()
                payload.ParseFromString(msg.payload)
                self.ncmd.append((msg.topic, [(m.name, m.boolean_value) for m in payload.metrics]))

    def count(self, kind: str) -> int:
        with self._lock:
            return self.counts[kind]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[ServerProcess]:
    server = mosquitto_server(tmp_path / "mosquitto")
    try:
        yield server
    finally:
        server.stop()


def edge_node(broker: ServerProcess, workdir: Path, *extra: str) -> ServerProcess:
    log = workdir / "sparkplug-edge.log"
    proc = ServerProcess(
        "sparkplug-edge", [sys.executable, "-m", "simulator.sparkplug_edge", "--port", str(broker.port),
                           "--group", "plant", "--node", "gw01", "--device", "pump1", "--period", "0.1", *extra],
        workdir, lambda: log.exists() and "births published (connected)" in log.read_text(), broker.port)
    return proc.start()


def speed_source(port: int, topic: str = "spBv1.0/plant/DDATA/gw01/pump1", **options: object) -> MqttConnector:
    return source(port, [
        {"asset": "pump-1", "name": "speed", "unit": "rpm", "topic": topic, "format": "sparkplug", "metric": "Speed"},
        {"asset": "pump-1", "name": "running", "kind": "state", "topic": topic, "format": "sparkplug",
         "metric": "Running"},
    ], **options)


def test_a_late_and_a_restarted_connector_ask_for_births_and_read_alias_only_data(
        broker: ServerProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="twin.agent.mqtt")
    with edge_node(broker, tmp_path / "edge"):
        wire = Wire(broker.port)  # subscribed after the births: they are not retained, so it sees none
        try:
            deadline = time.monotonic() + WAIT_S
            while wire.count("DDATA") < 5:  # the births are long gone, and not retained
                assert time.monotonic() < deadline, wire.counts
                time.sleep(0.05)
            # The births went out before this subscriber: on a loaded machine the broker may still have
            # delivered the last of them (a DBIRTH) after the subscription took effect. Count from here.
            births_before = wire.count("NBIRTH"), wire.count("DBIRTH")
            assert births_before[0] == 0

            async def late_then_restarted() -> tuple[MqttConnector, Received, MqttConnector, Received]:
                # Started late: the config names the node, so the rebirth is requested on connecting.
                late = speed_source(broker.port)
                async with running(late) as got_late:
                    await wait_until(lambda: len(got_late.values("speed")) >= 5, "speed read by the late connector")
                # Started again with a wildcard node: the first alias-only DDATA triggers the request.
                again = speed_source(broker.port, topic="spBv1.0/plant/DDATA/+/pump1")
                async with running(again) as got_again:
                    await wait_until(lambda: len(got_again.values("speed")) >= 5, "speed read after a restart")
                return late, got_late, again, got_again

            late, got_late, again, got_again = asyncio.run(late_then_restarted())
        finally:
            wire.close()

    for connector, got in ((late, got_late), (again, got_again)):
        speeds = got.values("speed")
        assert all(1450.0 <= v <= 1459.0 for v in speeds), speeds
        assert got.values("running") and all(v is True for v in got.values("running"))
        assert all(r.quality is Quality.GOOD for r in got.readings if r.point == "speed")  # no BAD before the birth
        assert connector.stats.decode_errors == 0
        assert connector.rebirth_requests == 1
    # On the wire: one Node Control/Rebirth per connector, each answered by a new NBIRTH.
    assert wire.ncmd == [("spBv1.0/plant/NCMD/gw01", [("Node Control/Rebirth", True)])] * 2
    assert (wire.count("NBIRTH") - births_before[0], wire.count("DBIRTH") - births_before[1]) == (2, 2)
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "malformed" in m or "unknown alias" in m]
    waiting = [m for m in messages if "waiting for birth from plant/gw01" in m]
    assert any("rebirth requested (spBv1.0/plant/NCMD/gw01, Node Control/Rebirth)" in m for m in waiting), waiting


def test_rebirth_requests_are_rate_limited_and_can_be_turned_off(
        broker: ServerProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An edge node that ignores the command gets one request per interval, not one per message."""
    caplog.set_level(logging.INFO, logger="twin.agent.mqtt")
    wire = Wire(broker.port)
    try:
        with edge_node(broker, tmp_path / "edge", "--ignore-rebirth"):

            async def scenario() -> tuple[MqttConnector, MqttConnector]:
                limited = speed_source(broker.port, topic="spBv1.0/plant/DDATA/+/pump1",
                                       sparkplug_rebirth_interval_s=3600)
                off = speed_source(broker.port, topic="spBv1.0/plant/DDATA/+/pump1", client_id="off",
                                   sparkplug_rebirth=False)
                async with running(limited) as got_limited, running(off) as got_off:
                    await wait_until(lambda: limited.stats.polls >= 20 and off.stats.polls >= 20, "20 DDATA each")
                    await wait_until(lambda: wire.count("NCMD") >= 1, "the rebirth request on the wire")
                    assert got_limited.readings == got_off.readings == []  # nothing to name, nothing made up
                return limited, off

            limited, off = asyncio.run(scenario())
    finally:
        wire.close()
    assert (limited.rebirth_requests, off.rebirth_requests) == (1, 0)
    assert wire.count("NCMD") == 1 and wire.count("NBIRTH") == 1  # the births at its start only
    assert limited.stats.decode_errors == off.stats.decode_errors == 0
    messages = [r.getMessage() for r in caplog.records if "waiting for birth" in r.getMessage()]
    assert any(m.startswith("test-broker: waiting for birth from plant/gw01") and "sparkplug_rebirth = false" in m
               for m in messages), messages
