"""Register decoding: raw Modbus words and bits -> Python values (pure, no I/O).

A register is a big-endian 16-bit word on the wire. Devices disagree about how a wider value is
spread over several registers, so every point names two orders:

    byte_order  order of the two bytes inside each register   (big = A B, little = B A)
    word_order  order of the registers that make up a value    (big = most significant first)

For a 32-bit value with bytes A B C D (A most significant) this gives the four layouts found in
device manuals: ABCD = big/big, CDAB = big/little ("word swapped", the commonest),
BADC = little/big ("byte swapped"), DCBA = little/little.

Decoding is `struct` on the reordered bytes with precompiled formats. pymodbus'
`convert_from_registers` does the same job, but its per-call checks made decoding half of the
connector's CPU time in bench/modbus_bench.py; an edge box decodes every point of every poll.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from runtime.errors import DecodeError

__all__ = [
    "BIT_TYPES",
    "DATA_TYPES",
    "MULTI_REGISTER_TYPES",
    "NUMERIC_TYPES",
    "ORDERS",
    "ByteOrder",
    "DataType",
    "Decoding",
    "WordOrder",
    "decode",
    "decode_registers",
    "register_count",
    "swap_bytes",
]

DataType = Literal[
    "bool", "bit", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "string"
]
ByteOrder = Literal["big", "little"]
WordOrder = Literal["big", "little"]

DATA_TYPES: tuple[str, ...] = get_args(DataType)

# Registers per value for the fixed-width register types.
_WIDTH: dict[str, int] = {
    "bit": 1, "int16": 1, "uint16": 1,
    "int32": 2, "uint32": 2, "float32": 2,
    "int64": 4, "uint64": 4, "float64": 4,
}
MULTI_REGISTER_TYPES = frozenset({"int32", "uint32", "float32", "int64", "uint64", "float64", "string"})
NUMERIC_TYPES = frozenset({"int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"})
BIT_TYPES = frozenset({"bool"})  # read with coil / discrete input functions

_STRUCT: dict[str, struct.Struct] = {
    t: struct.Struct(">" + code)
    for t, code in (("int16", "h"), ("uint16", "H"), ("int32", "i"), ("uint32", "I"), ("float32", "f"),
                    ("int64", "q"), ("uint64", "Q"), ("float64", "d"))
}

ORDERS: dict[str, tuple[ByteOrder, WordOrder]] = {
    "ABCD": ("big", "big"),
    "CDAB": ("big", "little"),
    "BADC": ("little", "big"),
    "DCBA": ("little", "little"),
}
"""The four layouts of a multi-register value by their usual manual names -> (byte_order, word_order)."""


def register_count(data_type: str, length: int = 0) -> int:
    """Registers (or bits, for "bool") one value of `data_type` occupies."""
    if data_type == "bool":
        return 1
    if data_type == "string":
        if length < 1:
            raise ValueError("a string needs length >= 1 (registers)")
        return length
    return _WIDTH[data_type]


def swap_bytes(register: int) -> int:
    return ((register & 0xFF) << 8) | (register >> 8)


@dataclass(frozen=True, slots=True)
class Decoding:
    """How one point's registers (or bit) become a value."""

    data_type: DataType
    byte_order: ByteOrder = "big"
    word_order: WordOrder = "big"
    bit: int = 0
    length: int = 0
    scale: float = 1.0
    offset: float = 0.0

    @property
    def width(self) -> int:
        return register_count(self.data_type, self.length)


def decode_registers(
    registers: Sequence[int],
    data_type: str,
    byte_order: ByteOrder = "big",
    word_order: WordOrder = "big",
    bit: int = 0,
) -> int | float | str | bool:
    """Decode raw registers into the unscaled value (int, float, str, or bool for "bit")."""
    if data_type == "bool":
        raise DecodeError("type 'bool' is read from coils or discrete inputs, not registers")
    expected = len(registers) if data_type == "string" else _WIDTH[data_type]
    if len(registers) != expected or not registers:
        raise DecodeError(f"{data_type} needs {expected} register(s), got {len(registers)}")
    words = registers if word_order == "big" else registers[::-1]
    try:
        data = struct.pack(f">{len(words)}H", *words)
    except struct.error:
        raise DecodeError(f"register values must be 0..65535, got {list(registers)}") from None
    if byte_order == "little":
        swapped = bytearray(data)
        swapped[0::2], swapped[1::2] = data[1::2], data[0::2]
        data = bytes(swapped)
    if data_type == "bit":
        return bool((int.from_bytes(data, "big") >> bit) & 1)
    if data_type == "string":
        try:
            return data.decode("utf-8").rstrip(" \x00")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"string is not valid UTF-8: {exc.reason} at byte {exc.start}") from None
    return _STRUCT[data_type].unpack(data)[0]  # type: ignore[no-any-return]


def decode(values: Sequence[int] | Sequence[bool], decoding: Decoding) -> float | bool | str:
    """Decode one point from its slice of a response: bits for "bool", registers otherwise.

    Numbers are returned as floats after `value * scale + offset` (the model's Reading carries
    floats). NaN and infinity, which many devices use for "no value", raise DecodeError so that
    they become BAD readings instead of poisoning averages.
    """
    if decoding.data_type == "bool":
        if len(values) != 1:
            raise DecodeError(f"bool needs 1 bit, got {len(values)}")
        return bool(values[0])
    raw = decode_registers(values, decoding.data_type, decoding.byte_order, decoding.word_order,  # type: ignore[arg-type]
                           decoding.bit)
    if isinstance(raw, bool | str):
        return raw
    value = float(raw) * decoding.scale + decoding.offset
    if not math.isfinite(value):
        raise DecodeError(f"value is {value} (raw {raw!r})")
    return value
