"""Installed size and idle memory per role: `make footprint` (python bench/footprint.py).

For each role a fresh venv gets the wheel of this tree with that role's extra; its size is the
site-packages folder without pip and setuptools. The role's daemon then runs against the simulated
facility (twin-sim on loopback: HVAC over Modbus, power meter over OPC-UA, vibration sensors over
MQTT through a local Mosquitto) with the demo's sources of that protocol, connected to a collector,
and its resident memory is read after it has idled for --idle seconds. The raw limit in the same
run is a bare interpreter (`python -c "import time; time.sleep(...)"`) from the same venv.
Prints a Markdown table; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "demo"
TOKEN = "footprint-token-0123456789abcdef"
ROLES = {  # role -> (extra, protocols of the agent run in it, or None for the collector)
    "modbus": ("modbus", ("modbus",)),
    "opcua": ("opcua", ("opcua",)),
    "mqtt": ("mqtt", ("mqtt",)),
    "agent": ("agent", ("modbus", "opcua", "mqtt")),
    "collector": ("collector", None),
    "all": ("all", None),
}
SKIP_IN_SIZE = re.compile(r"^(pip|setuptools|_distutils_hack|pkg_resources|distutils-precedence\.pth)")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 60) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"nothing listens on {port}")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"no VmRSS for {pid}")


def tree_mb(folder: Path) -> float:
    total = 0
    for entry in folder.iterdir():
        if SKIP_IN_SIZE.match(entry.name):
            continue
        paths = [entry] if entry.is_file() else [p for p in entry.rglob("*") if p.is_file() and not p.is_symlink()]
        total += sum(p.stat().st_size for p in paths)
    return total / 1e6


def agent_config(work: Path, protocols: tuple[str, ...], ports: dict[str, int]) -> Path:
    values = {f"{k}_port": str(v) for k, v in ports.items()} | {
        "state_dir": str(work), "token": TOKEN, "summary_interval_s": "2"}
    main = string.Template((DEMO / "agent.toml").read_text()).substitute(values)
    head, *blocks = main.split("\n[[sources]]\n")
    kept = [b for b in blocks if any(f'type = "{p}"' in b.split("\n", 1)[0] for p in protocols)]
    text = head + "".join(f"\n[[sources]]\n{b}" for b in kept)
    if "mqtt" in protocols:
        text += "\n" + string.Template((DEMO / "agent-vibration.toml").read_text()).substitute(values)
    path = work / "agent.toml"
    path.write_text(text)
    return path


def collector_config(work: Path, port: int) -> Path:
    import hashlib

    path = work / "collector.toml"
    path.write_text(f'[collector]\nlisten = "127.0.0.1:{port}"\nstate_dir = "{work}/collector"\n'
                    f'[[agents]]\nid = "gw-demo"\ntoken_sha256 = "{hashlib.sha256(TOKEN.encode()).hexdigest()}"\n')
    return path


def start(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=float, default=30.0, help="seconds each daemon runs before its RSS is read")
    parser.add_argument("--roles", default=",".join(ROLES), help="comma-separated subset of " + ",".join(ROLES))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="twin-footprint-"))
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    ports = {"modbus": free_port(), "opcua": free_port(), "mqtt": free_port(), "collector": free_port()}
    procs: list[subprocess.Popen[bytes]] = []
    rows = []
    try:
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(work / "wheel"), str(ROOT)],
                       check=True)
        (wheel,) = (work / "wheel").glob("*.whl")
        (work / "mosquitto.conf").write_text(f"listener {ports['mqtt']} 127.0.0.1\nallow_anonymous true\n")
        procs.append(start([mosquitto, "-c", str(work / "mosquitto.conf")], work / "mosquitto.log"))
        wait_port(ports["mqtt"])
        procs.append(start([sys.executable, "-m", "simulator.cli", "--modbus-port", str(ports["modbus"]),
                            "--opcua-port", str(ports["opcua"]), "--mqtt-port", str(ports["mqtt"])],
                           work / "sim.log"))
        wait_port(ports["modbus"])
        wait_port(ports["opcua"])
        central = start([sys.executable, "-m", "collector", "run", "--config",
                         str(collector_config(work, ports["collector"]))], work / "central.log")
        procs.append(central)
        wait_port(ports["collector"])
        for role in args.roles.split(","):
            extra, protocols = ROLES[role]
            venv = work / f"venv-{role}"
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run([str(venv / "bin/python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                            f"{wheel}[{extra}]"], check=True)
            (site,) = (venv / "lib").glob("python3.*/site-packages")
            size = tree_mb(site)
            bare = start([str(venv / "bin/python"), "-c", "import time; time.sleep(600)"], work / "bare.log")
            rss: dict[str, float] = {}
            runs: list[tuple[str, list[str]]] = []
            if protocols is not None:
                state = work / f"state-{role}"
                state.mkdir()
                runs.append(("agent", [str(venv / "bin/twin-agent"), "run", "--config",
                                       str(agent_config(state, protocols, ports))]))
            if role in ("collector", "all"):
                port = free_port()
                (work / f"c-{role}").mkdir()
                runs.append(("collector", [str(venv / "bin/twin-collector"), "run", "--config",
                                           str(collector_config(work / f"c-{role}", port))]))
            for name, argv in runs:
                proc = start(argv, work / f"{role}-{name}.log")
                time.sleep(args.idle)
                if proc.poll() is not None:
                    raise SystemExit(f"{role} {name} exited: {(work / f'{role}-{name}.log').read_text()[-2000:]}")
                rss[name] = rss_mb(proc.pid)
                stop(proc)
            rss["bare interpreter"] = rss_mb(bare.pid)
            stop(bare)
            rows.append((role, extra, size, rss))
            print(f"{role}: {size:.0f} MB, " + ", ".join(f"{k} {v:.0f} MB" for k, v in rss.items()), flush=True)
    finally:
        for proc in reversed(procs):
            stop(proc)
    print("\n| role | install | size (site-packages) | idle RSS | bare interpreter (same venv) |")
    print("|---|---|---|---|---|")
    for role, extra, size, rss in rows:
        daemons = ", ".join(f"{k} {v:.0f} MB" for k, v in rss.items() if k != "bare interpreter") or "-"
        print(f"| {role} | `facility-twin[{extra}]` | {size:.0f} MB | {daemons} | {rss['bare interpreter']:.0f} MB |")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
