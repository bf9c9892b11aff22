"""twin-demo: a simulated facility, one agent and one collector, on loopback, with a live view.

    twin-demo [--duration SECONDS] [--report FILE.json] [--workdir DIR] [--influx-url URL]

Starts `twin-sim`, `twin-collector` and `twin-agent` as separate processes (as they run in a
plant), with configs rendered from configs/demo/ (free loopback ports filled in), prints what the
twin sees every couple of seconds, and at the end writes a JSON report. The simulator develops a
fault (a clogging air filter) so a work order appears within the first minute.

Each asset is shown with its link (can the twin see it: online / degraded / offline) and its
condition (good / watch / act, and why). With `--influx-url http://127.0.0.1:8086` the collector
writes to that InfluxDB 1.x (database facility_twin) instead of its embedded store: restart InfluxDB
during the run and the collector records its own incident, not a field work order.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import sqlite3
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from collector.prognosis import store as remaining_life
from collector.workorders.prognosis import format_duration, format_remaining_life

__all__ = ["main"]

# configs/demo in the source tree; the package carries the same files (simulator/demo_configs links there).
CONFIG_DIR = Path(__file__).resolve().parent / "demo_configs"
DEMO_TOKEN = "demo-token-not-secret-0123456789"
REFRESH_S = 2.0
SUMMARY_INTERVAL_S = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.3):
            return True
    except OSError:
        return False


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or next((p for p in ("/usr/sbin/mosquitto",) if os.path.exists(p)), None)


class Processes:
    """The demo's child processes; all stopped (SIGTERM, then SIGKILL) on exit."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str], ready_port: int | None = None, timeout: float = 30.0) -> None:
        log = open(self.workdir / f"{name}.log", "wb")
        self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
                                            start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while ready_port is not None and not port_open(ready_port):
            if self.procs[name].poll() is not None or time.monotonic() > deadline:
                tail = (self.workdir / f"{name}.log").read_text(errors="replace")[-2000:]
                raise SystemExit(f"{name} did not start; its log ends with:\n{tail}")
            time.sleep(0.1)

    def check(self) -> list[str]:
        return [n for n, p in self.procs.items() if p.poll() is not None]

    def stop_all(self) -> None:
        for name in reversed(list(self.procs)):  # agent first, so it flushes to a live collector
            p = self.procs[name]
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def render_configs(workdir: Path, ports: dict[str, int], mqtt: bool, influx_url: str = "") -> tuple[Path, Path]:
    values = {f"{k}_port": str(v) for k, v in ports.items()} | {
        "state_dir": str(workdir), "token": DEMO_TOKEN, "summary_interval_s": str(SUMMARY_INTERVAL_S),
        "token_sha256": __import__("hashlib").sha256(DEMO_TOKEN.encode()).hexdigest(),
    }
    agent_text = string.Template((CONFIG_DIR / "agent.toml").read_text()).substitute(values)
    if mqtt:
        agent_text += "\n" + string.Template((CONFIG_DIR / "agent-vibration.toml").read_text()).substitute(values)
    collector_text = string.Template((CONFIG_DIR / "collector.toml").read_text()).substitute(values)
    if influx_url:  # before the first [[agents]] table, so it is a top-level table
        collector_text = collector_text.replace(
            "[[agents]]", f'[influx]\napi = "v1"\nurl = "{influx_url}"\ndatabase = "facility_twin"\n\n[[agents]]', 1)
    agent_cfg, collector_cfg = workdir / "agent.toml", workdir / "collector.toml"
    agent_cfg.write_text(agent_text)
    collector_cfg.write_text(collector_text)
    return agent_cfg, collector_cfg


def read_collector(workdir: Path) -> dict[str, Any]:
    """Read the collector's stores directly (read-only; SQLite WAL allows a reader beside the daemon)."""
    out: dict[str, Any] = {"work_orders": [], "points_stored": 0, "assets": {}}
    db = workdir / "collector" / "collector.sqlite"
    if db.exists():
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            for row in conn.execute("SELECT id, asset, rule, severity, title, status, description, evidence, context, "
                                    "created_ns, category FROM work_orders ORDER BY id"):
                out["work_orders"].append({
                    "id": f"WO-{row[0]:06d}", "asset": row[1], "rule": row[2], "severity": row[3], "title": row[4],
                    "status": row[5], "description": row[6], "evidence": json.loads(row[7]),
                    "context": json.loads(row[8]), "created_ns": row[9], "category": row[10]})
            for asset, state, health, link, link_reason, condition, condition_reason in conn.execute(
                    "SELECT asset, state, health, link, link_reason, condition, condition_reason FROM assets"):
                out["assets"][asset] = {"state": state, "health": health, "link": link, "link_reason": link_reason,
                                        "condition": condition, "condition_reason": condition_reason}
            out["remaining_life"] = remaining_life.latest_sync(conn)
    sink = workdir / "collector" / "summaries.sqlite"
    if sink.exists():
        with sqlite3.connect(f"file:{sink}?mode=ro", uri=True, timeout=5) as conn:
            out["points_stored"] = conn.execute("SELECT COUNT(*) FROM summary_points").fetchone()[0]
            out["points_by_measurement"] = dict(conn.execute(
                "SELECT measurement, COUNT(*) FROM summary_points GROUP BY measurement"))
    return out


