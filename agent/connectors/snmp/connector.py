"""The SNMP connector: polls each agent's scalars (GET) and tables (GETBULK walk) at its interval.

Every device has its own poll task, so an agent that times out (after its own timeout and
retries) delays nobody else. A device that does not answer, or refuses our credentials, is
offline: its points get one BAD reading per attempt with the reason and no value, and it is
retried with capped, jittered backoff (connection health: agent/connectors/health.py). An agent
that answers with an error-status is online; only the points of that request are BAD.

sysUpTime.0 rides along in the first GET of every poll: when it goes back, the agent restarted,
and counters are re-baselined instead of read as a wrap.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.connectors.base import ConnectorStats, Emit
from agent.connectors.health import PeerHealth
from agent.connectors.periodic import first_due, run_periodic
from agent.connectors.snmp.codec import (
    ABSENT,
    COUNTER_BITS,
    ENTITY_SENSOR_COLUMNS,
    Decoding,
    SnmpValue,
    counter_delta,
    decode,
    entity_sensor,
)
from agent.connectors.snmp.config import (
    ENTITY_SENSOR_ENTRY,
    IndexTarget,
    ResolvedDevice,
    SnmpColumn,
    SnmpSourceConfig,
    SnmpTable,
    parse_oid,
    parse_source,
)
from agent.connectors.snmp.session import Oid, RequestFailed, SnmpSession, new_engine
from agent.model import PointSpec, Quality, Reading, now_ns
from runtime.errors import ConnectError, DecodeError
from runtime.logs import RateLimitedLog

__all__ = ["SnmpConnector", "build"]

log = logging.getLogger("twin.agent.snmp")

SYS_UPTIME: Oid = (1, 3, 6, 1, 2, 1, 1, 3, 0)
LOG_EVERY_S = 60.0


@dataclass(frozen=True, slots=True)
class _Target:
    """Where one value goes: an asset's point, decoded as configured."""

    asset: str
    name: str
    decoding: Decoding


@dataclass(slots=True)
class _TablePlan:
    label: str
    entity_sensor: bool
    columns: list[Oid]  # walked together
    # row index -> one target per column (columns tables), or the sensor's target (entity-sensor)
    rows: dict[Oid, list[_Target]]


@dataclass(slots=True)
class _Device:
    """Poll plan and state of one agent."""

    name: str
    resolved: ResolvedDevice
    interval_s: float
    max_repetitions: int
    batches: list[list[Oid]]  # GET requests; the first starts with sysUpTime.0
    scalars: dict[Oid, list[_Target]]
    tables: list[_TablePlan]
    health: PeerHealth
    session: SnmpSession | None = None
    engine: Any = None
    uptime: int | None = None
    counters: dict[tuple[str, str], tuple[int, float]] = field(default_factory=dict)


def _decoding(c: SnmpColumn) -> Decoding:
    return Decoding(function=c.function, tc=c.tc, enum=tuple(c.enum.items()), true_values=frozenset(c.true_values),
                    scale=c.scale, offset=c.offset)


def _index_target(target: str | IndexTarget) -> IndexTarget:
    return IndexTarget(asset=target) if isinstance(target, str) else target


