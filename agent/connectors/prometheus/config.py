"""The `[[sources]] type = "prometheus"` table: targets to scrape and the series that become points.

A point selects series of one metric family by exact (`match`) and regular-expression
(`match_regex`) label matchers and names its asset either directly (`asset`) or, as Prometheus
relabelling does, from a label value (`asset_label` + `asset_map`). Points are declared statically,
so every asset a label may name is listed in `asset_map`; a series whose label value is not in the
map is skipped and counted. `function` says how the family's type becomes one number per scrape.
Every message names the key to fix, and all problems are reported at once.
"""

from __future__ import annotations

import re
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field

from runtime.errors import ConfigError
from runtime.tomlconfig import StrictModel, parse_model

__all__ = [
    "DEFAULTS",
    "TARGET_LABEL",
    "Function",
    "PrometheusPoint",
    "PrometheusSourceConfig",
    "PrometheusTarget",
    "parse_source",
]

TARGET_LABEL = "__target__"
"""Pseudo-label holding the target's name on every series, for `match` and `asset_label`."""

Function = Literal["value", "rate", "increase", "quantile", "mean", "count_rate"]
Aggregate = Literal["none", "sum", "avg", "min", "max", "count"]


class DEFAULTS:
    """Default values of the source options, in one place."""

    INTERVAL_S = 15.0
    TIMEOUT_S = 5.0
    MAX_BODY_MB = 16.0


class PrometheusTarget(StrictModel):
    """One `[[sources.targets]]` entry: an HTTP endpoint serving the exposition format."""

    name: str = Field(min_length=1)
    url: str = Field(min_length=1)
    interval_s: float | None = Field(default=None, gt=0)
    timeout_s: float | None = Field(default=None, gt=0)
    bearer_token_file: str | None = None


class PrometheusPoint(StrictModel):
    """One `[[sources.points]]` entry: series of one metric -> one point on one or more assets."""

    metric: str = Field(min_length=1)
    name: str = Field(min_length=1)
    asset: str | None = None
    asset_label: str | None = None
    asset_map: dict[str, str] = {}
    target: str | None = None
    match: dict[str, str] = {}
    match_regex: dict[str, str] = {}
    function: Function | None = None  # default by the family's type: see the README
    quantile: float | None = Field(default=None, ge=0, le=1)
    value_label: str | None = None
    aggregate: Aggregate = "none"
    unit: str = ""
    kind: Literal["measurement", "setpoint", "state"] = "measurement"
    scale: float = 1.0
    offset: float = 0.0
    deadband: float = Field(default=0.0, ge=0)

    def assets(self) -> list[str]:
        """Every asset this point can feed."""
        if self.asset_label is not None:
            return list(dict.fromkeys(self.asset_map.values()))
        return [self.asset] if self.asset else []

    def assets_from(self, target: str) -> list[str]:
        """The assets this point can feed from `target` (one, when the target's name is the asset label)."""
        if self.asset_label == TARGET_LABEL:
            return [self.asset_map[target]] if target in self.asset_map else []
        return self.assets()


class PrometheusSourceConfig(StrictModel):
    name: str = Field(min_length=1)
    interval_s: float = Field(default=DEFAULTS.INTERVAL_S, gt=0)
    timeout_s: float = Field(default=DEFAULTS.TIMEOUT_S, gt=0)
    max_body_mb: float = Field(default=DEFAULTS.MAX_BODY_MB, gt=0)
    targets: list[PrometheusTarget] = Field(min_length=1)
    points: list[PrometheusPoint] = Field(min_length=1)

    def interval_for(self, target: PrometheusTarget) -> float:
        return target.interval_s or self.interval_s

    def timeout_for(self, target: PrometheusTarget) -> float:
        return target.timeout_s or self.timeout_s

    def targets_of(self, point: PrometheusPoint) -> list[PrometheusTarget]:
        return [t for t in self.targets if point.target in (None, t.name)]


METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


def _check_targets(cfg: PrometheusSourceConfig, key: str, errors: list[str]) -> None:
    seen: dict[str, int] = {}
    for i, t in enumerate(cfg.targets):
        tkey = f"{key}.targets[{i}]"
        if t.name in seen:
            errors.append(f"{tkey}.name: target {t.name!r} is already targets[{seen[t.name]}]")
        seen.setdefault(t.name, i)
        url = urlsplit(t.url)
        if url.scheme not in ("http", "https") or not url.hostname:
            errors.append(f"{tkey}.url: must be an http:// or https:// URL with a host, got {t.url!r}")
        if url.username or url.password:
            errors.append(f"{tkey}.url: no credentials in the URL; use bearer_token_file")
        interval, timeout = cfg.interval_for(t), cfg.timeout_for(t)
        if timeout >= interval:
            where = f"{tkey}.timeout_s" if t.timeout_s is not None else f"{key}.timeout_s"
            errors.append(f"{where}: the timeout ({timeout:g} s) must be shorter than the scrape interval of "
                          f"target {t.name!r} ({interval:g} s), or a slow target would overlap its own scrapes")


def _check_selection(p: PrometheusPoint, pkey: str, errors: list[str]) -> None:
    if not METRIC_NAME.match(p.metric):
        errors.append(f"{pkey}.metric: {p.metric!r} is not a Prometheus metric name")
    for label, pattern in p.match_regex.items():
        try:
            re.compile(pattern)
        except re.error as exc:
            errors.append(f"{pkey}.match_regex.{label}: not a regular expression: {exc}")
    if (p.function == "quantile") != (p.quantile is not None):
        errors.append(f'{pkey}.quantile: required with function = "quantile" and only there'
                      if p.function == "quantile" else f'{pkey}.quantile: only with function = "quantile"')


def _check_asset(p: PrometheusPoint, cfg: PrometheusSourceConfig, pkey: str, errors: list[str]) -> None:
    if (p.asset is None) == (p.asset_label is None):
        errors.append(f"{pkey}.asset: give exactly one of asset (a fixed asset) and asset_label (the label "
                      "whose value names the asset, with asset_map)")
    if p.asset_label is not None and not p.asset_map:
        errors.append(f"{pkey}.asset_map: required with asset_label: label value -> asset id for every asset "
                      "this point feeds")
    if p.asset_label is None and p.asset_map:
        errors.append(f"{pkey}.asset_map: only with asset_label")
    names = [t.name for t in cfg.targets]
    if p.target is not None and p.target not in names:
        errors.append(f"{pkey}.target: no target named {p.target!r} (targets: {names})")
    if p.target is None and len(names) > 1 and p.asset_label != TARGET_LABEL:
        errors.append(f"{pkey}.target: {len(names)} targets are configured: name the target this point reads, "
                      f'or map each target to its asset with asset_label = "{TARGET_LABEL}"')


def parse_source(table: dict[str, Any], key: str) -> PrometheusSourceConfig:
    """Validate one prometheus `[[sources]]` table (without its `type`); ConfigError names every bad key."""
    cfg = parse_model(PrometheusSourceConfig, table, key)
    errors: list[str] = []
    _check_targets(cfg, key, errors)
    seen: dict[tuple[str, str], int] = {}
    for i, p in enumerate(cfg.points):
        pkey = f"{key}.points[{i}]"
        _check_selection(p, pkey, errors)
        _check_asset(p, cfg, pkey, errors)
        for asset in p.assets():
            if (asset, p.name) in seen:
                errors.append(f"{pkey}.name: duplicate point {asset}/{p.name} (also points[{seen[(asset, p.name)]}])")
            seen.setdefault((asset, p.name), i)
    if errors:
        raise ConfigError("\n".join(dict.fromkeys(errors)))
    return cfg
