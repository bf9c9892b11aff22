"""kind = "counter": accepted by the connectors' configs, refused where it cannot hold a count, and a
decrease seen by the twin is a counter_reset change event."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.connectors import build_connector
from agent.model import AssetSpec, PointSpec, Quality, Reading
from agent.twin import LocalTwin
from runtime.errors import ConfigError


def modbus_source(**point: object) -> dict[str, object]:
    return {"type": "modbus", "name": "meter", "host": "127.0.0.1",
            "points": [{"asset": "m", "name": "energy", "address": 0, **point}]}


def test_counter_kind_in_every_connector_config() -> None:
    modbus = build_connector(modbus_source(kind="counter", type="uint32"), "sources[0]")
    assert modbus.points()[0].kind == "counter"
    mqtt = build_connector({"type": "mqtt", "name": "b", "host": "127.0.0.1", "points": [
        {"asset": "m", "name": "pulses", "kind": "counter", "topic": "site/pulses"}]}, "sources[1]")
    assert mqtt.points()[0].kind == "counter"
    opcua = build_connector({"type": "opcua", "name": "o", "endpoint": "opc.tcp://127.0.0.1:4840", "points": [
        {"asset": "m", "name": "energy", "kind": "counter", "node_id": "ns=2;s=Meter.Energy"}]}, "sources[2]")
    assert opcua.points()[0].kind == "counter"


def test_a_counter_needs_a_numeric_modbus_type() -> None:
    with pytest.raises(ConfigError, match=r"sources\[0\]\.points\[0\]\.kind: a counter needs a numeric type"):
        build_connector(modbus_source(kind="counter", type="bit", bit=3), "sources[0]")


def test_a_decrease_of_a_counter_is_a_reset_event(tmp_path: Path) -> None:
    twin = LocalTwin([AssetSpec("m", "power_meter", points=(
        PointSpec("m", "energy", kind="counter"), PointSpec("m", "power")))], tmp_path / "twin.sqlite")
    twin.apply([Reading("m", "energy", 1030.0, 1), Reading("m", "power", 9.0, 1)])
    twin.apply([Reading("m", "energy", 1031.0, 2), Reading("m", "power", 3.0, 2)])
    assert not [c for c in twin.drain_changes() if c.kind == "counter_reset"], \
        "a counter rising and a measurement going down are no resets"
    twin.apply([Reading("m", "energy", None, 3, Quality.BAD, "timeout")])
    twin.apply([Reading("m", "energy", 5.0, 4)])
    resets = [c for c in twin.drain_changes() if c.kind == "counter_reset"]
    assert [(c.point, c.old_value, c.new_value, c.ts_ns) for c in resets] == [("energy", "1031", "5", 4)], \
        "compared with the last good value, across a BAD reading"