def read_agent(workdir: Path) -> dict[str, Any]:
    path = workdir / "agent" / "status.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def plot_last_blocks(workdir: Path, out_dir: Path) -> list[str]:
    """PNG of each vibration sensor's last block (spectrum, envelope spectrum, defect lines marked),
    made by `twin-agent diagnose --plot` from the block the agent saved at shutdown."""
    pngs = []
    for block in sorted((workdir / "agent" / "waveforms").glob("*.npz")):
        png = out_dir / f"demo-{block.stem.replace('.', '-')}.png"
        proc = subprocess.run([sys.executable, "-m", "agent", "diagnose", str(block), "--bearing", "6205-2RS",
                               "--plot", str(png)], capture_output=True, text=True, check=False)
        if proc.returncode == 0 and png.exists():
            pngs.append(str(png))
        else:
            print(f"could not plot {block.name}: {proc.stderr.strip()[-300:]}", file=sys.stderr)
    return pngs


def describe_work_order(wo: dict[str, Any]) -> list[str]:
    """A work order with the context a responder reads first."""
    ctx, ev = wo["context"], wo["evidence"]
    out = [f"  {wo['id']} [{wo['severity'].upper()}] {wo['title']} ({wo.get('category', '')}, {wo['status']})",
           f"      {wo['description']}"]
    if ev.get("remaining_life_s") is not None:
        low, high = ev.get("remaining_life_band_s") or [None, None]
        out.append(f"      remaining life ~{format_duration(ev['remaining_life_s'])} (interval "
                   f"{format_duration(low) if low is not None else '?'}-"
                   f"{format_duration(high) if high is not None else '?'}), {ev.get('ratio_to_baseline')}x baseline")
    if "eta_days" in ev:
        band = ev.get("eta_band_days") or ["?", "?"]
        out.append(f"      forecast: limit reached in ~{ev['eta_days']:.2g} days (band {band[0]:.2g}-{band[1]:.2g})")
    state = ctx.get("state", {})
    if state:
        out.append(f"      when raised: link {state.get('state')}, health {state.get('health')}")
    deps = [f"{d['asset']} {d['state']}" + (f" ({', '.join(d['open_work_orders'])})" if d["open_work_orders"] else "")
            for d in ctx.get("depends_on", [])]
    if deps:
        out.append(f"      depends on: {'; '.join(deps)}")
    trend = ctx.get("trend", {}).get("values", [])
    if trend:
        from collector.workorders.history import series_label

        vals = [v[1] if isinstance(v, list | tuple) else v for v in trend]
        out.append(f"      trend of {series_label(ctx['trend'].get('series', ''))}: {min(vals):.4g} -> "
                   f"{max(vals):.4g}, last {vals[-1]:.4g}")
    changes = ctx.get("recent_changes", [])
    if changes:
        out.append("      recent changes: " + "; ".join(
            f"{c['point'] or 'asset'} {c['old']}->{c['new']}" for c in changes[:5]))
    if ctx.get("earlier_work_orders"):
        out.append(f"      earlier work orders on this asset: {len(ctx['earlier_work_orders'])}")
    return out


