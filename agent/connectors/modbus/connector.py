"""The Modbus connector: polls the units behind one TCP connection or serial bus.

At start the points are coalesced into read requests (plan.py). Each unit id then gets its own
poll task, which runs its requests at their intervals. A unit that stops answering (timeout,
connection refused, gateway exception 10/11) is marked offline in `stats.devices_online`, its
points get BAD readings with the reason and no value, and it is retried with capped exponential
backoff with jitter; the other units keep their cadence. A unit that answers with any other
exception code is online: only the points of that request are BAD. Every cycle is guarded, so
one surprise (a bug, a strange response) is counted and logged, never the end of the task.

Every point is read once right after start, whatever its interval: the units' first polls are
spread over at most START_SPREAD_S (agent/connectors/periodic.py; not a fraction of the interval,
which with a 1 h interval left units unread for minutes), then each request follows its own interval.
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
from agent.connectors.modbus.codec import Decoding, decode
from agent.connectors.modbus.config import ModbusPoint, ModbusSourceConfig, parse_source
from agent.connectors.modbus.link import ExceptionResponse, Link, NoResponse
from agent.connectors.modbus.plan import BIT_FUNCTIONS, ReadRequest, Span, plan_reads
from agent.connectors.periodic import first_due
from agent.model import PointSpec, Quality, Reading, now_ns
from runtime.backoff import backoff_delay
from runtime.cancellation import raise_if_cancelling
from runtime.errors import ConnectError, DecodeError, SourceError

__all__ = ["ModbusConnector", "build", "refusal_reason"]

log = logging.getLogger("twin.agent.modbus")

LOG_EVERY_S = 60.0  # at most one log line per unit and kind of problem in this period
ILLEGAL_DATA_VALUE = 3


@dataclass(slots=True)
class _Unit:
    """Poll state of one unit id."""

    unit_id: int
    label: str
    timeout_s: float
    retries: int
    requests: list[ReadRequest]
    online: bool | None = None
    failures: int = 0
    retry_at: float = 0.0
    last_log: dict[str, float] = field(default_factory=dict)

    @property
    def base_interval_s(self) -> float:
        return min(r.interval_s for r in self.requests)


class ModbusConnector:
    """Reads the points of one `[[sources]] type = "modbus"` table; see the package README."""

    def __init__(self, config: ModbusSourceConfig, rng: random.Random | None = None) -> None:
        self.config = config
        self.name = config.name
        self.stats = ConnectorStats()
        self._rng = rng or random.Random()
        self._points: tuple[ModbusPoint, ...] = tuple(config.points)
        self._specs = tuple(
            PointSpec(asset=p.asset, name=p.name, unit=p.unit, kind=p.kind,
                      expected_interval_s=config.interval_for(p), deadband=p.deadband)
            for p in self._points
        )
        self._decodings = tuple(
            Decoding(data_type=p.data_type, byte_order=p.byte_order or "big", word_order=p.word_order or "big",
                     bit=p.bit or 0, length=p.length or 0, scale=p.scale, offset=p.offset)
            for p in self._points
        )
        spans = [
            Span(key=i, unit_id=p.unit_id, function=p.function, address=config.pdu_address(p),
                 width=self._decodings[i].width, interval_s=config.interval_for(p))
            for i, p in enumerate(self._points)
        ]
        self.requests: tuple[ReadRequest, ...] = tuple(
            plan_reads(spans, config.max_registers_per_request, config.max_bits_per_request, config.max_gap)
        )
        self._units: dict[int, _Unit] = {}
        for req in self.requests:
            if req.unit_id not in self._units:
                dev = config.device(req.unit_id)
                self._units[req.unit_id] = _Unit(
                    unit_id=req.unit_id, label=dev.name or f"unit-{req.unit_id}",
                    timeout_s=config.timeout_for(req.unit_id), retries=config.retries_for(req.unit_id),
                    requests=[],
                )
            self._units[req.unit_id].requests.append(req)
        self._link: Link | None = None
        self._requests_closed = 0  # requests_sent of links closed before
        self._reconnects_seen = 0
        self._last_decode_log = 0.0

    # -- the Connector protocol ------------------------------------------------------------------

    def points(self) -> Sequence[PointSpec]:
        return self._specs

    async def run(self, emit: Emit) -> None:
        """Poll every unit until cancelled."""
        link = self._open_link()
        try:
            async with asyncio.TaskGroup() as tasks:
                for unit in self._units.values():
                    tasks.create_task(self._poll_unit(link, unit, emit), name=f"{self.name}/{unit.label}")
        finally:
            self.close()

    # -- extras ---------------------------------------------------------------------------------

    @property
    def requests_sent(self) -> int:
        """Requests put on the line so far (retries included)."""
        return self._requests_closed + (self._link.requests_sent if self._link else 0)

    async def read_once(self) -> list[Reading]:
        """Read every point once (units in parallel, no backoff): for diagnostics and benchmarks."""
        link = self._open_link()
        out: list[Reading] = []

        async def one_unit(unit: _Unit) -> None:
            await self._cycle(link, unit, unit.requests, out.extend)

        async with asyncio.TaskGroup() as tasks:
            for unit in self._units.values():
                tasks.create_task(one_unit(unit))
        return out

    def close(self) -> None:
        if self._link is not None:
            self._requests_closed += self._link.requests_sent
            self._link.close()
            self._link = None

    def decode_response(self, request: ReadRequest, values: Sequence[int] | Sequence[bool], ts_ns: int
                        ) -> list[Reading]:
        """Turn the values of one response into readings; a point that fails to decode is BAD."""
        readings = []
        for span in request.spans:
            point = self._points[span.key]
            start = span.address - request.address
            try:
                value = decode(values[start:start + span.width], self._decodings[span.key])
            except DecodeError as exc:
                self.stats.decode_errors += 1
                self._log_decode_error(point, exc)
                readings.append(Reading(point.asset, point.name, None, ts_ns, Quality.BAD, f"decode error: {exc}"))
                continue
            readings.append(Reading(point.asset, point.name, value, ts_ns))
        return readings

    # -- polling --------------------------------------------------------------------------------

    def _open_link(self) -> Link:
        if self._link is None:
            self._link = Link(self.config)
            self._reconnects_seen = 0
        return self._link

    async def _poll_unit(self, link: Link, unit: _Unit, emit: Emit) -> None:
        # Every request is due at start; the units' first polls are spread a little (bounded in
        # absolute time) so that a gateway with many units does not open with one burst.
        start = first_due(self._rng, unit.base_interval_s)
        due = [start] * len(unit.requests)
        while True:
            raise_if_cancelling()  # pymodbus awaits each answer with wait_for, which can swallow a cancel
            now = time.monotonic()
            wake = max(unit.retry_at, min(due))
            if wake > now:
                await asyncio.sleep(wake - now)
                continue
            batch = []
            for i, req in enumerate(unit.requests):
                if due[i] <= now:
                    batch.append(req)
                    nxt = due[i] + req.interval_s
                    due[i] = nxt if nxt > now else now + req.interval_s  # skip missed slots, never burst
            try:
                await self._cycle(link, unit, batch, emit)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug or a surprise: count it, log it now and then, keep polling
                self.stats.errors += 1
                self.stats.last_error = f"{unit.label}: {type(exc).__name__}: {exc}"
                if self._should_log(unit, "crash"):
                    log.exception("%s/%s: poll cycle failed", self.name, unit.label)

    async def _cycle(self, link: Link, unit: _Unit, batch: Sequence[ReadRequest], emit: Emit) -> None:
        """Run `batch` for one unit; on silence skip the rest of the batch and back off."""
        for n, req in enumerate(batch):
            try:
                values, arrived = await link.read(unit.unit_id, req.function, req.address, req.count,
                                                  unit.timeout_s, unit.retries)
            except ExceptionResponse as exc:
                if exc.device_missing:
                    self._unit_failed(unit, batch[n:], exc.reason, emit)
                    return
                self._refused(unit, req, refusal_reason(exc, req, self.config.max_registers_per_request), emit)
                continue
            except (NoResponse, ConnectError) as exc:
                self._unit_failed(unit, batch[n:], str(exc), emit)
                return
            except SourceError as exc:  # a malformed answer: the unit is there but this read failed
                self._refused(unit, req, str(exc), emit)
                continue
            finally:
                self.stats.reconnects += link.reconnects - self._reconnects_seen
                self._reconnects_seen = link.reconnects
            self._unit_answered(unit)
            emit(self.decode_response(req, values, arrived))
        self.stats.polls += 1

    def _bad(self, spans: Sequence[Span], reason: str, ts_ns: int) -> list[Reading]:
        return [
            Reading(self._points[s.key].asset, self._points[s.key].name, None, ts_ns, Quality.BAD, reason)
            for s in spans
        ]

    def _refused(self, unit: _Unit, req: ReadRequest, reason: str, emit: Emit) -> None:
        """The unit answered but this read failed: it is online, the points of `req` are BAD."""
        self._unit_answered(unit)
        self._count_error(unit, f"{req.function} {req.address}+{req.count}: {reason}")
        emit(self._bad(req.spans, reason, now_ns()))

    def _unit_answered(self, unit: _Unit) -> None:
        if unit.online is False:
            log.info("%s/%s: answering again after %d failed cycle(s)", self.name, unit.label, unit.failures)
        unit.online, unit.failures, unit.retry_at = True, 0, 0.0
        self.stats.devices_online[unit.label] = True

    def _unit_failed(self, unit: _Unit, rest: Sequence[ReadRequest], reason: str, emit: Emit) -> None:
        unit.failures += 1
        delay = backoff_delay(unit.failures - 1, unit.base_interval_s, self.config.backoff_max_s, self._rng)
        unit.retry_at = time.monotonic() + delay
        if unit.online is not False:
            log.warning("%s/%s: offline (%s); retrying with backoff", self.name, unit.label, reason)
        unit.online = False
        self.stats.devices_online[unit.label] = False
        self._count_error(unit, reason, log_it=False)
        emit(self._bad([s for req in rest for s in req.spans], reason, now_ns()))

    def _count_error(self, unit: _Unit, reason: str, log_it: bool = True) -> None:
        self.stats.errors += 1
        self.stats.last_error = f"{unit.label}: {reason}"
        if log_it and self._should_log(unit, reason):
            log.warning("%s/%s: %s", self.name, unit.label, reason)

    def _should_log(self, unit: _Unit, kind: str) -> bool:
        now = time.monotonic()
        if now - unit.last_log.get(kind, -LOG_EVERY_S) < LOG_EVERY_S:
            return False
        unit.last_log[kind] = now
        return True

    def _log_decode_error(self, point: ModbusPoint, exc: DecodeError) -> None:
        now = time.monotonic()
        if now - self._last_decode_log >= LOG_EVERY_S:
            self._last_decode_log = now
            log.warning("%s: %s/%s: decode error: %s (%d so far)", self.name, point.asset, point.name, exc,
                        self.stats.decode_errors)


def refusal_reason(exc: ExceptionResponse, req: ReadRequest, max_registers: int) -> str:
    """The reason a refused read's points carry; exception 3 to a long read says what to change.

    Many devices answer a read longer than their own limit with exception 3 (illegal data value)
    instead of serving it (an Eastron SDM630 refuses more than 60 registers), so a request that
    coalesced several points fails although each point alone would read fine."""
    if exc.code != ILLEGAL_DATA_VALUE or req.count < 2 or req.function in BIT_FUNCTIONS:
        return exc.reason
    return (f"{exc.reason}: the device refused a read of {req.count} registers; it probably limits the "
            f"request size: set max_registers_per_request below {req.count} (now {max_registers}, "
            "see the device manual, e.g. 60)")


def build(table: dict[str, Any], key: str) -> ModbusConnector:
    """Registry entry point: a validated `[[sources]]` table (without `type`) -> connector."""
    return ModbusConnector(parse_source(table, key))
