"""What-if: replay the stored indicator history through a proposed rule set, beside the current one.

    twin-collector simulate --config collector.toml --rules proposed.toml --since 7d

This is how a team tests a threshold change before applying it. Both rule sets run through the
same code as ingest (collector/workorders/evaluate.py) over the same history, in time order, each
value seeing only the past, so the comparison isolates the rule change: which work orders the
proposal would add, which it would no longer raise, and which it would raise earlier or later.

Production is never touched: the fleet database is opened read-only (SQLite `mode=ro`), rule state
lives in memory. The replay assumes a technician closes each work order once its condition has
cleared, so a condition that returns raises a new one, as it would in production. Limits: the
replay has the resolution of the history (`[history] summary_resolution_s`); data-quality rules (stale,
bad quality, device offline) are judged every TICK_S of replayed data time, as production judges them
at each batch's data time; an agent counts as offline when none of its assets sends data.
Rules are matched between the two sets by name: a renamed rule shows as removed plus added.

The proposal is a change to the current rules (`proposed_rules`): a `[[rules]]` table whose `name` is
a current rule's changes that rule and needs only the keys it changes (`name = "filter_clogged"`,
`above = 280.0`); other tables are new rules; `remove = true` drops a rule. `--replace-all` (API:
`"replace_all": true`) makes the file the whole rule set instead. Errors name the keys as the
proposal wrote them (`rules[0].above`), and say when a key was kept from the current rule.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from collector.workorders import history
from collector.workorders.evaluate import (
    DATA_QUALITY_KINDS,
    AgentStatus,
    PointReport,
    Rule,
    RuleStateInMemory,
    SummaryObs,
    evaluate_data_quality,
    evaluate_summary,
    evaluate_tick,
    evaluate_vibration,
    parse_rules,
)
from collector.workorders.rules import SEVERITIES, Finding
from runtime.errors import ConfigError
from runtime.tomlconfig import load_toml

__all__ = ["SimulatedLifecycle", "SimulatedWorkOrder", "WhatIfReport", "compare", "load_rules_file", "parse_since",
           "proposed_rules", "read_rule_tables", "replay", "run_whatif"]

TICK_S = 60.0  # how often (data time) silence rules are judged in a replay
SAME_TIME_TOLERANCE_S = 1.0


def parse_since(text: str) -> int:
    """`7d`, `12h`, `90m`, `3600s` or a number of seconds -> nanoseconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if not m:
        raise ConfigError(f"--since: not a duration: {text!r} (e.g. 7d, 12h, 90m)")
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}[m.group(2)]
    return int(float(m.group(1)) * unit * 1e9)


def read_rule_tables(path: str | Path) -> list[Any]:
    """The `[[rules]]` tables of a TOML file (a rules-only file or a whole collector config)."""
    data = load_toml(path)
    if not isinstance(data.get("rules"), list):
        raise ConfigError(f"{path}: no [[rules]] tables")
    return list(data["rules"])


def load_rules_file(path: str | Path, current: Sequence[Rule] = (), *, replace_all: bool = True) -> tuple[Rule, ...]:
    """The rule set proposed by a file: the whole set, or (replace_all=False) a change to `current`."""
    tables = read_rule_tables(path)
    try:
        return parse_rules(tables) if replace_all else proposed_rules(current, tables)
    except ConfigError as exc:
        raise ConfigError(f"{path}:\n{exc}") from None


def _table(rule: Rule) -> dict[str, Any]:
    """A parsed rule as the table that would parse to it again (only the keys that were given)."""
    return rule.model_dump(exclude_unset=True) | {"name": rule.name, "kind": rule.kind}


def proposed_rules(current: Sequence[Rule], changes: Sequence[Any], prefix: str = "rules") -> tuple[Rule, ...]:
    """`current` with `changes` applied: a table naming a current rule overrides the keys it gives
    (with another `kind`, it replaces the rule), `remove = true` drops it, other tables are added.
    ConfigError lines name `<prefix>[i].<key>` with i the index in `changes`."""
    by_name = {r.name: r for r in current}
    errors: list[str] = []
    merged: dict[str, Rule] = dict(by_name)
    seen: dict[str, int] = {}
    for i, change in enumerate(changes):
        key = f"{prefix}[{i}]"
        if not isinstance(change, Mapping):
            errors.append(f"{key}: must be a table")
            continue
        name = change.get("name")
        if not isinstance(name, str) or not name:
            errors.append(f"{key}.name: required: the name of the rule to change, or of a new rule")
            continue
        if name in seen:
            errors.append(f"{key}.name: {name!r} is already changed by {prefix}[{seen[name]}]")
            continue
        seen[name] = i
        own = {k: v for k, v in change.items() if k != "remove"}
        if change.get("remove") is True:
            if name not in by_name:
                errors.append(f"{key}.remove: there is no current rule {name!r} to remove")
            merged.pop(name, None)
            continue
        base = by_name.get(name)
        table = own if base is None or own.get("kind", base.kind) != base.kind else _table(base) | own
        try:
            (rule,) = parse_rules([table], prefix)
        except ConfigError as exc:
            kept = _table(base) if base is not None and table is not own else {}
            errors += [_note_inherited(line.replace(f"{prefix}[0]", key, 1), key, own, kept, name)
                       for line in str(exc).splitlines()]
            continue
        merged[name] = rule
    if errors:
        raise ConfigError("\n".join(errors))
    return tuple(merged.values())