def header_lines(elapsed: float, duration: float, agent: dict[str, Any], collector: dict[str, Any],
                 stopped: str = "") -> list[str]:
    """What must always be on screen: the time, the agent's link and queue, the store.

    `stopped` replaces the link state once the agent has stopped: after a clean stop its link is
    down by design, which is not news."""
    clock = time.strftime("%H:%M:%S UTC", time.gmtime())
    lines = [f"facility-twin demo  {clock}  t={elapsed:.0f}s / {duration:.0f}s  (Ctrl-C stops)"]
    if agent:
        q, u = agent["queue"], agent["uplink"]
        link = stopped or ("link connected" if u["connected"] else "link DISCONNECTED")
        lines.append(f"agent {agent['agent']}: {link}, acked {u['acked']}/{u['sent']}, queue {q['batches']} "
                     f"({q['bytes'] / 1024:.1f} KiB), dropped {q['dropped']}")
    else:
        lines.append("agent: starting...")
    stored = (f"{collector['points_stored']} points stored" if collector["points_stored"]
              else "points go to InfluxDB" if collector.get("influx") else "starting...")
    field = [w for w in collector["work_orders"] if w.get("category") != "collector"]
    incidents = len(collector["work_orders"]) - len(field)
    lines.append(f"collector: {stored}, {len(field)} work orders"
                 + (f", {incidents} collector incidents" if incidents else ""))
    return lines


def body_lines(agent: dict[str, Any], collector: dict[str, Any]) -> list[str]:
    """Everything else, most important first: work orders, then vibration, then the assets."""
    lines: list[str] = []
    for wo in collector["work_orders"]:
        if wo.get("category") != "collector":
            lines += describe_work_order(wo)
    for wo in collector["work_orders"]:  # the monitoring's own outages: not field work
        if wo.get("category") == "collector":
            lines.append(f"collector incident {wo['id']} ({wo['status']}): {wo['title']}")
    for sensor, v in agent.get("vibration", {}).items():
        lines.append(f"vibration {sensor}: {v['velocity_rms_mm_s']:.2f} mm/s zone {v['iso_zone']}, "
                     f"{v['rpm']:.0f} rpm, {v['fault']} ({v['confidence']:.0%}), health {v['health']:.0f}")
    for asset, sensors in collector.get("remaining_life", {}).items():
        for sensor, rl in sensors.items():
            lines.append(f"remaining life {asset}/{sensor}: {format_remaining_life(rl)}")
    for name, a in agent.get("assets", {}).items():
        twin = collector["assets"].get(name, {})
        link, condition = twin.get("link", a["state"]), twin.get("condition", "good")
        lines.append(f"{name}  link {link}, condition {condition}"
                     + (f" ({twin['link_reason']})" if link != "online" and twin.get("link_reason") else ""))
        if condition != "good" and twin.get("condition_reason"):
            lines.append(f"  why: {twin['condition_reason']}")
        for point, p in a["points"].items():
            flag = "" if p["quality"] == "GOOD" else f"  {p['quality']} {p['reason']}"
            lines.append(f"  {point:<24} {p['value']:>12} {p['unit']:<6}{flag}")
    return lines


def fit_screen(header: list[str], body: list[str], width: int = 80, height: int = 24) -> str:
    """The header always, then as much of the body as fits, the rest counted; no line wider than
    the screen (a wrapped line would scroll the header away)."""
    def clip(line: str) -> str:
        return line if len(line) <= width else line[:width - 3] + "..."

    room = max(0, height - len(header) - 1)  # one blank line between header and body
    shown = body if len(body) <= room else body[:max(0, room - 1)]
    lines = [clip(line) for line in header] + [""] + [clip(line) for line in shown]
    if len(shown) < len(body):
        lines.append(clip(f"... {len(body) - len(shown)} more lines (all of it: the report at the end, "
                          "or twin-collector work-orders list)"))
    return "\n".join(lines[:height])


def render(elapsed: float, duration: float, agent: dict[str, Any], collector: dict[str, Any],
           size: tuple[int, int] | None = None, stopped: str = "") -> str:
    """The live view, fitted to `size` (columns, rows; None: everything, for the end summary)."""
    header, body = header_lines(elapsed, duration, agent, collector, stopped), body_lines(agent, collector)
    if size is None:
        return "\n".join([*header, "", *body])
    return fit_screen(header, body, *size)


