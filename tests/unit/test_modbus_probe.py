"""The probe report: every decoding of the registers read, and the address-base note."""

from __future__ import annotations

import argparse
import struct

import pytest

from agent.connectors.modbus.probe import add_arguments, describe, run


def words(data: bytes) -> list[int]:
    return [int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2)]


def test_float_cdab_is_found_and_marked_plausible() -> None:
    regs = words(struct.pack(">f", 1234.5))
    report = describe(regs[::-1], address=100, function="holding")  # the device sends CDAB
    cdab = next(ln for ln in report.splitlines() if ln.strip().startswith("CDAB"))
    assert "1234.5 *" in cdab
    abcd = next(ln for ln in report.splitlines() if " ABCD " in ln)
    assert "1234.5" not in abcd
    assert "40101" in report and "register 101 in 1-based documentation" in report


def test_every_window_and_order_is_listed() -> None:
    regs = [*words(struct.pack(">d", 3.25)), 0xFF9C]
    lines = describe(regs, address=0, function="input").splitlines()
    assert any(ln.split()[:5] == ["4", "5", "30005", "0xFF9C", "65436"] and ln.split()[5] == "-100"
               for ln in lines)
    for order in ("ABCD", "CDAB", "BADC", "DCBA"):  # 4 windows of 32 bits and 2 of 64 bits in 5 registers
        assert sum(1 for ln in lines if order in ln.split()[:2] and " = " not in ln) == 4 + 2
    assert any("3.25 *" in ln for ln in lines)


def test_single_register_has_no_wide_windows() -> None:
    report = describe([7], address=0)
    assert "32-bit" not in report and "64-bit" not in report


@pytest.mark.parametrize(("argv", "message"), [
    (["--host", "127.0.0.1", "--address", "0", "--count", "126"], "--count must be 1..125"),
    (["--host", "127.0.0.1", "--address", "0", "--address-base", "1"], "outside 0..65535"),
])
def test_bad_arguments_are_refused_before_connecting(argv: list[str], message: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert run(parser.parse_args(argv)) == 2
    assert message in capsys.readouterr().err
