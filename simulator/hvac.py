"""A simulated air-handling unit (AHU) controller served over Modbus TCP on loopback.

The physics is small but plausible, so that a twin watching it sees real cause and effect:

- Mixed air (70 % return, 30 % outdoor) passes a filter and a chilled-water cooling coil.
- A PI loop moves the chilled-water valve to hold the supply air temperature at its setpoint;
  the compressor (chiller) runs while the valve asks for cooling (hysteresis 3 % / 10 %).
- The zone warms the return air by its heat load divided by the airflow (time constant 2 min).
- The fan holds the airflow by speeding up as the filter loads (fan law: speed ~ sqrt(resistance));
  filter differential pressure = 120 Pa x resistance x airflow^2 (120 Pa clean at nominal flow).
- Sensors carry Gaussian noise; the model state itself is noise-free (`state`).

Register map (unit id 1 by default; protocol addresses, 0-based; REGISTER_MAP below is the same
table in code, and `source_points()` turns it into `[[sources.points]]` tables):

    function  address  type     scale  unit  name                  notes
    input     0-1      float32  -      degC  supply_air_temp       ABCD
    input     2-3      float32  -      degC  return_air_temp       ABCD
    input     4        uint16   0.1    %     fan_speed
    input     5        uint16   0.1    Pa    filter_dp
    input     6        uint16   0.1    %     valve_position        feedback (where the valve is)
    input     7        int16    0.1    degC  outdoor_air_temp
    input     8-9      uint32   -      s     fan_run_seconds       CDAB (word order little)
    input     10       uint16   -      -     status_word           bit 0 fan, 1 compressor, 2 filter alarm
    input     11       uint16   0.1    %     valve_command         PI output (where the valve should be)
    holding   0        int16    0.1    degC  supply_air_setpoint   writable, clamped to 8..30 degC
    coil      0        bool     -      -     compressor_running    read-only
    discrete  0        bool     -      -     filter_alarm          filter_dp > 300 Pa
    discrete  1        bool     -      -     fan_running

Faults (`inject(name, **params)`, `clear(name)`, or `schedule` = [(sim seconds after start, name)]):

    clogging_filter  filter resistance ramps up linearly so that filter_dp goes from ~120 Pa to
                     `final_pa` (480) over `duration_s` (40 s): it crosses 300 Pa about 20 s after
                     injection; the fan speeds up to compensate. clear() = a new filter.
    stuck_valve      the valve stays where it is (or at `position` %) whatever the PI loop asks;
                     valve_command and valve_position diverge and the supply temperature drifts.
    unresponsive     the unit stops answering Modbus requests (clients time out).

    python -m simulator.hvac --port 15020 [--fault clogging_filter@5]  runs it until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import random
import sys
import time
from dataclasses import dataclass
from typing import Any

from pymodbus.client.mixin import ModbusClientMixin

from simulator.modbus_device import ModbusDeviceServer, UnitMemory
from simulator.termination import until_terminated

__all__ = ["FAULTS", "REGISTER_MAP", "HvacSimulator", "HvacState", "RegisterSpec", "source_points"]

log = logging.getLogger("twin.sim.hvac")

FAULTS = ("clogging_filter", "stuck_valve", "unresponsive")
STEP_S = 0.1  # real seconds between model updates
MAX_SUBSTEP_S = 1.0  # simulated seconds per integration step (keeps Euler stable at high time_scale)
CLEAN_FILTER_PA = 120.0
FILTER_ALARM_PA = 300.0
BASE_FAN_SPEED = 48.0  # % at nominal airflow through a clean filter


@dataclass(frozen=True, slots=True)
class RegisterSpec:
    """One entry of the register map, with the keys a `[[sources.points]]` table uses."""

    name: str
    function: str
    address: int
    type: str
    unit: str = ""
    kind: str = "measurement"
    scale: float = 1.0
    word_order: str | None = None
    description: str = ""


REGISTER_MAP: tuple[RegisterSpec, ...] = (
    RegisterSpec("supply_air_temp", "input", 0, "float32", "degC"),
    RegisterSpec("return_air_temp", "input", 2, "float32", "degC"),
    RegisterSpec("fan_speed", "input", 4, "uint16", "%", scale=0.1),
    RegisterSpec("filter_dp", "input", 5, "uint16", "Pa", scale=0.1),
    RegisterSpec("valve_position", "input", 6, "uint16", "%", scale=0.1, description="valve feedback"),
    RegisterSpec("outdoor_air_temp", "input", 7, "int16", "degC", scale=0.1),
    RegisterSpec("fan_run_seconds", "input", 8, "uint32", "s", word_order="little"),
    RegisterSpec("status_word", "input", 10, "uint16", kind="state",
                 description="bit 0 fan running, bit 1 compressor running, bit 2 filter alarm"),
    RegisterSpec("valve_command", "input", 11, "uint16", "%", scale=0.1, description="PI loop output"),
    RegisterSpec("supply_air_setpoint", "holding", 0, "int16", "degC", kind="setpoint", scale=0.1),
    RegisterSpec("compressor_running", "coil", 0, "bool", kind="state"),
    RegisterSpec("filter_alarm", "discrete", 0, "bool", kind="state"),
    RegisterSpec("fan_running", "discrete", 1, "bool", kind="state"),
)


def source_points(asset: str, unit_id: int = 1) -> list[dict[str, Any]]:
    """REGISTER_MAP as `[[sources.points]]` tables for the Modbus connector."""
    points = []
    for r in REGISTER_MAP:
        p: dict[str, Any] = {"asset": asset, "name": r.name, "unit": r.unit, "kind": r.kind,
                             "unit_id": unit_id, "function": r.function, "address": r.address, "type": r.type}
        if r.scale != 1.0:
            p["scale"] = r.scale
        if r.word_order:
            p["word_order"] = r.word_order
        points.append(p)
    return points


@dataclass(slots=True)
class HvacState:
    """The true (noise-free) state of the unit."""

    supply_air_temp: float = 14.0
    return_air_temp: float = 22.0
    outdoor_air_temp: float = 28.0
    setpoint: float = 14.0
    valve_command: float = 0.6  # 0..1
    valve_position: float = 0.6  # 0..1
    integral: float = 0.6
    compressor_running: bool = True
    fan_speed: float = BASE_FAN_SPEED  # %
    airflow: float = 1.0  # fraction of nominal
    filter_resistance: float = 1.0  # x clean filter
    filter_dp: float = CLEAN_FILTER_PA
    fan_run_seconds: float = 0.0
    sim_time_s: float = 0.0


@dataclass(slots=True)
class _Clogging:
    start_resistance: float
    final_resistance: float
    duration_s: float
    started_at: float


_F32 = ModbusClientMixin.DATATYPE.FLOAT32
_U32 = ModbusClientMixin.DATATYPE.UINT32


class HvacSimulator:
    """The AHU model plus its Modbus TCP server; see the module docstring for the register map."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, unit_id: int = 1, seed: int = 0,
                 time_scale: float = 1.0) -> None:
        self.unit_id = unit_id
        self.time_scale = time_scale
        self.schedule: list[tuple[float, str]] = []
        self.state = HvacState()
        self._rng = random.Random(seed)
        self._memory = UnitMemory(coils=[False] * 16, discrete=[False] * 16, holding=[0] * 16, input=[0] * 16,
                                  writable_holding={0}, writable_coils=set())
        self._memory.holding[0] = round(self.state.setpoint * 10)
        self._server = ModbusDeviceServer({unit_id: self._memory}, host=host, port=port)
        self._clogging: _Clogging | None = None
        self._stuck_at: float | None = None
        self._pending: list[tuple[float, str]] = []
        self._started = False
        self._task: asyncio.Task[None] | None = None
        self._write_registers()

    # -- public API -----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def request_count(self) -> dict[int, int]:
        """Requests served, per function code."""
        return dict(self._server.request_count)

    async def start(self) -> None:
        """Start serving (again, on the same port after a stop) and stepping the model."""
        if not self._started:
            self._pending = sorted(self.schedule)  # a restart continues the schedule, it does not replay it
            self._started = True
        await self._server.start()
        self._task = asyncio.create_task(self._run(), name="hvac-model")
        log.info("hvac: serving unit %d on %s:%d", self.unit_id, self._server.host, self._server.port)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._server.stop()

    def inject(self, fault: str, **params: float) -> None:
        s = self.state
        if fault == "clogging_filter":
            final_pa = float(params.get("final_pa", 480.0))
            duration_s = float(params.get("duration_s", 40.0))
            if final_pa <= CLEAN_FILTER_PA or duration_s <= 0:
                raise ValueError("clogging_filter needs final_pa > 120 and duration_s > 0")
            self._clogging = _Clogging(s.filter_resistance, final_pa / CLEAN_FILTER_PA, duration_s, s.sim_time_s)
        elif fault == "stuck_valve":
            position = params.get("position")
            self._stuck_at = s.valve_position if position is None else min(1.0, max(0.0, position / 100.0))
            s.valve_position = self._stuck_at
        elif fault == "unresponsive":
            self._server.set_unresponsive(self.unit_id, True)
        else:
            raise ValueError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")
        log.info("hvac: fault %s injected %s", fault, params or "")

    def clear(self, fault: str) -> None:
        if fault == "clogging_filter":
            self._clogging = None
            self.state.filter_resistance = 1.0
        elif fault == "stuck_valve":
            self._stuck_at = None
        elif fault == "unresponsive":
            self._server.set_unresponsive(self.unit_id, False)
        else:
            raise ValueError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")
        log.info("hvac: fault %s cleared", fault)

    # -- model ----------------------------------------------------------------------------------

    async def _run(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(STEP_S)
            now = time.monotonic()
            elapsed = (now - last) * self.time_scale
            last = now
            while elapsed > 0:
                dt = min(elapsed, MAX_SUBSTEP_S)
                self.step(dt)
                elapsed -= dt
            self._apply_schedule()
            self._write_registers()

    def _apply_schedule(self) -> None:
        while self._pending and self._pending[0][0] <= self.state.sim_time_s:
            _, fault = self._pending.pop(0)
            self.inject(fault)

    def step(self, dt: float) -> None:
        """Advance the model by `dt` simulated seconds."""
        s = self.state
        s.sim_time_s += dt
        s.setpoint = min(30.0, max(8.0, _int16(self._memory.holding[0]) / 10.0))
        self._memory.holding[0] = round(s.setpoint * 10) & 0xFFFF
        s.outdoor_air_temp = 28.0 + 4.0 * math.sin(2 * math.pi * s.sim_time_s / 900.0)
        if self._clogging is not None:
            c = self._clogging
            progress = min(1.0, (s.sim_time_s - c.started_at) / c.duration_s)
            s.filter_resistance = c.start_resistance + (c.final_resistance - c.start_resistance) * progress
        wanted = BASE_FAN_SPEED * math.sqrt(s.filter_resistance)
        s.fan_speed = min(100.0, wanted)
        s.airflow = s.fan_speed / wanted
        s.filter_dp = CLEAN_FILTER_PA * s.filter_resistance * s.airflow**2
        s.fan_run_seconds += dt
        # PI loop on the supply air temperature, with anti-windup (integrate only inside 0..1).
        error = s.supply_air_temp - s.setpoint
        kp, ki = 0.08, 0.01
        unclamped = kp * error + s.integral + ki * error * dt
        if 0.0 <= unclamped <= 1.0:
            s.integral += ki * error * dt
        s.valve_command = min(1.0, max(0.0, kp * error + s.integral))
        if self._stuck_at is None:
            s.valve_position += (s.valve_command - s.valve_position) * min(1.0, dt / 5.0)  # actuator ~5 s
        if s.compressor_running and s.valve_command < 0.03:
            s.compressor_running = False
        elif not s.compressor_running and s.valve_command > 0.10:
            s.compressor_running = True
        mixed = 0.7 * s.return_air_temp + 0.3 * s.outdoor_air_temp
        cooling = 18.0 * s.valve_position / math.sqrt(max(s.airflow, 0.2)) if s.compressor_running else 0.0
        s.supply_air_temp += (mixed - cooling - s.supply_air_temp) * min(1.0, dt / 15.0)
        load = 8.0 + 1.5 * math.sin(2 * math.pi * s.sim_time_s / 600.0)
        s.return_air_temp += (s.supply_air_temp + load / max(s.airflow, 0.2) - s.return_air_temp) * min(
            1.0, dt / 120.0)

    def _noisy(self, value: float, sigma: float) -> float:
        return value + self._rng.gauss(0.0, sigma)

    def _write_registers(self) -> None:
        s, ir = self.state, self._memory.input
        ir[0:2] = ModbusClientMixin.convert_to_registers(self._noisy(s.supply_air_temp, 0.05), _F32)
        ir[2:4] = ModbusClientMixin.convert_to_registers(self._noisy(s.return_air_temp, 0.05), _F32)
        ir[4] = _u16(self._noisy(s.fan_speed, 0.2) * 10)
        ir[5] = _u16(self._noisy(s.filter_dp, 1.5) * 10)
        ir[6] = _u16(s.valve_position * 1000)
        ir[7] = round(self._noisy(s.outdoor_air_temp, 0.1) * 10) & 0xFFFF
        ir[8:10] = ModbusClientMixin.convert_to_registers(int(s.fan_run_seconds), _U32, word_order="little")
        alarm = s.filter_dp > FILTER_ALARM_PA
        ir[10] = 1 | (int(s.compressor_running) << 1) | (int(alarm) << 2)
        ir[11] = _u16(s.valve_command * 1000)
        self._memory.coils[0] = s.compressor_running
        self._memory.discrete[0] = alarm
        self._memory.discrete[1] = s.fan_speed > 0


def _u16(value: float) -> int:
    return min(0xFFFF, max(0, round(value)))


def _int16(register: int) -> int:
    return register - 0x10000 if register & 0x8000 else register


def _parse_fault(text: str) -> tuple[float, str]:
    name, _, at = text.partition("@")
    if name not in FAULTS:
        raise argparse.ArgumentTypeError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}")
    try:
        return float(at or 0), name
    except ValueError:
        raise argparse.ArgumentTypeError(f"fault must be NAME@SECONDS, got {text!r}") from None


async def _serve(args: argparse.Namespace) -> None:
    sim = HvacSimulator(host=args.host, port=args.port, unit_id=args.unit, seed=args.seed,
                        time_scale=args.time_scale)
    sim.schedule.extend(args.fault)
    await sim.start()
    print(f"hvac: unit {args.unit} on {args.host}:{sim.port}", flush=True)
    await until_terminated()
    await sim.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulator.hvac", description="simulated AHU over Modbus TCP")
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind (never all interfaces)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--unit", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-scale", type=float, default=1.0, help="simulated seconds per real second")
    parser.add_argument("--fault", type=_parse_fault, action="append", default=[],
                        help="NAME@SECONDS: inject a fault that many simulated seconds after start (repeatable)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
