"""SNMP source config: the sample and both profiles load through the registry, errors name the key."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from agent.connectors import build_connector
from agent.connectors.snmp.connector import SnmpConnector
from agent.connectors.snmp.profile import load_profile, profile_names
from runtime.errors import ConfigError

SAMPLE = Path(__file__).resolve().parents[3] / "agent/connectors/snmp/sample.toml"


@pytest.fixture
def secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TWIN_SNMP_COMMUNITY", "public-ro")
    for name, value in (("snmp-community", "public-ro"), ("pdu-auth-key", "auth-key-0123"),
                        ("pdu-priv-key", "priv-key-4567")):
        (tmp_path / name).write_text(value + "\n")
    return tmp_path


def sample_table(secrets: Path) -> dict[str, Any]:
    text = SAMPLE.read_text().replace("/run/credentials/twin-agent.service", str(secrets))
    return tomllib.loads(text)["sources"][0]


def test_sample_config_builds_through_the_registry(secrets: Path) -> None:
    connector = build_connector(sample_table(secrets), "sources[0]")
    assert isinstance(connector, SnmpConnector)
    specs = {(p.asset, p.name): p for p in connector.points()}
    ups = {name for asset, name in specs if asset == "ups-a"}
    assert {"input_voltage", "output_voltage", "load", "battery_charge", "runtime_remaining", "on_battery"} <= ups
    assert specs[("ups-a", "load")].unit == "%"
    assert specs[("rack-a1", "inlet_temp")].unit == "°C"
    assert specs[("server-a1-02", "outlet_energy")].unit == "kWh"
    assert specs[("crac-1", "fan_mode")].kind == "state"
    assert specs[("crac-1", "uptime")].expected_interval_s == 60.0


def test_profiles_are_data_that_validates() -> None:
    assert profile_names() == ["entity-sensor-mib", "ups-mib"]
    ups = load_profile("ups-mib")
    assert len({p["oid"] for p in ups["points"]}) >= 10


def minimal(**device: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"name": "ups", "host": "127.0.0.1", "community": "public", "asset": "ups-a",
                         "profile": "ups-mib"}
    d.update(device)
    return {"type": "snmp", "name": "power", "devices": [d]}


@pytest.mark.parametrize(("device", "message"), [
    ({"profile": "apc-mib"}, r"devices\[0\]\.profile: no profile 'apc-mib' \(shipped: \['entity-sensor-mib', "
                             r"'ups-mib'\]\)"),
    ({"community": ""}, r"devices\[0\]\.community: version 2c needs a community"),
    ({"version": "3"}, r"devices\[0\]\.community: only for version = \"2c\""),
    ({"version": "3", "community": "", "user": "u", "auth_key_env": "NOPE_UNSET"},
     r"devices\[0\]\.auth_key_env: environment variable NOPE_UNSET is not set"),
    ({"asset": None}, r"devices\[0\]\.asset: required when a point has no asset"),
    ({"timeout_s": 10.0, "retries": 2}, r"devices\[0\]\.interval_s: the poll interval \(30 s\) must exceed timeout_s"),
    ({"points": [{"name": "x", "oid": "1.3.6.x"}]}, r"devices\[0\]\.points\[0\]\.oid: '1.3.6.x' is not a numeric OID"),
    ({"points": [{"name": "x", "oid": "1.3.6.1.2.1.1.3.0", "enum": {"1": "a"}, "true_values": [1]}]},
     r"points\[0\]\.true_values: give enum"),
    ({"points": [{"name": "x", "oid": "1.3.6.1.2.1.1.1.0", "tc": "PhysAddress", "function": "rate"}]},
     r'points\[0\]\.function: "rate" needs a counter'),
    ({"profile": "entity-sensor-mib"}, r"devices\[0\]\.index_map: required"),
    ({"profile": "entity-sensor-mib", "index_map": {"1001": "rack"}},
     r"devices\[0\]\.index_map\.1001: an entity-sensor row is one sensor"),
    ({"tables": [{"index_map": {"1": "a"}}]}, r"devices\[0\]\.tables\[0\]\.columns: a table needs at least one"),
    ({"tables": [{"index_map": {"x": "a"}, "columns": [{"name": "c", "oid": "1.3.6.1.2.1.2.2.1.10"}]}]},
     r"devices\[0\]\.tables\[0\]\.index_map\.x: a row index is numeric"),
    ({"version": "1"}, r"devices\[0\]\.version: Input should be '2c' or '3'"),
    ({"comunity": "x"}, r"devices\[0\]\.comunity: unknown key"),
])
def test_config_errors_name_the_key(device: dict[str, Any], message: str) -> None:
    table = minimal(**device)
    table["devices"][0] = {k: v for k, v in table["devices"][0].items() if v is not None}
    with pytest.raises(ConfigError, match=message):
        build_connector(table, "sources[0]")


def test_v3_keys_are_read_from_files_and_never_shown(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("auth-key-0123")
    (tmp_path / "p").write_text("short")
    table = minimal(version="3", community="", user="twin", auth_key_file=str(tmp_path / "a"),
                    priv_key_file=str(tmp_path / "p"))
    with pytest.raises(ConfigError, match=r"devices\[0\]\.priv_key_file: SNMPv3 keys have at least 8") as err:
        build_connector(table, "sources[0]")
    assert "short" not in str(err.value)
