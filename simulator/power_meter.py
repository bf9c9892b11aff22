"""Simulated three-phase power meter served over OPC-UA (asyncua) on a loopback address.

Address space (namespace NAMESPACE_URI, index 2 on this server), also in the NODES constant:

    Objects/Meter                          ns=2;s=Meter
      VoltageL1, VoltageL2, VoltageL3      ns=2;s=Meter.VoltageL1 ...       V     Double, ~230 V phase-neutral
      CurrentL1, CurrentL2, CurrentL3      ns=2;s=Meter.CurrentL1 ...       A     Double, ~120 A
      ActivePower                          ns=2;s=Meter.ActivePower         kW    Double
      ReactivePower                        ns=2;s=Meter.ReactivePower       kvar  Double
      PowerFactor                          ns=2;s=Meter.PowerFactor         -     Double
      Frequency                            ns=2;s=Meter.Frequency           Hz    Double
      Energy                               ns=2;s=Meter.Energy              kWh   Double, only increases
      VoltageWaveformL1                    ns=2;s=Meter.VoltageWaveformL1   V     Double[256] at 6400 Hz

Browse paths follow the same names: `0:Objects/2:Meter/2:VoltageL1`. Every `update_interval_s` all
values are written with a SourceTimestamp on the meter's measurement grid (a whole multiple of the
update interval, as a meter stamps each integration period) and the ServerTimestamp of the write.

Faults, by `inject(fault, **params)` / `clear(fault)` or by `schedule` entries (seconds after start,
fault) where the fault `clear:<fault>` clears one:
  phase_imbalance  phase=1, current_factor=1.5, voltage_sag=0.08: that phase's current rises by the
                   factor and its voltage sags by the fraction (a single-phase load or a loose neutral)
  offline          the meter behind the OPC-UA server stops answering: every value turns
                   BadNoCommunication, without a value, until cleared; the server itself stays up
`stop()` then `start()` restarts the server on the same port, like a PLC restart; `boot_delay_s`
publishes the meter's nodes only that long after a start, like a PLC program that comes up after its
OPC-UA server. With `security=True` only Basic256Sha256 Sign / SignAndEncrypt endpoints exist;
`trusted_certificates` (client certificate files) limits clients to those, and `users` requires a
user name and password.

Run standalone: `python -m simulator.power_meter --port 4840 [--fault phase_imbalance@30]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import logging
import math
import shutil
import socket
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from asyncua import Server, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from cryptography.x509.oid import ExtendedKeyUsageOID

from simulator.termination import until_terminated

__all__ = [
    "FAULTS",
    "NAMESPACE_URI",
    "NODES",
    "WAVEFORM_RATE_HZ",
    "WAVEFORM_SAMPLES",
    "MeterNode",
    "PowerMeterSimulator",
    "main",
]

log = logging.getLogger("twin.simulator.power_meter")

NAMESPACE_URI = "urn:facility-twin:simulator:power-meter"
APPLICATION_URI = "urn:facility-twin:simulator:power-meter:server"
ENDPOINT_PATH = "/facility/"
UPDATE_INTERVAL_S = 0.2
WAVEFORM_SAMPLES = 256
WAVEFORM_RATE_HZ = 6400.0
NOMINAL_VOLTAGE = 230.0
BASE_CURRENT = 120.0
FAULTS = ("phase_imbalance", "offline")


@dataclass(frozen=True, slots=True)
class MeterNode:
    """One variable of the meter as a client addresses it."""

    browse_name: str
    unit: str
    kind: str = "measurement"

    @property
    def node_id(self) -> str:
        return f"ns=2;s=Meter.{self.browse_name}"

    @property
    def browse_path(self) -> str:
        return f"0:Objects/2:Meter/2:{self.browse_name}"


NODES: dict[str, MeterNode] = {
    "voltage_l1": MeterNode("VoltageL1", "V"),
    "voltage_l2": MeterNode("VoltageL2", "V"),
    "voltage_l3": MeterNode("VoltageL3", "V"),
    "current_l1": MeterNode("CurrentL1", "A"),
    "current_l2": MeterNode("CurrentL2", "A"),
    "current_l3": MeterNode("CurrentL3", "A"),
    "active_power": MeterNode("ActivePower", "kW"),
    "reactive_power": MeterNode("ReactivePower", "kvar"),
    "power_factor": MeterNode("PowerFactor", ""),
    "frequency": MeterNode("Frequency", "Hz"),
    "energy": MeterNode("Energy", "kWh"),
    "voltage_waveform_l1": MeterNode("VoltageWaveformL1", "V", kind="waveform"),
}
"""Point name -> node; the point names are those the demo and tests configure."""


def free_loopback_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class _PasswordUsers:
    """asyncua user manager: anonymous when no users are configured, else name + password."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self._users = dict(users)

    def get_user(self, iserver: Any, username: str | None = None, password: str | bytes | None = None,
                 certificate: Any = None) -> User | None:
        if not self._users:
            return User(role=UserRole.User)
        expected = self._users.get(username or "")
        if expected is None or password is None:
            return None
        given = password if isinstance(password, bytes) else password.encode("utf-8")
        return User(role=UserRole.User) if hmac.compare_digest(expected.encode("utf-8"), given) else None