def screen_size() -> tuple[int, int]:
    columns, rows = shutil.get_terminal_size((80, 24))
    return max(columns, 40), max(rows, 10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="twin-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds to run (default 60)")
    parser.add_argument("--report", type=Path, help="write a JSON report here at the end")
    parser.add_argument("--workdir", type=Path, help="keep state and logs here (default: a temp dir)")
    parser.add_argument("--no-mqtt", action="store_true", help="skip the MQTT vibration sensors")
    parser.add_argument("--influx-url", default="",
                        help="write to this InfluxDB 1.x (database facility_twin) instead of the embedded store")
    args = parser.parse_args(argv)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="twin-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    ports = {"modbus": free_port(), "collector": free_port(), "opcua": free_port(), "mqtt": free_port()}
    mosquitto = None if args.no_mqtt else mosquitto_binary()
    have_vibration = mosquitto is not None and (CONFIG_DIR / "agent-vibration.toml").exists()
    agent_cfg, collector_cfg = render_configs(workdir, ports, have_vibration, args.influx_url)
    py = sys.executable
    procs = Processes(workdir)
    interactive = sys.stdout.isatty()
    report: dict[str, Any] = {}
    try:
        sim_argv = [py, "-m", "simulator.cli", "--modbus-port", str(ports["modbus"]),
                    "--opcua-port", str(ports["opcua"]), "--fault", "clogging_filter@5"]
        if have_vibration:
            (workdir / "mosquitto.conf").write_text(f"listener {ports['mqtt']} 127.0.0.1\nallow_anonymous true\n")
            procs.start("mosquitto", [mosquitto, "-c", str(workdir / "mosquitto.conf")], ports["mqtt"])
            sim_argv += ["--mqtt-port", str(ports["mqtt"]), "--fault", "bearing_outer:0.02@10"]
        else:
            print("note: mosquitto not found, running without the MQTT vibration sensors "
                  "(install it with: apt-get install mosquitto)")
        procs.start("simulator", sim_argv, ports["modbus"])
        procs.start("collector", [py, "-m", "collector", "run", "--config", str(collector_cfg)], ports["collector"])
        procs.start("agent", [py, "-m", "agent", "run", "--config", str(agent_cfg)])
        print(f"demo running in {workdir} (logs: *.log there)")
        started = time.monotonic()
        seen_wos: set[str] = set()
        while (elapsed := time.monotonic() - started) < args.duration:
            time.sleep(REFRESH_S)
            dead = procs.check()
            if dead:
                print(f"process exited early: {', '.join(dead)}; see {workdir}/<name>.log", file=sys.stderr)
                return 1
            agent, collector = read_agent(workdir), read_collector(workdir) | {"influx": bool(args.influx_url)}
            if interactive:
                print("\033[2J\033[H" + render(elapsed, args.duration, agent, collector, screen_size()), end="",
                      flush=True)
            else:
                u = agent.get("uplink", {})
                print(f"t={elapsed:4.0f}s acked={u.get('acked', 0)} stored={collector['points_stored']} "
                      f"work_orders={len(collector['work_orders'])}", flush=True)
                for wo in collector["work_orders"]:
                    if wo["id"] not in seen_wos:
                        seen_wos.add(wo["id"])
                        own = " (collector incident, not field work)" if wo.get("category") == "collector" else ""
                        print(f"  NEW {wo['id']} [{wo['severity'].upper()}] {wo['title']}{own}", flush=True)
    except KeyboardInterrupt:
        print("\nstopping early")
    finally:
        live = read_collector(workdir)  # links and conditions as they were while everything ran
        procs.stop_all()
        agent, collector = read_agent(workdir), read_collector(workdir) | {"assets": live["assets"],
                                                                          "influx": bool(args.influx_url)}
        exit_code = procs.procs["agent"].returncode if "agent" in procs.procs else None
        stopped = ("agent stopped" + (" cleanly" if exit_code == 0 else f" (exit status {exit_code})")
                   if exit_code is not None else "")
        report = {
            "workdir": str(workdir),
            "points_stored": int(collector["points_stored"]),
            "points_by_measurement": collector.get("points_by_measurement", {}),
            "batches_acked": int(agent.get("uplink", {}).get("acked", 0)),
            "batches_dropped": int(agent.get("queue", {}).get("dropped", 0)),
            "queue_batches_left": int(agent.get("queue", {}).get("batches", 0)),
            "assets": collector["assets"],
            "vibration": agent.get("vibration", {}),
            "remaining_life": collector.get("remaining_life", {}),
            "work_orders": collector["work_orders"],
        }
        print("\n" + render(time.monotonic() - started if "started" in locals() else 0, args.duration,
                            agent, collector, stopped=stopped))
        if args.report:
            args.report.parent.mkdir(parents=True, exist_ok=True)
        report["spectrum_plots"] = plot_last_blocks(workdir, args.report.parent if args.report else workdir)
        for png in report["spectrum_plots"]:
            print(f"spectrum and envelope spectrum of the pump's last block: {png}")
        if args.report:
            args.report.write_text(json.dumps(report, indent=2, default=str))
            print(f"\nreport written to {args.report}")
    return 0 if report.get("work_orders") else 3


if __name__ == "__main__":
    sys.exit(main())
