"""Data-quality rules: the twin cannot see an asset properly. They raise `data_quality` work orders.

- `bad_quality`: a point's summaries carry no GOOD reading (every reading BAD: timeout, exception
  code, bad OPC-UA status) for longer than `max_bad_s`. Judged on ingest, in data time.
- `stale`: a point silent past its expected interval: nothing for `factor` x the
  `expected_interval_s` its agent declared in the Hello (and at least `min_silence_s`). Points that
  declare no interval are never stale. Judged by the collector's periodic check in wall-clock time,
  because silence produces no batch to react to.
- `agent_offline`: no batch (nor Hello) from an agent for `offline_after_s`. Periodic check too.
  The work order's asset is the agent id; its context lists the agent's assets.

Each point (or agent) is a subject of its own; the asset's work order lists every affected point and
stays open while any of them is affected. Clearing needs the data to come back.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from collector.workorders.rules import Finding, RuleBase, RuleState, step_level

__all__ = ["AgentOfflineRule", "BadQualityRule", "StaleRule", "evaluate_agent_offline", "evaluate_bad_quality",
           "evaluate_stale"]


class _DataQualityRule(RuleBase):
    category: ClassVar[str] = "data_quality"


class BadQualityRule(_DataQualityRule):
    """`kind = "bad_quality"`: a point without a GOOD reading for longer than `max_bad_s`."""

    title_keys: ClassVar[tuple[str, ...]] = ("asset", "point")

    kind: Literal["bad_quality"]
    points: list[str] = []  # empty: every point of the asset
    max_bad_s: float = Field(default=300.0, ge=0)

    def watches(self, point: str) -> bool:
        return not self.points or point in self.points


class StaleRule(_DataQualityRule):
    """`kind = "stale"`: a point silent for `factor` x its expected interval."""

    title_keys: ClassVar[tuple[str, ...]] = ("asset", "point")

    kind: Literal["stale"]
    points: list[str] = []
    factor: float = Field(default=3.0, ge=1)
    min_silence_s: float = Field(default=60.0, ge=0)

    def watches(self, point: str) -> bool:
        return not self.points or point in self.points

    def limit_s(self, expected_interval_s: float) -> float:
        return max(self.factor * expected_interval_s, self.min_silence_s)


class AgentOfflineRule(_DataQualityRule):
    """`kind = "agent_offline"`: no batch from an agent for `offline_after_s`."""

    title_keys: ClassVar[tuple[str, ...]] = ("agent", "asset")

    kind: Literal["agent_offline"]
    agent: str = ""  # empty: every agent
    offline_after_s: float = Field(default=300.0, gt=0)
    severity: Literal["info", "minor", "major", "critical"] = "major"

    @property
    def targets_assets(self) -> bool:
        return False

    @model_validator(mode="after")
    def _no_assets(self) -> AgentOfflineRule:
        if self.asset or self.asset_type:
            raise ValueError("agent_offline rules are about agents: use agent (or nothing for every agent), "
                             "not asset or asset_type")
        return self

    def watches_agent(self, agent: str) -> bool:
        return not self.agent or self.agent == agent


def evaluate_bad_quality(rule: BadQualityRule, state: RuleState, asset: str, point: str, bad: bool, reason: str,
                         ts_ns: int) -> tuple[RuleState, Finding | None]:
    """Feed one summary of `point`: `bad` when it had no GOOD reading."""
    since = state.pending_since_ns if state.pending_since_ns is not None else ts_ns
    duration_s = (ts_ns - since) / 1e9 if bad else 0.0
    new, action = step_level(state, beyond_limit=bad, beyond_clear=bad, severity=rule.severity, value=duration_s,
                             ts_ns=ts_ns, min_duration_s=rule.max_bad_s)
    if action is None:
        return new, None
    evidence = {"kind": "bad_quality", "point": point, "reason": reason, "bad_for_s": round(duration_s, 1),
                "limit_s": rule.max_bad_s, "condition": f"no GOOD reading for more than {rule.max_bad_s:g}s"}
    title = rule.render_title(f"{asset}: {point} has no good data", asset=asset, point=point)
    desc = (rule.description or f"{point} has had no GOOD reading for {duration_s:.0f}s (last reason: "
            f"{reason or 'unknown'}). Check the sensor, its wiring and the connector's source.") \
        if action == "raise" else f"{point} delivers GOOD readings again."
    return new, Finding(action, rule.name, asset, rule.severity, title, desc, ts_ns, evidence, "data_quality", point)


def evaluate_stale(rule: StaleRule, state: RuleState, asset: str, point: str, last_ns: int,
                   expected_interval_s: float, now_ns: int) -> tuple[RuleState, Finding | None]:
    """Judge one point at `now_ns`: `last_ns` is when its newest summary (or its agent's connection) was seen."""
    if expected_interval_s <= 0:
        return state, None
    silence_s = max(0.0, (now_ns - last_ns) / 1e9)
    limit = rule.limit_s(expected_interval_s)
    silent = silence_s > limit
    new, action = step_level(state, beyond_limit=silent, beyond_clear=silent, severity=rule.severity,
                             value=silence_s, ts_ns=now_ns)
    if action is None:
        return new, None
    evidence = {"kind": "stale", "point": point, "silent_s": round(silence_s, 1), "limit_s": limit,
                "expected_interval_s": expected_interval_s, "last_ns": last_ns,
                "condition": f"silent for more than {rule.factor:g} x expected interval"}
    title = rule.render_title(f"{asset}: {point} is stale", asset=asset, point=point)
    desc = (rule.description or f"No data for {point} for {silence_s:.0f}s; expected every "
            f"{expected_interval_s:g}s. Check the device, the connector and the agent's source errors.") \
        if action == "raise" else f"{point} reports again."
    return new, Finding(action, rule.name, asset, rule.severity, title, desc, now_ns, evidence, "data_quality", point)


def evaluate_agent_offline(rule: AgentOfflineRule, state: RuleState, agent: str, last_seen_ns: int,
                           now_ns: int, assets: list[str]) -> tuple[RuleState, Finding | None]:
    """Judge one agent at `now_ns` from when it was last heard of (batch or Hello)."""
    silence_s = max(0.0, (now_ns - last_seen_ns) / 1e9)
    offline = silence_s > rule.offline_after_s
    new, action = step_level(state, beyond_limit=offline, beyond_clear=offline, severity=rule.severity,
                             value=silence_s, ts_ns=now_ns)
    if action is None:
        return new, None
    evidence = {"kind": "agent_offline", "agent": agent, "silent_s": round(silence_s, 1),
                "limit_s": rule.offline_after_s, "last_seen_ns": last_seen_ns, "assets": assets,
                "condition": f"no batch for more than {rule.offline_after_s:g}s"}
    title = rule.render_title(f"Agent {agent} offline", agent=agent, asset=agent)
    desc = (rule.description or f"No data from agent {agent} for {silence_s:.0f}s; its assets "
            f"({', '.join(assets) or 'none known'}) are not monitored meanwhile. Its disk queue keeps their data "
            "until it reconnects. Check the gateway's power, network and the twin-agent service.") \
        if action == "raise" else f"Agent {agent} is sending again."
    return new, Finding(action, rule.name, agent, rule.severity, title, desc, now_ns, evidence, "data_quality")
