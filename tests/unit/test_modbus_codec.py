"""Register decoding against struct-packed references, in every byte and word order."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.connectors.modbus.codec import ORDERS, Decoding, decode, decode_registers, register_count, swap_bytes
from runtime.errors import DecodeError

FORMATS = {"int32": "i", "uint32": "I", "float32": "f", "int64": "q", "uint64": "Q", "float64": "d",
           "int16": "h", "uint16": "H"}


def layout(value: float, data_type: str, order: str) -> list[int]:
    """Registers of `value` as a device using `order` (ABCD, CDAB, BADC, DCBA) sends them."""
    raw = struct.pack(">" + FORMATS[data_type], value)
    words = [raw[i:i + 2] for i in range(0, len(raw), 2)]
    if order in ("BADC", "DCBA"):
        words = [w[::-1] for w in words]
    if order in ("CDAB", "DCBA"):
        words = words[::-1]
    return [int.from_bytes(w, "big") for w in words]


@pytest.mark.parametrize("order", sorted(ORDERS))
def test_float32_orders(order: str) -> None:
    byte_order, word_order = ORDERS[order]
    assert decode_registers(layout(-1234.5, "float32", order), "float32", byte_order, word_order) == -1234.5


def test_cdab_read_as_abcd_is_wrong() -> None:
    regs = layout(1234.5, "float32", "CDAB")
    assert decode_registers(regs, "float32") != 1234.5
    assert decode_registers(regs, "float32", "big", "little") == 1234.5


@given(st.integers(-(2**31), 2**31 - 1), st.sampled_from(sorted(ORDERS)))
def test_int32_any_value_any_order(value: int, order: str) -> None:
    byte_order, word_order = ORDERS[order]
    assert decode_registers(layout(value, "int32", order), "int32", byte_order, word_order) == value


@given(st.integers(0, 2**64 - 1), st.sampled_from(sorted(ORDERS)))
def test_uint64_any_value_any_order(value: int, order: str) -> None:
    byte_order, word_order = ORDERS[order]
    assert decode_registers(layout(value, "uint64", order), "uint64", byte_order, word_order) == value


@given(st.floats(allow_nan=False, width=64), st.sampled_from(sorted(ORDERS)))
def test_float64_any_value_any_order(value: float, order: str) -> None:
    byte_order, word_order = ORDERS[order]
    assert decode_registers(layout(value, "float64", order), "float64", byte_order, word_order) == value


@given(st.integers(-(2**15), 2**15 - 1))
def test_int16_and_byte_swap(value: int) -> None:
    reg = layout(value, "int16", "ABCD")[0]
    assert decode_registers([reg], "int16") == value
    assert decode_registers([swap_bytes(reg)], "int16", byte_order="little") == value


def test_bits_of_a_register() -> None:
    reg = 0b1000_0000_0000_0101
    assert [decode_registers([reg], "bit", bit=b) for b in (0, 1, 2, 15)] == [True, False, True, True]
    # byte_order little swaps the bytes first: bit 8 of the swapped word is bit 0 on the wire.
    assert decode_registers([0x0100], "bit", byte_order="little", bit=0) is True


def test_scale_offset_and_float_result() -> None:
    value = decode([650], Decoding("int16", scale=0.1, offset=-40.0))
    assert isinstance(value, float) and math.isclose(value, 25.0)


def test_bool_from_bits() -> None:
    assert decode([True], Decoding("bool")) is True
    assert decode([False], Decoding("bool")) is False


@pytest.mark.parametrize("regs", [[0x7FC0, 0], [0x7F80, 0], [0xFF80, 0]])
def test_nan_and_infinity_are_decode_errors(regs: list[int]) -> None:
    with pytest.raises(DecodeError, match="value is"):
        decode(regs, Decoding("float32"))


def test_wrong_register_count_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="needs 2 register"):
        decode_registers([1], "float32")


def test_invalid_utf8_string_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="UTF-8"):
        decode_registers([0xFFFE], "string")


def test_string_strips_padding() -> None:
    regs = [int.from_bytes(b"ab", "big"), int.from_bytes(b"c ", "big"), 0]
    assert decode_registers(regs, "string") == "abc"


def test_register_count() -> None:
    assert [register_count(t) for t in ("bool", "bit", "int16", "uint32", "float32", "int64", "float64")] == [
        1, 1, 1, 2, 2, 4, 4]
    assert register_count("string", 8) == 8
    with pytest.raises(ValueError):
        register_count("string", 0)
