"""Dispatch observations to the rules that watch them; parse the `[[rules]]` list.

Ingest (collector/fleet.py) and the what-if replay (collector/whatif.py) both drive the rules
through the functions here, against a `RuleStore` that keeps rule state and serves history: the
fleet's is SQLite inside the batch transaction, the replay's is in memory. Same code, so a what-if
answer is what production would have done with the same data.

Three kinds of observation drive them:
- `evaluate_summary` / `evaluate_vibration`: one interval summary or one vibration block (values);
- `evaluate_data_quality`: what an agent reported about each of its points, judged at the data time of
  each batch it sends (stale, bad quality, device offline; see data_quality.py);
- `evaluate_tick`: the periodic check in wall-clock time (agents whose stream is gone).

Rule state is kept per (asset, rule, subject): the subject is the sensor of a vibration rule or the
point of a data-quality rule ("" when a rule has one subject per asset). A work order is per
(asset, rule), so a subject's `clear` only counts once no other subject of it is still active.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol, runtime_checkable

import numpy as np

from collector.prognosis.remaining_life import RemainingLife
from collector.workorders.collector_health import CollectorHealthRule
from collector.workorders.data_quality import (
    AgentOfflineRule,
    BadQualityRule,
    DeviceOfflineRule,
    StaleRule,
    evaluate_agent_offline,
    evaluate_bad_quality,
    evaluate_device_offline,
    evaluate_stale,
    is_connection_reason,
)
from collector.workorders.prognosis import PrognosisRule, PrognosisState, evaluate_prognosis
from collector.workorders.rate import RateOfChangeRule, evaluate_rate
from collector.workorders.rules import Finding, RuleBase, RuleState, ThresholdRule, ThresholdState, evaluate_threshold
from collector.workorders.trend import TrendRule, evaluate_trend
from collector.workorders.vibration import BearingRule, IsoZoneRule, evaluate_bearing, evaluate_iso_zone
from runtime.errors import ConfigError
from runtime.tomlconfig import parse_model

__all__ = [
    "DATA_QUALITY_KINDS",
    "RULE_KINDS",
    "AgentStatus",
    "PointReport",
    "RemainingLifeRecorder",
    "Rule",
    "RuleStore",
    "SummaryObs",
    "VibrationObs",
    "evaluate_data_quality",
    "evaluate_summary",
    "evaluate_tick",
    "evaluate_vibration",
    "parse_rules",
]

Rule = (ThresholdRule | RateOfChangeRule | IsoZoneRule | BearingRule | TrendRule | BadQualityRule | StaleRule
        | DeviceOfflineRule | AgentOfflineRule | CollectorHealthRule | PrognosisRule)

RULE_KINDS: dict[str, type[RuleBase]] = {
    "threshold": ThresholdRule,
    "rate_of_change": RateOfChangeRule,
    "iso_zone": IsoZoneRule,
    "bearing": BearingRule,
    "trend": TrendRule,
    "bad_quality": BadQualityRule,
    "stale": StaleRule,
    "device_offline": DeviceOfflineRule,
    "agent_offline": AgentOfflineRule,
    "prognosis": PrognosisRule,
    "collector_health": CollectorHealthRule,
}
DATA_QUALITY_KINDS = ("stale", "bad_quality", "device_offline")  # judged on each batch, in data time


def parse_rules(tables: Sequence[Any], prefix: str = "rules") -> tuple[Rule, ...]:
    """Validate each `[[rules]]` table as its kind (default "threshold"); errors name the key."""
    rules: list[Rule] = []
    errors: list[str] = []
    seen: dict[str, int] = {}
    for i, table in enumerate(tables):
        key = f"{prefix}[{i}]"
        if not isinstance(table, Mapping):
            errors.append(f"{key}: must be a table")
            continue
        kind = table.get("kind", "threshold")
        model = RULE_KINDS.get(kind) if isinstance(kind, str) else None
        if model is None:
            errors.append(f"{key}.kind: unknown rule kind {kind!r}; one of {', '.join(RULE_KINDS)}")
            continue
        try:
            rule = parse_model(model, dict(table), key)
        except ConfigError as exc:
            errors.append(str(exc))
            continue
        if rule.name in seen:
            errors.append(f"{key}: duplicate {rule.name!r} (also {prefix}[{seen[rule.name]}])")
            continue
        if isinstance(rule, CollectorHealthRule) and any(isinstance(r, CollectorHealthRule) for r in rules):
            errors.append(f"{key}.kind: only one collector_health rule (the collector has one health)")
            continue
        seen[rule.name] = i
        rules.append(rule)  # type: ignore[arg-type]
    if errors:
        raise ConfigError("\n".join(errors))
    return tuple(rules)


@dataclass(frozen=True, slots=True)
class SummaryObs:
    """One point's interval summary, as the rules see it (from a Batch or from the stored history)."""

    asset: str
    point: str
    ts_ns: int
    mean: float
    min: float
    max: float
    last: float
    count: int
    bad: int
    quality: str = "GOOD"
    reason: str = ""


