"""Request coalescing: which Modbus reads cover a set of points (pure, computed once at start).

Each request costs a round trip (and on a serial bus, bus time), so neighbouring points are read
together. Points are grouped by (unit id, function, poll interval): a fast 1 s loop of a few
registers and a slow 60 s read of a big block are never merged, or the fast loop would drag the
big block along every second. Within a group, points sorted by address are packed greedily into a
request while the request stays within the size limit and the hole between one point and the next
is at most `max_gap` registers (or bits). For this kind of covering (contiguous groups of a sorted
list, each limited by span and by gaps) greedy is optimal: extending the current request as far as
possible never forces an extra request later.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Literal

__all__ = ["BIT_FUNCTIONS", "FUNCTION_CODES", "Function", "ReadRequest", "Span", "plan_reads"]

Function = Literal["coil", "discrete", "holding", "input"]
FUNCTION_CODES: dict[str, int] = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}
BIT_FUNCTIONS = frozenset({"coil", "discrete"})


@dataclass(frozen=True, slots=True)
class Span:
    """What the planner needs to know about one point: where it lives and how often it is read.

    `address` is the protocol (PDU, 0-based) address; `width` counts registers, or bits for the
    bit functions; `key` identifies the point to the caller.
    """

    key: int
    unit_id: int
    function: Function
    address: int
    width: int
    interval_s: float

    @property
    def end(self) -> int:
        """One past the last register (or bit) of the point."""
        return self.address + self.width


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One read: `count` registers (or bits) from `address` of `unit_id`, every `interval_s`."""

    unit_id: int
    function: Function
    address: int
    count: int
    interval_s: float
    spans: tuple[Span, ...]

    @property
    def function_code(self) -> int:
        return FUNCTION_CODES[self.function]


def _group_key(span: Span) -> tuple[int, str, float]:
    return (span.unit_id, span.function, span.interval_s)


def _pack(spans: Sequence[Span], limit: int, max_gap: int) -> Iterable[tuple[Span, ...]]:
    """Greedy left-to-right packing of spans sorted by address."""
    current: list[Span] = []
    start = end = 0
    for span in spans:
        if current and span.address - end <= max_gap and max(end, span.end) - start <= limit:
            current.append(span)
            end = max(end, span.end)
            continue
        if current:
            yield tuple(current)
        current, start, end = [span], span.address, span.end
    if current:
        yield tuple(current)


def plan_reads(spans: Iterable[Span], max_registers: int, max_bits: int, max_gap: int) -> list[ReadRequest]:
    """Coalesce `spans` into the fewest reads allowed by the limits.

    Every span must fit in one request on its own (the config validation guarantees it); a gap of
    `max_gap` means up to that many unused registers may be read between two points. Overlapping
    points (two bits of one register, a register read both as int16 and as part of an int32) share
    a request. Requests come out ordered by unit, function, interval and address.
    """
    ordered = sorted(spans, key=lambda s: (*_group_key(s), s.address, s.end, s.key))
    requests: list[ReadRequest] = []
    for (unit_id, function, interval_s), group in groupby(ordered, key=_group_key):
        limit = max_bits if function in BIT_FUNCTIONS else max_registers
        for packed in _pack(list(group), limit, max_gap):
            if packed[0].width > limit:
                raise ValueError(f"point {packed[0].key} needs {packed[0].width} > {limit} per request")
            address = packed[0].address
            count = max(s.end for s in packed) - address
            requests.append(ReadRequest(unit_id, function, address, count, interval_s, packed))  # type: ignore[arg-type]
    return requests
