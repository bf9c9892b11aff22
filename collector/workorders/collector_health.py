"""The collector's own incidents: its sink or its state database failing. Category `collector`.

When InfluxDB is unreachable the collector cannot store and does not acknowledge, the agents keep
their data queued, and nothing in the field is wrong: that outage is the monitoring's own, so it is
recorded as one work order for the collector ("InfluxDB unreachable since 14:02:11"), never as data-
quality work orders for the assets whose data waits. Its category `collector` lets the ITSM webhooks
route it apart from field work (or not at all: webhooks take field categories unless told otherwise).

`kind = "collector_health"` configures it (name, severity, min_duration_s, title, description,
reraise_after_s). Without such a rule the collector still records its incidents with the defaults of
`DEFAULT_COLLECTOR_HEALTH_RULE`. The daemon feeds one `Outage` per failure period of a dependency
(collector/health.py); an outage shorter than `min_duration_s` is only logged and counted.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from collector.workorders.rules import Finding, RuleBase

__all__ = [
    "COLLECTOR_ASSET",
    "DEFAULT_COLLECTOR_HEALTH_RULE",
    "CollectorHealthRule",
    "Outage",
    "collector_health_rule",
    "outage_findings",
]

COLLECTOR_ASSET = "collector"  # the work orders' asset: the collector itself


class CollectorHealthRule(RuleBase):
    """`kind = "collector_health"`: one work order while the collector's sink or state database fails."""

    category: ClassVar[str] = "collector"
    title_keys: ClassVar[tuple[str, ...]] = ("dependency", "since")

    kind: Literal["collector_health"]
    min_duration_s: float = Field(default=0.0, ge=0)  # shorter outages are only logged and counted
    severity: Literal["info", "minor", "major", "critical"] = "major"

    @property
    def targets_assets(self) -> bool:
        return False

    @model_validator(mode="after")
    def _no_assets(self) -> CollectorHealthRule:
        if self.asset or self.asset_type:
            raise ValueError("collector_health rules are about the collector itself: no asset or asset_type")
        return self


DEFAULT_COLLECTOR_HEALTH_RULE = CollectorHealthRule(name="collector_health", kind="collector_health")


def collector_health_rule(rules: Sequence[RuleBase]) -> CollectorHealthRule:
    """The configured collector_health rule, or the default one."""
    return next((r for r in rules if isinstance(r, CollectorHealthRule)), DEFAULT_COLLECTOR_HEALTH_RULE)


@dataclass(frozen=True, slots=True)
class Outage:
    """One failure period of one of the collector's dependencies (wall-clock times)."""

    dependency: str  # "sink" | "state_database"
    name: str  # short, for the title: "InfluxDB", "state database"
    label: str  # which one: "InfluxDB v1 at http://influx:8086 (database facility_twin)"
    since_ns: int
    error: str
    until_ns: int | None = None  # None while it lasts
    late_batches: int = 0  # batches that waited for it and were stored after it ended

    def duration_s(self, now_ns: int) -> float:
        return ((self.until_ns if self.until_ns is not None else now_ns) - self.since_ns) / 1e9


def _clock(ns: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ns / 1e9))


def outage_findings(rule: CollectorHealthRule, outage: Outage, now_ns: int) -> list[Finding]:
    """The findings one outage deserves at `now_ns`: a raise once it lasted `min_duration_s`, and a
    clear when it is over. Applying them twice changes nothing (the work-order store deduplicates)."""
    lasted_s = outage.duration_s(now_ns)
    if lasted_s < rule.min_duration_s:
        return []
    noun = "unreachable" if outage.dependency == "sink" else "failing"
    since = _clock(outage.since_ns)
    title = rule.render_title(f"{outage.name} {noun} since {since}", dependency=outage.name, since=since)
    evidence: dict[str, Any] = {"kind": "collector_health", "dependency": outage.dependency, "label": outage.label,
                                "since_ns": outage.since_ns, "error": outage.error,
                                "condition": f"{outage.dependency} failing for at least {rule.min_duration_s:g}s"}
    desc = rule.description or (
        f"The collector cannot use its {outage.dependency.replace('_', ' ')} ({outage.label}) since {since}: "
        f"{outage.error}. Agents keep their batches queued and resend them; nothing in the field is wrong and "
        "no data-quality work order is raised for it. Bring it back; the collector catches up by itself.")
    findings = [Finding("raise", rule.name, COLLECTOR_ASSET, rule.severity, title, desc, outage.since_ns,
                        evidence, "collector", outage.name)]
    if outage.until_ns is not None:
        recovered = (f"{outage.dependency.replace('_', ' ')} recovered after {lasted_s:.0f} s, "
                     f"{outage.late_batches} batches stored late")
        findings.append(Finding("clear", rule.name, COLLECTOR_ASSET, rule.severity, title, recovered,
                                outage.until_ns, evidence | {"until_ns": outage.until_ns,
                                                             "lasted_s": round(lasted_s, 1),
                                                             "late_batches": outage.late_batches},
                                "collector", outage.name))
    return findings