class SnmpConnector:
    """Reads the agents of one `[[sources]] type = "snmp"` table; see the package README."""

    def __init__(self, config: SnmpSourceConfig, devices: Sequence[ResolvedDevice],
                 rng: random.Random | None = None) -> None:
        self.config = config
        self.name = config.name
        self.stats = ConnectorStats()
        self.unmapped_rows = 0
        self._requests_closed = 0
        self._rng = rng or random.Random()
        self._resolved = tuple(devices)
        self._rate_log = RateLimitedLog(log, LOG_EVERY_S)
        specs: list[PointSpec] = []
        self._plans: list[_Device] = []
        for r in self._resolved:
            plan, device_specs = self._plan(r)
            self._plans.append(plan)
            specs += device_specs
        self._specs = tuple(specs)

    # -- the Connector protocol ------------------------------------------------------------------

    def points(self) -> Sequence[PointSpec]:
        return self._specs

    async def run(self, emit: Emit) -> None:
        """Poll every device until cancelled."""
        try:
            async with asyncio.TaskGroup() as tasks:
                for device in self._plans:
                    tasks.create_task(self._poll_loop(device, emit), name=f"{self.name}/{device.name}")
        finally:
            for device in self._plans:
                self._close(device)

    # -- extras ----------------------------------------------------------------------------------

    async def read_once(self, cycles: int = 1) -> list[Reading]:
        """Poll every device `cycles` times (devices in parallel): for diagnostics, tests and benchmarks."""
        out: list[Reading] = []

        async def cycle(device: _Device) -> None:
            for _ in range(cycles):
                await self._poll(device, out.extend)

        try:
            async with asyncio.TaskGroup() as tasks:
                for device in self._plans:
                    tasks.create_task(cycle(device))
        finally:
            for device in self._plans:
                self._close(device)
        return out

    @property
    def requests_sent(self) -> int:
        """Requests sent so far (GET and GETBULK; pysnmp's own retries not counted)."""
        return self._requests_closed + sum(d.session.requests for d in self._plans if d.session is not None)

    # -- planning --------------------------------------------------------------------------------

    def _open(self, device: _Device) -> SnmpSession:
        """The device's session, on an SNMP engine of its own.

        One engine per agent keeps what an engine caches about its peer (SNMPv3 engine id, boots
        and time) per agent, and lets a failed agent start over: pysnmp does not re-synchronise
        with an agent that restarted with a higher engineBoots, so the engine is dropped on
        every failure and the next poll discovers the agent afresh.
        """
        if device.session is None:
            d = device.resolved.device
            device.engine = new_engine()
            device.session = SnmpSession(device.engine, d.host, d.port, device.resolved.credentials,
                                         self.config.timeout_for(d), self.config.retries_for(d),
                                         self.config.local_address)
        return device.session

    def _close(self, device: _Device) -> None:
        if device.session is not None:
            self._requests_closed += device.session.requests
        if device.engine is not None:
            device.engine.close_dispatcher()
        device.session = device.engine = None

    def _plan(self, r: ResolvedDevice) -> tuple[_Device, list[PointSpec]]:
        d = r.device
        interval = self.config.interval_for(d)
        specs: list[PointSpec] = []

        def spec(asset: str, name: str, unit: str, c: SnmpColumn | None) -> None:
            specs.append(PointSpec(asset=asset, name=name, unit=unit, kind=c.kind if c else "measurement",
                                   expected_interval_s=interval, deadband=c.deadband if c else 0.0))

        scalars: dict[Oid, list[_Target]] = {}
        for p in r.points:
            asset = p.asset or d.asset
            assert asset is not None
            scalars.setdefault(parse_oid(p.oid), []).append(_Target(asset, p.name, _decoding(p)))
            spec(asset, p.name, p.unit, p)
        oids = [o for o in scalars if o != SYS_UPTIME]
        per = d.max_oids_per_request
        batches = [[SYS_UPTIME, *oids[: per - 1]]] + [oids[i:i + per] for i in range(per - 1, len(oids), per)]
        tables = [self._table_plan(t, index_map, d.name, spec) for t, index_map in r.tables]
        health = PeerHealth(self.name, d.name, self.stats, log, interval, max(interval, self.config.backoff_max_s),
                            self._rng)
        return _Device(d.name, r, interval, d.max_repetitions, batches, scalars, tables, health), specs

    @staticmethod
    def _table_plan(t: SnmpTable, index_map: dict[str, str | IndexTarget], device: str, spec: Any) -> _TablePlan:
        rows: dict[Oid, list[_Target]] = {}
        if t.kind == "entity-sensor":
            base = parse_oid(t.oid or ENTITY_SENSOR_ENTRY)
            columns = [(*base, n) for n in sorted(set(ENTITY_SENSOR_COLUMNS.values()) - {6})]
            for index, raw in index_map.items():
                target = _index_target(raw)
                assert target.name is not None
                rows[parse_oid(index)] = [_Target(target.asset, target.name, Decoding())]
                spec(target.asset, target.name, target.unit or "", None)
            return _TablePlan(t.name or f"{device} entPhySensorTable", True, columns, rows)
        columns = [parse_oid(c.oid) for c in t.columns]
        for index, raw in index_map.items():
            target = _index_target(raw)
            row = []
            for c in t.columns:
                name = target.name or c.name
                row.append(_Target(target.asset, name, _decoding(c)))
                spec(target.asset, name, target.unit if target.unit is not None else c.unit, c)
            rows[parse_oid(index)] = row
        return _TablePlan(t.name or f"{device} table {t.columns[0].oid}", False, columns, rows)

    # -- polling ---------------------------------------------------------------------------------

    async def _poll_loop(self, device: _Device, emit: Emit) -> None:
        def crashed() -> None:  # a bug or a surprise: count it, log it now and then, keep polling
            self.stats.errors += 1
            if self._rate_log.warning(f"crash:{device.name}", f"{self.name}/{device.name}: poll cycle failed"):
                log.exception("%s/%s: poll cycle failed", self.name, device.name)

        async def poll() -> float:
            return await self._poll(device, emit)

        await run_periodic(poll, device.interval_s, first_due(self._rng, device.interval_s), crashed)

    async def _poll(self, device: _Device, emit: Emit) -> float:
        """One poll of one device; returns the delay before the next (the interval, or the backoff)."""
        session = self._open(device)
        readings: list[Reading | None] = []
        try:
            for n, batch in enumerate(device.batches):
                try:
                    values = await session.get(batch)
                except RequestFailed as exc:
                    self._refused(device, f"GET: {exc}")
                    readings += self._bad([t for o in batch for t in device.scalars.get(o, [])], str(exc), now_ns())
                    continue
                arrived, mono = now_ns(), time.monotonic()
                if n == 0:
                    self._uptime(device, values[0])
                for oid, value in zip(batch, values, strict=True):
                    readings += [self._reading(device, t, value, arrived, mono) for t in device.scalars.get(oid, [])]
            for table in device.tables:
                try:
                    columns = await session.walk(table.columns, device.max_repetitions)
                except RequestFailed as exc:
                    self._refused(device, f"walk {table.label}: {exc}")
                    readings += self._bad([t for ts in table.rows.values() for t in ts], str(exc), now_ns())
                    continue
                readings += self._table_readings(device, table, columns, now_ns(), time.monotonic())
        except ConnectError as exc:  # AgentSilent, AgentRefused, unresolvable host
            delay = device.health.failed(str(exc))
            device.counters.clear()
            self._close(device)
            emit([r for r in readings if r is not None] + self._bad(self._targets(device), str(exc), now_ns()))
            return delay
        device.health.answered()
        self.stats.polls += 1
        emit([r for r in readings if r is not None])
        return device.interval_s

    def _uptime(self, device: _Device, uptime: SnmpValue) -> None:
        """An uptime that went back is an agent restart: counters start again from a new baseline."""
        if isinstance(uptime.value, int) and uptime.syntax == "TimeTicks":
            if device.uptime is not None and uptime.value < device.uptime:
                log.info("%s/%s: agent restarted (sysUpTime went back); counters start again", self.name, device.name)
                device.counters.clear()
            device.uptime = uptime.value

    def _table_readings(self, device: _Device, table: _TablePlan, columns: dict[Oid, dict[Oid, SnmpValue]],
                        arrived: int, mono: float) -> list[Reading | None]:
        readings: list[Reading | None] = []
        seen = {index for col in columns.values() for index in col}
        unmapped = seen - set(table.rows)
        if unmapped:
            self.unmapped_rows += len(unmapped)
            self._rate_log.warning(f"unmapped:{table.label}", f"{self.name}/{device.name}: {table.label}: rows "
                                   f"{sorted('.'.join(map(str, i)) for i in unmapped)[:10]} are not in index_map")
        for index, targets in table.rows.items():
            if index not in seen:
                reason = f"no row {'.'.join(map(str, index))} in {table.label}"
                readings += self._bad(targets, reason, arrived)
                continue
            if table.entity_sensor:
                readings.append(self._sensor_reading(targets[0], {c[-1]: columns[c].get(index, SnmpValue(
                    "noSuchInstance")) for c in table.columns}, arrived))
                continue
            for column, target in zip(table.columns, targets, strict=True):
                value = columns[column].get(index, SnmpValue("noSuchInstance"))
                readings.append(self._reading(device, target, value, arrived, mono))
        return readings

    # -- decoding --------------------------------------------------------------------------------

    def _reading(self, device: _Device, t: _Target, value: SnmpValue, arrived: int, mono: float) -> Reading | None:
        if value.syntax in ABSENT:
            return Reading(t.asset, t.name, None, arrived, Quality.BAD, value.syntax)
        try:
            bits = COUNTER_BITS.get(value.syntax)
            function = t.decoding.function or ("rate" if bits else "value")
            if function == "value":
                return Reading(t.asset, t.name, decode(value, t.decoding), arrived)
            if bits is None:
                raise DecodeError(f'function "{function}" needs a Counter32 or Counter64, got {value.syntax}')
            assert isinstance(value.value, int)
            key = (t.asset, t.name)
            before = device.counters.get(key)
            device.counters[key] = (value.value, mono)
            if before is None:
                return None  # the first poll (or the first after a restart) is the baseline
            delta = counter_delta(value.value, before[0], bits)
            number = float(delta) if function == "increase" else delta / max(mono - before[1], 1e-9)
            return Reading(t.asset, t.name, number * t.decoding.scale + t.decoding.offset, arrived)
        except DecodeError as exc:
            return self._decode_error(t, str(exc), arrived)

    def _sensor_reading(self, t: _Target, row: dict[int, SnmpValue], arrived: int) -> Reading:
        try:
            sensor = entity_sensor(row)
        except DecodeError as exc:
            return self._decode_error(t, str(exc), arrived)
        if sensor.status != "ok":
            return Reading(t.asset, t.name, None, arrived, Quality.BAD, f"sensor {sensor.status}")
        return Reading(t.asset, t.name, sensor.value, arrived)

    def _decode_error(self, t: _Target, reason: str, arrived: int) -> Reading:
        self.stats.decode_errors += 1
        self._rate_log.warning(f"decode:{t.asset}/{t.name}", f"{self.name}: {t.asset}/{t.name}: decode error: {reason}")
        return Reading(t.asset, t.name, None, arrived, Quality.BAD, f"decode error: {reason}")

    def _refused(self, device: _Device, reason: str) -> None:
        device.health.answered()
        self.stats.errors += 1
        self.stats.last_error = f"{device.name}: {reason}"
        self._rate_log.warning(f"refused:{device.name}:{reason}", f"{self.name}/{device.name}: {reason}")

    @staticmethod
    def _targets(device: _Device) -> list[_Target]:
        return [t for ts in device.scalars.values() for t in ts] + [
            t for table in device.tables for ts in table.rows.values() for t in ts]

    @staticmethod
    def _bad(targets: Sequence[_Target], reason: str, ts_ns: int) -> list[Reading]:
        return [Reading(t.asset, t.name, None, ts_ns, Quality.BAD, reason) for t in targets]


def build(table: dict[str, Any], key: str) -> SnmpConnector:
    """Registry entry point: a validated `[[sources]]` table (without `type`) -> connector."""
    config, devices = parse_source(table, key)
    return SnmpConnector(config, devices)

