"""Data-quality rules: the twin cannot see an asset properly. They raise `data_quality` work orders.

They judge what the agent *reported*, never what the collector managed to store: a sink outage, a
slow sink, a collector restart or a collector catching up on a backlog says nothing about the field.

- `stale`, `bad_quality` and `device_offline` are judged on every batch the collector commits, in the
  agent's own data time (the batch's interval end), over every point the agent declared. A batch that
  waited an hour in a queue is judged at the time it describes, so a backlog replays exactly what the
  agent saw; while nothing is committed (sink down, collector stopped) nothing is judged.
  - `stale`: a point the agent has not reported at all (no summary, no vibration block, GOOD or BAD)
    for `factor` x its declared `expected_interval_s` (and at least `min_silence_s`), counted from its
    last report, from the agent process's start or from when the point was declared, whichever is
    latest. A point whose last report was BAD is not stale: the agent said what is wrong with it.
  - `bad_quality`: a point whose reports carry no GOOD reading for longer than `max_bad_s`.
  - `device_offline`: every declared point of an asset reported BAD with a connection reason
    (timeout, refused, disconnected, ...) for longer than `offline_after_s`. One work order for the
    device, with each point's report as evidence; while the device is offline its points raise no
    `bad_quality` or `stale` work orders of their own.
- `agent_offline`: the agent's stream is really gone: no open stream for `offline_after_s`, or a
  stream open but silent that long while the collector holds nothing of it unacknowledged. Judged by
  the collector's periodic check in wall-clock time (silence produces no batch to react to), and never
  while the collector itself is failing or for `offline_after_s` after it recovered or started.
  The work order's asset is the agent id; its context lists the agent's assets.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from collector.workorders.rules import Finding, RuleBase, RuleState, step_level

__all__ = [
    "CONNECTION_REASON_WORDS",
    "AgentOfflineRule",
    "BadQualityRule",
    "DeviceOfflineRule",
    "StaleRule",
    "evaluate_agent_offline",
    "evaluate_bad_quality",
    "evaluate_device_offline",
    "evaluate_stale",
    "is_connection_reason",
]

# Words of a BAD reading's reason that mean "the device could not be reached" rather than "this value
# is wrong" (decode error, Modbus exception 2, BadNodeIdUnknown): the connectors' own wording, lower case.
CONNECTION_REASON_WORDS = (
    "timeout",          # Modbus "timeout", "timeout (connection lost)"; OPC-UA BadTimeout
    "timed out",
    "connect",          # "cannot connect to ...", "connection refused", "connection lost", "disconnected",
                        # OPC-UA BadNotConnected / BadServerNotConnected / BadConnectionClosed
    "refused",
    "unreachable",
    "no response",
    "no answer",
    "gateway",          # Modbus exceptions 10/11: the gateway cannot reach the device behind it
    "communication",    # OPC-UA BadCommunicationError
    "secure channel",   # OPC-UA BadSecureChannelClosed
    "securechannel",
    "death",            # Sparkplug NDEATH / DDEATH: the edge node or device went away
    "offline",
    "network",
)


def is_connection_reason(reason: str) -> bool:
    """True when a BAD reading's reason says the device was not reachable (see CONNECTION_REASON_WORDS)."""
    text = reason.lower()
    return any(word in text for word in CONNECTION_REASON_WORDS)


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
    """`kind = "stale"`: a point the agent has not reported for `factor` x its expected interval."""

    title_keys: ClassVar[tuple[str, ...]] = ("asset", "point")

    kind: Literal["stale"]
    points: list[str] = []
    factor: float = Field(default=3.0, ge=1)
    min_silence_s: float = Field(default=60.0, ge=0)

    def watches(self, point: str) -> bool:
        return not self.points or point in self.points

    def limit_s(self, expected_interval_s: float) -> float:
        return max(self.factor * expected_interval_s, self.min_silence_s)


class DeviceOfflineRule(_DataQualityRule):
    """`kind = "device_offline"`: every point of an asset BAD with a connection reason for `offline_after_s`."""

    title_keys: ClassVar[tuple[str, ...]] = ("asset", "reason")

    kind: Literal["device_offline"]
    offline_after_s: float = Field(default=60.0, ge=0)
    severity: Literal["info", "minor", "major", "critical"] = "major"


