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
    assert len(points) == len(sample_table()["points"])


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
                       "broker may deliver such messages twice. Use protocol = \"5\" or filters that do not overlap")
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
