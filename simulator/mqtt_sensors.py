"""Simulated wireless vibration sensor on a pump, publishing over MQTT.

Every `period_s` it publishes, under `topic_prefix`:

    <prefix>/vib/de    drive-end acceleration block (g): float32 little-endian samples, with the
                       twin-v1 header (agent/connectors/mqtt/codec.py) or bare (`header="none"`)
    <prefix>/speed     shaft speed in rpm as plain text, e.g. "1479.62"
    <prefix>/status    JSON {"ts": <epoch ms>, "data": {"rpm": ..., "bearing_temp_c": ...}}

and listens on `<prefix>/cmd` for JSON commands, so a running demo can be given a fault:

    {"inject": "bearing_outer", "severity_per_s": 0.01, "severity": 0.05, "max_severity": 2.0}
    {"clear": "bearing_outer"}

Faults grow linearly from `severity` by `severity_per_s` up to `max_severity` (defaults per fault
below; see simulator/vibration.py for what each does to the signal). Run standalone with
`python -m simulator.mqtt_sensors --port 1883 --fault bearing_outer:0.01@30`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.connectors.mqtt.codec import WaveformFormat, encode_waveform
from simulator.termination import until_terminated
from simulator.vibration import FAULTS, PumpVibration, synthesize_block

__all__ = ["FaultGrowth", "VibrationSensorSimulator", "main"]

log = logging.getLogger("twin.sim.mqtt")

CONNECT_TIMEOUT_S = 10.0
SPEED_WANDER = 0.003  # relative amplitude of the slow speed variation (load, supply frequency)
SPEED_WANDER_PERIOD_S = 47.0
AMBIENT_BEARING_TEMP_C = 42.0
# severities: peak g of one bearing strike; extra 1x amplitude in g for unbalance
DEFAULT_GROWTH_PER_S = {"bearing_outer": 0.02, "bearing_inner": 0.02, "unbalance": 0.005}
DEFAULT_MAX_SEVERITY = {"bearing_outer": 3.0, "bearing_inner": 3.0, "unbalance": 1.0}


@dataclass(frozen=True, slots=True)
class FaultGrowth:
    """A fault that started at `started_s` (simulation time) and grows linearly."""

    started_s: float
    severity: float = 0.0
    severity_per_s: float = 0.0
    max_severity: float = math.inf

    def at(self, t_s: float) -> float:
        return min(self.max_severity, self.severity + self.severity_per_s * max(0.0, t_s - self.started_s))


@dataclass(frozen=True, slots=True)
class _Scheduled:
    at_s: float
    fault: str
    clear: bool
    severity: float
    severity_per_s: float | None
    max_severity: float | None


class VibrationSensorSimulator:
    """A pump (~`rpm`) with a drive-end accelerometer and a speed sensor, publishing over MQTT."""

    def __init__(self, broker_host: str, broker_port: int, topic_prefix: str = "plant/pump-1",
                 fs: float = 12800.0, block_size: int = 8192, period_s: float = 1.0, rpm: float = 1480.0,
                 seed: int = 0, *, header: str = "twin-v1", qos: int = 1, client_id: str = "",
                 machine: PumpVibration = PumpVibration()) -> None:
        if header not in ("twin-v1", "none"):
            raise ValueError("header must be 'twin-v1' or 'none'")
        self.host, self.port = broker_host, broker_port
        self.prefix = topic_prefix.rstrip("/")
        self.fs, self.block_size, self.period_s, self.nominal_rpm = fs, block_size, period_s, rpm
        self.qos = qos
        self.machine = machine
        self.waveform = WaveformFormat(sample_rate_hz=fs, header="twin-v1" if header == "twin-v1" else "none")
        self.topic_waveform = f"{self.prefix}/vib/de"
        self.topic_speed = f"{self.prefix}/speed"
        self.topic_status = f"{self.prefix}/status"
        self.topic_cmd = f"{self.prefix}/cmd"
        self._rng = np.random.default_rng(seed)
        self._faults: dict[str, FaultGrowth] = {}
        self._schedule: list[_Scheduled] = []
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._t0 = time.monotonic()
        self._speed_walk = 0.0
        self.rpm = rpm
        self.blocks_published = 0

    # ------------------------------------------------------------------ faults

    def sim_time(self) -> float:
        return time.monotonic() - self._t0

    def inject(self, fault: str, severity_per_s: float | None = None, *, severity: float = 0.0,
               max_severity: float | None = None) -> None:
        """Start (or restart) `fault` now at `severity`, growing by `severity_per_s` up to `max_severity`.

        A fault given neither a severity nor a growth rate would do nothing, so it grows at its
        default rate (DEFAULT_GROWTH_PER_S); the default cap is DEFAULT_MAX_SEVERITY."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")
        if not severity_per_s and not severity:
            severity_per_s = DEFAULT_GROWTH_PER_S[fault]
        severity_per_s = severity_per_s or 0.0
        max_severity = DEFAULT_MAX_SEVERITY[fault] if max_severity is None else max_severity
        if severity < 0 or severity_per_s < 0 or max_severity < 0:
            raise ValueError("severities must not be negative")
        self._faults[fault] = FaultGrowth(self.sim_time(), severity, severity_per_s, max_severity)
        log.info("fault %s injected (severity %.3g, +%.3g/s)", fault, severity, severity_per_s)

    def clear(self, fault: str) -> None:
        if self._faults.pop(fault, None) is not None:
            log.info("fault %s cleared", fault)

    def schedule(self, at_s: float, fault: str, severity_per_s: float | None = None, *, clear: bool = False,
                 severity: float = 0.0, max_severity: float | None = None) -> None:
        """Inject (or with `clear=True` clear) `fault` `at_s` seconds after the simulator started."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")
        self._schedule.append(_Scheduled(at_s, fault, clear, severity, severity_per_s, max_severity))
        self._schedule.sort(key=lambda s: s.at_s)

    def severities(self) -> dict[str, float]:
        t = self.sim_time()
        return {name: f.at(t) for name, f in self._faults.items()}

    def _apply_schedule(self) -> None:
        t = self.sim_time()
        while self._schedule and self._schedule[0].at_s <= t:
            s = self._schedule.pop(0)
            if s.clear:
                self.clear(s.fault)
            else:
                self.inject(s.fault, s.severity_per_s, severity=s.severity, max_severity=s.max_severity)

    # ------------------------------------------------------------------ MQTT

    async def start(self) -> None:
        """Connect to the broker and start publishing every `period_s`."""
        self._loop = asyncio.get_running_loop()
        self._t0 = time.monotonic()
        self._client.connect_async(self.host, self.port, keepalive=30)
        self._client.loop_start()
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while not self._client.is_connected():
            if time.monotonic() > deadline:
                self._client.loop_stop()
                raise ConnectionError(f"cannot connect to MQTT broker {self.host}:{self.port}")
            await asyncio.sleep(0.05)
        self._task = asyncio.create_task(self._publish_forever(), name="vibration-sensor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason_code: object,
                    properties: object) -> None:
        client.subscribe(self.topic_cmd, qos=1)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.command, msg.payload)

    def command(self, payload: bytes) -> None:
        """Apply one JSON command (see the module docstring); bad commands are logged and ignored."""
        try:
            cmd = json.loads(payload)
            if "clear" in cmd:
                self.clear(str(cmd["clear"]))
            else:
                per_s, cap = cmd.get("severity_per_s"), cmd.get("max_severity")
                self.inject(str(cmd["inject"]), None if per_s is None else float(per_s),
                            severity=float(cmd.get("severity", 0.0)),
                            max_severity=None if cap is None else float(cap))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring command %r: %s", payload[:200], exc)

    async def _publish_forever(self) -> None:
        next_at = time.monotonic()
        while True:
            try:
                self.publish_once()
            except Exception:  # one bad cycle must not end the simulator
                log.exception("publishing failed")
            next_at += self.period_s
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    def _update_speed(self) -> float:
        t = self.sim_time()
        self._speed_walk = float(np.clip(self._speed_walk + self._rng.normal(0, 0.0003), -0.002, 0.002))
        wander = SPEED_WANDER * math.sin(2 * math.pi * t / SPEED_WANDER_PERIOD_S)
        self.rpm = self.nominal_rpm * (1.0 + wander + self._speed_walk)
        return self.rpm

    def publish_once(self) -> None:
        """Publish one waveform block, the speed and the status (the simulator's one cycle)."""
        self._apply_schedule()
        rpm = self._update_speed()
        severities = self.severities()
        ts_ns = time.time_ns()
        block = synthesize_block(self.block_size, self.fs, rpm / 60.0, severities, self._rng,
                                 self.machine, t0_s=self.sim_time())
        bearing = severities.get("bearing_outer", 0.0) + severities.get("bearing_inner", 0.0)
        temp_c = AMBIENT_BEARING_TEMP_C + min(40.0, 8.0 * bearing) + float(self._rng.normal(0, 0.1))
        status = {"ts": ts_ns // 1_000_000, "data": {"rpm": round(rpm, 2), "bearing_temp_c": round(temp_c, 2)}}
        self._client.publish(self.topic_waveform, encode_waveform(block, self.waveform, ts_ns), qos=self.qos)
        self._client.publish(self.topic_speed, f"{rpm:.2f}", qos=self.qos)
        self._client.publish(self.topic_status, json.dumps(status), qos=self.qos)
        self.blocks_published += 1


def _fault_arg(text: str) -> tuple[str, float, float]:
    """`bearing_outer:0.01@30` -> (fault, severity per s, start time s); `@30` is optional."""
    try:
        spec, _, at = text.partition("@")
        fault, _, rate = spec.partition(":")
        return fault, float(rate or 0.0), float(at or 0.0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected FAULT:SEVERITY_PER_S[@START_S], got {text!r}") from None


async def _run(args: argparse.Namespace) -> None:
    sim = VibrationSensorSimulator(args.host, args.port, args.prefix, fs=args.fs, block_size=args.block_size,
                                   period_s=args.period, rpm=args.rpm, seed=args.seed, header=args.header)
    for fault, rate, at in args.fault:
        sim.schedule(at, fault, rate, severity=args.initial_severity)
    await sim.start()
    log.info("publishing under %s/ to %s:%d every %.2fs", sim.prefix, args.host, args.port, args.period)
    await until_terminated()
    await sim.stop()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m simulator.mqtt_sensors", description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--prefix", default="plant/pump-1", help="topic prefix (default plant/pump-1)")
    p.add_argument("--fs", type=float, default=12800.0, help="sample rate in Hz")
    p.add_argument("--block-size", type=int, default=8192)
    p.add_argument("--period", type=float, default=1.0, help="seconds between blocks")
    p.add_argument("--rpm", type=float, default=1480.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--header", choices=("twin-v1", "none"), default="twin-v1")
    p.add_argument("--fault", type=_fault_arg, action="append", default=[],
                   help=f"FAULT:SEVERITY_PER_S[@START_S], FAULT one of {', '.join(FAULTS)} (repeatable)")
    p.add_argument("--initial-severity", type=float, default=0.0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_run(args))


if __name__ == "__main__":
    main()