def _note_inherited(line: str, key: str, own: Mapping[str, Any], kept: Mapping[str, Any], name: str) -> str:
    """Say which keys an error is about that the proposal did not write (they came from the current rule)."""
    m = re.match(re.escape(key) + r"(?:\.([A-Za-z0-9_]+))?: (.*)", line)
    if m is None:
        return line
    named = {m.group(1)} if m.group(1) else set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", m.group(2)))
    inherited = sorted(k for k in named if k in kept and k not in own)
    if not inherited:
        return line
    return f"{line} ({', '.join(inherited)} kept from the current rule {name!r}: give it here to change it)"


@dataclass
class SimulatedWorkOrder:
    asset: str
    rule: str
    category: str
    severity: str
    title: str
    raised_ns: int
    escalated_ns: int | None = None
    cleared_ns: int | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class MemoryRuleStore(RuleStateInMemory):
    """Rule state in memory; history read from the read-only database up to the replay's present."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        super().__init__()
        self.conn = conn

    async def series(self, asset: str, key: str, since_ns: int, until_ns: int) -> tuple[np.ndarray, np.ndarray]:
        return history.series_sync(self.conn, asset, key, since_ns, until_ns)


class SimulatedLifecycle:
    """Findings -> simulated work orders (one open per (asset, rule); closed when the condition clears).
    Shared by the what-if replay and the backtest."""

    def __init__(self) -> None:
        self.open: dict[tuple[str, str], SimulatedWorkOrder] = {}
        self.all: list[SimulatedWorkOrder] = []

    def apply(self, f: Finding) -> None:
        key = (f.asset, f.rule)
        wo = self.open.get(key)
        if f.action in ("raise", "escalate") and wo is None:
            wo = SimulatedWorkOrder(f.asset, f.rule, f.category, f.severity, f.title, f.ts_ns, evidence=f.evidence,
                                    description=f.description)
            self.open[key] = wo
            self.all.append(wo)
        elif f.action == "escalate" and wo is not None:
            if SEVERITIES.index(f.severity) > SEVERITIES.index(wo.severity):
                wo.severity, wo.escalated_ns = f.severity, f.ts_ns
        elif f.action == "clear" and wo is not None:
            wo.cleared_ns = f.ts_ns
            del self.open[key]


def replay(conn: sqlite3.Connection, rules: Sequence[Rule], since_ns: int,
           until_ns: int | None = None) -> list[SimulatedWorkOrder]:
    """Run `rules` over the stored history from `since_ns`; return the work orders they would raise."""
    return asyncio.run(_replay(conn, rules, since_ns, until_ns))


async def _replay(conn: sqlite3.Connection, rules: Sequence[Rule], since_ns: int,
                  until_ns: int | None) -> list[SimulatedWorkOrder]:
    types = dict(conn.execute("SELECT asset, type FROM assets").fetchall())
    agent_of = dict(conn.execute("SELECT asset, agent_id FROM assets").fetchall())
    expected = {(a, p): float(e) for a, p, e in conn.execute(
        "SELECT asset, point, expected_interval_s FROM points WHERE expected_interval_s > 0").fetchall()}
    store = MemoryRuleStore(conn)
    life = SimulatedLifecycle()
    ticking = any(r.kind in (*DATA_QUALITY_KINDS, "agent_offline") for r in rules)
    last_seen: dict[tuple[str, str], tuple[int, bool, str]] = {}  # (ts, bad, reason) of the latest report
    agent_seen: dict[str, int] = {}
    next_tick: int | None = None
    tick_ns = int(TICK_S * 1e9)

    async def tick(now: int) -> None:
        first = min((ts for ts, _, _ in last_seen.values()), default=now)
        reports = [PointReport(a, types.get(a, ""), p, expected.get((a, p), 0.0), ts, bad, reason, first)
                   for (a, p), (ts, bad, reason) in sorted(last_seen.items())]
        served: dict[str, list[str]] = {}
        for a, ag in agent_of.items():
            served.setdefault(ag, []).append(a)
        agents = [AgentStatus(ag, ts, sorted(served.get(ag, []))) for ag, ts in agent_seen.items()]
        for f in await evaluate_data_quality(rules, store, now, reports) + await evaluate_tick(rules, store, now,
                                                                                             agents):
            life.apply(f)

    for obs in history.iter_observations(conn, since_ns, until_ns):
        if ticking:
            next_tick = obs.ts_ns if next_tick is None else next_tick
            while next_tick < obs.ts_ns:
                await tick(next_tick)
                next_tick += tick_ns
        asset_type = types.get(obs.asset, "")
        if isinstance(obs, SummaryObs):
            findings = await evaluate_summary(rules, store, obs, asset_type)
            last_seen[(obs.asset, obs.point)] = (obs.ts_ns, obs.count == 0 and obs.bad > 0, obs.reason)
        else:
            findings = await evaluate_vibration(rules, store, obs, asset_type)
            last_seen[(obs.asset, obs.sensor)] = (obs.ts_ns, False, "")
        if obs.asset in agent_of:
            agent_seen[agent_of[obs.asset]] = obs.ts_ns
        for f in findings:
            life.apply(f)
    return life.all


@dataclass
class WhatIfReport:
    since_ns: int
    until_ns: int
    current: list[SimulatedWorkOrder]
    proposed: list[SimulatedWorkOrder]
    added: list[dict[str, Any]]
    removed: list[dict[str, Any]]
    earlier: list[dict[str, Any]]
    later: list[dict[str, Any]]
    unchanged: list[dict[str, Any]]
    recorded: list[dict[str, Any]]  # what production actually raised in the period

    def to_dict(self) -> dict[str, Any]:
        return {"since_ns": self.since_ns, "until_ns": self.until_ns,
                "current": [w.to_dict() for w in self.current], "proposed": [w.to_dict() for w in self.proposed],
                "added": self.added, "removed": self.removed, "earlier": self.earlier, "later": self.later,
                "unchanged": self.unchanged, "recorded": self.recorded,
                "summary": {"current": len(self.current), "proposed": len(self.proposed), "added": len(self.added),
                            "removed": len(self.removed), "earlier": len(self.earlier), "later": len(self.later),
                            "unchanged": len(self.unchanged)}}

    def format_text(self) -> str:
        def when(ns: int) -> str:
            return time.strftime("%Y-%m-%d %H:%M", time.localtime(ns / 1e9))

        def row(w: dict[str, Any]) -> str:
            return f"{w['asset']:<16} {w['rule']:<24} {w['severity']:<8} {when(w['raised_ns'])}  {w['title']}"

        lines = [f"what-if over {when(self.since_ns)} .. {when(self.until_ns)}: current rules raise "
                 f"{len(self.current)} work orders, proposed rules {len(self.proposed)} "
                 f"(production recorded {len(self.recorded)})", ""]
        for label, items in (("added (only the proposed rules raise these)", self.added),
                             ("removed (the proposed rules no longer raise these)", self.removed)):
            lines.append(f"{label}: {len(items)}")
            lines += ["  " + row(w) for w in items]
        for label, items in (("earlier", self.earlier), ("later", self.later)):
            lines.append(f"{label}: {len(items)}")
            lines += [f"  {row(w['proposed'])}  ({w['shift_s'] / 3600:+.1f} h vs {when(w['current']['raised_ns'])})"
                      for w in items]
        lines.append(f"unchanged: {len(self.unchanged)}")
        return "\n".join(lines)


def compare(current: list[SimulatedWorkOrder], proposed: list[SimulatedWorkOrder]) -> dict[str, list[dict[str, Any]]]:
    """Pair work orders of the same (asset, rule) in time order; the rest were added or removed."""
    out: dict[str, list[dict[str, Any]]] = {"added": [], "removed": [], "earlier": [], "later": [], "unchanged": []}
    keys = {(w.asset, w.rule) for w in current} | {(w.asset, w.rule) for w in proposed}
    for key in sorted(keys):
        cur = sorted((w for w in current if (w.asset, w.rule) == key), key=lambda w: w.raised_ns)
        new = sorted((w for w in proposed if (w.asset, w.rule) == key), key=lambda w: w.raised_ns)
        for c, p in zip(cur, new, strict=False):
            shift = (p.raised_ns - c.raised_ns) / 1e9
            pair = {"current": c.to_dict(), "proposed": p.to_dict(), "shift_s": shift}
            bucket = "earlier" if shift < -SAME_TIME_TOLERANCE_S else "later" if shift > SAME_TIME_TOLERANCE_S \
                else "unchanged"
            out[bucket].append(pair)
        out["removed"] += [w.to_dict() for w in cur[len(new):]]
        out["added"] += [w.to_dict() for w in new[len(cur):]]
    return out


def run_whatif(db_path: Path, current_rules: Sequence[Rule], proposed_rules: Sequence[Rule], since_ns: int,
               until_ns: int | None = None) -> WhatIfReport:
    """Replay both rule sets over the history from `since_ns` (absolute ns) on a read-only connection."""
    if not db_path.exists():
        raise FileNotFoundError(f"no collector database at {db_path}")
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        until = until_ns if until_ns is not None else time.time_ns()
        current = replay(conn, current_rules, since_ns, until)
        proposed = replay(conn, proposed_rules, since_ns, until)
        recorded = [{"ref": f"WO-{i:06d}", "asset": a, "rule": r, "severity": s, "title": t, "raised_ns": c}
                    for i, a, r, s, t, c in conn.execute(
                        "SELECT id, asset, rule, severity, title, created_ns FROM work_orders "
                        "WHERE created_ns >= ? AND created_ns <= ? ORDER BY id", (since_ns, until)).fetchall()]
    finally:
        conn.close()
    diff = compare(current, proposed)
    return WhatIfReport(since_ns, until, current, proposed, diff["added"], diff["removed"], diff["earlier"],
                        diff["later"], diff["unchanged"], recorded)