@dataclass(frozen=True, slots=True)
class VibrationObs:
    asset: str
    sensor: str
    ts_ns: int
    block: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class PointReport:
    """What an agent last reported about one of its declared points, for the data-quality rules.

    Times are the agent's data times. `last_report_ns` is the newest summary or vibration block of the
    point (0: never reported); `bad` when that report had no GOOD reading, with the agent's `reason`;
    `watch_from_ns` is when silence starts to count at the earliest (the agent process's start, or when
    the point was declared), so a restarted or reconfigured agent is not blamed for its own start.
    """

    asset: str
    asset_type: str
    point: str
    expected_interval_s: float
    last_report_ns: int
    bad: bool
    reason: str
    watch_from_ns: int = 0


@dataclass(frozen=True, slots=True)
class AgentStatus:
    """For the periodic check: when the agent's stream was last known present (wall clock)."""

    agent: str
    last_seen_ns: int
    assets: list[str]


class RuleStore(Protocol):
    """Where rule state lives and history comes from (SQLite in production, memory in a replay)."""

    async def load_state(self, asset: str, rule: str, subject: str) -> dict[str, Any] | None: ...

    async def save_state(self, asset: str, rule: str, subject: str, state: dict[str, Any]) -> None: ...

    async def active_subjects(self, asset: str, rule: str) -> list[str]: ...

    async def series(self, asset: str, key: str, since_ns: int, until_ns: int) -> tuple[np.ndarray, np.ndarray]:
        """(ts_ns, values) of a history series, oldest first, both ends inclusive."""
        ...


class RuleStateInMemory:
    """Rule state kept in a dict: the part of a RuleStore a replay (what-if, backtest) needs without
    a database. Subclasses say where history comes from (`series`)."""

    def __init__(self) -> None:
        self.states: dict[tuple[str, str, str], dict[str, Any]] = {}

    async def load_state(self, asset: str, rule: str, subject: str) -> dict[str, Any] | None:
        return self.states.get((asset, rule, subject))

    async def save_state(self, asset: str, rule: str, subject: str, state: dict[str, Any]) -> None:
        self.states[(asset, rule, subject)] = state

    async def active_subjects(self, asset: str, rule: str) -> list[str]:
        return [s for (a, r, s), st in self.states.items() if a == asset and r == rule and st.get("active")]


@runtime_checkable
class RemainingLifeRecorder(Protocol):
    """A RuleStore that also keeps each remaining-life assessment of the prognosis rules (the fleet's, for
    the twin and InfluxDB; a backtest's, for its report)."""

    async def record_remaining_life(self, asset: str, rule: str, subject: str, ts_ns: int,
                                    assessment: RemainingLife) -> None: ...


def _decode(cls: type, doc: dict[str, Any] | None) -> Any:
    if not doc:
        return cls()
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in doc.items() if k in names})


async def _step(store: RuleStore, rule: Rule, asset: str, subject: str, run: Any) -> Finding | None:
    """Load the subject's state, run the rule, save the state, and apply the per-(asset, rule) clear rule."""
    state_type = (ThresholdState if isinstance(rule, ThresholdRule) else PrognosisState
                  if isinstance(rule, PrognosisRule) else RuleState)
    state = _decode(state_type, await store.load_state(asset, rule.name, subject))
    new, finding = await run(state)
    if new != state:
        await store.save_state(asset, rule.name, subject, asdict(new))
    if finding is not None and finding.action == "clear":
        if [s for s in await store.active_subjects(asset, rule.name) if s != subject]:
            return None  # another sensor or point of this asset still has the condition
    return finding


