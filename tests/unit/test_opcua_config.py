"""OPC-UA source config: the sample loads, errors name the key, derived intervals, backoff, failures."""

from __future__ import annotations

import copy
import datetime as dt
import os
import tomllib
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from agent.connectors import build_connector
from agent.connectors.opcua.config import expected_interval_s, load_source, parse_browse_path
from agent.connectors.opcua.connector import OpcUaConnector, build, describe_failure
from agent.model import PointSpec
from runtime.errors import ConfigError, ConnectError
from tests.certs import application_certificate

SAMPLE = Path(__file__).resolve().parents[2] / "agent/connectors/opcua/sample.toml"


def sample_table() -> dict[str, Any]:
    return tomllib.loads(SAMPLE.read_text())["sources"][0]


def minimal(**source: Any) -> dict[str, Any]:
    point = source.pop("point", {})
    table = {"name": "meter", "endpoint": "opc.tcp://127.0.0.1:4840/facility/",
             "points": [{"asset": "msb-meter", "name": "voltage_l1", "node_id": "ns=2;s=Meter.VoltageL1", **point}]}
    table.update(source)
    return table


def test_sample_config_builds_through_the_registry() -> None:
    connector = build_connector(sample_table(), "sources[0]")
    assert isinstance(connector, OpcUaConnector)
    assert connector.name == "main-switchboard-meter"
    points = {p.name: p for p in connector.points()}
    assert len(points) == len(sample_table()["points"]) == 12
    assert points["voltage_l1"] == PointSpec(asset="msb-meter", name="voltage_l1", unit="V", kind="measurement",
                                             expected_interval_s=30.0, deadband=0.5)
    assert points["voltage_waveform_l1"].kind == "waveform"
    assert points["voltage_waveform_l1"].sample_rate_hz == 6400.0
    assert points["energy"].expected_interval_s == 1.0  # sampling slower than publishing
    assert points["voltage_l2"].expected_interval_s == 0.5  # the publishing interval
    assert connector.application_uri == "urn:facility-twin:agent:main-switchboard-meter"


