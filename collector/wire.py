"""What an agent stream sends, read as v1 messages whichever wire version the agent speaks.

The collector serves `twin.v1.Collector/Connect` and `twin.v2.Collector/Connect` (protos/twin/v2:
interned series, times as offsets, min/max/last only when they differ from mean). Everything past
the decoder works on v1 `Batch` messages, so ingest, the fleet twin and the rules do not know the
difference. A decoder is per stream: v2's series table lives as long as the stream.

Messages reach the servicer as bytes (the handlers are registered without a deserializer), so the
size of each is checked before it is parsed and a corrupt one is the stream's INVALID_ARGUMENT
with one log line, not an exception inside gRPC.
"""

from __future__ import annotations

from sys import intern
from typing import Protocol, TypeVar

from google.protobuf.message import Message

from protos.twin.v1 import twin_pb2
from protos.twin.v2 import twin_pb2 as twin_v2_pb2

__all__ = ["MAX_SERIES_PER_STREAM", "WIRE_VERSIONS", "StreamDecoder", "V1Decoder", "V2Decoder", "WireError"]

MAX_SERIES_PER_STREAM = 1_000_000  # ~150 MB of strings at most, far beyond any gateway's points
WIRE_VERSIONS = ("v1", "v2")

M = TypeVar("M", bound=Message)


class WireError(ValueError):
    """A message that does not follow the contract (unparseable, or a series never declared)."""


class StreamDecoder(Protocol):
    def first(self, raw: bytes) -> twin_pb2.Hello | None:
        """The Hello of the stream's first message; None when the first message is not a Hello."""
        ...

    def batch(self, raw: bytes) -> twin_pb2.Batch | None:
        """A later message's Batch (None for anything else); WireError when it breaks the contract."""
        ...


class V1Decoder:
    def first(self, raw: bytes) -> twin_pb2.Hello | None:
        msg = _parse(twin_pb2.AgentMessage, raw)
        return msg.hello if msg.HasField("hello") else None

    def batch(self, raw: bytes) -> twin_pb2.Batch | None:
        msg = _parse(twin_pb2.AgentMessage, raw)
        return msg.batch if msg.HasField("batch") else None


class V2Decoder:
    """v2 messages expanded to v1: the stream's series table grows with each batch's new_series."""

    def __init__(self) -> None:
        self.series: list[tuple[str, str, str]] = []

    def first(self, raw: bytes) -> twin_pb2.Hello | None:
        msg = _parse(twin_v2_pb2.AgentMessage, raw)
        return msg.hello if msg.HasField("hello") else None

    def batch(self, raw: bytes) -> twin_pb2.Batch | None:
        msg = _parse(twin_v2_pb2.AgentMessage, raw)
        if not msg.HasField("batch"):
            return None
        b = msg.batch
        table = self.series
        if len(table) + len(b.new_series) > MAX_SERIES_PER_STREAM:
            raise WireError(f"more than {MAX_SERIES_PER_STREAM} series declared on one stream")
        # Interned: a stream's series share their asset and unit strings, and streams share point names,
        # so 1000 streams x 100 series hold a few MB of tables, not 20.
        table += [(intern(s.asset), intern(s.point), intern(s.unit)) for s in b.new_series]
        out = twin_pb2.Batch(seq=b.seq, created_ns=b.created_ns, vibration=b.vibration, changes=b.changes,
                             asset_states=b.asset_states)
        if b.HasField("health"):
            out.health.CopyFrom(b.health)
        created = b.created_ns
        known = len(table)
        add = out.summaries.add
        for s in b.summaries:
            index = s.series
            if index >= known:
                raise WireError(f"batch {b.seq}: summary refers to series {index}, but only {known} are declared "
                                "on this stream")
            asset, point, unit = table[index]
            end = s.interval_end_ns if s.HasField("interval_end_ns") else created
            mean = s.mean
            item = add(asset=asset, point=point, unit=unit, first_ns=end + s.first_offset_ns,
                       last_ns=end + s.last_offset_ns, interval_end_ns=end, mean=mean,
                       min=s.min if s.HasField("min") else mean, max=s.max if s.HasField("max") else mean,
                       last=s.last if s.HasField("last") else mean, count=s.count, bad_count=s.bad_count,
                       quality=s.quality, reason=s.reason, last_text=s.last_text)
            if s.HasField("increase"):  # counter points
                item.increase, item.resets = s.increase, s.resets
        return out


def decoder(version: str) -> StreamDecoder:
    if version == "v2":
        return V2Decoder()
    return V1Decoder()


def _parse(cls: type[M], raw: bytes) -> M:
    try:
        return cls.FromString(raw)
    except Exception as exc:  # google.protobuf.message.DecodeError, or a RuntimeError from upb
        raise WireError(f"unparseable message ({len(raw)} bytes): {exc or type(exc).__name__}") from None