async def evaluate_summary(rules: Sequence[Rule], store: RuleStore, obs: SummaryObs, asset_type: str) -> list[Finding]:
    """Run every rule that watches this summary's point (its history must already include it)."""
    findings: list[Finding] = []
    has_value = obs.count > 0
    for rule in rules:
        if not rule.targets_assets or not rule.applies_to(obs.asset, asset_type):
            continue
        finding: Finding | None = None
        if isinstance(rule, ThresholdRule) and rule.point == obs.point and has_value:
            value = float(getattr(obs, rule.field))

            async def run_threshold(state: Any, rule: ThresholdRule = rule, value: float = value) -> Any:
                return evaluate_threshold(rule, state, obs.asset, value, obs.ts_ns)
            finding = await _step(store, rule, obs.asset, "", run_threshold)
        elif isinstance(rule, RateOfChangeRule) and rule.point == obs.point and has_value:
            async def run_rate(state: Any, rule: RateOfChangeRule = rule) -> Any:
                ts, values = await store.series(obs.asset, f"point:{rule.point}:{rule.field}",
                                                obs.ts_ns - rule.window_ns, obs.ts_ns)
                if len(ts) == 0:
                    return state, None
                return evaluate_rate(rule, state, obs.asset, ts, values)
            finding = await _step(store, rule, obs.asset, "", run_rate)
        elif isinstance(rule, TrendRule) and rule.point == obs.point and has_value:
            finding = await _step(store, rule, obs.asset, "",
                                  _trend_runner(store, rule, obs.asset, "", f"point:{rule.point}:{rule.field}",
                                                obs.ts_ns))
        if finding is not None:
            findings.append(finding)
    return findings


def _trend_runner(store: RuleStore, rule: TrendRule, asset: str, subject: str, key: str, ts_ns: int) -> Any:
    async def run(state: RuleState) -> tuple[RuleState, Finding | None]:
        if not rule.due(state, ts_ns):
            return state, None
        ts, values = await store.series(asset, key, ts_ns - rule.window_ns, ts_ns)
        if len(ts) == 0:
            return state, None
        return evaluate_trend(rule, state, asset, subject, ts, values)
    return run


async def evaluate_vibration(rules: Sequence[Rule], store: RuleStore, obs: VibrationObs,
                             asset_type: str) -> list[Finding]:
    """Run the vibration rules (zone, bearing, trend on an indicator) on one block of one sensor."""
    findings: list[Finding] = []
    for rule in rules:
        if not rule.targets_assets or not rule.applies_to(obs.asset, asset_type):
            continue
        finding: Finding | None = None
        if isinstance(rule, IsoZoneRule | BearingRule) and rule.sensor in ("", obs.sensor):
            evaluate = evaluate_iso_zone if isinstance(rule, IsoZoneRule) else evaluate_bearing

            async def run_block(state: Any, rule: Any = rule, evaluate: Any = evaluate) -> Any:
                return evaluate(rule, state, obs.asset, obs.sensor, obs.block, obs.ts_ns)
            finding = await _step(store, rule, obs.asset, obs.sensor, run_block)
        elif isinstance(rule, PrognosisRule) and rule.sensor in ("", obs.sensor):
            finding = await _step(store, rule, obs.asset, obs.sensor, _prognosis_runner(store, rule, obs))
        elif isinstance(rule, TrendRule) and rule.vibration and rule.sensor in ("", obs.sensor) \
                and obs.block.get(rule.vibration) is not None:
            finding = await _step(store, rule, obs.asset, obs.sensor,
                                  _trend_runner(store, rule, obs.asset, obs.sensor,
                                                f"vibration:{obs.sensor}:{rule.vibration}", obs.ts_ns))
        if finding is not None:
            findings.append(finding)
    return findings


def _prognosis_runner(store: RuleStore, rule: PrognosisRule, obs: VibrationObs) -> Any:
    async def run(state: PrognosisState) -> tuple[PrognosisState, Finding | None]:
        if not rule.due(state, obs.ts_ns) or any(obs.block.get(n) is None for n in rule.indicators):
            return state, None
        since = rule.history_since(state, obs.ts_ns)
        ts: dict[str, np.ndarray] = {}
        values: dict[str, np.ndarray] = {}
        for name, key in rule.series_keys(obs.sensor).items():
            ts[name], values[name] = await store.series(obs.asset, key, since, obs.ts_ns)
        new, finding, assessment = evaluate_prognosis(rule, state, obs.asset, obs.sensor, ts, values, obs.ts_ns)
        if assessment is not None and isinstance(store, RemainingLifeRecorder):
            await store.record_remaining_life(obs.asset, rule.name, obs.sensor, obs.ts_ns, assessment)
        return new, finding
    return run



