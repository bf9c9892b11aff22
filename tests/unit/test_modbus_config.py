"""The sample config loads; semantic errors fail and name the key to fix."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import pytest

import agent.connectors.modbus as modbus_pkg
from agent.connectors import build_connector
from agent.connectors.base import Connector
from agent.connectors.modbus.connector import ModbusConnector
from runtime.errors import ConfigError

SAMPLE = Path(modbus_pkg.__file__).parent / "sample.toml"


def sample_sources() -> list[dict[str, Any]]:
    return tomllib.loads(SAMPLE.read_text())["sources"]


def test_sample_loads_through_the_registry() -> None:
    sources = sample_sources()
    assert [s["type"] for s in sources] == ["modbus", "modbus"]
    tcp, rtu = (build_connector(s, f"sources[{i}]") for i, s in enumerate(sources))
    for c in (tcp, rtu):
        assert isinstance(c, Connector) and isinstance(c, ModbusConnector)
    assert tcp.name == "ahu-1-controller" and rtu.name == "rs485-plant-room"
    specs = {p.name: p for p in tcp.points()}
    assert specs["supply_air_temp"].expected_interval_s == 2.0
    assert specs["supply_air_temp"].deadband == 0.05
    assert specs["return_air_temp"].expected_interval_s == 5.0
    assert specs["supply_air_setpoint"].kind == "setpoint"
    assert len(tcp.points()) == len(sources[0]["points"])
    # Poll intervals 2, 5 and 60 s on input registers, 5 s holding, coil, discrete: never merged.
    assert len(tcp.requests) == 6
    assert {p.asset for p in rtu.points()} == {"ahu-1", "vav-21"}
    # address_base = 1: manual register 1 is protocol address 0.
    meter = [r for r in rtu.requests if r.unit_id == 10 and r.interval_s == 10.0]
    assert meter[0].address == 0


def base_source() -> dict[str, Any]:
    return {
        "name": "plant",
        "host": "127.0.0.1",
        "points": [
            {"asset": "ahu-1", "name": "t", "address": 0, "type": "float32"},
            {"asset": "ahu-1", "name": "s", "address": 4, "type": "int16"},
        ],
    }


def with_change(path: str, value: Any) -> dict[str, Any]:
    """Copy of base_source() with `path` (e.g. "points.0.type") set to `value`."""
    table = copy.deepcopy(base_source())
    node: Any = table
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node[part]
    node[parts[-1]] = value
    return table


def test_base_source_is_valid() -> None:
    build_connector({"type": "modbus", **base_source()}, "sources[0]")


BAD = [
    ("points.0.address", 65535, "sources[2].points[0].address", "float32 needs 2 registers"),
    ("points.1.word_order", "little", "sources[2].points[1].word_order", "multi-register"),
    ("points.1.bit", 3, "sources[2].points[1].bit", 'only with type = "bit"'),
    ("points.1.type", "bit", "sources[2].points[1].bit", "0..15"),
    ("points.1.type", "bool", "sources[2].points[1].type", "coil"),
    ("points.1.function", "coil", "sources[2].points[1].type", "single bits"),
    ("points.1.unit_id", 248, "sources[2].points[1].unit_id", "247"),
    ("points.1.type", "int17", "sources[2].points[1].type", "int16"),
    ("points.1.colour", "red", "sources[2].points[1].colour", "unknown key"),
    ("points.1.poll_interval_s", 0.5, "sources[2].points[1].poll_interval_s", "must exceed the timeout"),
    ("poll_interval_s", 1.0, "sources[2].poll_interval_s", "must exceed the timeout"),
    ("address_base", 2, "sources[2].address_base", "must be 0"),
    ("points.1.name", "t", "sources[2].points[1].name", "duplicate point ahu-1/t"),
    ("points.1.type", "string", "sources[2].points[1].length", "needs length"),
    ("points.1.length", 4, "sources[2].points[1].length", 'only with type = "string"'),
    ("points.1.scale", 0.1, None, None),  # valid: scale on int16
    ("transport", "rtu", "sources[2].serial_port", "required"),
    ("host", None, "sources[2].host", "required"),
    ("max_registers_per_request", 126, "sources[2].max_registers_per_request", "125"),
    ("devices", [{"unit_id": 9}], "sources[2].devices[0].unit_id", "no point reads unit 9"),
]


@pytest.mark.parametrize(("path", "value", "key", "message"), BAD, ids=[f"{b[0]}={b[1]}" for b in BAD])
def test_invalid_config_names_the_key(path: str, value: Any, key: str | None, message: str | None) -> None:
    table = with_change(path, value)  # timeout_s is 1.0 s by default
    if key is None:
        build_connector({"type": "modbus", **table}, "sources[2]")
        return
    with pytest.raises(ConfigError) as err:
        build_connector({"type": "modbus", **table}, "sources[2]")
    line = next((ln for ln in str(err.value).splitlines() if ln.startswith(key + ":")), None)
    assert line is not None, str(err.value)
    assert message in line


def test_scale_on_a_bool_is_refused() -> None:
    table = base_source()
    table["points"].append({"asset": "ahu-1", "name": "b", "function": "coil", "address": 0, "scale": 2.0})
    with pytest.raises(ConfigError, match=r"sources\[0\]\.points\[2\]\.scale: only for numeric types"):
        build_connector({"type": "modbus", **table}, "sources[0]")


def test_rtu_broadcast_unit_refused() -> None:
    table = base_source() | {"transport": "rtu", "serial_port": "/dev/ttyUSB0"}
    del table["host"]
    table["points"][0]["unit_id"] = 0
    with pytest.raises(ConfigError, match=r"points\[0\]\.unit_id: 0 is the broadcast address"):
        build_connector({"type": "modbus", **table}, "sources[0]")


def test_every_problem_is_reported_at_once() -> None:
    table = base_source()
    table["points"][0]["word_order"] = "sideways"
    table["points"][1]["bit"] = 3
    table["points"].append({"asset": "ahu-1", "name": "t", "address": 9})
    with pytest.raises(ConfigError) as err:
        build_connector({"type": "modbus", **table}, "sources[0]")
    assert "points[0].word_order" in str(err.value)
    table["points"][0]["word_order"] = "little"
    with pytest.raises(ConfigError) as err:
        build_connector({"type": "modbus", **table}, "sources[0]")
    lines = str(err.value).splitlines()
    assert any(ln.startswith("sources[0].points[1].bit:") for ln in lines)
    assert any(ln.startswith("sources[0].points[2].name:") for ln in lines)


def test_device_overrides() -> None:
    table = base_source() | {"timeout_s": 0.5, "retries": 2,
                             "devices": [{"unit_id": 1, "name": "ahu-ctrl", "timeout_s": 0.8, "retries": 0}]}
    connector = build_connector({"type": "modbus", **table}, "sources[0]")
    assert isinstance(connector, ModbusConnector)
    assert connector.config.timeout_for(1) == 0.8 and connector.config.retries_for(1) == 0
    assert connector.config.timeout_for(2) == 0.5 and connector.config.retries_for(2) == 2


@pytest.mark.parametrize(("function", "address", "base", "advice"), [
    ("holding", 40001, 0, 'holding register 1), not a protocol address; if so, use function = "holding", address = 0'),
    ("input", 30010, 0, 'input register 10), not a protocol address; if so, use function = "input", address = 9'),
    ("holding", 30001, 1, 'not "holding"); if so, use function = "input", address = 1 (address_base = 1)'),
])
def test_an_address_that_looks_like_a_register_number_from_a_manual_warns_naming_the_key(
        caplog: pytest.LogCaptureFixture, function: str, address: int, base: int, advice: str) -> None:
    table = with_change("points.1.address", address)
    table["points"][1]["function"] = function
    table["points"][0]["address"] += base
    table["address_base"] = base
    with caplog.at_level("WARNING", logger="twin.agent.modbus"):
        build_connector({"type": "modbus", **table}, "sources[2]")
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1, messages
    assert messages[0].startswith(f"sources[2].points[1].address: {address} looks like a register number")
    assert advice in messages[0]


def test_protocol_addresses_below_30001_load_without_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="twin.agent.modbus"):
        build_connector({"type": "modbus", **with_change("points.1.address", 29999)}, "sources[0]")
        build_connector({"type": "modbus", **with_change("points.1.address", 50000)}, "sources[0]")
    assert caplog.records == []
