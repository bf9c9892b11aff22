"""BACnet source config: the sample loads through the registry, object ids parse, errors name the key."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from agent.connectors import build_connector
from agent.connectors.bacnet.config import parse_object
from agent.connectors.bacnet.connector import BacnetConnector
from agent.model import PointSpec
from runtime.errors import ConfigError

SAMPLE = Path(__file__).resolve().parents[3] / "agent/connectors/bacnet/sample.toml"


def sample_table() -> dict[str, Any]:
    return tomllib.loads(SAMPLE.read_text())["sources"][0]


def test_sample_config_builds_through_the_registry() -> None:
    connector = build_connector(sample_table(), "sources[0]")
    assert isinstance(connector, BacnetConnector)
    specs = {p.name: p for p in connector.points()}
    assert specs["supply_air_temp"] == PointSpec(asset="ahu-1", name="supply_air_temp", unit="", kind="measurement",
                                                 expected_interval_s=10.0)
    assert specs["return_air_temp"].unit == "°C"
    assert specs["supply_fan_command"].kind == "state"  # binary and multi-state objects default to state
    assert specs["supply_temp_setpoint"].kind == "setpoint"


@pytest.mark.parametrize(("text", "expected"), [
    ("analog-input,1", ("analog-input", 1)), ("analog-input:7", ("analog-input", 7)), ("AI:1", ("analog-input", 1)),
    ("msv, 3", ("multi-state-value", 3)), ("BO:0", ("binary-output", 0)),
])
def test_object_ids_in_every_usual_spelling(text: str, expected: tuple[str, int]) -> None:
    assert parse_object(text) == expected


def minimal(**change: Any) -> dict[str, Any]:
    point = change.pop("point", {})
    table: dict[str, Any] = {"type": "bacnet", "name": "bms", "local_address": "127.0.0.1:47900",
                             "poll_interval_s": 10.0,
                             "devices": [{"instance": 1001, "address": "127.0.0.1:47901"}],
                             "points": [{"asset": "ahu-1", "name": "t", "device": 1001, "object": "AI:1", **point}]}
    table.update(change)
    return table


@pytest.mark.parametrize(("change", "message"), [
    ({"local_address": "0.0.0.0:47808"}, r"sources\[0\]\.local_address: bind a specific interface address"),
    ({"local_address": "ahu.example"}, r"sources\[0\]\.local_address: 'ahu.example' is not a BACnet/IP address"),
    ({"devices": [{"instance": 1001}]}, r"sources\[0\]\.devices\[0\]\.address: required while local_address has no "
                                        r"prefix"),
    ({"devices": [{"instance": 1001, "address": "127.0.0.1:99999"}]}, r"devices\[0\]\.address: port 99999"),
    ({"device_instance": 1001}, r"devices\[0\]\.instance: 1001 is the agent's own device_instance"),
    ({"point": {"object": "schedule,1"}}, r"points\[0\]\.object: 'schedule' is not a readable object type"),
    ({"point": {"object": "AI-1"}}, r"points\[0\]\.object: 'AI-1' is not an object id"),
    ({"point": {"device": 7}}, r"points\[0\]\.device: device 7 is not in sources\[0\]\.devices"),
    ({"point": {"object": "BO:1", "scale": 2.0}}, r"points\[0\]\.scale: only for analog objects"),
    ({"poll_interval_s": 5.0}, r"sources\[0\]\.poll_interval_s: the poll interval \(5 s\) must exceed apdu_timeout_s"),
    ({"cov_lifetime_s": 10}, r"sources\[0\]\.cov_lifetime_s: a subscription of 10 s cannot be renewed in time"),
    ({"point": {"mode": "subscribe"}}, r"points\[0\]\.mode: Input should be 'auto', 'cov' or 'poll'"),
    ({"point": {"objekt": "AI:1"}}, r"points\[0\]\.objekt: unknown key"),
])
def test_config_errors_name_the_key(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_connector(minimal(**change), "sources[0]")


def test_a_device_without_points_is_an_error() -> None:
    table = minimal()
    table["devices"].append({"instance": 1002, "address": "127.0.0.1:47902"})
    with pytest.raises(ConfigError, match=r"devices\[1\]\.instance: no point reads device 1002"):
        build_connector(table, "sources[0]")
