"""The Prometheus connector: scrapes targets at their interval and turns selected series into readings.

Each target has its own scrape task, so a slow or dead target never delays another. A scrape that
fails (refused, timeout, HTTP error status, a body that does not parse) makes every point of that
target BAD with the reason and no value; the target is scraped again at its interval, as
Prometheus does. Counters and histograms are evaluated against the previous scrape of the same
series (codec.py), so the first scrape of a rate gives no reading.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from agent.connectors.base import ConnectorStats, Emit
from agent.connectors.health import PeerHealth
from agent.connectors.periodic import first_due, run_periodic
from agent.connectors.prometheus.codec import (
    DEFAULT_FUNCTION,
    Family,
    SeriesKey,
    SeriesState,
    aggregate,
    evaluate,
    lookup,
    parse_exposition,
    select,
    series_of,
)
from agent.connectors.prometheus.config import (
    TARGET_LABEL,
    PrometheusPoint,
    PrometheusSourceConfig,
    PrometheusTarget,
    parse_source,
)
from agent.connectors.prometheus.scrape import Scrape, Scraper
from agent.model import PointSpec, Quality, Reading, now_ns
from runtime.errors import DecodeError, SourceError
from runtime.logs import RateLimitedLog
from runtime.secrets import read_secret

__all__ = ["PrometheusConnector", "build"]

log = logging.getLogger("twin.agent.prometheus")

LOG_EVERY_S = 60.0


@dataclass(frozen=True, slots=True)
class _Selector:
    """A point with its regular expressions compiled."""

    index: int
    point: PrometheusPoint
    match_regex: dict[str, re.Pattern[str]]


class PrometheusConnector:
    """Scrapes the targets of one `[[sources]] type = "prometheus"` table; see the package README."""

    def __init__(self, config: PrometheusSourceConfig, tokens: dict[str, str] | None = None,
                 rng: random.Random | None = None) -> None:
        self.config = config
        self._tokens = tokens or {}
        self.name = config.name
        self.stats = ConnectorStats()
        self.unmapped_series = 0  # series skipped because asset_map has no entry for their label value
        self._rng = rng or random.Random()
        self._selectors = [
            _Selector(i, p, {k: re.compile(v) for k, v in p.match_regex.items()}) for i, p in enumerate(config.points)
        ]
        self._specs = tuple(
            PointSpec(asset=asset, name=p.name, unit=p.unit, kind=p.kind, deadband=p.deadband,
                      expected_interval_s=max(config.interval_for(t) for t in config.targets_of(p)))
            for p in config.points for asset in p.assets()
        )
        self._by_target = {t.name: [s for s in self._selectors if s.point.target in (None, t.name)]
                           for t in config.targets}
        self._previous: dict[str, dict[tuple[int, str, SeriesKey], tuple[SeriesState, float]]] = {
            t.name: {} for t in config.targets}
        self._health = {t.name: PeerHealth(self.name, t.name, self.stats, log, config.interval_for(t),
                                           config.interval_for(t), self._rng) for t in config.targets}
        self._rate_log = RateLimitedLog(log, LOG_EVERY_S)

    # -- the Connector protocol ------------------------------------------------------------------

    def points(self) -> Sequence[PointSpec]:
        return self._specs

    async def run(self, emit: Emit) -> None:
        """Scrape every target at its interval until cancelled."""
        async with aiohttp.ClientSession() as session, asyncio.TaskGroup() as tasks:
            for target in self.config.targets:
                tasks.create_task(self._scrape_loop(self._scraper(session, target), target, emit),
                                  name=f"{self.name}/{target.name}")

    # -- extras ----------------------------------------------------------------------------------

    async def scrape_once(self, cycles: int = 1) -> list[Reading]:
        """Scrape every target `cycles` times (targets in parallel): for diagnostics, tests and benchmarks."""
        out: list[Reading] = []

        async def cycle(scraper: Scraper, target: PrometheusTarget) -> None:
            for _ in range(cycles):
                await self._scrape(scraper, target, out.extend)

        async with aiohttp.ClientSession() as session, asyncio.TaskGroup() as tasks:
            for target in self.config.targets:
                tasks.create_task(cycle(self._scraper(session, target), target))
        return out

    def decode_scrape(self, target: str, scrape: Scrape) -> list[Reading]:
        """Readings of every point of `target` from one scrape's body (parse errors make them BAD)."""
        try:
            families = parse_exposition(scrape.text, scrape.content_type)
        except DecodeError as exc:
            self.stats.decode_errors += 1
            self._rate_log.warning(f"parse:{target}", f"{self.name}/{target}: {exc}")
            return self._bad(target, f"parse error: {exc}", scrape.received_ns)
        previous, current = self._previous[target], {}
        readings: list[Reading] = []
        series_cache: dict[str, dict[SeriesKey, SeriesState]] = {}
        for sel in self._by_target[target]:
            family = lookup(families, sel.point.metric)
            if family is None:
                readings += self._bad_point(sel.point, target, f"metric {sel.point.metric} absent from the scrape",
                                            scrape.received_ns)
                continue
            if family.name not in series_cache:
                series_cache[family.name] = series_of(family)
            chosen = select(series_cache[family.name], target, sel.point.match, sel.match_regex)
            for asset, group in self._by_asset(sel.point, target, chosen).items():
                readings.append(self._reading(sel, family, target, asset, group, scrape, previous, current))
        self._previous[target] = current
        return [r for r in readings if r is not None]

    # -- scraping --------------------------------------------------------------------------------

    def _scraper(self, session: aiohttp.ClientSession, target: PrometheusTarget) -> Scraper:
        return Scraper(session, target.url, self.config.timeout_for(target),
                       int(self.config.max_body_mb * 1024 * 1024), self._tokens.get(target.name))

    async def _scrape_loop(self, scraper: Scraper, target: PrometheusTarget, emit: Emit) -> None:
        interval = self.config.interval_for(target)

        def crashed() -> None:  # a bug or a surprise: count it, log it now and then, keep scraping
            self.stats.errors += 1
            if self._rate_log.warning(f"crash:{target.name}", f"{self.name}/{target.name}: scrape cycle failed"):
                log.exception("%s/%s: scrape cycle failed", self.name, target.name)

        async def scrape() -> None:
            await self._scrape(scraper, target, emit)

        await run_periodic(scrape, interval, first_due(self._rng, interval), crashed)

    async def _scrape(self, scraper: Scraper, target: PrometheusTarget, emit: Emit) -> None:
        health = self._health[target.name]
        try:
            scrape = await scraper.get()
        except SourceError as exc:
            health.failed(str(exc))
            self._previous[target.name] = {}  # a restarted exporter starts its counters again
            emit(self._bad(target.name, str(exc), now_ns()))
            return
        health.answered()
        self.stats.polls += 1
        emit(self.decode_scrape(target.name, scrape))

    # -- decoding --------------------------------------------------------------------------------

    def _by_asset(self, point: PrometheusPoint, target: str, chosen: list[SeriesState]
                  ) -> dict[str, list[SeriesState]]:
        if point.asset_label is None:
            assert point.asset is not None
            return {point.asset: chosen}
        groups: dict[str, list[SeriesState]] = {a: [] for a in point.assets_from(target)}
        for st in chosen:
            value = st.labels.get(point.asset_label, target if point.asset_label == TARGET_LABEL else "")
            asset = point.asset_map.get(value)
            if asset is None or asset not in groups:
                self.unmapped_series += 1
                self._rate_log.warning(f"unmapped:{point.metric}:{value}",
                                       f"{self.name}/{target}: {point.metric} series with {point.asset_label}="
                                       f"{value!r} skipped: not in asset_map")
                continue
            groups[asset].append(st)
        return groups

    def _reading(self, sel: _Selector, family: Family, target: str, asset: str, group: list[SeriesState],
                 scrape: Scrape, previous: dict[tuple[int, str, SeriesKey], tuple[SeriesState, float]],
                 current: dict[tuple[int, str, SeriesKey], tuple[SeriesState, float]]) -> Reading | None:
        p = sel.point
        received_s = scrape.received_ns / 1e9
        if not group:
            return Reading(asset, p.name, None, scrape.received_ns, Quality.BAD,
                           f"no series of {family.name} matches {_describe(p)}")
        if len(group) > 1 and p.aggregate == "none":
            return Reading(asset, p.name, None, scrape.received_ns, Quality.BAD,
                           f"{len(group)} series of {family.name} match {_describe(p)}: narrow the match or set "
                           "aggregate")
        function = p.function or DEFAULT_FUNCTION.get(family.type, "value")
        values: list[float | str] = []
        ts_s = received_s
        try:
            for st in group:
                key = (sel.index, asset, tuple(sorted(st.labels.items())))
                now_s = st.timestamp_s if st.timestamp_s is not None else received_s
                ts_s = now_s
                before = previous.get(key)
                current[key] = (st, now_s)
                value = evaluate(family.type, function, st, before[0] if before else None,
                                 now_s - before[1] if before else 0.0, p.quantile, p.value_label)
                if value is not None:
                    values.append(value)
            if not values:
                return None  # first scrape of a rate, or no observations in the interval
            if p.aggregate != "none":
                if any(isinstance(v, str) for v in values):
                    raise DecodeError(f"aggregate = {p.aggregate!r} needs numbers; {family.name} is a {family.type}")
                values = [aggregate(p.aggregate, [float(v) for v in values])]
        except DecodeError as exc:
            self.stats.decode_errors += 1
            self._rate_log.warning(f"decode:{asset}/{p.name}", f"{self.name}/{target}: {asset}/{p.name}: {exc}")
            return Reading(asset, p.name, None, scrape.received_ns, Quality.BAD, f"decode error: {exc}")
        value = values[0]
        ts_ns = int(ts_s * 1e9)
        if isinstance(value, str):
            return Reading(asset, p.name, value, ts_ns)
        if math.isnan(value):
            return Reading(asset, p.name, None, ts_ns, Quality.BAD, "NaN (the exporter has no value)")
        return Reading(asset, p.name, value * p.scale + p.offset, ts_ns)

    def _bad_point(self, point: PrometheusPoint, target: str, reason: str, ts_ns: int) -> list[Reading]:
        return [Reading(asset, point.name, None, ts_ns, Quality.BAD, reason) for asset in point.assets_from(target)]

    def _bad(self, target: str, reason: str, ts_ns: int) -> list[Reading]:
        return [r for sel in self._by_target[target] for r in self._bad_point(sel.point, target, reason, ts_ns)]


def _describe(point: PrometheusPoint) -> str:
    matchers = [f'{k}="{v}"' for k, v in point.match.items()] + [f'{k}=~"{v}"' for k, v in point.match_regex.items()]
    return "{" + ",".join(matchers) + "}"


def build(table: dict[str, Any], key: str) -> PrometheusConnector:
    """Registry entry point: a validated `[[sources]]` table (without `type`) -> connector."""
    config = parse_source(table, key)
    tokens = {t.name: read_secret(f"{key}.targets[{i}].bearer_token", file=t.bearer_token_file)
              for i, t in enumerate(config.targets) if t.bearer_token_file}
    return PrometheusConnector(config, tokens)
