"""twin-agent: run | check-config | status | diagnose | opcua-cert | probe.

`--config` may come before or after the subcommand and defaults to /etc/twin-agent/agent.toml.
Only `run` needs the secrets (the uplink token, source passwords): `status` never reads them, and
`check-config` outside the unit reports those it cannot read as warnings (`--strict-secrets`: errors).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from agent import __version__
from runtime.command_line import (
    add_config_option,
    age_text,
    config_path,
    report_check,
    require_readable_config,
    run_command,
    utc_text,
)
from runtime.errors import ConfigError
from runtime.extras import import_feature
from runtime.secrets import SecretPolicy, UnreadableSecret, secret_policy

if TYPE_CHECKING:
    from agent.config import AgentConfig

__all__ = ["DEFAULT_CONFIG", "LOCK_FILE", "main"]

DEFAULT_CONFIG = Path("/etc/twin-agent/agent.toml")
LOCK_FILE = "twin-agent.pid"  # in state_dir: held by the running agent (runtime/instance_lock.py)
SERVICE_GROUP = "twin-agent"

LOW_DISK_BYTES = 1024 * 1024  # below this, `status` says the state directory's disk is full

# Optional subcommands live in their own modules: (module, help). Each exposes add_arguments/run.
TOOL_COMMANDS = {
    "diagnose": ("agent.diagnose", "analyse vibration waveform files and print indicators and diagnosis"),
    "opcua-cert": ("agent.connectors.opcua.certificate", "create the agent's OPC-UA client certificate and key"),
}


def _load(args: argparse.Namespace, policy: SecretPolicy) -> tuple[AgentConfig, list[UnreadableSecret]]:
    from agent.config import load_agent_config

    path = config_path(args, DEFAULT_CONFIG)
    require_readable_config(path, SERVICE_GROUP)
    with secret_policy(policy) as unreadable:
        return load_agent_config(path), unreadable


def _cmd_run(args: argparse.Namespace) -> int:
    from agent.config import load_agent_config
    from agent.daemon import AgentDaemon
    from agent.metrics import agent_registry
    from runtime.instance_lock import InstanceLock
    from runtime.logs import setup_logging
    from runtime.service import serve

    path = config_path(args, DEFAULT_CONFIG)
    config, _ = _load(args, SecretPolicy.REQUIRE)
    setup_logging(args.log_level or config.agent.log_level)
    with InstanceLock(config.state_dir / LOCK_FILE, "twin-agent"):
        asyncio.run(serve(config, lambda: load_agent_config(path), AgentDaemon, lambda c: c.metrics,
                          agent_registry))
    return 0


def _cmd_check_config(args: argparse.Namespace) -> int:
    from runtime.tomlconfig import load_toml

    if args.file is not None:
        args.config = args.file
    path = config_path(args, DEFAULT_CONFIG)
    require_readable_config(path, SERVICE_GROUP)
    data = load_toml(path)
    if "sources" in data and not {"agent", "uplink"} & data.keys():
        return _check_fragment(path, data, args.strict_secrets)
    config, unreadable = _load(args, SecretPolicy.CHECK)
    points = sum(len(a.points) for a in config.assets)
    path = config_path(args, DEFAULT_CONFIG)
    return report_check(f"{path}: OK: agent {config.agent.id}, {len(config.assets)} assets, "
                        f"{len(config.connectors)} sources, {points} points", unreadable, args.strict_secrets)


def _check_fragment(path: Path, data: dict[str, Any], strict: bool) -> int:
    """A file of `[[sources]]` only (a connector's sample.toml, a part being written): each source is
    validated as in a whole configuration; its points may name any asset."""
    from agent.connectors import build_connector

    unknown = sorted(set(data) - {"sources"})
    if unknown:
        raise ConfigError(f"{path}: {', '.join(unknown)}: unknown in a sources-only file (a whole configuration "
                          "also has [agent] and [uplink])")
    if not isinstance(data["sources"], list):
        raise ConfigError(f"{path}: sources: must be [[sources]] tables")
    errors, points, assets = [], 0, set()
    with secret_policy(SecretPolicy.CHECK) as unreadable:
        for i, table in enumerate(data["sources"]):
            try:
                connector = build_connector(table, f"sources[{i}]")
            except ConfigError as exc:
                errors.append(str(exc))
                continue
            points += len(connector.points())
            assets |= {p.asset for p in connector.points()}
    if errors:
        raise ConfigError(f"{path}:\n" + "\n".join(errors))
    return report_check(f"{path}: OK (sources only): {len(data['sources'])} sources, {points} points for assets "
                        f"{', '.join(sorted(assets))}; paste them next to [agent], [uplink] and those [[assets]]",
                        unreadable, strict)


def _disk_free(path: Path) -> int | None:
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _cmd_status(args: argparse.Namespace) -> int:
    from agent.status_file import STATUS_FILE, ask_for_status
    from runtime.instance_lock import probe_instance

    config, _ = _load(args, SecretPolicy.SKIP)
    instance = probe_instance(config.state_dir / LOCK_FILE)
    # The daemon rewrites its status file only now and then (flash wear): ask it for a fresh one.
    unanswered = ask_for_status(config.state_dir, pid=instance.pid) if instance.running is True else ""
    path = config.state_dir / STATUS_FILE
    try:
        status: dict[str, Any] | None = json.loads(path.read_text())
    except FileNotFoundError:
        status = None
    except PermissionError:
        raise ConfigError(f"cannot read {path}: permission denied (is this user in group {SERVICE_GROUP}?)") \
            from None
    if status is None and (config.state_dir / "twin.sqlite").exists():
        try:
            status = asyncio.run(_status_from_state_files(config))
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot read the state files in {config.state_dir}: {exc}") from None
    if status is None and instance.running is not True:
        print(f"no state in {config.state_dir}: has the agent run with this config?", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"instance": {"running": instance.running, "pid": instance.pid,
                                       "started_ns": instance.started_ns, "stopped_ns": instance.stopped_ns}}
                         | (status or {}), indent=2))
        return 0
    print(_running_line(config, instance, status))
    if status is None:
        print("no status written yet")
        return 0
    _print_state(status, instance.running is True, config.state_dir, unanswered)
    return 0 if instance.running is not False else 3


def _running_line(config: AgentConfig, instance: Any, status: dict[str, Any] | None) -> str:
    head = f"twin-agent {config.agent.id} (site {config.agent.site}): "
    if instance.running is True:
        return head + f"running, pid {instance.pid}, since {utc_text(instance.started_ns)}"
    if instance.running is None:
        return head + f"cannot tell whether it runs ({instance.reason})"
    if instance.stopped_ns:
        return head + f"NOT RUNNING, stopped {utc_text(instance.stopped_ns)} ({age_text(instance.stopped_ns)})"
    last = (status or {}).get("updated_ns", 0)
    if last:
        return head + (f"NOT RUNNING; it did not stop cleanly: last sign of life {utc_text(last)} "
                       f"({age_text(last)})")
    return head + "NOT RUNNING"


def _print_state(status: dict[str, Any], running: bool, state_dir: Path, unanswered: str = "") -> None:
    written = status.get("updated_ns", 0)
    if running:
        note = f" (the agent could not be asked for a fresh one: {unanswered})" if unanswered in (
            "not permitted", "no answer") else ""
        print(f"status written {age_text(written)}, uptime {status['uptime_s']:.0f}s{note}")
    else:
        print(f"last known state, as of {utc_text(written)} ({age_text(written)}); nothing below is current:")
    q, u = status["queue"], status["uplink"]
    link = u.get("link") or ("connected" if u["connected"] else "disconnected")
    link = {"stalled": f"STALLED (no ack for {u.get('waiting_for_ack_s', 0):.0f}s)",
            "disconnected": "DISCONNECTED"}.get(link, link)
    if not running:
        link = "was connected" if u["connected"] else "was disconnected"
    error = f", last error: {u['last_error']}" if u["last_error"] else ""
    print(f"uplink: {link}, sent {u['sent']}, acked {u['acked']}, reconnects {u['reconnects']}{error}")
    print(f"queue: {q['batches']} batches, {q['bytes'] / 1024:.1f} KiB, dropped {q['dropped']}"
          + (f", {q['overflow_batches']} batches waiting in memory" if q.get("overflow_batches") else ""))
    free = _disk_free(state_dir)
    storage = status.get("storage", "ok")
    if storage != "ok":
        print(f"storage: {storage.upper() if storage == 'disk full' else storage}"
              + (f" since {age_text(q['storage_error_since_ns'])}" if q.get("storage_error_since_ns") else ""))
    if free is not None and free < LOW_DISK_BYTES:
        print(f"storage: DISK FULL: {free / 1024:.0f} KiB free on the filesystem of {state_dir}")
    behind = status.get("intervals", {}).get("clock_behind_s", 0)
    if behind:
        print(f"clock: {behind:.0f}s behind the last stored interval (stepped back); intervals are stored "
              "just after it until the clock catches up")
    for name, c in status["connectors"].items():
        word = ("online", "OFFLINE") if running else ("was online", "was OFFLINE")
        online = ", ".join(f"{d}={word[0] if o else word[1]}" for d, o in c["devices_online"].items())
        print(f"source {name}: polls {c['polls']}, errors {c['errors']}, decode errors {c['decode_errors']}"
              + (f" [{online}]" if online else ""))
    for asset, a in status["assets"].items():
        print(f"\n{asset} ({a['type']}): {a['state'] if running else 'was ' + str(a['state'])}")
        for point, p in a["points"].items():
            flag = "" if p["quality"] == "GOOD" and not p["stale"] else f"  {p['quality']} {p['reason']}".rstrip()
            if p["stale"] and p["quality"] == "GOOD":
                flag = "  STALE"
            print(f"  {point:<28} {p['value']:>14} {p['unit']:<6} {age_text(p['ts_ns']):>10}{flag}")


async def _status_from_state_files(config: AgentConfig) -> dict[str, Any]:
    """What the state files say when the agent is not running (or never wrote its status)."""
    from agent.twin import LocalTwin
    from agent.uplink.queue import StoreAndForwardQueue

    twin = LocalTwin(config.assets, config.state_dir / "twin.sqlite")
    queue = StoreAndForwardQueue(config.state_dir / "queue.sqlite", int(config.uplink.max_queue_mb * 1024 * 1024))
    await twin.open()
    await queue.open()
    q = queue.stats()
    assets = twin.snapshot()
    await twin.close()
    await queue.close()
    return {
        "agent": config.agent.id, "site": config.agent.site, "updated_ns": 0, "uptime_s": 0.0,
        "queue": {"batches": q.batches, "bytes": q.bytes, "dropped": q.dropped, "next_seq": q.next_seq,
                  "summaries_total": q.summaries_total},
        "uplink": {"connected": False, "sent": 0, "acked": 0, "reconnects": 0,
                   "last_error": "agent not running (read from its state files)"},
        "connectors": {}, "assets": assets,
    }


def _subcommand_words(argv: list[str]) -> list[str]:
    """The first two words that are not options or option values (`--config FILE` may come first)."""
    words, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in ("--config", "-c"):
            skip = True
        elif not a.startswith("-"):
            words.append(a)
    return words[:2]


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="twin-agent", description="facility-twin edge agent")
    parser.add_argument("--version", action="version", version=f"twin-agent {__version__}")
    add_config_option(parser, DEFAULT_CONFIG)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the agent daemon")
    add_config_option(p, None)
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("check-config", help="validate a config file and print clear errors")
    p.add_argument("file", type=Path, nargs="?", help="the file to check (same as --config)")
    add_config_option(p, None)
    p.add_argument("--strict-secrets", action="store_true",
                   help="secrets that cannot be read here are errors, not warnings (inside the unit)")
    p.set_defaults(func=_cmd_check_config)

    p = sub.add_parser("status", help="whether the agent runs; its local twin, queue and link state",
                       description="Exit status: 0 running, 3 not running, 1 no state found.")
    add_config_option(p, None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_status)

    # Tool modules (numpy analytics, device probes) are imported only when their command is used,
    # so `twin-agent run` on a small gateway loads no more than it needs.
    chosen = _subcommand_words(argv)
    for name, (module, help_text) in TOOL_COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        if chosen[:1] == [name]:
            _attach(p, module)

    # Each connector declares its probe (agent/connectors/<name>/__init__.py); the protocol library
    # is imported only for the probe that is run.
    from agent.connectors import connector_info, connector_names, import_declared

    probe = sub.add_parser("probe", help="talk to a device directly (support tool)")
    probe_sub = probe.add_subparsers(dest="protocol", required=True)
    for name in connector_names():
        info = connector_info(name)
        if not info.probe:
            continue
        p = probe_sub.add_parser(name, help=info.probe_help)
        if chosen == ["probe", name]:
            try:
                _attach(p, import_declared(info, info.probe, f"twin-agent probe {name}"))
            except ConfigError as exc:  # its extra is not installed: say so, whatever the arguments
                p.set_defaults(func=lambda _args, exc=exc: _refuse(exc), any_arguments=True)
    return parser


def _refuse(exc: ConfigError) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return 2


def _attach(parser: argparse.ArgumentParser, module: str | ModuleType) -> None:
    mod = import_feature(module, f"twin-agent {parser.prog.split(' ', 1)[-1]}") if isinstance(module, str) \
        else module
    mod.add_arguments(parser)
    parser.set_defaults(func=mod.run)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "any_arguments", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return run_command(lambda: args.func(args), "twin-agent")


if __name__ == "__main__":
    sys.exit(main())
