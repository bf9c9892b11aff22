from protos.twin.v1 import twin_pb2 as _twin_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AgentMessage(_message.Message):
    __slots__ = ("hello", "batch")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    hello: _twin_pb2.Hello
    batch: Batch
    def __init__(self, hello: _Optional[_Union[_twin_pb2.Hello, _Mapping]] = ..., batch: _Optional[_Union[Batch, _Mapping]] = ...) -> None: ...

class Series(_message.Message):
    __slots__ = ("asset", "point", "unit")
    ASSET_FIELD_NUMBER: _ClassVar[int]
    POINT_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    asset: str
    point: str
    unit: str
    def __init__(self, asset: _Optional[str] = ..., point: _Optional[str] = ..., unit: _Optional[str] = ...) -> None: ...

class Batch(_message.Message):
    __slots__ = ("seq", "created_ns", "new_series", "summaries", "vibration", "changes", "health", "asset_states")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    CREATED_NS_FIELD_NUMBER: _ClassVar[int]
    NEW_SERIES_FIELD_NUMBER: _ClassVar[int]
    SUMMARIES_FIELD_NUMBER: _ClassVar[int]
    VIBRATION_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    ASSET_STATES_FIELD_NUMBER: _ClassVar[int]
    seq: int
    created_ns: int
    new_series: _containers.RepeatedCompositeFieldContainer[Series]
    summaries: _containers.RepeatedCompositeFieldContainer[Summary]
    vibration: _containers.RepeatedCompositeFieldContainer[_twin_pb2.VibrationIndicators]
    changes: _containers.RepeatedCompositeFieldContainer[_twin_pb2.StateChange]
    health: _twin_pb2.AgentHealth
    asset_states: _containers.RepeatedCompositeFieldContainer[_twin_pb2.AssetState]
    def __init__(self, seq: _Optional[int] = ..., created_ns: _Optional[int] = ..., new_series: _Optional[_Iterable[_Union[Series, _Mapping]]] = ..., summaries: _Optional[_Iterable[_Union[Summary, _Mapping]]] = ..., vibration: _Optional[_Iterable[_Union[_twin_pb2.VibrationIndicators, _Mapping]]] = ..., changes: _Optional[_Iterable[_Union[_twin_pb2.StateChange, _Mapping]]] = ..., health: _Optional[_Union[_twin_pb2.AgentHealth, _Mapping]] = ..., asset_states: _Optional[_Iterable[_Union[_twin_pb2.AssetState, _Mapping]]] = ...) -> None: ...

class Summary(_message.Message):
    __slots__ = ("series", "interval_end_ns", "first_offset_ns", "last_offset_ns", "mean", "min", "max", "last", "count", "bad_count", "quality", "reason", "last_text", "increase", "resets")
    SERIES_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_END_NS_FIELD_NUMBER: _ClassVar[int]
    FIRST_OFFSET_NS_FIELD_NUMBER: _ClassVar[int]
    LAST_OFFSET_NS_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    BAD_COUNT_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    LAST_TEXT_FIELD_NUMBER: _ClassVar[int]
    INCREASE_FIELD_NUMBER: _ClassVar[int]
    RESETS_FIELD_NUMBER: _ClassVar[int]
    series: int
    interval_end_ns: int
    first_offset_ns: int
    last_offset_ns: int
    mean: float
    min: float
    max: float
    last: float
    count: int
    bad_count: int
    quality: _twin_pb2.Quality
    reason: str
    last_text: str
    increase: float
    resets: int
    def __init__(self, series: _Optional[int] = ..., interval_end_ns: _Optional[int] = ..., first_offset_ns: _Optional[int] = ..., last_offset_ns: _Optional[int] = ..., mean: _Optional[float] = ..., min: _Optional[float] = ..., max: _Optional[float] = ..., last: _Optional[float] = ..., count: _Optional[int] = ..., bad_count: _Optional[int] = ..., quality: _Optional[_Union[_twin_pb2.Quality, str]] = ..., reason: _Optional[str] = ..., last_text: _Optional[str] = ..., increase: _Optional[float] = ..., resets: _Optional[int] = ...) -> None: ...
