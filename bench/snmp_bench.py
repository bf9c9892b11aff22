"""SNMP polling throughput: GET of 88 scalars (IF-MIB ifTable, 22 columns x 4 interfaces) from snmpd.

Debian's snmpd (net-snmp) runs on a loopback port as its own process (as `nobody` when started by
root). Measured in the same run, on this process's CPU time (points per second per core) and
wall time, for v2c and v3 authPriv (SHA/AES):

    raw        bare pysnmp: get_cmd of the same OIDs in the same batches (32 per request), back to back
    connector  SnmpConnector.read_once(cycles): batching, sysUpTime, decoding, counters as rates,
               Reading objects

No assertions: numbers depend on the machine.

    .venv/bin/python bench/snmp_bench.py [--cycles 30]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pysnmp.hlapi.v3arch.asyncio import (
    CommunityData,
    ContextData,
    ObjectIdentity,
    ObjectType,
    SnmpEngine,
    UdpTransportTarget,
    UsmUserData,
    get_cmd,
    usmAesCfb128Protocol,
    usmHMACSHAAuthProtocol,
)

from agent.connectors.snmp.connector import SnmpConnector, build

COLUMNS = 22
INTERFACES = 4
PER_REQUEST = 32
OIDS = [f"1.3.6.1.2.1.2.2.1.{column}.{index}" for index in range(1, INTERFACES + 1)
        for column in range(1, COLUMNS + 1)]
AUTH, PRIV = "bench-auth-key", "bench-priv-key"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_snmpd(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    workdir.chmod(0o755)
    (workdir / "state").mkdir()
    conf = workdir / "agent.conf"
    conf.write_text(f"agentaddress udp:127.0.0.1:{port}\nrocommunity bench 127.0.0.1\n"
                    f'createUser bench SHA "{AUTH}" AES "{PRIV}"\nrouser bench priv\nmaster no\n')
    argv = [shutil.which("snmpd") or "/usr/sbin/snmpd", "-f", "-Lo", "-C", "-c", str(conf)]
    if os.geteuid() == 0:
        shutil.chown(workdir / "state", "nobody")
        argv += ["-u", "nobody", "-g", "nogroup"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=dict(os.environ, SNMP_PERSISTENT_DIR=str(workdir / "state"), MIBS=""))
    assert proc.stdout is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if "NET-SNMP version" in proc.stdout.readline().decode(errors="replace"):
            return proc
    proc.kill()
    raise RuntimeError("snmpd did not start")


def auth(version: str) -> CommunityData | UsmUserData:
    if version == "2c":
        return CommunityData("bench", mpModel=1)
    return UsmUserData("bench", AUTH, PRIV, authProtocol=usmHMACSHAAuthProtocol, privProtocol=usmAesCfb128Protocol)


async def raw(port: int, version: str, cycles: int) -> tuple[int, float, float]:
    engine = SnmpEngine()
    target = await UdpTransportTarget.create(("127.0.0.1", port), timeout=2, retries=1)
    target.set_local_address(("127.0.0.1", 0))
    credentials = auth(version)
    batches = [OIDS[i:i + PER_REQUEST] for i in range(0, len(OIDS), PER_REQUEST)]

    async def get(batch: list[str]) -> int:
        ei, es, _, var_binds = await get_cmd(engine, credentials, target, ContextData(),
                                             *(ObjectType(ObjectIdentity(o)) for o in batch), lookupMib=False)
        if ei or int(es):
            raise RuntimeError(f"{ei or es}")
        return len(var_binds)

    try:
        await get(batches[0])  # warm up (v3: engine discovery)
        values, cpu, wall = 0, time.process_time(), time.perf_counter()
        for _ in range(cycles):
            for batch in batches:
                values += await get(batch)
        return values, time.process_time() - cpu, time.perf_counter() - wall
    finally:
        engine.close_dispatcher()


def connector(port: int, version: str) -> SnmpConnector:
    os.environ["BENCH_AUTH"], os.environ["BENCH_PRIV"] = AUTH, PRIV
    device = {"name": "gw", "host": "127.0.0.1", "port": port, "asset": "gw", "max_oids_per_request": PER_REQUEST,
              "points": [{"name": f"if_{n}", "oid": oid, "function": "value"} for n, oid in enumerate(OIDS)]}
    if version == "2c":
        device["community"] = "bench"
    else:
        device.update(version="3", user="bench", auth_key_env="BENCH_AUTH", priv_key_env="BENCH_PRIV")
    return build({"name": "bench", "local_address": "127.0.0.1", "devices": [device]}, "bench")


async def through_connector(port: int, version: str, cycles: int) -> tuple[int, float, float]:
    c = connector(port, version)
    cpu, wall = time.process_time(), time.perf_counter()
    readings = await c.read_once(cycles)
    if any(r.value is None for r in readings):
        raise RuntimeError(next(r.reason for r in readings if r.value is None))
    return len(readings), time.process_time() - cpu, time.perf_counter() - wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=30)
    args = parser.parse_args()
    port = free_udp_port()
    workdir = Path(tempfile.mkdtemp(prefix="twin-snmpd-bench-"))
    snmpd = start_snmpd(port, workdir)
    try:
        print(f"SNMP: GET of {len(OIDS)} scalars, {PER_REQUEST} per request, {args.cycles} cycles")
        for version in ("2c", "3"):
            n_raw, cpu_raw, wall_raw = asyncio.run(raw(port, version, args.cycles))
            n_con, cpu_con, wall_con = asyncio.run(through_connector(port, version, args.cycles))
            label = "v2c" if version == "2c" else "v3 authPriv SHA/AES"
            print(f"  {label}")
            print(f"    raw pysnmp   {n_raw / cpu_raw:9.0f} points/s per core   {n_raw / wall_raw:9.0f} points/s wall")
            print(f"    connector    {n_con / cpu_con:9.0f} points/s per core   {n_con / wall_con:9.0f} points/s wall")
            print(f"    ratio connector / raw: {(n_con / cpu_con) / (n_raw / cpu_raw):.2f} per core, "
                  f"{(n_con / wall_con) / (n_raw / wall_raw):.2f} wall")
    finally:
        snmpd.terminate()
        snmpd.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
