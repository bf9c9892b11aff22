"""The `[[sources]] type = "modbus"` table: shape, defaults and the semantic checks that fail.

Pydantic checks the shape (unknown keys, types, ranges). `parse_source` then applies the checks
Home Assistant's Modbus validators taught integrators to expect: a value must fit in the address
space, word order only means something for multi-register types, a bit index only for
type = "bit", a poll interval must exceed the timeout, and so on. Every message names the key to
fix, e.g. `sources[0].points[3].word_order: ...`, and all problems are reported at once.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from pydantic import Field

from agent.connectors.modbus.codec import MULTI_REGISTER_TYPES, NUMERIC_TYPES, DataType, register_count
from agent.connectors.modbus.plan import BIT_FUNCTIONS, Function
from runtime.errors import ConfigError
from runtime.tomlconfig import StrictModel, parse_model

__all__ = [
    "DEFAULTS",
    "ModbusDevice",
    "ModbusPoint",
    "ModbusSourceConfig",
    "parse_source",
    "reference_number_warning",
]

log = logging.getLogger("twin.agent.modbus")

MAX_UNIT_ID = 247
MAX_ADDRESS = 65535
# Register numbers as manuals print them: 30001 = input register 1, 40001 = holding register 1.
REFERENCE_BASES = {"input": 30001, "holding": 40001}
REFERENCE_RANGE = range(30001, 50000)


class DEFAULTS:
    """Default values of the source options, in one place."""

    PORT = 502
    BAUDRATE = 9600
    TIMEOUT_S = 1.0
    RETRIES = 1
    POLL_INTERVAL_S = 5.0
    MAX_REGISTERS_PER_REQUEST = 125  # protocol limit for FC 3/4
    MAX_BITS_PER_REQUEST = 2000  # protocol limit for FC 1/2
    MAX_GAP = 10
    INTER_REQUEST_DELAY_S = 0.0
    BUSY_RETRIES = 3
    BUSY_DELAY_S = 0.2
    BACKOFF_MAX_S = 60.0


class ModbusPoint(StrictModel):
    """One `[[sources.points]]` entry: a value on a device and the asset point it feeds."""

    asset: str = Field(min_length=1)
    name: str = Field(min_length=1)
    unit: str = ""
    kind: Literal["measurement", "setpoint", "state", "counter"] = "measurement"
    unit_id: int = Field(default=1, ge=0, le=MAX_UNIT_ID)
    function: Function = "holding"
    address: int = Field(ge=0, le=MAX_ADDRESS)
    type: DataType | None = None  # default: "bool" for coil/discrete, "uint16" for registers
    bit: int | None = None
    length: int | None = Field(default=None, ge=1)
    byte_order: Literal["big", "little"] | None = None
    word_order: Literal["big", "little"] | None = None
    scale: float = 1.0
    offset: float = 0.0
    deadband: float = Field(default=0.0, ge=0)
    poll_interval_s: float | None = Field(default=None, gt=0)

    @property
    def data_type(self) -> DataType:
        if self.type is not None:
            return self.type
        return "bool" if self.function in BIT_FUNCTIONS else "uint16"


class ModbusDevice(StrictModel):
    """Optional `[[sources.devices]]` entry: a label and timeout/retry overrides for one unit id."""

    unit_id: int = Field(ge=0, le=MAX_UNIT_ID)
    name: str = ""
    timeout_s: float | None = Field(default=None, gt=0)
    retries: int | None = Field(default=None, ge=0, le=10)


class ModbusSourceConfig(StrictModel):
    name: str = Field(min_length=1)
    transport: Literal["tcp", "rtu"] = "tcp"
    host: str | None = None
    port: int = Field(default=DEFAULTS.PORT, ge=1, le=65535)
    serial_port: str | None = None
    baudrate: int = Field(default=DEFAULTS.BAUDRATE, gt=0)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    timeout_s: float = Field(default=DEFAULTS.TIMEOUT_S, gt=0)
    retries: int = Field(default=DEFAULTS.RETRIES, ge=0, le=10)
    poll_interval_s: float = Field(default=DEFAULTS.POLL_INTERVAL_S, gt=0)
    max_registers_per_request: int = Field(default=DEFAULTS.MAX_REGISTERS_PER_REQUEST, ge=1, le=125)
    max_bits_per_request: int = Field(default=DEFAULTS.MAX_BITS_PER_REQUEST, ge=1, le=2000)
    max_gap: int = Field(default=DEFAULTS.MAX_GAP, ge=0)
    inter_request_delay_s: float = Field(default=DEFAULTS.INTER_REQUEST_DELAY_S, ge=0)
    address_base: int = 0
    busy_retries: int = Field(default=DEFAULTS.BUSY_RETRIES, ge=0, le=20)
    busy_delay_s: float = Field(default=DEFAULTS.BUSY_DELAY_S, ge=0)
    backoff_max_s: float = Field(default=DEFAULTS.BACKOFF_MAX_S, gt=0)
    devices: list[ModbusDevice] = []
    points: list[ModbusPoint] = Field(min_length=1)

    def device(self, unit_id: int) -> ModbusDevice:
        """The overrides for `unit_id` (an empty entry when none are configured)."""
        return next((d for d in self.devices if d.unit_id == unit_id), ModbusDevice(unit_id=unit_id))

    def timeout_for(self, unit_id: int) -> float:
        return self.device(unit_id).timeout_s or self.timeout_s

    def retries_for(self, unit_id: int) -> int:
        retries = self.device(unit_id).retries
        return self.retries if retries is None else retries

    def interval_for(self, point: ModbusPoint) -> float:
        return point.poll_interval_s or self.poll_interval_s

    def pdu_address(self, point: ModbusPoint) -> int:
        """The 0-based protocol address of `point` (documentation numbering minus address_base)."""
        return point.address - self.address_base

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}" if self.transport == "tcp" else f"{self.serial_port}"


def _check_transport(cfg: ModbusSourceConfig, key: str, errors: list[str]) -> None:
    if cfg.address_base not in (0, 1):
        errors.append(f"{key}.address_base: must be 0 (protocol addresses) or 1 (documentation "
                      f"numbering, address 1 = protocol address 0), got {cfg.address_base}")
    if cfg.transport == "tcp":
        if not cfg.host:
            errors.append(f'{key}.host: required for transport = "tcp"')
        if cfg.serial_port:
            errors.append(f'{key}.serial_port: only for transport = "rtu"')
    else:
        if not cfg.serial_port:
            errors.append(f'{key}.serial_port: required for transport = "rtu" (e.g. "/dev/ttyUSB0")')
        if cfg.host:
            errors.append(f'{key}.host: only for transport = "tcp"')
    units = {p.unit_id for p in cfg.points}
    seen: dict[int, int] = {}
    for i, dev in enumerate(cfg.devices):
        if dev.unit_id in seen:
            errors.append(f"{key}.devices[{i}].unit_id: unit {dev.unit_id} is already configured in "
                          f"devices[{seen[dev.unit_id]}]")
        seen[dev.unit_id] = i
        if dev.unit_id not in units:
            errors.append(f"{key}.devices[{i}].unit_id: no point reads unit {dev.unit_id}")


def _check_types(p: ModbusPoint, cfg: ModbusSourceConfig, pkey: str, errors: list[str]) -> None:
    t = p.data_type
    bit_function = p.function in BIT_FUNCTIONS
    if bit_function and t != "bool":
        errors.append(f'{pkey}.type: function "{p.function}" reads single bits; use type = "bool" '
                      f"(got {t!r})")
    if not bit_function and t == "bool":
        errors.append(f'{pkey}.type: "bool" is for function "coil" or "discrete"; for one bit of a '
                      f'register use type = "bit" with bit = 0..15')
    if p.bit is not None and t != "bit":
        errors.append(f'{pkey}.bit: only with type = "bit" (got type {t!r})')
    if t == "bit" and (p.bit is None or not 0 <= p.bit <= 15):
        errors.append(f'{pkey}.bit: type = "bit" needs bit = 0..15 (bit 0 = least significant), '
                      f"got {p.bit}")
    if p.length is not None and t != "string":
        errors.append(f'{pkey}.length: only with type = "string" (got type {t!r})')
    if t == "string" and p.length is None:
        errors.append(f'{pkey}.length: type = "string" needs length = number of registers '
                      "(2 characters each)")
    if p.word_order is not None and t not in MULTI_REGISTER_TYPES:
        errors.append(f"{pkey}.word_order: only for multi-register types "
                      f"({', '.join(sorted(MULTI_REGISTER_TYPES))}); {t} is "
                      f"{'a single bit' if t == 'bool' else 'one register'}")
    if p.byte_order is not None and bit_function:
        errors.append(f'{pkey}.byte_order: only for register functions ("holding", "input")')
    if p.kind == "counter" and t not in NUMERIC_TYPES:
        errors.append(f'{pkey}.kind: a counter needs a numeric type, not {t!r}')
    if t not in NUMERIC_TYPES and (p.scale != 1.0 or p.offset != 0.0):
        errors.append(f"{pkey}.{'scale' if p.scale != 1.0 else 'offset'}: only for numeric types, "
                      f"not {t!r}")
    if cfg.transport == "rtu" and p.unit_id == 0:
        errors.append(f"{pkey}.unit_id: 0 is the broadcast address on a serial bus; reads get no answer")


def _check_address(p: ModbusPoint, cfg: ModbusSourceConfig, pkey: str, errors: list[str]) -> None:
    t = p.data_type
    if t == "string" and p.length is None:
        return  # already reported
    width = register_count(t, p.length or 0)
    if cfg.address_base == 1 and p.address < 1:
        errors.append(f"{pkey}.address: with address_base = 1 addresses start at 1 (1 = protocol "
                      f"address 0), got {p.address}")
        return
    pdu = cfg.pdu_address(p)
    unit = "bit" if t == "bool" else "register"
    if pdu + width - 1 > MAX_ADDRESS:
        errors.append(f"{pkey}.address: a {t} needs {width} {unit}{'s' if width > 1 else ''} but "
                      f"{p.address} + {width} runs past the last address {MAX_ADDRESS + cfg.address_base}")
    limit = cfg.max_bits_per_request if t == "bool" else cfg.max_registers_per_request
    if width > limit:
        errors.append(f"{pkey}.length: a {t} of {width} registers does not fit in one request "
                      f"(max_registers_per_request = {limit})")


def _check_interval(p: ModbusPoint, cfg: ModbusSourceConfig, pkey: str, key: str, errors: list[str]) -> None:
    interval = cfg.interval_for(p)
    timeout = cfg.timeout_for(p.unit_id)
    if interval <= timeout:
        where = f"{pkey}.poll_interval_s" if p.poll_interval_s is not None else f"{key}.poll_interval_s"
        errors.append(f"{where}: the poll interval ({interval:g} s) must exceed the timeout of unit "
                      f"{p.unit_id} ({timeout:g} s), or a silent device would stall its own polls")


def reference_number_warning(p: ModbusPoint, cfg: ModbusSourceConfig, pkey: str) -> str | None:
    """Why `p.address` looks like a register number from a manual (30001-49999), or None.

    "40001" is how manuals write holding register 1, whose protocol address is 0; typed as an
    address it reads 40000 registers further on, which many devices answer with exception 2 and
    some with another register's value. A warning, not an error: some devices really do map
    registers at protocol addresses in that range.
    """
    if p.function not in REFERENCE_BASES or p.address not in REFERENCE_RANGE:
        return None
    table = "input" if p.address < 40001 else "holding"
    number = p.address - REFERENCE_BASES[table] + 1
    hint = (f'function = "{table}", address = {number - 1 + cfg.address_base}'
            + (" (address_base = 1)" if cfg.address_base == 1 else ""))
    mismatch = "" if table == p.function else f' (and {p.address} names an {table} register, not "{p.function}")'
    return (f"{pkey}.address: {p.address} looks like a register number from a manual ({table} register "
            f"{number}), not a protocol address{mismatch}; if so, use {hint}")


def parse_source(table: dict[str, Any], key: str) -> ModbusSourceConfig:
    """Validate one modbus `[[sources]]` table (without its `type`); ConfigError names every bad key.

    Addresses that look like register numbers from a manual are logged as warnings naming the key."""
    cfg = parse_model(ModbusSourceConfig, table, key)
    errors: list[str] = []
    _check_transport(cfg, key, errors)
    seen: dict[tuple[str, str], int] = {}
    for i, p in enumerate(cfg.points):
        pkey = f"{key}.points[{i}]"
        _check_types(p, cfg, pkey, errors)
        _check_address(p, cfg, pkey, errors)
        _check_interval(p, cfg, pkey, key, errors)
        if (p.asset, p.name) in seen:
            errors.append(f"{pkey}.name: duplicate point {p.asset}/{p.name} (also points[{seen[(p.asset, p.name)]}])")
        seen.setdefault((p.asset, p.name), i)
    if errors:
        raise ConfigError("\n".join(dict.fromkeys(errors)))  # a source-level key may be named by many points
    for i, p in enumerate(cfg.points):
        warning = reference_number_warning(p, cfg, f"{key}.points[{i}]")
        if warning:
            log.warning("%s", warning)
    return cfg
