from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Quality(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    QUALITY_UNSPECIFIED: _ClassVar[Quality]
    GOOD: _ClassVar[Quality]
    UNCERTAIN: _ClassVar[Quality]
    BAD: _ClassVar[Quality]
QUALITY_UNSPECIFIED: Quality
GOOD: Quality
UNCERTAIN: Quality
BAD: Quality

class AgentMessage(_message.Message):
    __slots__ = ("hello", "batch")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    batch: Batch
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., batch: _Optional[_Union[Batch, _Mapping]] = ...) -> None: ...

class CollectorMessage(_message.Message):
    __slots__ = ("ack",)
    ACK_FIELD_NUMBER: _ClassVar[int]
    ack: Ack
    def __init__(self, ack: _Optional[_Union[Ack, _Mapping]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("agent_id", "site", "version", "queue_epoch", "assets")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    QUEUE_EPOCH_FIELD_NUMBER: _ClassVar[int]
    ASSETS_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    site: str
    version: str
    queue_epoch: str
    assets: _containers.RepeatedCompositeFieldContainer[AssetDescriptor]
    def __init__(self, agent_id: _Optional[str] = ..., site: _Optional[str] = ..., version: _Optional[str] = ..., queue_epoch: _Optional[str] = ..., assets: _Optional[_Iterable[_Union[AssetDescriptor, _Mapping]]] = ...) -> None: ...

class AssetDescriptor(_message.Message):
    __slots__ = ("id", "type", "name", "depends_on", "points")
    ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DEPENDS_ON_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    id: str
    type: str
    name: str
    depends_on: _containers.RepeatedScalarFieldContainer[str]
    points: _containers.RepeatedCompositeFieldContainer[PointDescriptor]
    def __init__(self, id: _Optional[str] = ..., type: _Optional[str] = ..., name: _Optional[str] = ..., depends_on: _Optional[_Iterable[str]] = ..., points: _Optional[_Iterable[_Union[PointDescriptor, _Mapping]]] = ...) -> None: ...

class PointDescriptor(_message.Message):
    __slots__ = ("name", "unit", "expected_interval_s", "kind")
    NAME_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    name: str
    unit: str
    expected_interval_s: float
    kind: str
    def __init__(self, name: _Optional[str] = ..., unit: _Optional[str] = ..., expected_interval_s: _Optional[float] = ..., kind: _Optional[str] = ...) -> None: ...

class Batch(_message.Message):
    __slots__ = ("seq", "created_ns", "summaries", "vibration", "changes", "health", "asset_states")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    CREATED_NS_FIELD_NUMBER: _ClassVar[int]
    SUMMARIES_FIELD_NUMBER: _ClassVar[int]
    VIBRATION_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    ASSET_STATES_FIELD_NUMBER: _ClassVar[int]
    seq: int
    created_ns: int
    summaries: _containers.RepeatedCompositeFieldContainer[Summary]
    vibration: _containers.RepeatedCompositeFieldContainer[VibrationIndicators]
    changes: _containers.RepeatedCompositeFieldContainer[StateChange]
    health: AgentHealth
    asset_states: _containers.RepeatedCompositeFieldContainer[AssetState]
    def __init__(self, seq: _Optional[int] = ..., created_ns: _Optional[int] = ..., summaries: _Optional[_Iterable[_Union[Summary, _Mapping]]] = ..., vibration: _Optional[_Iterable[_Union[VibrationIndicators, _Mapping]]] = ..., changes: _Optional[_Iterable[_Union[StateChange, _Mapping]]] = ..., health: _Optional[_Union[AgentHealth, _Mapping]] = ..., asset_states: _Optional[_Iterable[_Union[AssetState, _Mapping]]] = ...) -> None: ...

class Summary(_message.Message):
    __slots__ = ("asset", "point", "unit", "first_ns", "last_ns", "interval_end_ns", "mean", "min", "max", "last", "count", "bad_count", "quality", "reason", "last_text", "increase", "resets")
    ASSET_FIELD_NUMBER: _ClassVar[int]
    POINT_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    FIRST_NS_FIELD_NUMBER: _ClassVar[int]
    LAST_NS_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_END_NS_FIELD_NUMBER: _ClassVar[int]
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
    asset: str
    point: str
    unit: str
    first_ns: int
    last_ns: int
    interval_end_ns: int
    mean: float
    min: float
    max: float
    last: float
    count: int
    bad_count: int
    quality: Quality
    reason: str
    last_text: str
    increase: float
    resets: int
    def __init__(self, asset: _Optional[str] = ..., point: _Optional[str] = ..., unit: _Optional[str] = ..., first_ns: _Optional[int] = ..., last_ns: _Optional[int] = ..., interval_end_ns: _Optional[int] = ..., mean: _Optional[float] = ..., min: _Optional[float] = ..., max: _Optional[float] = ..., last: _Optional[float] = ..., count: _Optional[int] = ..., bad_count: _Optional[int] = ..., quality: _Optional[_Union[Quality, str]] = ..., reason: _Optional[str] = ..., last_text: _Optional[str] = ..., increase: _Optional[float] = ..., resets: _Optional[int] = ...) -> None: ...

class DiagnosisEntry(_message.Message):
    __slots__ = ("fault", "confidence", "evidence")
    FAULT_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    fault: str
    confidence: float
    evidence: str
    def __init__(self, fault: _Optional[str] = ..., confidence: _Optional[float] = ..., evidence: _Optional[str] = ...) -> None: ...

class VibrationIndicators(_message.Message):
    __slots__ = ("asset", "sensor", "ts_ns", "accel_rms", "accel_peak", "crest_factor", "kurtosis", "velocity_rms_mm_s", "iso_zone", "rpm", "rpm_source", "amp_1x", "amp_2x", "amp_3x", "bpfo", "bpfi", "bsf", "ftf", "health", "fault", "confidence", "diagnosis")
    ASSET_FIELD_NUMBER: _ClassVar[int]
    SENSOR_FIELD_NUMBER: _ClassVar[int]
    TS_NS_FIELD_NUMBER: _ClassVar[int]
    ACCEL_RMS_FIELD_NUMBER: _ClassVar[int]
    ACCEL_PEAK_FIELD_NUMBER: _ClassVar[int]
    CREST_FACTOR_FIELD_NUMBER: _ClassVar[int]
    KURTOSIS_FIELD_NUMBER: _ClassVar[int]
    VELOCITY_RMS_MM_S_FIELD_NUMBER: _ClassVar[int]
    ISO_ZONE_FIELD_NUMBER: _ClassVar[int]
    RPM_FIELD_NUMBER: _ClassVar[int]
    RPM_SOURCE_FIELD_NUMBER: _ClassVar[int]
    AMP_1X_FIELD_NUMBER: _ClassVar[int]
    AMP_2X_FIELD_NUMBER: _ClassVar[int]
    AMP_3X_FIELD_NUMBER: _ClassVar[int]
    BPFO_FIELD_NUMBER: _ClassVar[int]
    BPFI_FIELD_NUMBER: _ClassVar[int]
    BSF_FIELD_NUMBER: _ClassVar[int]
    FTF_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    FAULT_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    DIAGNOSIS_FIELD_NUMBER: _ClassVar[int]
    asset: str
    sensor: str
    ts_ns: int
    accel_rms: float
    accel_peak: float
    crest_factor: float
    kurtosis: float
    velocity_rms_mm_s: float
    iso_zone: str
    rpm: float
    rpm_source: str
    amp_1x: float
    amp_2x: float
    amp_3x: float
    bpfo: float
    bpfi: float
    bsf: float
    ftf: float
    health: float
    fault: str
    confidence: float
    diagnosis: _containers.RepeatedCompositeFieldContainer[DiagnosisEntry]
    def __init__(self, asset: _Optional[str] = ..., sensor: _Optional[str] = ..., ts_ns: _Optional[int] = ..., accel_rms: _Optional[float] = ..., accel_peak: _Optional[float] = ..., crest_factor: _Optional[float] = ..., kurtosis: _Optional[float] = ..., velocity_rms_mm_s: _Optional[float] = ..., iso_zone: _Optional[str] = ..., rpm: _Optional[float] = ..., rpm_source: _Optional[str] = ..., amp_1x: _Optional[float] = ..., amp_2x: _Optional[float] = ..., amp_3x: _Optional[float] = ..., bpfo: _Optional[float] = ..., bpfi: _Optional[float] = ..., bsf: _Optional[float] = ..., ftf: _Optional[float] = ..., health: _Optional[float] = ..., fault: _Optional[str] = ..., confidence: _Optional[float] = ..., diagnosis: _Optional[_Iterable[_Union[DiagnosisEntry, _Mapping]]] = ...) -> None: ...

class StateChange(_message.Message):
    __slots__ = ("asset", "point", "ts_ns", "kind", "old_value", "new_value")
    ASSET_FIELD_NUMBER: _ClassVar[int]
    POINT_FIELD_NUMBER: _ClassVar[int]
    TS_NS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    OLD_VALUE_FIELD_NUMBER: _ClassVar[int]
    NEW_VALUE_FIELD_NUMBER: _ClassVar[int]
    asset: str
    point: str
    ts_ns: int
    kind: str
    old_value: str
    new_value: str
    def __init__(self, asset: _Optional[str] = ..., point: _Optional[str] = ..., ts_ns: _Optional[int] = ..., kind: _Optional[str] = ..., old_value: _Optional[str] = ..., new_value: _Optional[str] = ...) -> None: ...

class AssetState(_message.Message):
    __slots__ = ("asset", "state", "health", "ts_ns")
    ASSET_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    TS_NS_FIELD_NUMBER: _ClassVar[int]
    asset: str
    state: str
    health: float
    ts_ns: int
    def __init__(self, asset: _Optional[str] = ..., state: _Optional[str] = ..., health: _Optional[float] = ..., ts_ns: _Optional[int] = ...) -> None: ...

class AgentHealth(_message.Message):
    __slots__ = ("ts_ns", "queue_batches", "queue_bytes", "dropped", "sent", "acked", "connector_errors", "stale_points", "rss_mb", "uptime_s")
    TS_NS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_BATCHES_FIELD_NUMBER: _ClassVar[int]
    QUEUE_BYTES_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    SENT_FIELD_NUMBER: _ClassVar[int]
    ACKED_FIELD_NUMBER: _ClassVar[int]
    CONNECTOR_ERRORS_FIELD_NUMBER: _ClassVar[int]
    STALE_POINTS_FIELD_NUMBER: _ClassVar[int]
    RSS_MB_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    ts_ns: int
    queue_batches: int
    queue_bytes: int
    dropped: int
    sent: int
    acked: int
    connector_errors: int
    stale_points: int
    rss_mb: float
    uptime_s: float
    def __init__(self, ts_ns: _Optional[int] = ..., queue_batches: _Optional[int] = ..., queue_bytes: _Optional[int] = ..., dropped: _Optional[int] = ..., sent: _Optional[int] = ..., acked: _Optional[int] = ..., connector_errors: _Optional[int] = ..., stale_points: _Optional[int] = ..., rss_mb: _Optional[float] = ..., uptime_s: _Optional[float] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("seq",)
    SEQ_FIELD_NUMBER: _ClassVar[int]
    seq: int
    def __init__(self, seq: _Optional[int] = ...) -> None: ...
