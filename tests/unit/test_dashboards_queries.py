"""Every InfluxQL query of the provisioned Grafana dashboards, and Grafana's macro expansion.

`dashboard_queries()` lists the panel targets (rows flattened), the template-variable queries and
the annotation queries of every dashboard in configs/grafana/dashboards. `expand()` substitutes
what Grafana's InfluxDB data source substitutes before a query leaves the browser: $timeFilter,
$__interval / $interval / $__interval_ms, and template variables with Grafana's formatting (a
multi-value or include-all variable inside a regex becomes `(a|b)` of escaped values, or its
`allValue`; a single-value variable is inserted as is). The integration test
(tests/integration/test_grafana_dashboards.py) runs the expanded queries against InfluxDB; the
tests here pin the expansion itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "ALL",
    "DASHBOARD_DIR",
    "GRAFANA_MACROS",
    "DashboardQuery",
    "dashboard_queries",
    "expand",
    "iter_panels",
    "load_dashboards",
    "variables_used",
]

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD_DIR = ROOT / "configs" / "grafana" / "dashboards"
GRAFANA_MACROS = frozenset({"timeFilter", "__interval", "interval", "__interval_ms"})
ALL = "$__all"  # Grafana's value for "All" of an include-all variable
_VAR = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")
_REGEX_CHARS = re.compile(r"[-\[\]{}()*+?.,\\^$|#\s]")


@dataclass(frozen=True)
class DashboardQuery:
    """One query Grafana sends: `kind` is panel, variable or annotation."""

    dashboard: str  # file stem
    kind: str
    title: str  # panel title, variable name or annotation name
    ref: str
    query: str
    min_interval: str | None = None  # the panel's own "Min interval", if set
    variables: frozenset[str] = field(default=frozenset())

    def __str__(self) -> str:
        return f"{self.dashboard} / {self.kind} {self.title!r} {self.ref}"


def load_dashboards() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(DASHBOARD_DIR.glob("*.json"))}


def iter_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside (collapsed) rows, rows themselves excluded."""
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def variables_used(query: str) -> set[str]:
    return {a or b or c for a, b, c in _VAR.findall(query)}


def dashboard_queries() -> list[DashboardQuery]:
    out: list[DashboardQuery] = []
    for name, d in load_dashboards().items():
        for panel in iter_panels(d):
            for t in panel.get("targets", []):
                out.append(DashboardQuery(name, "panel", panel["title"], t["refId"], t["query"],
                                          panel.get("interval"), frozenset(variables_used(t["query"]))))
        for v in d.get("templating", {}).get("list", []):
            if v["type"] == "query":
                out.append(DashboardQuery(name, "variable", v["name"], "", v["query"],
                                          variables=frozenset(variables_used(v["query"]))))
        for a in d.get("annotations", {}).get("list", []):
            if "query" in a:
                out.append(DashboardQuery(name, "annotation", a["name"], "", a["query"],
                                          variables=frozenset(variables_used(a["query"]))))
    return out


def _escape(value: str) -> str:
    return _REGEX_CHARS.sub(lambda m: "\\" + m.group(0), value)


def format_variable(variable: Mapping[str, Any], value: str | Sequence[str]) -> str:
    """What Grafana's InfluxDB data source puts in the query for `value` of `variable`."""
    values = [value] if isinstance(value, str) else list(value)
    if values == [ALL]:
        if not variable.get("includeAll") or not variable.get("allValue"):
            raise ValueError(f"variable {variable['name']}: give its values, it has no allValue")
        return str(variable["allValue"])
    if not variable.get("multi") and not variable.get("includeAll"):
        return values[0]
    escaped = [_escape(v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def interval_ms(interval: str) -> int:
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d)", interval)
    assert match, f"bad interval {interval!r}"
    return int(match.group(1)) * {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}[match.group(2)]


def expand(query: str, *, variables: Mapping[str, Mapping[str, Any]], values: Mapping[str, str | Sequence[str]],
           start_ms: int, end_ms: int, interval: str) -> str:
    """The query as Grafana sends it. Raises KeyError for a variable the dashboard does not define."""
    def substitute(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        if name == "timeFilter":
            return f"time >= {start_ms}ms and time <= {end_ms}ms"
        if name in ("__interval", "interval"):
            return interval
        if name == "__interval_ms":
            return str(interval_ms(interval))
        return format_variable(variables[name], values[name])

    return _VAR.sub(substitute, query)


# ---- the expansion itself ----------------------------------------------------------------------

ASSET = {"name": "asset", "multi": False, "includeAll": False}
SENSOR = {"name": "sensor", "multi": True, "includeAll": True, "allValue": None}
SITE = {"name": "site", "multi": True, "includeAll": True, "allValue": ".*"}
VARS = {"asset": ASSET, "sensor": SENSOR, "site": SITE}


def test_time_filter_and_interval() -> None:
    q = 'SELECT mean("x") FROM "m" WHERE $timeFilter GROUP BY time($__interval), time($interval) LIMIT $__interval_ms'
    assert expand(q, variables=VARS, values={}, start_ms=1000, end_ms=2000, interval="10s") == (
        'SELECT mean("x") FROM "m" WHERE time >= 1000ms and time <= 2000ms GROUP BY time(10s), time(10s) LIMIT 10000')


def test_variables_are_formatted_like_grafana() -> None:
    q = '"site" =~ /^$site$/ AND "asset" =~ /^${asset}$/ AND "sensor" =~ /^[[sensor]]$/'

    def run(**values: str | list[str]) -> str:
        return expand(q, variables=VARS, values=values, start_ms=0, end_ms=1, interval="1s")

    assert run(site=ALL, asset="ahu-1", sensor=["de.x", "nde"]) == \
        r'"site" =~ /^.*$/ AND "asset" =~ /^ahu-1$/ AND "sensor" =~ /^(de\.x|nde)$/'
    assert run(site=["a.b", "c"], asset="m.1", sensor=["nde"]) == \
        r'"site" =~ /^(a\.b|c)$/ AND "asset" =~ /^m.1$/ AND "sensor" =~ /^nde$/'
    with pytest.raises(ValueError, match="no allValue"):
        run(site=ALL, asset="ahu-1", sensor=ALL)
    with pytest.raises(KeyError):
        expand("$nowhere", variables=VARS, values={}, start_ms=0, end_ms=1, interval="1s")


def test_every_dashboard_query_is_found_with_its_variables() -> None:
    queries = dashboard_queries()
    assert {q.dashboard for q in queries} == {p.stem for p in DASHBOARD_DIR.glob("*.json")}
    assert {q.kind for q in queries} == {"panel", "variable", "annotation"}
    for q in queries:
        assert q.query.strip(), f"{q}: empty query"
        assert variables_used(q.query) == set(q.variables)
