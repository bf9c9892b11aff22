"""The dashboards as Grafana loads them: stable uids, the provisioned data source, InfluxQL only,
defined variables, a consistent layout, and ISO 10816-3 bands from the project's one table."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from agent.analytics.iso10816 import ZONE_BOUNDARIES_MM_S
from collector.points import (
    AGENT_HEALTH_FLOAT_FIELDS,
    AGENT_HEALTH_INT_FIELDS,
    REMAINING_LIFE_FLOAT_FIELDS,
    VIBRATION_FLOAT_FIELDS,
)
from tests.unit.test_dashboards_queries import (
    DASHBOARD_DIR,
    GRAFANA_MACROS,
    dashboard_queries,
    iter_panels,
    load_dashboards,
)

PROVISIONING = DASHBOARD_DIR.parent / "provisioning"
STABLE_UIDS = {
    "fleet-overview": "facility-twin-fleet",
    "asset-detail": "facility-twin-asset",
    "vibration-health": "facility-twin-vibration",
    "agent-health": "facility-twin-agents",
}
MEASUREMENT_FIELDS = {  # collector/points.py: what the collector writes
    "telemetry": {"mean", "min", "max", "last", "count", "bad", "text"},
    "vibration": {*VIBRATION_FLOAT_FIELDS, "iso_zone", "fault", "rpm_source"},
    "asset_state": {"state", "health", "link", "link_reason", "condition", "condition_reason"},
    "agent_health": {*AGENT_HEALTH_INT_FIELDS, *AGENT_HEALTH_FLOAT_FIELDS},
    "work_order": {"id", "title", "status"},
    "remaining_life": {*REMAINING_LIFE_FLOAT_FIELDS, "degraded", "basis"},
}
MEASUREMENT_TAGS = {
    "telemetry": {"site", "agent", "asset", "asset_type", "point", "unit"},
    "vibration": {"site", "asset", "sensor"},
    "asset_state": {"site", "asset"},
    "agent_health": {"site", "agent"},
    "work_order": {"site", "asset", "severity", "rule"},
    "remaining_life": {"site", "asset", "sensor", "rule"},
}


def read_yaml(path: Path) -> Any:
    yaml = pytest.importorskip("yaml", reason="PyYAML (dev extra) reads the Grafana provisioning files")
    return yaml.safe_load(path.read_text())


def provisioned_datasource() -> dict[str, Any]:
    [path] = (PROVISIONING / "datasources").glob("*.yaml")
    [ds] = read_yaml(path)["datasources"]
    return ds


def test_provisioned_datasource_is_influxql_on_facility_twin() -> None:
    ds = provisioned_datasource()
    assert ds["type"] == "influxdb" and ds["access"] == "proxy"
    assert ds["jsonData"]["version"] == "InfluxQL"
    assert ds["jsonData"]["dbName"] == "facility_twin"
    assert "secureJsonData" not in ds and "password" not in ds, "no secret in the repository"


def test_dashboard_provider_points_at_a_folder_of_json_files() -> None:
    [path] = (PROVISIONING / "dashboards").glob("*.yaml")
    [provider] = read_yaml(path)["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")
    assert provider["folderUid"] and provider["allowUiUpdates"] is False


def test_uids_are_stable_and_unique() -> None:
    dashboards = load_dashboards()
    assert {name: d["uid"] for name, d in dashboards.items()} == STABLE_UIDS
    for name, d in dashboards.items():
        assert "id" not in d or d["id"] is None, f"{name}: a fixed numeric id clashes between Grafana instances"
        assert len(d["uid"]) <= 40


def test_every_query_goes_to_the_provisioned_datasource() -> None:
    ds = provisioned_datasource()
    for name, d in load_dashboards().items():
        [picker] = [v for v in d["templating"]["list"] if v["type"] == "datasource"]
        assert picker["name"] == "datasource" and picker["query"] == "influxdb"
        assert picker["current"] == {"selected": False, "text": ds["name"], "value": ds["uid"]}
        ref = {"type": "influxdb", "uid": "${datasource}"}
        for panel in iter_panels(d):
            assert panel["datasource"] == ref, f"{name}: {panel['title']}"
            assert all(t["datasource"] == ref for t in panel["targets"]), f"{name}: {panel['title']}"
        for v in d["templating"]["list"]:
            if v["type"] == "query":
                assert v["datasource"] == ref
        for a in d["annotations"]["list"]:
            if "query" in a:
                assert a["datasource"] == ref


def test_every_panel_has_an_influxql_query() -> None:
    for name, d in load_dashboards().items():
        for panel in iter_panels(d):
            assert panel.get("targets"), f"{name}: panel {panel['title']!r} has no query"
            refs = [t["refId"] for t in panel["targets"]]
            assert len(refs) == len(set(refs))
            for t in panel["targets"]:
                assert t["rawQuery"] is True, f"{name}: {panel['title']!r}: raw InfluxQL, no query builder"
                assert t["query"].lstrip().startswith("SELECT"), f"{name}: {panel['title']!r}"


def test_every_variable_used_is_defined() -> None:
    dashboards = load_dashboards()
    for q in dashboard_queries():
        defined = {v["name"] for v in dashboards[q.dashboard]["templating"]["list"]}
        assert set(q.variables) <= defined | GRAFANA_MACROS, f"{q}: undefined {set(q.variables) - defined}"


def test_time_series_queries_are_bounded_by_the_time_range() -> None:
    """Unbounded queries scan all of history; only the open-work-order ones need to (a work order
    raised months ago and still open must count)."""
    for q in dashboard_queries():
        if q.kind == "variable":
            continue
        if "$timeFilter" not in q.query and "now() -" not in q.query:
            assert '"work_order"' in q.query and "\"status\" <> 'closed'" in q.query, str(q)
        if "GROUP BY time(" in q.query:
            assert "GROUP BY time($__interval)" in q.query, f"{q}: use $__interval (panel min interval to coarsen)"


def test_queries_name_only_measurements_tags_and_fields_the_collector_writes() -> None:
    quoted = re.compile(r'"([^"]+)"')
    for q in dashboard_queries():
        if q.kind == "variable":
            continue
        measurements = set(re.findall(r'FROM "(\w+)"', q.query))
        assert measurements <= set(MEASUREMENT_FIELDS), str(q)
        names = set(quoted.findall(q.query)) - measurements
        known = set().union(*(MEASUREMENT_FIELDS[m] | MEASUREMENT_TAGS[m] for m in measurements))
        aliases = set(re.findall(r'AS "([^"]+)"', q.query))
        assert names <= known | aliases, f"{q}: unknown {names - known - aliases}"


def test_layout_fits_the_grid_without_overlaps() -> None:
    for name, d in load_dashboards().items():
        cells: dict[tuple[int, int], str] = {}
        ids = [p["id"] for p in d["panels"]] + [p["id"] for r in d["panels"] for p in r.get("panels", [])]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        titles = [p["title"] for p in iter_panels(d)]
        assert len(titles) == len(set(titles)), f"{name}: duplicate panel titles"
        for p in d["panels"]:
            g = p["gridPos"]
            assert g["x"] + g["w"] <= 24, f"{name}: {p['title']} is wider than the grid"
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    assert (x, y) not in cells, f"{name}: {p['title']} overlaps {cells[(x, y)]}"
                    cells[(x, y)] = p["title"]


def test_work_orders_are_annotations_on_every_dashboard() -> None:
    for name, d in load_dashboards().items():
        [wo] = [a for a in d["annotations"]["list"] if a.get("name") == "Work orders"]
        assert wo["enable"] and 'FROM "work_order"' in wo["query"] and "$timeFilter" in wo["query"]
        selected = set(re.findall(r'"(\w+)"', wo["query"].split("FROM")[0]))
        for column in ("titleColumn", "textColumn"):
            assert wo[column] in selected, f"{name}: {column}"
        assert set(wo["tagsColumn"].split(",")) <= selected


def test_velocity_bands_are_the_iso_10816_3_boundaries() -> None:
    d = load_dashboards()["vibration-health"]
    [panel] = [p for p in iter_panels(d) if "velocity_rms_mm_s" in p["targets"][0]["query"]
               and p["fieldConfig"]["defaults"].get("thresholds")]
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s["color"] for s in steps] == ["green", "yellow", "orange", "red"]
    assert tuple(s["value"] for s in steps[1:]) == ZONE_BOUNDARIES_MM_S[(2, "rigid")]
    for (group, foundation), bounds in ZONE_BOUNDARIES_MM_S.items():
        described = "/".join(f"{b:g}" if b % 1 else f"{b:.1f}" for b in bounds)
        if (group, foundation) != (2, "rigid"):
            assert f"group {group} {foundation} {described}" in panel["description"], described


def test_dashboard_files_are_what_the_provider_serves() -> None:
    assert sorted(p.name for p in DASHBOARD_DIR.iterdir()) == sorted(f"{n}.json" for n in STABLE_UIDS)
    for path in DASHBOARD_DIR.glob("*.json"):
        assert path.read_text().endswith("\n") and Path(path).stat().st_size < 200_000
