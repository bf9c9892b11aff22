"""MQTT source config: the sample loads, errors name the key, subscriptions, backoff, log limiting."""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path
from typing import Any

import pytest

from agent.connectors import build_connector
from agent.connectors.base import Connector
from agent.connectors.mqtt.config import filter_covers, filters_overlap, parse_source, subscriptions
from agent.connectors.mqtt.connector import MqttConnector, build
from agent.model import PointSpec
from runtime.errors import ConfigError
from runtime.logs import RateLimitedLog

SAMPLE = Path(__file__).resolve().parents[2] / "agent/connectors/mqtt/sample.toml"


def sample_table() -> dict[str, Any]:
    return tomllib.loads(SAMPLE.read_text())["sources"][0]


def minimal(**overrides: Any) -> dict[str, Any]:
    point = {"asset": "pump-1", "name": "speed", "topic": "plant/pump-1/speed"}
    point.update(overrides.pop("point", {}))
    return {"name": "broker", "points": [point], **overrides}


def config_error(table: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as exc:
        build(table, "sources[0]")
    return str(exc.value)


def test_sample_config_builds_through_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWIN_MQTT_PASSWORD", "secret")
    connector = build_connector(sample_table(), "sources[0]")
    assert isinstance(connector, MqttConnector) and isinstance(connector, Connector)
    assert connector.name == "plant-broker"
    points = {(p.asset, p.name): p for p in connector.points()}
    assert points[("pump-1", "de_accel")] == PointSpec(asset="pump-1", name="de_accel", unit="g", kind="waveform",
                                                      expected_interval_s=1.0, sample_rate_hz=12800.0)
    assert points[("pump-2", "de_accel")].sample_rate_hz == 25600.0
    assert points[("pump-1", "speed")].sample_rate_hz == 0.0
    assert points[("chiller-1", "running")].kind == "state"
    template = sample_table()["templates"][0]
    assert len(points) == len(sample_table()["points"]) + len(template["assets"]) * len(template["points"])
    assert points[("ts-02", "humidity")].deadband == 0.5
    assert connector.protocol == "5"  # auto: session_expiry_s asks for MQTT 5


def test_sample_config_needs_its_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TWIN_MQTT_PASSWORD", raising=False)
    table = sample_table()
    table.pop("type")
    assert "sources[0].password_env: environment variable TWIN_MQTT_PASSWORD is not set or empty" in config_error(table)


def test_password_file(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    c = build(minimal(username="agent", password_file=str(tmp_path / "pw")), "sources[0]")
    assert c._password == "s3cret"
    assert "s3cret" not in repr(c.settings)  # settings (which may be printed) hold only the path


@pytest.mark.parametrize(("table", "expected"), [
    (minimal(point={"format": "json"}), "sources[0].points[0].value_path: required with format = \"json\""),
    (minimal(point={"format": "json", "value_path": "a..b"}), "sources[0].points[0].value_path: not a field path"),
    (minimal(point={"dtype": "int16"}), "sources[0].points[0].dtype: only for format = \"waveform\""),
    (minimal(point={"metric": "X"}), "sources[0].points[0].metric: only for format = \"sparkplug\""),
    (minimal(point={"format": "waveform"}), "sources[0].points[0].format: kind = \"waveform\" and format"),
    (minimal(point={"format": "waveform", "kind": "waveform"}), "sources[0].points[0].sample_rate_hz: required"),
    (minimal(point={"format": "waveform", "kind": "waveform", "sample_rate_hz": 12800.0, "header": "twin-v1",
                    "scale": 2.0}), "sources[0].points[0].scale: given by the twin-v1 header"),
    (minimal(point={"format": "waveform", "kind": "waveform", "sample_rate_hz": 12800.0, "scale": 0.0}),
     "sources[0].points[0].scale: must be a finite non-zero number"),
    (minimal(point={"format": "sparkplug"}), "sources[0].points[0].metric: required"),
    (minimal(point={"format": "sparkplug", "metric": "S"}), "sources[0].points[0].topic: a Sparkplug B topic"),
    (minimal(point={"topic": "plant/#/speed"}), "sources[0].points[0].topic: '#' must be a whole level"),
    (minimal(point={"topic": "plant/pump+/speed"}), "sources[0].points[0].topic: '+' must be a whole level"),
    (minimal(point={"qos": 3}), "sources[0].points[0].qos"),
    (minimal(point={"kind": "analog"}), "sources[0].points[0].kind"),
    (minimal(point={"topik": "x"}), "sources[0].points[0].topik: unknown key"),
    (minimal(clean_session=False), "sources[0].client_id: required with clean_session = false"),
    (minimal(protocol="3.1.1", session_expiry_s=60, clean_session=False, client_id="a"),
     "sources[0].session_expiry_s: only for protocol = \"5\""),
    (minimal(session_expiry_s=60), "sources[0].session_expiry_s: only with clean_session = false"),
    (minimal(protocol=5), "sources[0].protocol"),
    (minimal(ca_file="/etc/ca.pem"), "sources[0].ca_file: given but tls = false"),
    (minimal(tls=True, cert_file="/nonexistent/c.pem"), "sources[0].key_file: cert_file and key_file go together"),
    (minimal(tls=True, ca_file="/nonexistent/ca.pem"), "sources[0].ca_file: file /nonexistent/ca.pem does not exist"),
    (minimal(password_env="X"), "sources[0].username: required when a password is given"),
    (minimal(username="u", password_env="X", password_file="/etc/hostname"),
     "sources[0].password_env: give password_file or password_env, not both"),
    (minimal(reconnect_min_s=5.0, reconnect_max_s=1.0), "sources[0].reconnect_max_s: must be >= reconnect_min_s"),
    (minimal(port=0), "sources[0].port"),
    ({"name": "b", "points": []}, "sources[0].points"),
])
def test_config_errors_name_the_key(table: dict[str, Any], expected: str) -> None:
    assert expected in config_error(table)


def test_duplicate_points_are_an_error() -> None:
    table = minimal()
    table["points"].append(dict(table["points"][0]))
    assert "sources[0].points[1].name: pump-1/speed is already points[0]" in config_error(table)


def test_every_error_is_reported_at_once() -> None:
    message = config_error(minimal(clean_session=False, point={"format": "json"}))
    assert "client_id" in message and "value_path" in message


def test_tls_files_are_loaded_at_config_time(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("not a certificate")
    assert "sources[0].ca_file: cannot load CA certificates" in config_error(
        minimal(tls=True, ca_file=str(tmp_path / "ca.pem")))


def test_default_ports() -> None:
    assert parse_source(minimal(), "s").broker_port == 1883
    assert parse_source(minimal(tls=True), "s").broker_port == 8883
    assert parse_source(minimal(tls=True, port=8884), "s").broker_port == 8884


@pytest.mark.parametrize(("a", "b", "covers"), [
    ("plant/#", "plant/pump-1/speed", True), ("plant/#", "plant", True), ("#", "a/+/b", True),
    ("plant/+/speed", "plant/pump-1/speed", True), ("plant/+/speed", "plant/+/speed", True),
    ("plant/pump-1/speed", "plant/+/speed", False), ("plant/+", "plant/a/b", False),
    ("plant/+/#", "plant/#", False), ("a/b", "a/b/c", False), ("a/+", "a/#", False),
])
def test_filter_covers(a: str, b: str, covers: bool) -> None:
    assert filter_covers(a, b) is covers


@pytest.mark.parametrize(("a", "b", "overlap"), [
    ("w/+/temp", "w/hall-2/#", True), ("a/b", "a/b/#", True), ("a/+", "+/b", True), ("#", "x", True),
    ("a/b", "a/c", False), ("a/+", "a/b/c", False), ("a/b/#", "a/c/#", False), ("a/+/c", "a/b", False),
])
def test_filters_overlap(a: str, b: str, overlap: bool) -> None:
    assert filters_overlap(a, b) is overlap
    assert filters_overlap(b, a) is overlap


def test_overlapping_filters_need_mqtt5() -> None:
    points = [{"asset": "h", "name": "plus", "topic": "w/+/temp"},
              {"asset": "h", "name": "hash", "topic": "w/hall-2/#"},
              {"asset": "h", "name": "exact", "topic": "w/hall-1/temp"}]  # covered by w/+/temp: merged, fine
    message = config_error({"name": "b", "protocol": "3.1.1", "points": points})
    assert message == ("sources[0].points[1].topic: w/hall-2/# overlaps w/+/temp; with protocol = \"3.1.1\" the "
                       "broker may deliver such messages twice. Use protocol = \"5\" (or \"auto\") or filters "
                       "that do not overlap")
    assert build({"name": "b", "protocol": "5", "points": points}, "sources[0]").points()


def test_subscriptions_drop_covered_filters_and_keep_the_highest_qos() -> None:
    s = parse_source({"name": "b", "points": [
        {"asset": "a", "name": "x", "topic": "plant/pump-1/speed", "qos": 1},
        {"asset": "a", "name": "y", "topic": "plant/#", "qos": 0},
        {"asset": "a", "name": "z", "topic": "other/+/t", "qos": 0},
        {"asset": "a", "name": "s", "topic": "spBv1.0/g/DDATA/node/dev", "format": "sparkplug", "metric": "M"},
    ]}, "s")
    assert subscriptions(s) == {"plant/#": 1, "other/+/t": 0, "spBv1.0/g/+/node/dev": 1, "spBv1.0/g/+/node": 1}


def test_rate_limited_log_counts_what_it_suppressed(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    limited = RateLimitedLog(logging.getLogger("test.mqtt"), 10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.mqtt"):
        assert limited.warning("t/1", "bad payload")
        assert not limited.warning("t/1", "bad payload")
        assert not limited.warning("t/1", "bad payload")
        assert limited.warning("t/2", "other topic")
        now[0] = 10.5
        assert limited.warning("t/1", "bad payload")
    assert [r.getMessage() for r in caplog.records] == [
        "bad payload", "other topic", "bad payload (2 similar suppressed in the last 10s)"]


def test_protocol_auto_takes_mqtt5_only_for_what_needs_it() -> None:
    from agent.connectors.mqtt.config import effective_protocol

    def protocol(table: dict[str, Any]) -> tuple[str, str]:
        return effective_protocol(parse_source(table, "sources[0]"))

    assert protocol(minimal()) == ("3.1.1", "default")
    assert protocol(minimal(protocol="5")) == ("5", "configured")
    assert protocol(minimal(clean_session=False, client_id="gw", session_expiry_s=600))[0] == "5"
    overlapping = {"name": "b", "points": [{"asset": "h", "name": "a", "topic": "w/+/temp"},
                                           {"asset": "h", "name": "b", "topic": "w/hall-2/#"}]}
    assert protocol(overlapping) == ("5", "topic filters overlap (subscription identifiers keep readings single)")
    c = build(overlapping, "sources[0]")
    assert (c.protocol, c._sub_ids) == ("5", True)
    assert build(minimal(protocol="5"), "sources[0]")._sub_ids is False  # no overlap: no identifier to parse


def fleet(**overrides: Any) -> dict[str, Any]:
    template = {"topic": "site/sensors/+asset/+point", "asset_type": "env_sensor", "assets": ["ts-01", "ts-02"],
                "points": [{"name": "temperature", "unit": "degC"}, {"name": "humidity", "unit": "%"}]}
    template.update(overrides)
    return {"name": "sensors", "templates": [template]}


def test_a_template_expands_into_one_point_per_device_and_declares_the_assets() -> None:
    c = build(fleet(), "sources[0]")
    assert [(p.asset, p.name, p.unit) for p in c.points()] == [
        ("ts-01", "temperature", "degC"), ("ts-01", "humidity", "%"),
        ("ts-02", "temperature", "degC"), ("ts-02", "humidity", "%")]
    assert [(a.id, a.type) for a in c.declared_assets()] == [("ts-01", "env_sensor"), ("ts-02", "env_sensor")]
    assert subscriptions(c.settings) == {"site/sensors/+/+": 1}  # one filter for the fleet


@pytest.mark.parametrize(("overrides", "error"), [
    ({"topic": "site/sensors/+device/+point"}, "sources[0].templates[0].topic: unknown named wildcard +device"),
    ({"topic": "site/sensors/+/+point"}, "sources[0].templates[0].topic: needs a +asset level"),
    ({"topic": "site/+asset/x/+asset"}, "sources[0].templates[0].topic: +asset appears twice"),
    ({"topic": "site/#/+asset"}, "sources[0].templates[0].topic: '#' must be a whole level and the last one"),
    ({"assets": ["ts-01", "ts-01"]}, "sources[0].templates[0].assets[1]: ts-01 is already assets[0]"),
    ({"assets": ["bad id"]}, "sources[0].templates[0].assets[0]: 'bad id' is not a valid asset id"),
    ({"asset_type": "Env Sensor"}, "sources[0].templates[0].asset_type"),
    ({"topic": "site/sensors/+asset"}, "sources[0].templates[0].points[0].format: without +point in the topic"),
    ({"points": [{"name": "t", "format": "json"}]}, "sources[0].templates[0].points[0].value_path: required"),
    ({"points": [{"name": "t", "format": "sparkplug", "metric": "T"}]}, "sources[0].templates[0].points[0].format"),
])
def test_template_errors_name_the_key(overrides: dict[str, Any], error: str) -> None:
    assert error in config_error(fleet(**overrides))


def test_a_template_point_that_is_also_written_out_is_a_duplicate() -> None:
    table = fleet()
    table["points"] = [{"asset": "ts-02", "name": "humidity", "topic": "x/y"}]
    assert "sources[0].templates[0].assets[1]: point ts-02/humidity is already points[0]" in config_error(table)
    assert "sources[0].points: give at least one" in config_error({"name": "empty"})