async def evaluate_data_quality(rules: Sequence[Rule], store: RuleStore, now_ns: int,
                                points: Sequence[PointReport]) -> list[Finding]:
    """Judge one agent's declared points at data time `now_ns` (the interval end of a batch it sent).

    A device (an asset as its agent declares it) whose every point's latest report is BAD with a
    connection reason is one `device_offline` condition; while it holds and a device_offline rule
    watches the asset, its points are not judged one by one (their reports are that work order's
    evidence). Otherwise each point is judged by `bad_quality` and, when it is not BAD, by `stale`.
    """
    findings: list[Finding] = []
    by_asset: dict[str, list[PointReport]] = {}
    for p in points:
        by_asset.setdefault(p.asset, []).append(p)
    for asset, reports in by_asset.items():
        asset_type = reports[0].asset_type
        device_down = all(p.last_report_ns > 0 and p.bad and is_connection_reason(p.reason) for p in reports)
        reasons = [p.reason for p in reports if p.bad and p.reason]
        reason = min(sorted(set(reasons)), key=lambda r: -reasons.count(r)) if reasons else ""  # commonest, stable
        device_rules = [r for r in rules if isinstance(r, DeviceOfflineRule) and r.applies_to(asset, asset_type)]
        evidence = [{"point": p.point, "reason": p.reason, "last_report_ns": p.last_report_ns} for p in reports]
        for rule in device_rules:
            if not device_down and await store.load_state(asset, rule.name, "") is None:
                continue  # nothing to judge (most batches: skip the state machine)

            async def run_device(state: Any, rule: DeviceOfflineRule = rule, asset: str = asset,
                                 down: bool = device_down, reason: str = reason,
                                 evidence: list[dict[str, Any]] = evidence) -> Any:
                return evaluate_device_offline(rule, state, asset, down, reason, evidence, now_ns)
            if (finding := await _step(store, rule, asset, "", run_device)) is not None:
                findings.append(finding)
        if device_down and device_rules:
            continue
        for rule in rules:
            if not isinstance(rule, BadQualityRule | StaleRule) or not rule.applies_to(asset, asset_type):
                continue
            for p in reports:
                if not rule.watches(p.point):
                    continue
                if isinstance(rule, BadQualityRule):
                    if p.last_report_ns == 0:
                        continue  # never reported: the stale rule's business
                    if not p.bad and await store.load_state(asset, rule.name, p.point) is None:
                        continue  # a GOOD point with no condition pending: nothing to judge

                    async def run(state: Any, rule: Any = rule, p: PointReport = p) -> Any:
                        return evaluate_bad_quality(rule, state, p.asset, p.point, p.bad, p.reason, now_ns)
                else:
                    # a point whose last report is BAD was reported: it is not silent
                    last = now_ns if p.bad else max(p.last_report_ns, p.watch_from_ns)
                    if (p.expected_interval_s <= 0 or now_ns - last <= rule.limit_s(p.expected_interval_s) * 1e9) \
                            and await store.load_state(asset, rule.name, p.point) is None:
                        continue  # reported in time, nothing pending: nothing to judge

                    async def run(state: Any, rule: Any = rule, p: PointReport = p, last: int = last) -> Any:
                        return evaluate_stale(rule, state, p.asset, p.point, last, p.expected_interval_s, now_ns)
                if (finding := await _step(store, rule, asset, p.point, run)) is not None:
                    findings.append(finding)
    return findings


async def evaluate_tick(rules: Sequence[Rule], store: RuleStore, now_ns: int,
                        agents: Sequence[AgentStatus]) -> list[Finding]:
    """The periodic check: agents whose stream is gone, judged at `now_ns` (wall clock)."""
    findings: list[Finding] = []
    for rule in rules:
        if not isinstance(rule, AgentOfflineRule):
            continue
        for a in agents:
            if not rule.watches_agent(a.agent):
                continue

            async def run_offline(state: Any, rule: AgentOfflineRule = rule, a: AgentStatus = a) -> Any:
                return evaluate_agent_offline(rule, state, a.agent, a.last_seen_ns, now_ns, a.assets)
            finding = await _step(store, rule, a.agent, "", run_offline)
            if finding is not None:
                findings.append(finding)
    return findings