class AgentOfflineRule(_DataQualityRule):
    """`kind = "agent_offline"`: an agent's stream gone for `offline_after_s`."""

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
    """Judge one point at data time `ts_ns`: `bad` when its latest report had no GOOD reading."""
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
    """Judge one point at data time `now_ns`; `last_ns`: its last report (or the start of watching it)."""
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
                "condition": f"not reported by its agent for more than {rule.factor:g} x expected interval"}
    title = rule.render_title(f"{asset}: {point} is stale", asset=asset, point=point)
    desc = (rule.description or f"The agent has not reported {point} for {silence_s:.0f}s while it reported "
            f"its other data; expected every {expected_interval_s:g}s. Check the device, the connector and "
            "the agent's source errors.") if action == "raise" else f"{point} reports again."
    return new, Finding(action, rule.name, asset, rule.severity, title, desc, now_ns, evidence, "data_quality", point)


def evaluate_device_offline(rule: DeviceOfflineRule, state: RuleState, asset: str, offline: bool, reason: str,
                            points: list[dict[str, Any]], ts_ns: int) -> tuple[RuleState, Finding | None]:
    """Judge one asset at data time `ts_ns`: `offline` when every point's latest report is BAD with a
    connection reason; `points` are the points' reports, attached as evidence."""
    since = state.pending_since_ns if state.pending_since_ns is not None else ts_ns
    duration_s = (ts_ns - since) / 1e9 if offline else 0.0
    new, action = step_level(state, beyond_limit=offline, beyond_clear=offline, severity=rule.severity,
                             value=duration_s, ts_ns=ts_ns, min_duration_s=rule.offline_after_s)
    if action is None:
        return new, None
    evidence = {"kind": "device_offline", "asset": asset, "reason": reason, "offline_for_s": round(duration_s, 1),
                "limit_s": rule.offline_after_s, "points": points,
                "condition": f"every point BAD with a connection reason for more than {rule.offline_after_s:g}s"}
    title = rule.render_title(f"{asset}: device offline ({reason})", asset=asset, reason=reason)
    desc = (rule.description or f"Every point of {asset} ({len(points)}) has been BAD with a connection reason "
            f"for {duration_s:.0f}s ({reason}); the agent is connected and reports it. Check the device's power, "
            "its network or bus, and the connector's address.") \
        if action == "raise" else f"{asset} answers again."
    return new, Finding(action, rule.name, asset, rule.severity, title, desc, ts_ns, evidence, "data_quality")


def evaluate_agent_offline(rule: AgentOfflineRule, state: RuleState, agent: str, last_seen_ns: int,
                           now_ns: int, assets: list[str]) -> tuple[RuleState, Finding | None]:
    """Judge one agent at `now_ns` from when its stream was last known present."""
    silence_s = max(0.0, (now_ns - last_seen_ns) / 1e9)
    offline = silence_s > rule.offline_after_s
    new, action = step_level(state, beyond_limit=offline, beyond_clear=offline, severity=rule.severity,
                             value=silence_s, ts_ns=now_ns)
    if action is None:
        return new, None
    evidence = {"kind": "agent_offline", "agent": agent, "silent_s": round(silence_s, 1),
                "limit_s": rule.offline_after_s, "last_seen_ns": last_seen_ns, "assets": assets,
                "condition": f"no stream from the agent for more than {rule.offline_after_s:g}s"}
    title = rule.render_title(f"Agent {agent} offline", agent=agent, asset=agent)
    desc = (rule.description or f"No stream from agent {agent} for {silence_s:.0f}s; its assets "
            f"({', '.join(assets) or 'none known'}) are not monitored meanwhile. Its disk queue keeps their data "
            "until it reconnects. Check the gateway's power, network and the twin-agent service.") \
        if action == "raise" else f"Agent {agent} is sending again."
    return new, Finding(action, rule.name, agent, rule.severity, title, desc, now_ns, evidence, "data_quality")
