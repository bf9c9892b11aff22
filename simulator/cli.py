"""twin-sim: run the simulated facility on loopback until SIGTERM.

    twin-sim --modbus-port 15020 [--opcua-port 4840] [--mqtt-port 1883] [--fault clogging_filter@10 ...]

Each simulator is optional; a fault is NAME[:RATE]@SECONDS (after start; RATE is the severity
growth per second of the vibration faults) and goes to the simulator that knows it. The demo and
the tests start this as a separate process, like a real plant would be.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any, Protocol

from simulator.termination import until_terminated

__all__ = ["main", "parse_fault"]

log = logging.getLogger("twin.sim")


class Simulator(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


FAULTS = {
    "hvac": {"clogging_filter", "stuck_valve", "unresponsive"},
    "power": {"phase_imbalance", "offline"},
    "vibration": {"bearing_outer", "bearing_inner", "unbalance"},
}


def parse_fault(text: str) -> tuple[str, float, float]:
    """`bearing_outer:0.02@10` -> ("bearing_outer", 0.02 per s, at 10 s)."""
    spec, _, at = text.partition("@")
    name, _, rate = spec.partition(":")
    try:
        return name, float(rate or 0.0), float(at or 0.0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"fault must be NAME[:RATE]@SECONDS, got {text!r}") from None


async def run(args: argparse.Namespace) -> None:
    sims: dict[str, Any] = {}
    if args.modbus_port is not None:
        from simulator.hvac import HvacSimulator

        sims["hvac"] = HvacSimulator(port=args.modbus_port, seed=args.seed)
    if args.opcua_port is not None:
        from simulator.power_meter import PowerMeterSimulator

        sims["power"] = PowerMeterSimulator(port=args.opcua_port, seed=args.seed)
    if args.mqtt_port is not None:
        from simulator.mqtt_sensors import VibrationSensorSimulator

        sims["vibration"] = VibrationSensorSimulator("127.0.0.1", args.mqtt_port, seed=args.seed)
    for name, rate, at in args.fault:
        owner = next((k for k, faults in FAULTS.items() if name in faults), None)
        if owner is None or owner not in sims:
            raise SystemExit(f"fault {name!r}: no running simulator knows it (known: {FAULTS})")
        if owner == "vibration":  # faults that grow: severity rises by `rate` per second
            sims[owner].schedule(at, name, rate)
        else:
            sims[owner].schedule.append((at, name))
    if not sims:
        raise SystemExit("nothing to simulate: give --modbus-port, --opcua-port and/or --mqtt-port")
    for name, sim in sims.items():
        await sim.start()
        log.info("%s simulator started", name)
    await until_terminated()
    for sim in sims.values():
        await sim.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="twin-sim", description="simulated facility on loopback")
    parser.add_argument("--modbus-port", type=int, help="HVAC air-handling unit over Modbus TCP")
    parser.add_argument("--opcua-port", type=int, help="three-phase power meter over OPC-UA")
    parser.add_argument("--mqtt-port", type=int, help="pump vibration sensors publishing to this local broker")
    parser.add_argument("--fault", type=parse_fault, action="append", default=[],
                        help="inject NAME@SECONDS after start (repeatable)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
