"""One Modbus line: a TCP connection or a serial bus, shared by every unit id behind it.

Modbus has one outstanding request per line, and an RS-485 bus is literally one pair of wires, so
a `Link` serializes requests with a lock, waits `inter_request_delay_s` between them (slow
serial devices and gateways need a pause), retries a unit that answers "busy" (exception 6) and
retries a unit that does not answer, each attempt under the unit's own timeout. It reconnects a
dropped TCP connection on the next request, and closes a TCP connection on which several
requests in a row got no answer at all, since that is how a half-open connection (device rebooted,
NAT entry gone) looks from this side.

Typed outcomes let the connector tell "device silent" (NoResponse, ConnectError: the device is
offline) from "device said no" (ExceptionResponse: the device is online but refused the read).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException
from pymodbus.pdu import ModbusPDU

from agent.connectors.modbus.config import ModbusSourceConfig
from agent.connectors.modbus.plan import Function
from agent.model import now_ns
from runtime.errors import ConnectError, SourceError

__all__ = ["EXCEPTION_NAMES", "ExceptionResponse", "Link", "NoResponse"]

log = logging.getLogger("twin.agent.modbus")

EXCEPTION_NAMES: dict[int, str] = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    7: "negative acknowledge",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}
DEVICE_BUSY = 6
GATEWAY_CODES = frozenset({10, 11})  # a gateway answering for a device that is not there
SILENT_REQUESTS_BEFORE_RECONNECT = 3


class NoResponse(SourceError):
    """The unit did not answer within its timeout, after all retries."""


class ExceptionResponse(SourceError):
    """The unit answered with a Modbus exception code."""

    def __init__(self, code: int) -> None:
        self.code = code
        self.reason = f"exception {code} {EXCEPTION_NAMES.get(code, 'unknown')}"
        super().__init__(self.reason)

    @property
    def device_missing(self) -> bool:
        """A gateway reports that the device behind it is absent: treat like a timeout."""
        return self.code in GATEWAY_CODES


Client = AsyncModbusTcpClient | AsyncModbusSerialClient


class Link:
    """Requests over one TCP connection or serial bus, one at a time. Create inside the event loop."""

    def __init__(self, config: ModbusSourceConfig) -> None:
        self.config = config
        self.requests_sent = 0
        self.reconnects = 0
        self._lock = asyncio.Lock()
        self._client: Client | None = None
        self._ever_connected = False
        self._last_done = 0.0
        self._silent = 0

    @property
    def endpoint(self) -> str:
        return self.config.endpoint

    def _make_client(self) -> Client:
        c = self.config
        # Each request runs under the unit's own timeout (asyncio.timeout below); pymodbus' own
        # timeout is only a backstop, and its retries and automatic reconnects are off because this
        # class does both with knowledge of units and backoff.
        backstop = 2 * max([c.timeout_s, *(d.timeout_s or 0.0 for d in c.devices)])
        if c.transport == "tcp":
            assert c.host is not None
            return AsyncModbusTcpClient(c.host, port=c.port, name=c.name, timeout=backstop, retries=0,
                                        reconnect_delay=0)
        assert c.serial_port is not None
        return AsyncModbusSerialClient(c.serial_port, baudrate=c.baudrate, bytesize=c.bytesize, parity=c.parity,
                                       stopbits=c.stopbits, name=c.name, timeout=backstop, retries=0,
                                       reconnect_delay=0)

    async def _connected_client(self, timeout_s: float) -> Client:
        if self._client is None:
            self._client = self._make_client()
        if self._client.connected:
            return self._client
        if self._ever_connected:
            self.reconnects += 1
        try:
            async with asyncio.timeout(timeout_s):
                ok = await self._client.connect()
        except TimeoutError:
            ok = False
        if not ok:
            self._client.close()
            raise ConnectError(f"cannot connect to {self.endpoint}")
        if not self._ever_connected:
            log.info("%s: connected to %s", self.config.name, self.endpoint)
        self._ever_connected = True
        return self._client

    async def _pause(self) -> None:
        wait = self._last_done + self.config.inter_request_delay_s - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)

    async def _send(self, client: Client, function: Function, address: int, count: int, unit_id: int
                    ) -> ModbusPDU:
        if function == "holding":
            return await client.read_holding_registers(address, count=count, device_id=unit_id)
        if function == "input":
            return await client.read_input_registers(address, count=count, device_id=unit_id)
        if function == "coil":
            return await client.read_coils(address, count=count, device_id=unit_id)
        return await client.read_discrete_inputs(address, count=count, device_id=unit_id)

    async def _attempt(self, unit_id: int, function: Function, address: int, count: int, timeout_s: float
                       ) -> tuple[Sequence[int] | Sequence[bool] | int | None, int]:
        """One request on the line. Returns (values | exception code | None for silence, arrival ns)."""
        async with self._lock:
            await self._pause()
            client = await self._connected_client(timeout_s)
            self.requests_sent += 1
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for drops a cancellation that
                # arrives as the response does, and the connector then never stops.
                async with asyncio.timeout(timeout_s):
                    response = await self._send(client, function, address, count, unit_id)
            except (TimeoutError, ModbusIOException):
                self._note_silence(client)
                return None, now_ns()
            except ConnectionException as exc:
                client.close()
                raise ConnectError(f"{self.endpoint}: {exc}") from None
            finally:
                self._last_done = time.monotonic()
            arrived = now_ns()
            self._silent = 0
        if response.isError():
            return int(getattr(response, "exception_code", 0)), arrived
        values = response.bits[:count] if function in ("coil", "discrete") else response.registers
        return list(values), arrived

    def _note_silence(self, client: Client) -> None:
        self._silent += 1
        if self.config.transport == "tcp" and self._silent >= SILENT_REQUESTS_BEFORE_RECONNECT:
            log.info("%s: %d requests without any answer on %s; reconnecting", self.config.name,
                     self._silent, self.endpoint)
            self._silent = 0
            client.close()

    async def read(self, unit_id: int, function: Function, address: int, count: int, timeout_s: float,
                   retries: int) -> tuple[list[int] | list[bool], int]:
        """Read `count` registers or bits; returns (values, arrival time in ns).

        Raises NoResponse after `retries` + 1 silent attempts, ExceptionResponse for an exception
        answer (after `busy_retries` for "busy"), ConnectError when the line cannot be opened.
        """
        silent = busy = 0
        while True:
            result, arrived = await self._attempt(unit_id, function, address, count, timeout_s)
            if isinstance(result, list):
                if len(result) < count:
                    raise SourceError(f"short response: {len(result)} of {count} values")
                return result, arrived
            if result is None:
                silent += 1
                if silent > retries:
                    connected = self._client is not None and self._client.connected
                    raise NoResponse("timeout" if connected else "timeout (connection lost)")
                continue
            code = int(result)  # type: ignore[arg-type]
            if code == DEVICE_BUSY and busy < self.config.busy_retries:
                busy += 1
                await asyncio.sleep(self.config.busy_delay_s)
                continue
            raise ExceptionResponse(code)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
