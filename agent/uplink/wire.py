"""The agent's side of the wire versions: queued v1 batches as the messages of the stream's version.

The queue stores v1 `Batch` payloads (independent of any stream). v2 (protos/twin/v2) interns
(asset, point, unit) per stream, so each stream has its own `V2Encoder`: a series is declared in
the first batch of the stream that uses it, and referred to by index after that. Times become
offsets from the interval end; min, max and last are left out when they equal the mean. Decoding
(collector/wire.py) gives back exactly the v1 batch.
"""

from __future__ import annotations

import math
from typing import Protocol

from protos.twin.v1 import twin_pb2
from protos.twin.v2 import twin_pb2 as twin_v2_pb2

__all__ = ["StreamEncoder", "V1Encoder", "V2Encoder", "encoder"]


class StreamEncoder(Protocol):
    def hello(self, hello: twin_pb2.Hello) -> twin_pb2.AgentMessage | twin_v2_pb2.AgentMessage: ...

    def batch(self, payload: bytes) -> twin_pb2.AgentMessage | twin_v2_pb2.AgentMessage: ...


class V1Encoder:
    def hello(self, hello: twin_pb2.Hello) -> twin_pb2.AgentMessage:
        return twin_pb2.AgentMessage(hello=hello)

    def batch(self, payload: bytes) -> twin_pb2.AgentMessage:
        return twin_pb2.AgentMessage(batch=twin_pb2.Batch.FromString(payload))


def _same(x: float, mean: float) -> bool:
    """x can be left out for `mean`: equal, including the sign of a zero (NaN never is)."""
    return x == mean and (x != 0.0 or math.copysign(1.0, x) == math.copysign(1.0, mean))


class V2Encoder:
    """One stream's series table (the collector keeps the same one while reading)."""

    def __init__(self) -> None:
        self._index: dict[tuple[str, str, str], int] = {}

    @property
    def series(self) -> int:
        return len(self._index)

    def hello(self, hello: twin_pb2.Hello) -> twin_v2_pb2.AgentMessage:
        return twin_v2_pb2.AgentMessage(hello=hello)

    def batch(self, payload: bytes) -> twin_v2_pb2.AgentMessage:
        b = twin_pb2.Batch.FromString(payload)
        msg = twin_v2_pb2.AgentMessage()
        out = msg.batch
        out.seq = b.seq
        out.created_ns = created = b.created_ns
        out.vibration.extend(b.vibration)
        out.changes.extend(b.changes)
        out.asset_states.extend(b.asset_states)
        if b.HasField("health"):
            out.health.CopyFrom(b.health)
        index = self._index
        declare = out.new_series.add
        add = out.summaries.add
        for s in b.summaries:
            key = (s.asset, s.point, s.unit)
            series = index.get(key)
            if series is None:
                series = index[key] = len(index)
                declare(asset=s.asset, point=s.point, unit=s.unit)
            end = s.interval_end_ns
            mean = s.mean
            item = add(series=series, first_offset_ns=s.first_ns - end, last_offset_ns=s.last_ns - end, mean=mean,
                       count=s.count, bad_count=s.bad_count, quality=s.quality, reason=s.reason,
                       last_text=s.last_text)
            if end != created:
                item.interval_end_ns = end
            if not _same(s.min, mean):
                item.min = s.min
            if not _same(s.max, mean):
                item.max = s.max
            if not _same(s.last, mean):
                item.last = s.last
            if s.HasField("increase"):  # counter points
                item.increase, item.resets = s.increase, s.resets
        return msg


def encoder(version: str) -> StreamEncoder:
    return V2Encoder() if version == "v2" else V1Encoder()
