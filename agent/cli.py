"""twin-agent: run | check-config | status | diagnose | opcua-cert | probe."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from agent import __version__
from runtime.errors import ConfigError

if TYPE_CHECKING:
    from agent.config import AgentConfig

__all__ = ["main"]

# Optional subcommands live in their own modules: (module, help). Each exposes add_arguments/run.
TOOL_COMMANDS = {
    "diagnose": ("agent.diagnose", "analyse vibration waveform files and print indicators and diagnosis"),
    "opcua-cert": ("agent.connectors.opcua.certificate", "create the agent's OPC-UA client certificate and key"),
}


def _cmd_run(args: argparse.Namespace) -> int:
    from agent.config import load_agent_config
    from agent.daemon import AgentDaemon
    from agent.metrics import agent_registry
    from runtime.logs import setup_logging
    from runtime.service import serve

    config = load_agent_config(args.config)
    setup_logging(args.log_level or config.agent.log_level)
    asyncio.run(serve(config, lambda: load_agent_config(args.config), AgentDaemon, lambda c: c.metrics,
                      agent_registry))
    return 0


def _cmd_check_config(args: argparse.Namespace) -> int:
    from agent.config import load_agent_config

    config = load_agent_config(args.file)
    points = sum(len(a.points) for a in config.assets)
    print(f"{args.file}: OK: agent {config.agent.id}, {len(config.assets)} assets, "
          f"{len(config.connectors)} sources, {points} points")
    return 0


def _age(ns: int) -> str:
    if not ns:
        return "never"
    s = max(0.0, time.time() - ns / 1e9)
    return f"{s:.0f}s ago" if s < 120 else f"{s / 60:.0f}min ago" if s < 7200 else f"{s / 3600:.1f}h ago"


def _cmd_status(args: argparse.Namespace) -> int:
    from agent.config import load_agent_config

    config = load_agent_config(args.config)
    path = config.state_dir / "status.json"
    if path.exists():
        status = json.loads(path.read_text())
    elif (config.state_dir / "twin.sqlite").exists():
        status = asyncio.run(_status_from_state_files(config))
    else:
        print(f"no state in {config.state_dir}: has the agent run with this config?", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    q, u = status["queue"], status["uplink"]
    print(f"agent {status['agent']} (site {status['site']}), status written {_age(status['updated_ns'])}, "
          f"uptime {status['uptime_s']:.0f}s")
    link = "connected" if u["connected"] else "DISCONNECTED"
    error = f", last error: {u['last_error']}" if u["last_error"] else ""
    print(f"uplink: {link}, sent {u['sent']}, acked {u['acked']}, reconnects {u['reconnects']}{error}")
    print(f"queue: {q['batches']} batches, {q['bytes'] / 1024:.1f} KiB, dropped {q['dropped']}")
    for name, c in status["connectors"].items():
        online = ", ".join(f"{d}={'online' if o else 'OFFLINE'}" for d, o in c["devices_online"].items())
        print(f"source {name}: polls {c['polls']}, errors {c['errors']}, decode errors {c['decode_errors']}"
              + (f" [{online}]" if online else ""))
    for asset, a in status["assets"].items():
        print(f"\n{asset} ({a['type']}): {a['state']}")
        for point, p in a["points"].items():
            flag = "" if p["quality"] == "GOOD" and not p["stale"] else f"  {p['quality']} {p['reason']}".rstrip()
            if p["stale"] and p["quality"] == "GOOD":
                flag = "  STALE"
            print(f"  {point:<28} {p['value']:>14} {p['unit']:<6} {_age(p['ts_ns']):>10}{flag}")
    return 0


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


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="twin-agent", description="facility-twin edge agent")
    parser.add_argument("--version", action="version", version=f"twin-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the agent daemon")
    p.add_argument("--config", "-c", required=True, type=Path)
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("check-config", help="validate a config file and print clear errors")
    p.add_argument("file", type=Path)
    p.set_defaults(func=_cmd_check_config)

    p = sub.add_parser("status", help="print the local twin, queue and link state")
    p.add_argument("--config", "-c", required=True, type=Path)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_status)

    # Tool modules (numpy analytics, device probes) are imported only when their command is used,
    # so `twin-agent run` on a small gateway loads no more than it needs.
    chosen = [a for a in argv if not a.startswith("-")][:2]
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
    mod = importlib.import_module(module) if isinstance(module, str) else module
    mod.add_arguments(parser)
    parser.set_defaults(func=mod.run)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "any_arguments", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