def test_sample_security_options_build_with_real_certificates(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    cert = application_certificate(tmp_path, "agent", "urn:facility-twin:agent:gw01")
    monkeypatch.setenv("TWIN_OPCUA_PASSWORD", "secret")
    table = sample_table() | {
        "security_policy": "Basic256Sha256", "security_mode": "SignAndEncrypt",
        "certificate_file": str(cert.certificate), "private_key_file": str(cert.private_key),
        "username": "meter-reader", "password_env": "TWIN_OPCUA_PASSWORD",
    }
    connector = build_connector(table, "sources[0]")
    assert isinstance(connector, OpcUaConnector)
    assert connector.application_uri == "urn:facility-twin:agent:gw01"  # taken from the certificate


def test_certificate_without_uri_needs_application_uri(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "plain")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    (tmp_path / "c.der").write_bytes(cert.public_bytes(serialization.Encoding.DER))
    (tmp_path / "k.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    table = minimal(security_policy="Basic256Sha256", security_mode="Sign",
                    certificate_file=str(tmp_path / "c.der"), private_key_file=str(tmp_path / "k.pem"))
    with pytest.raises(ConfigError, match=r"^sources\[0\]\.certificate_file: .*subjectAltName"):
        build(table, "sources[0]")
    table["application_uri"] = "urn:x:agent"
    assert build(table, "sources[0]").application_uri == "urn:x:agent"


def test_password_file_is_read_at_build_and_kept_out_of_the_config(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("hunter2\n")
    connector = build(minimal(username="reader", password_file=str(tmp_path / "pw")), "sources[0]")
    assert "hunter2" not in repr(connector.config)
    (tmp_path / "pw").chmod(0)
    if not os.access(tmp_path / "pw", os.R_OK):  # root reads anything
        with pytest.raises(ConfigError, match=r"^sources\[0\]\.password_file: cannot read"):
            build(minimal(username="reader", password_file=str(tmp_path / "pw")), "sources[0]")


ERRORS: list[tuple[dict[str, Any], str]] = [
    ({"endpoint": "http://127.0.0.1:4840/"}, r"sources\[0\]\.endpoint: must look like opc\.tcp://host:port"),
    ({"endpoint": "opc.tcp://user:pw@127.0.0.1:4840/"}, r"sources\[0\]\.endpoint: put credentials in username"),
    ({"mode": "push"}, r"sources\[0\]\.mode: "),
    ({"publishing_interval_ms": 0}, r"sources\[0\]\.publishing_interval_ms: "),
    ({"publishng_interval_ms": 500}, r"sources\[0\]\.publishng_interval_ms: unknown key"),
    ({"points": []}, r"sources\[0\]\.points: "),
    ({"point": {"nodeid": "ns=2;s=X"}}, r"sources\[0\]\.points\[0\]\.nodeid: unknown key"),
    ({"point": {"node_id": "ns=2;x=1"}}, r"sources\[0\]\.points\[0\]\.node_id: not a valid OPC-UA node id"),
    ({"point": {"node_id": "srv=1;ns=2;s=X"}}, r"sources\[0\]\.points\[0\]\.node_id: node ids on other servers"),
    ({"point": {"browse_path": "Objects/Meter"}}, r"sources\[0\]\.points\[0\]\.browse_path: segment 'Objects'"),
    ({"point": {"node_id": "", "browse_path": ""}},
     r"sources\[0\]\.points\[0\]\.node_id: give exactly one of node_id or browse_path"),
    ({"point": {"browse_path": "0:Objects/2:Meter/2:VoltageL1"}},
     r"sources\[0\]\.points\[0\]\.node_id: give exactly one"),
    ({"point": {"kind": "waveform"}}, r"sources\[0\]\.points\[0\]\.sample_rate_hz: required"),
    ({"point": {"kind": "waveform", "sample_rate_hz": 6400, "deadband": 1.0}},
     r"sources\[0\]\.points\[0\]\.deadband: a deadband does not apply to waveform"),
    ({"point": {"sample_rate_hz": 6400}}, r"sources\[0\]\.points\[0\]\.sample_rate_hz: only waveform"),
    ({"point": {"kind": "alarm"}}, r"sources\[0\]\.points\[0\]\.kind: "),
    ({"point": {"deadband": -1}}, r"sources\[0\]\.points\[0\]\.deadband: "),
    ({"point": {"scale": 0}}, r"sources\[0\]\.points\[0\]\.scale: scale must not be 0"),
    ({"point": {"name": "bad name!"}}, r"sources\[0\]\.points\[0\]\.name: "),
    ({"mode": "poll", "timeout_s": 0.5, "point": {"deadband": 1.0}},
     r"sources\[0\]\.points\[0\]\.deadband: the server applies the deadband"),
    ({"mode": "poll", "timeout_s": 0.5, "point": {"sampling_interval_ms": 100}},
     r"sources\[0\]\.points\[0\]\.sampling_interval_ms: only used in subscribe mode"),
    ({"mode": "poll", "poll_interval_s": 1.0, "timeout_s": 4.0}, r"sources\[0\]\.timeout_s: must be below"),
    ({"security_policy": "Basic256Sha256"}, r"sources\[0\]\.security_mode: .*do not fit"),
    ({"security_mode": "Sign"}, r"sources\[0\]\.security_policy: .*do not fit"),
    ({"security_policy": "Basic128Rsa15"}, r"sources\[0\]\.security_policy: "),
    ({"security_policy": "Basic256Sha256", "security_mode": "SignAndEncrypt"},
     r"sources\[0\]\.certificate_file: required"),
    ({"security_policy": "Basic256Sha256", "security_mode": "Sign", "certificate_file": "/nonexistent/c.pem",
      "private_key_file": "/nonexistent/k.pem"}, r"sources\[0\]\.certificate_file: file not found"),
    ({"certificate_file": "/nonexistent/c.pem"}, r"sources\[0\]\.security_policy: certificate files are given"),
    ({"username": "reader"}, r"sources\[0\]\.password_file: required when username"),
    ({"password_env": "X"}, r"sources\[0\]\.username: required when a password"),
    ({"username": "r", "password_env": "TWIN_TEST_SURELY_UNSET"},
     r"sources\[0\]\.password_env: environment variable TWIN_TEST_SURELY_UNSET is not set"),
    ({"username": "r", "password_file": "/nonexistent/pw"}, r"sources\[0\]\.password_file: cannot read /nonex"),
    ({"backoff_initial_s": 10, "backoff_max_s": 5}, r"sources\[0\]\.backoff_max_s: must be >="),
]


@pytest.mark.parametrize(("change", "message"), ERRORS)
def test_config_errors_name_the_key(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match="^" + message):
        build(minimal(**copy.deepcopy(change)), "sources[0]")


def test_duplicate_point_names_the_second_one() -> None:
    table = minimal()
    table["points"].append(dict(table["points"][0]))
    with pytest.raises(ConfigError, match=r"^sources\[0\]\.points\[1\]\.name: .*already defined by "
                                          r"sources\[0\]\.points\[0\]"):
        build(table, "sources[0]")


def test_errors_in_the_sample_name_the_sample_key() -> None:
    table = sample_table()
    table["points"][3]["browse_path"] = "0:Objects/Meter"
    with pytest.raises(ConfigError, match=r"^sources\[2\]\.points\[3\]\.browse_path: segment 'Meter'"):
        build_connector(table, "sources[2]")


def test_expected_interval_follows_sampling_publishing_and_poll() -> None:
    cfg = load_source(minimal(publishing_interval_ms=500, point={"sampling_interval_ms": 2000}), "s")
    assert expected_interval_s(cfg, cfg.points[0]) == 2.0
    cfg = load_source(minimal(publishing_interval_ms=500, point={"sampling_interval_ms": 100}), "s")
    assert expected_interval_s(cfg, cfg.points[0]) == 0.5
    cfg = load_source(minimal(mode="poll", poll_interval_s=5.0, timeout_s=2.0), "s")
    assert expected_interval_s(cfg, cfg.points[0]) == 5.0
    cfg = load_source(minimal(point={"expected_interval_s": 60.0}), "s")
    assert expected_interval_s(cfg, cfg.points[0]) == 60.0


def test_browse_path_parsing() -> None:
    assert parse_browse_path("/0:Objects/2:Meter/2:Voltage L1") == [
        ua.QualifiedName("Objects", 0), ua.QualifiedName("Meter", 2), ua.QualifiedName("Voltage L1", 2)]
    with pytest.raises(ValueError, match="empty"):
        parse_browse_path("/")


def test_failures_become_one_actionable_line_and_a_reason() -> None:
    cfg = load_source(minimal(username="reader", password_env="HOME"), "s")
    reason, message = describe_failure(ua.UaStatusCodeError(ua.StatusCodes.BadCertificateUntrusted), cfg)
    assert reason == "BadCertificateUntrusted" and "twin-agent opcua-cert" in message
    reason, message = describe_failure(ua.UaStatusCodeError(ua.StatusCodes.BadUserAccessDenied), cfg)
    assert reason == "BadUserAccessDenied" and "reader" in message
    assert describe_failure(ua.UaStatusCodeError(ua.StatusCodes.BadShutdown), cfg) == (
        "disconnected", "connection lost (BadShutdown)")
    assert describe_failure(ConnectionRefusedError(111, "refused"), cfg)[0] == "disconnected"
    assert "timeout_s" in describe_failure(TimeoutError(), cfg)[1]
    assert describe_failure(ConnectError("connection lost"), cfg) == ("disconnected", "connection lost")
    reason, message = describe_failure(ua.UaError("No matching endpoints: 3, http://x"), cfg)
    assert reason == "BadSecurityPolicyRejected" and "security_policy = None" in message
    assert describe_failure(KeyError("x"), cfg)[1].startswith("unexpected KeyError")
