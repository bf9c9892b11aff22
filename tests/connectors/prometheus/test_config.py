"""Prometheus source config: the sample loads through the registry, errors name the key."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from agent.connectors import build_connector
from agent.connectors.prometheus.connector import PrometheusConnector
from agent.model import PointSpec
from runtime.errors import ConfigError

SAMPLE = Path(__file__).resolve().parents[3] / "agent/connectors/prometheus/sample.toml"


def sample_table() -> dict[str, Any]:
    return tomllib.loads(SAMPLE.read_text())["sources"][0]


def minimal(**extra: Any) -> dict[str, Any]:
    point = extra.pop("point", {})
    table: dict[str, Any] = {
        "type": "prometheus", "name": "exp",
        "targets": [{"name": "gw", "url": "http://127.0.0.1:9100/metrics"}],
        "points": [{"asset": "gw", "name": "load1", "metric": "node_load1", **point}],
    }
    table.update(extra)
    return table


def test_sample_config_builds_through_the_registry() -> None:
    connector = build_connector(sample_table(), "sources[0]")
    assert isinstance(connector, PrometheusConnector)
    specs = {(p.asset, p.name): p for p in connector.points()}
    assert set(specs) == {
        ("edge-gw", "load1"), ("edge-gw", "cpu_busy"), ("edge-gw", "disk_free"), ("edge-gw-data", "disk_free"),
        ("crac-1", "supply_air_temp"), ("crac-2", "supply_air_temp"), ("cooling-plant", "valve_response_p95"),
        ("cooling-plant", "valve_response_mean"), ("crac-1", "compressor_starts"), ("crac-2", "compressor_starts"),
    }
    assert specs[("crac-1", "supply_air_temp")] == PointSpec(asset="crac-1", name="supply_air_temp", unit="°C",
                                                              expected_interval_s=30.0)
    assert specs[("edge-gw", "load1")].expected_interval_s == 15.0


@pytest.mark.parametrize(("change", "message"), [
    ({"targets": [{"name": "gw", "url": "ftp://x/metrics"}]}, r"sources\[0\]\.targets\[0\]\.url: must be an http"),
    ({"targets": [{"name": "gw", "url": "http://u:p@127.0.0.1/"}]}, r"targets\[0\]\.url: no credentials"),
    ({"timeout_s": 20.0}, r"sources\[0\]\.timeout_s: the timeout \(20 s\) must be shorter than the scrape interval"),
    ({"point": {"metric": "node-load"}}, r"points\[0\]\.metric: 'node-load' is not a Prometheus metric name"),
    ({"point": {"match_regex": {"mode": "("}}}, r"points\[0\]\.match_regex\.mode: not a regular expression"),
    ({"point": {"function": "quantile"}}, r'points\[0\]\.quantile: required with function = "quantile"'),
    ({"point": {"quantile": 0.5}}, r'points\[0\]\.quantile: only with function = "quantile"'),
    ({"point": {"asset_label": "unit"}}, r"points\[0\]\.asset: give exactly one of asset"),
    ({"point": {"asset": None, "asset_label": "unit"}}, r"points\[0\]\.asset_map: required with asset_label"),
    ({"point": {"target": "nosuch"}}, r"points\[0\]\.target: no target named 'nosuch'"),
    ({"point": {"function": "average"}}, r"points\[0\]\.function: Input should be"),
    ({"point": {"lables": {}}}, r"points\[0\]\.lables: unknown key"),
])
def test_config_errors_name_the_key(change: dict[str, Any], message: str) -> None:
    table = minimal(**change)
    if table["points"][0].get("asset") is None:
        table["points"][0].pop("asset", None)
    with pytest.raises(ConfigError, match=message):
        build_connector(table, "sources[0]")


def test_two_targets_need_a_target_or_the_target_label_per_point() -> None:
    targets = [{"name": "a", "url": "http://127.0.0.1:1/metrics"}, {"name": "b", "url": "http://127.0.0.1:2/metrics"}]
    with pytest.raises(ConfigError, match=r'points\[0\]\.target: 2 targets are configured.*"__target__"'):
        build_connector(minimal(targets=targets), "sources[0]")
    table = minimal(targets=targets)
    table["points"][0] = {"asset_label": "__target__", "asset_map": {"a": "gw-a", "b": "gw-b"}, "name": "load1",
                          "metric": "node_load1"}
    connector = build_connector(table, "sources[0]")
    assert {p.asset for p in connector.points()} == {"gw-a", "gw-b"}


def test_duplicate_points_and_unreadable_token_file_name_the_key(tmp_path: Path) -> None:
    table = minimal()
    table["points"].append(dict(table["points"][0]))
    with pytest.raises(ConfigError, match=r"points\[1\]\.name: duplicate point gw/load1 \(also points\[0\]\)"):
        build_connector(table, "sources[0]")
    table = minimal(targets=[{"name": "gw", "url": "http://127.0.0.1:9100/metrics",
                              "bearer_token_file": str(tmp_path / "missing")}])
    with pytest.raises(ConfigError, match=r"sources\[0\]\.targets\[0\]\.bearer_token_file: cannot read"):
        build_connector(table, "sources[0]")
