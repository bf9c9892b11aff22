"""twin-collector: run | check-config | hash-token | work-orders list|show|ack|close | assets | simulate | backtest.

`--config` may come before or after the subcommand and defaults to /etc/twin-collector/collector.toml.
Only `run` needs the secrets (API token, InfluxDB and webhook credentials): the operator commands never
read them, and `check-config` outside the unit reports those it cannot read as warnings
(`--strict-secrets`: errors).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from collector import __version__
from collector.workorders.prognosis import format_remaining_life
from runtime.command_line import (
    add_config_option,
    config_path,
    report_check,
    require_readable_config,
    run_command,
    utc_text,
)
from runtime.errors import ConfigError
from runtime.secrets import SecretPolicy, UnreadableSecret, secret_policy

if TYPE_CHECKING:
    from collector.config import CollectorConfig

__all__ = ["DEFAULT_CONFIG", "main"]

DEFAULT_CONFIG = Path("/etc/twin-collector/collector.toml")
SERVICE_GROUP = "twin-collector"


def _load(args: argparse.Namespace, policy: SecretPolicy) -> tuple[CollectorConfig, list[UnreadableSecret]]:
    # Imported here: the collector's modules need the 'collector' extra, and without it the command
    # should say so (run_command) instead of failing at import.
    from collector.config import load_collector_config

    path = config_path(args, DEFAULT_CONFIG)
    require_readable_config(path, SERVICE_GROUP)
    with secret_policy(policy) as unreadable:
        return load_collector_config(path), unreadable


def _cmd_run(args: argparse.Namespace) -> int:
    from collector.config import load_collector_config
    from collector.daemon import CollectorDaemon
    from collector.metrics import collector_registry
    from runtime.logs import setup_logging
    from runtime.service import serve

    path = config_path(args, DEFAULT_CONFIG)
    config, _ = _load(args, SecretPolicy.REQUIRE)
    setup_logging(args.log_level or config.collector.log_level)
    asyncio.run(serve(config, lambda: load_collector_config(path), CollectorDaemon, lambda c: c.metrics,
                      collector_registry))
    return 0


def _cmd_check_config(args: argparse.Namespace) -> int:
    from collector.config import load_collector_config

    if args.file is not None:
        args.config = args.file
    path = config_path(args, DEFAULT_CONFIG)
    require_readable_config(path, SERVICE_GROUP)
    with secret_policy(SecretPolicy.CHECK) as unreadable:
        config = load_collector_config(path)
        if config.influx is not None:  # the sink reads its credentials only when it starts
            config.influx.token_value() if config.influx.api == "v2" else config.influx.password_value()
    sink = f"InfluxDB ({config.influx.api} API)" if config.influx else "embedded SQLite store"
    kinds = ", ".join(sorted({r.kind for r in config.rules}))
    return report_check(f"{path}: OK: listen {config.collector.listen}, "
                        f"{len(config.token_hashes)} agents, {len(config.rules)} rules"
                        f"{f' ({kinds})' if kinds else ''}, sink: {sink}, {len(config.webhooks)} webhooks, "
                        f"API: {config.api.listen if config.api else 'off'}", unreadable, args.strict_secrets)


def _cmd_hash_token(args: argparse.Namespace) -> int:
    from collector.config import hash_token

    # A token piped in (`... | twin-collector hash-token`) is read as it comes; only a terminal is
    # asked for it without echo.
    piped = args.stdin or not sys.stdin.isatty()
    token = sys.stdin.readline().strip() if piped else getpass.getpass("agent token: ")
    if len(token) < 16:
        print("refusing a token shorter than 16 characters", file=sys.stderr)
        return 2
    print(hash_token(token))
    return 0


def _fmt_ts(ns: int | None) -> str:
    return utc_text(ns or 0)


def _print_work_order(wo: dict[str, Any]) -> None:
    from collector.workorders.history import series_label

    print(f"{wo['ref']}  [{wo['severity'].upper()}] {wo['title']}")
    print(f"  asset {wo['asset']}, rule {wo['rule']} ({wo.get('category', 'corrective')}), status {wo['status']}, "
          f"raised {_fmt_ts(wo['created_ns'])}"
          + (", condition cleared " + _fmt_ts(wo['condition_cleared_ns']) if wo['condition_cleared_ns'] else ""))
    print(f"  {wo['description']}")
    cause = wo.get("probable_cause")
    if cause:
        print(f"  probable cause: {cause['ref']} on {cause['asset']} ({cause['relation']}): {cause['title']}")
    ev = wo["evidence"]
    print("  evidence: " + ", ".join(f"{k}={v}" for k, v in ev.items()
                                     if not k.endswith("_ns") and k not in ("forecast", "series", "also")
                                     and not (k == "points" and isinstance(v, list))))
    for p in ev.get("points") if isinstance(ev.get("points"), list) else []:
        print(f"    point {p['point']}: {p['reason'] or 'BAD'} (last report {_fmt_ts(p['last_report_ns'])})")
    for subject, other in ev.get("also", {}).items():
        print(f"  also {subject}: " + ", ".join(f"{k}={v}" for k, v in other.items()
                                                if not k.endswith("_ns") and k not in ("forecast", "series")))
    for step in ev.get("forecast", []):
        print(f"    forecast +{step['days']:g} d: {step['value']} (band {step['low']} .. {step['high']})")
    ctx = wo["context"]
    if ctx.get("agent"):
        a = ctx["agent"]
        print(f"  agent {a['id']}: {'connected' if a['connected'] else 'disconnected'}, last seen "
              f"{_fmt_ts(a['last_seen_ns'])}, serves {', '.join(a['assets']) or 'no assets'}")
    state = ctx.get("state", {})
    if state.get("state"):
        print(f"  asset state: {state.get('state')} (health {state.get('health')}), agent {state.get('agent')}")
    pts = ctx.get("points", {})
    shown = ", ".join(f"{p}={v['last']:.4g}{v['unit']}" for p, v in pts.items() if v.get("last") is not None)
    if shown:
        print(f"  current values: {shown}")
    for sensor, v in ctx.get("vibration", {}).items():
        print(f"  vibration {sensor}: {v.get('velocity_rms_mm_s', 0):.2f} mm/s zone {v.get('iso_zone') or '-'}, "
              f"fault {v.get('fault') or '-'} ({v.get('confidence', 0):.2f}), health {v.get('health', 0):.0f}")
    for sensor, rl in ctx.get("remaining_life", {}).items():
        print(f"  remaining life {sensor}: {format_remaining_life(rl)}")
    trend = ctx.get("trend")
    if trend and trend.get("values"):
        vals = [v for _, v in trend["values"]]
        print(f"  trend of {series_label(trend['series'])} ({len(vals)} values since "
              f"{_fmt_ts(trend['values'][0][0])}): "
              f"{vals[0]:.4g} -> {vals[-1]:.4g} (min {min(vals):.4g}, max {max(vals):.4g})")
    for rel, label in (("depends_on", "depends on"), ("dependents", "needed by")):
        for dep in ctx.get(rel, []):
            print(f"  {label} {dep['asset']}: {dep['state']}"
                  + (f", open {', '.join(dep['open_work_orders'])}" if dep["open_work_orders"] else ""))
    changes = ctx.get("recent_changes", [])
    if changes:
        print(f"  recent changes ({len(changes)}): " + "; ".join(
            f"{_fmt_ts(c['ts_ns'])} {c['point'] or 'asset'} {c['old']}->{c['new']}" for c in changes[:5]))
    for e in ctx.get("earlier_work_orders", []):
        print(f"  earlier {e['ref']} {_fmt_ts(e['created_ns'])} [{e['severity']}] {e['rule']}, {e['status']}"
              + (f" by {e['closed_by']}" if e.get("closed_by") else "") + f": {e['title']}")
    if wo["acknowledged_by"]:
        print(f"  acknowledged by {wo['acknowledged_by']} at {_fmt_ts(wo['acknowledged_ns'])}")
    if wo["closed_by"]:
        print(f"  closed by {wo['closed_by']} at {_fmt_ts(wo['closed_ns'])}")
    if wo["note"]:
        print(f"  note: {wo['note']}")


def _parse_ref(ref: str) -> int:
    from collector.workorders.store import parse_ref

    try:
        return parse_ref(ref)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _no_state_file(config: CollectorConfig) -> bool:
    """True (and says so) when the state is the embedded file and it does not exist yet."""
    if not config.state.url and not config.db_path.exists():
        print(f"no collector database at {config.db_path}: has the collector run with this config?",
              file=sys.stderr)
        return True
    return False


def _cmd_simulate(args: argparse.Namespace) -> int:
    from collector.whatif import load_rules_file, parse_since, run_whatif

    config, _ = _load(args, SecretPolicy.SKIP)
    proposed = load_rules_file(args.rules, config.rules, replace_all=args.replace_all)
    if config.state.url:
        print("simulate replays the embedded SQLite state; with [state] url (PostgreSQL) it is not available yet",
              file=sys.stderr)
        return 1
    if not config.db_path.exists():
        print(f"no collector database at {config.db_path}: has the collector run with this config?",
              file=sys.stderr)
        return 1
    now = time.time_ns()
    report = run_whatif(config.db_path, config.rules, proposed, now - parse_since(args.since), now)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format_text())
    return 0


async def _work_orders(args: argparse.Namespace) -> int:
    from collector.fleet import FleetTwin

    config, _ = _load(args, SecretPolicy.SKIP)
    if _no_state_file(config):
        return 1
    from collector.itsm import Outbox

    os.umask(0o007)  # files SQLite creates beside the database stay usable by the daemon (same group)

    # changes made here are queued for the ITSM webhooks like the daemon's; the daemon delivers them
    fleet = FleetTwin(config.state_database, listener=Outbox(config.webhooks))
    await fleet.open()
    try:
        assert fleet.work_orders is not None
        if args.action == "list":
            orders = await fleet.work_orders.list(status=args.status, asset=args.asset, severity=args.severity,
                                                  category=args.category, rule=args.rule)
            if args.json:
                print(json.dumps([o.to_dict() for o in orders], indent=2))
            elif not orders:
                print("no work orders")
            for o in orders if not args.json else []:
                print(f"{o.ref}  {o.status:<12} {o.severity:<8} {o.category:<12} {o.asset:<16} {o.rule:<24} {o.title}")
            return 0
        wo_id = _parse_ref(args.ref)
        if args.action == "show":
            wo = await fleet.work_orders.get(wo_id)
            if wo is None:
                print(f"no work order {args.ref}", file=sys.stderr)
                return 1
            if args.json:
                print(json.dumps(wo.to_dict(), indent=2))
            else:
                _print_work_order(wo.to_dict())
                for ts, action, detail in await fleet.work_orders.events(wo_id):
                    print(f"  {_fmt_ts(ts)} {action}: {detail}")
            return 0
        # `sudo -u twin-collector twin-collector work-orders ack ...` records the person, not the service user
        who = args.by or os.environ.get("SUDO_USER") or getpass.getuser()
        try:
            if args.action == "ack":
                wo = await fleet.acknowledge(wo_id, who, args.note)
            else:
                wo = await fleet.close_work_order(wo_id, who, args.note)
        except (LookupError, ValueError) as exc:
            print(str(exc), file=sys.stderr)
            return 1
        print(f"{wo.ref} is now {wo.status}")
        if args.action == "close":
            from collector.workorders.collector_health import collector_health_rule
            from collector.workorders.store import close_warning

            rule = next((r for r in config.rules if r.name == wo.rule), None) or collector_health_rule(config.rules)
            warning = close_warning(wo, rule.reraise_after_s if rule.name == wo.rule else 0.0)
            if warning:
                print(f"warning: {warning}", file=sys.stderr)
        return 0
    finally:
        await fleet.close()


async def _assets(args: argparse.Namespace) -> int:
    from collector.fleet import FleetTwin

    config, _ = _load(args, SecretPolicy.SKIP)
    if _no_state_file(config):
        return 1
    os.umask(0o007)  # files SQLite creates beside the database stay usable by the daemon (same group)
    fleet = FleetTwin(config.state_database)
    await fleet.open()
    try:
        if args.action == "release":
            if not await fleet.release_asset(args.asset):
                print(f"no asset {args.asset!r}", file=sys.stderr)
                return 1
            print(f"{args.asset} released: the next agent that declares it owns it")
            return 0
        assets = await fleet.assets()
        if args.json:
            keys = ("id", "type", "name", "agent", "state", "health", "link", "link_reason", "condition",
                    "condition_reason", "remaining_life")
            print(json.dumps([{k: a[k] for k in keys} for a in assets], indent=2))
            return 0
        print(f"{'ASSET':<16} {'TYPE':<12} {'AGENT':<12} {'LINK':<9} {'CONDITION':<9} WHY")
        for a in assets:
            print(f"{a['id']:<16} {a['type']:<12} {a['agent'] or '(released)':<12} {a['link']:<9} "
                  f"{a['condition']:<9} link: {a['link_reason'] or '-'}; condition: {a['condition_reason'] or '-'}")
            for sensor, rl in a.get("remaining_life", {}).items():
                print(f"{'':<16} remaining life {sensor}: {format_remaining_life(rl)}")
        for asset, missing in await fleet.undeclared_dependencies():
            print(f"warning: {asset} depends on {missing}, which no agent declares", file=sys.stderr)
        return 0
    finally:
        await fleet.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="twin-collector", description="facility-twin central collector")
    parser.add_argument("--version", action="version", version=f"twin-collector {__version__}")
    add_config_option(parser, DEFAULT_CONFIG)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the collector daemon")
    add_config_option(p, None)
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("check-config", help="validate a config file and print clear errors")
    p.add_argument("file", type=Path, nargs="?", help="the file to check (same as --config)")
    add_config_option(p, None)
    p.add_argument("--strict-secrets", action="store_true",
                   help="secrets that cannot be read here are errors, not warnings (inside the unit)")
    p.set_defaults(func=_cmd_check_config)

    p = sub.add_parser("hash-token", help="print the token_sha256 for an agent token (piped, or asked for)")
    p.add_argument("--stdin", action="store_true", help="read the token from standard input (the default "
                   "when it is not a terminal)")
    p.set_defaults(func=_cmd_hash_token)

    assets = sub.add_parser("assets", help="list assets and their agents; release an asset that moved")
    add_config_option(assets, None)
    assets_sub = assets.add_subparsers(dest="action", required=True)
    p = assets_sub.add_parser("list", help="each asset's link (can the twin see it) and condition (good, watch, act)")
    add_config_option(p, None)
    p.add_argument("--json", action="store_true")
    p = assets_sub.add_parser("release", help="let the next agent that declares the asset own it")
    add_config_option(p, None)
    p.add_argument("asset")
    assets.set_defaults(func=lambda a: asyncio.run(_assets(a)))

    wo = sub.add_parser("work-orders", help="list, show, acknowledge and close work orders")
    add_config_option(wo, None)
    wo_sub = wo.add_subparsers(dest="action", required=True)
    p = wo_sub.add_parser("list")
    add_config_option(p, None)
    p.add_argument("--status", choices=["open", "acknowledged", "closed", "active"])
    p.add_argument("--asset")
    p.add_argument("--severity", choices=["info", "minor", "major", "critical"])
    p.add_argument("--category", choices=["corrective", "preventive", "data_quality", "collector"])
    p.add_argument("--rule")
    p.add_argument("--json", action="store_true")
    p = wo_sub.add_parser("show")
    add_config_option(p, None)
    p.add_argument("ref")
    p.add_argument("--json", action="store_true")
    for name in ("ack", "close"):
        p = wo_sub.add_parser(name)
        add_config_option(p, None)
        p.add_argument("ref")
        p.add_argument("--by", help="who (default: the current user)")
        p.add_argument("--note", default="")
    wo.set_defaults(func=lambda a: asyncio.run(_work_orders(a)))

    p = sub.add_parser("simulate", help="what-if: replay the stored history through proposed rules")
    add_config_option(p, None)
    p.add_argument("--rules", "-r", required=True, type=Path,
                   help="TOML file with the proposed [[rules]]: rules with the `name` of a current rule "
                        "replace it, others are added; `--replace-all` makes the file the whole set")
    p.add_argument("--replace-all", action="store_true", help="the file replaces every current rule")
    p.add_argument("--since", default="7d", help="how far back to replay: 7d, 12h, 90m (default 7d)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser("backtest", help="replay recorded vibration snapshots through the analytics and the rules")
    from collector.backtest_cli import add_arguments as backtest_arguments
    from collector.backtest_cli import run as backtest_run

    backtest_arguments(p)
    p.set_defaults(func=backtest_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda: args.func(args), "twin-collector")


if __name__ == "__main__":
    sys.exit(main())
