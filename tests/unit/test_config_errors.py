"""Invalid configs produce errors that name the key; the example configs load."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from agent.config import AgentConfig, build_agent_config
from collector.config import build_collector_config, load_collector_config
from runtime.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]

AGENT_BASE = {
    "agent": {"id": "gw-1", "state_dir": "/tmp/x"},
    "uplink": {"collector": "127.0.0.1:50051", "token": "t" * 20},
    "assets": [{"id": "ahu-1", "type": "ahu"}],
    "sources": [{"type": "nosuch"}],
}


@pytest.mark.parametrize(
    ("patch", "key"),
    [
        ({"agent": {"state_dir": "/tmp/x"}}, "agent.id: required key is missing"),
        ({"agent": {"id": "gw 1"}}, "agent.id"),
        ({"agent": {"id": "gw-1", "summary_interval_s": 0}}, "agent.summary_interval_s"),
        ({"agent": {"id": "gw-1", "sumary_interval_s": 5}}, "agent.sumary_interval_s: unknown key"),
        ({"uplink": {"collector": "localhost", "token": "x"}}, "uplink.collector: must be host:port"),
        ({"uplink": {"collector": ["h:1", "localhost"], "token": "x"}}, "uplink.collector: must be host:port"),
        ({"uplink": {"collector": ["h:1", "h:1"], "token": "x"}}, "uplink.collector: lists an address twice"),
        ({"uplink": {"collector": [], "token": "x"}}, "uplink.collector: give at least one host:port"),
        ({"uplink": {"collector": "h:1", "token": "x", "token_file": "/t"}}, "uplink: give exactly one of token"),
        ({"uplink": {"collector": "h:1", "token": "x", "max_queue_mb": -1}}, "uplink.max_queue_mb"),
        ({"uplink": {"collector": "h:1", "token": "x", "shutdown_drain_s": 60}}, "uplink.shutdown_drain_s"),
        ({"assets": [{"id": "a", "type": "AHU"}]}, "assets[0].type"),
        ({"assets": [{"id": "a", "type": "ahu"}, {"id": "a", "type": "ahu"}]}, "assets[1].id: duplicate"),
        ({"assets": [{"id": "a", "type": "ahu", "vibration": {"sensors": ["x"], "machine_group": 3}}]},
         "assets[0].vibration.machine_group"),
        ({"sources": [{"type": "nosuch"}]}, "sources[0].type: must be one of"),
        ({"sources": []}, "sources: "),
    ],
)
def test_agent_config_errors_name_the_key(patch: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_agent_config(AGENT_BASE | patch)
    assert key in str(err.value)


COLLECTOR_BASE = {"agents": [{"id": "gw-1", "token_sha256": "a" * 64}]}


@pytest.mark.parametrize(
    ("patch", "key"),
    [
        ({"agents": []}, "agents: "),
        ({"agents": [{"id": "gw-1", "token_sha256": "xyz"}]}, "agents[0].token_sha256"),
        ({"agents": [{"id": "gw-1"}]}, "agents[0]: give exactly one of token_sha256 or token_file"),
        ({"agents": [{"id": "a", "token_sha256": "a" * 64}, {"id": "b", "token_sha256": "a" * 64}]},
         "agents[1]: same token"),
        ({"collector": {"listen": "50051"}}, "collector.listen"),
        ({"collector": {"tls_cert_file": "/x"}}, "collector: tls_cert_file and tls_key_file go together"),
        ({"influx": {"api": "v1", "url": "http://h:8086"}}, "influx.database"),
        ({"influx": {"api": "v2", "url": "ftp://h"}}, "influx.url"),
        ({"rules": [{"name": "r", "asset_type": "ahu", "point": "p"}]}, "rules[0]: give exactly one of above"),
        ({"agents": [{"id": "gw-1", "token_file": "/nonexistent/token"}]}, "agents[0].token_file: cannot read"),
        ({"agents": [{"id": "gw-1", "token_sha256": hashlib.sha256(b"").hexdigest()}]},
         "agents[0].token_sha256: this is the hash of an empty token"),
        ({"state": {"url": "mysql://db.example/twin"}}, "state.url: must be a postgresql:// URL"),
        ({"state": {"url": "postgresql://twin:secret@db.example/twin"}}, "state.url: must not hold a password"),
        ({"state": {"url": "postgresql://db.example"}}, "state.url: must name a host and a database"),
        ({"state": {"password_env": "TWIN_STATE_PASSWORD"}}, "state: password_file/password_env need url"),
        ({"state": {"url": "postgresql://twin@db.example/twin", "pool_size": 0}}, "state.pool_size"),
    ],
)
def test_collector_config_errors_name_the_key(patch: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_collector_config(COLLECTOR_BASE | patch)
    assert key in str(err.value)


def test_state_password_is_read_when_the_state_is_opened() -> None:
    """Operator commands load the config without secrets; the state database's password is read by the
    commands that open the state (with PostgreSQL, work-orders and assets too), naming the key."""
    config = build_collector_config(COLLECTOR_BASE | {"state": {"url": "postgresql://twin@db.example/twin",
                                                                "password_file": "/nonexistent/pw"}})
    with pytest.raises(ConfigError) as err:
        config.state_database  # noqa: B018
    assert "state.password_file: cannot read" in str(err.value)


def test_collector_example_config_loads() -> None:
    cfg = load_collector_config(ROOT / "configs" / "collector.example.toml")
    assert cfg.rules and cfg.influx is None


def test_check_config_cli_reports_key_and_exit_code(tmp_path: Path) -> None:
    bad = tmp_path / "collector.toml"
    bad.write_text('[collector]\nlisten = "nowhere"\n[[agents]]\nid = "a"\ntoken_sha256 = "' + "b" * 64 + '"\n')
    proc = subprocess.run([sys.executable, "-m", "collector", "check-config", str(bad)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert "collector.listen: must be host:port" in proc.stderr
    broken = tmp_path / "broken.toml"
    broken.write_text("[collector\n")
    proc = subprocess.run([sys.executable, "-m", "collector", "check-config", str(broken)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and "not valid TOML" in proc.stderr


def load_agent_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AgentConfig:
    """configs/agent.example.toml as a gateway would load it: its token file and MQTT password exist."""
    token = tmp_path / "uplink-token"
    token.write_text("example-token-0123456789\n")
    text = (ROOT / "configs" / "agent.example.toml").read_text()
    text = text.replace("/run/credentials/twin-agent.service/uplink-token", str(token))
    monkeypatch.setenv("TWIN_MQTT_PASSWORD", "example")
    return build_agent_config(tomllib.loads(text))


def test_agent_example_config_loads_and_documents_every_connector(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_agent_example(tmp_path, monkeypatch)
    assert cfg.token == "example-token-0123456789"
    assert {type(c).__module__.split(".")[2] for c in cfg.connectors} == {"modbus", "opcua", "mqtt"}
    example = (ROOT / "configs" / "agent.example.toml").read_text()
    for proto in ("modbus", "opcua", "mqtt"):
        sample = (ROOT / "agent" / "connectors" / proto / "sample.toml").read_text()
        body = [ln for ln in sample.splitlines() if ln.strip() and not ln.startswith("#")]
        missing = [ln for ln in body if ln not in example]
        assert not missing, f"configs/agent.example.toml is missing {proto} sample lines: {missing[:3]}"


def test_empty_token_file_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "token"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match=r"agents\[0\]\.token_file: .* is empty"):
        build_collector_config({"agents": [{"id": "gw-1", "token_file": str(empty)}]})