class PowerMeterSimulator:
    """A three-phase power meter behind an asyncua server; see the module docstring."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 0,
        security: bool = False,
        certificate_file: str | Path | None = None,
        private_key_file: str | Path | None = None,
        trusted_certificates: Sequence[str | Path] = (),
        users: Mapping[str, str] | None = None,
        update_interval_s: float = UPDATE_INTERVAL_S,
        schedule: Sequence[tuple[float, str]] = (),
        boot_delay_s: float = 0.0,
    ) -> None:
        if host in ("", "0.0.0.0", "::"):
            raise ValueError("bind the simulator to a specific (loopback) address, not all interfaces")
        if (certificate_file is None) != (private_key_file is None):
            raise ValueError("certificate_file and private_key_file go together")
        self.host = host
        self.port = port
        self.security = security
        self.certificate_file = Path(certificate_file) if certificate_file else None
        self.private_key_file = Path(private_key_file) if private_key_file else None
        self.trusted_certificates = [Path(p) for p in trusted_certificates]
        self.users = dict(users or {})
        self.update_interval_s = update_interval_s
        self.schedule: list[tuple[float, str]] = list(schedule)
        self.boot_delay_s = boot_delay_s
        self.faults: dict[str, dict[str, float]] = {}
        self._schedule_done = 0  # schedule entries already applied
        self._rng = np.random.default_rng(seed)
        self._energy_kwh = 10_000.0 + 1000.0 * self._rng.random()
        self._started_at = 0.0
        self._server: Server | None = None
        self._nodes: dict[str, Any] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._offline_written = False

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}{ENDPOINT_PATH}"

    # ---------------------------------------------------------------------------------- faults

    def inject(self, fault: str, **params: float) -> None:
        defaults: dict[str, dict[str, float]] = {
            "phase_imbalance": {"phase": 1, "current_factor": 1.5, "voltage_sag": 0.08},
            "offline": {},
        }
        if fault not in defaults:
            raise ValueError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")
        unknown = set(params) - set(defaults[fault])
        if unknown:
            raise ValueError(f"{fault}: unknown parameter(s) {sorted(unknown)}")
        merged = {**defaults[fault], **params}
        if fault == "phase_imbalance" and int(merged["phase"]) not in (1, 2, 3):
            raise ValueError("phase_imbalance: phase must be 1, 2 or 3")
        self.faults[fault] = merged
        self._offline_written = False
        log.info("power meter: fault %s injected %s", fault, merged)

    def clear(self, fault: str) -> None:
        if self.faults.pop(fault, None) is not None:
            log.info("power meter: fault %s cleared", fault)

    # ------------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Start (or restart) the server; on a restart the port and the meter's energy are kept."""
        if self._server is not None:
            raise RuntimeError("power meter simulator is already running")
        if self.port == 0:
            self.port = free_loopback_port(self.host)
        server = Server(user_manager=_PasswordUsers(self.users))  # type: ignore[arg-type]
        await server.init()
        # The server's clock task makes stop() wait up to a second; the meter stamps its own values.
        server.disable_clock()
        server.set_endpoint(self.endpoint)
        server.set_server_name("facility-twin simulated power meter")
        await server.set_application_uri(APPLICATION_URI)
        server.set_identity_tokens([ua.UserNameIdentityToken] if self.users else [ua.AnonymousIdentityToken])
        if self.security:
            await self._setup_security(server)
        else:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        idx = await server.register_namespace(NAMESPACE_URI)
        if idx != 2:
            raise RuntimeError(f"namespace {NAMESPACE_URI} got index {idx}, the documented node ids need 2")
        await server.start()
        self._server = server
        if self._started_at == 0.0:
            self._started_at = time.monotonic()
        self._apply_due_schedule()  # entries due now act before the first values are written
        self._tasks = [asyncio.create_task(self._boot_and_run(server, idx), name="power-meter-model"),
                       asyncio.create_task(self._run_schedule(), name="power-meter-schedule")]
        log.info("power meter: serving %s (security=%s)", self.endpoint, self.security)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self._nodes = {}
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop()

    def _workdir(self) -> Path:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="power-meter-")
        return Path(self._tmp.name)

    async def _setup_security(self, server: Server) -> None:
        if self.certificate_file is None or self.private_key_file is None:
            self.certificate_file = self._workdir() / "server-cert.der"
            self.private_key_file = self._workdir() / "server-key.pem"
            await setup_self_signed_certificate(
                self.private_key_file, self.certificate_file, APPLICATION_URI, self.host,
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH], {})
        await server.load_certificate(str(self.certificate_file))
        await server.load_private_key(str(self.private_key_file))
        server.set_security_policy([
            ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
            ua.SecurityPolicyType.Basic256Sha256_Sign,
        ])
        if self.trusted_certificates:
            # asyncua's trust store reads every *.pem/*.der of a directory: give it one with only certificates
            trust_dir = self._workdir() / "trusted"
            shutil.rmtree(trust_dir, ignore_errors=True)
            trust_dir.mkdir()
            for i, cert in enumerate(self.trusted_certificates):
                shutil.copyfile(cert, trust_dir / f"{i}-{cert.name}")
            store = TrustStore([trust_dir], [])
            await store.load()
            validator = CertificateValidator(
                CertificateValidatorOptions.TRUSTED_VALIDATION | CertificateValidatorOptions.PEER_CLIENT, store)
            server.set_certificate_validator(validator)

    async def _boot_and_run(self, server: Server, idx: int) -> None:
        if self.boot_delay_s > 0:
            await asyncio.sleep(self.boot_delay_s)
        meter = await server.nodes.objects.add_object(ua.NodeId("Meter", idx), ua.QualifiedName("Meter", idx))
        for name, node in NODES.items():
            initial: Any = [0.0] * WAVEFORM_SAMPLES if node.kind == "waveform" else 0.0
            self._nodes[name] = await meter.add_variable(
                ua.NodeId(f"Meter.{node.browse_name}", idx), ua.QualifiedName(node.browse_name, idx),
                ua.Variant(initial, ua.VariantType.Double))
        self._offline_written = False
        next_tick = time.monotonic()
        while True:
            try:
                await self._tick(server)
            except Exception:
                log.exception("power meter: model update failed")
            next_tick += self.update_interval_s
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))

    def _apply_due_schedule(self) -> float | None:
        """Apply the schedule entries that are due; return seconds until the next one (None: none left).

        Entries run once, in time order, across restarts: a restart continues the schedule.
        """
        pending = sorted(self.schedule)[self._schedule_done:]
        elapsed = time.monotonic() - self._started_at
        for at, action in pending:
            if at > elapsed:
                return at - elapsed
            self._schedule_done += 1
            if action.startswith("clear:"):
                self.clear(action.removeprefix("clear:"))
            else:
                self.inject(action)
        return None

    async def _run_schedule(self) -> None:
        while True:
            wait = self._apply_due_schedule()
            if wait is None:
                return
            await asyncio.sleep(wait)

    # ----------------------------------------------------------------------------------- model

    def sample(self, t: float) -> dict[str, float | list[float]]:
        """One set of meter readings at `t` seconds since start (advances energy and noise)."""
        rng = self._rng
        load = 1.0 + 0.1 * math.sin(2 * math.pi * t / 300.0)
        current = BASE_CURRENT * load * np.array([1.0, 1.02, 0.985]) + rng.normal(0.0, 0.4, 3)
        voltage = NOMINAL_VOLTAGE * np.array([1.0, 1.003, 0.998]) - 0.01 * current + rng.normal(0.0, 0.25, 3)
        imbalance = self.faults.get("phase_imbalance")
        if imbalance is not None:
            phase = int(imbalance["phase"]) - 1
            current[phase] *= imbalance["current_factor"]
            voltage[phase] *= 1.0 - imbalance["voltage_sag"]
        pf = float(min(0.999, 0.92 + rng.normal(0.0, 0.003)))
        apparent = voltage * current / 1000.0
        active = float(np.sum(apparent) * pf)
        reactive = float(np.sum(apparent) * math.sin(math.acos(pf)))
        frequency = 50.0 + float(rng.normal(0.0, 0.01))
        self._energy_kwh += active * self.update_interval_s / 3600.0
        ts = t + np.arange(WAVEFORM_SAMPLES) / WAVEFORM_RATE_HZ
        peak = voltage[0] * math.sqrt(2.0)
        wave = (peak * np.sin(2 * np.pi * frequency * ts)
                + 0.02 * peak * np.sin(2 * np.pi * 3 * frequency * ts)
                + 0.01 * peak * np.sin(2 * np.pi * 5 * frequency * ts)
                + rng.normal(0.0, 0.5, WAVEFORM_SAMPLES))
        return {
            "voltage_l1": float(voltage[0]), "voltage_l2": float(voltage[1]), "voltage_l3": float(voltage[2]),
            "current_l1": float(current[0]), "current_l2": float(current[1]), "current_l3": float(current[2]),
            "active_power": active, "reactive_power": reactive, "power_factor": pf, "frequency": frequency,
            "energy": self._energy_kwh, "voltage_waveform_l1": [float(x) for x in wave],
        }

    async def _tick(self, server: Server) -> None:
        now = datetime.now(UTC)
        if "offline" in self.faults:
            if not self._offline_written:
                bad = ua.StatusCode(ua.StatusCodes.BadNoCommunication)
                for node in self._nodes.values():
                    await server.write_attribute_value(
                        node.nodeid, ua.DataValue(ua.Variant(None), StatusCode=bad, SourceTimestamp=now,
                                                  ServerTimestamp=now))
                self._offline_written = True
            return
        self._offline_written = False
        period_us = max(1, round(self.update_interval_s * 1e6))
        since_epoch_us = (now - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
        grid = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=since_epoch_us - since_epoch_us % period_us)
        values = self.sample(time.monotonic() - self._started_at)
        for name, node in self._nodes.items():
            await server.write_attribute_value(
                node.nodeid, ua.DataValue(ua.Variant(values[name], ua.VariantType.Double),
                                          SourceTimestamp=grid, ServerTimestamp=now))


def _parse_fault(text: str) -> tuple[float, str]:
    fault, _, at = text.partition("@")
    return float(at or 0.0), fault


async def _serve(args: argparse.Namespace) -> None:
    sim = PowerMeterSimulator(host=args.host, port=args.port, seed=args.seed, security=args.security,
                              certificate_file=args.cert, private_key_file=args.key,
                              schedule=[_parse_fault(f) for f in args.fault])
    await sim.start()
    print(f"power meter simulator on {sim.endpoint}", flush=True)
    await until_terminated()
    await sim.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m simulator.power_meter",
                                     description="Simulated three-phase power meter over OPC-UA.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4840)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--security", action="store_true", help="Basic256Sha256 endpoints only")
    parser.add_argument("--cert", help="server certificate (DER or PEM); generated when omitted")
    parser.add_argument("--key", help="server private key (PEM)")
    parser.add_argument("--fault", action="append", default=[], metavar="FAULT@SECONDS",
                        help="inject FAULT that many seconds after start, e.g. phase_imbalance@30 "
                             "(clear:FAULT@S clears it); repeatable")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("asyncua").setLevel(logging.WARNING)
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
