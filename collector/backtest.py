"""Backtest: replay a recorded machine through the twin, in simulated time.

    twin-collector backtest RECORDING.npz [...] [--bearing MODEL | --bpfo X --bpfi X --bsf X --ftf X]
                            [--rules FILE] [--json] [--plot OUT.png]

"Would our rules have caught last year's failure?" Each snapshot of the recording goes through the
agent's analytics exactly as the agent's VibrationMonitor runs them (`analyze_block` with the
configured speed, bearing and ISO class, and the envelope averaging of the last `average_blocks`
blocks), becomes the indicator document the collector stores, and goes through the collector's
work-order rules (collector/workorders/evaluate.py, the code ingest runs) at the snapshot's own time
`t_s`. Rule state, history and work orders live in memory: nothing of a running collector is read
or written. A recording is one sensor, so the agent's merge of a second sensor's bearing evidence
does not arise; everything else of the agent's path does.

Recording format (`.npz`, read without pickle):

    accel   (N, n) float   acceleration in g, one row per snapshot of n samples
    t_s     (N,)   float   seconds since the first snapshot (ascending)
    fs      scalar         sample rate in Hz
    rpm     scalar         shaft speed in r/min

The result of a recording: its work orders (time, rule, kind, severity, title) and every
remaining-life assessment of the prognosis rules; `rul_s` is the remaining life at the last snapshot.
"""

from __future__ import annotations

import math
import re
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agent.analytics.averaging import EnvelopeAverager, with_averaged
from agent.analytics.bearings import BearingDefects
from agent.analytics.vibration import VibrationIndicators, analyze_block_evidence
from collector.prognosis.remaining_life import RemainingLife
from collector.whatif import SimulatedLifecycle, load_rules_file
from collector.workorders import history
from collector.workorders.data_quality import StaleRule
from collector.workorders.evaluate import (
    PointReport,
    Rule,
    RuleStateInMemory,
    VibrationObs,
    evaluate_data_quality,
    evaluate_vibration,
)
from collector.workorders.prognosis import PrognosisRule
from collector.workorders.trend import VIBRATION_FIELDS, TrendRule
from collector.workorders.vibration import BearingRule, IsoZoneRule
from protos.twin.v1 import twin_pb2
from runtime.errors import ConfigError, DecodeError

__all__ = [
    "DEFAULT_ASSET_TYPE",
    "DEFAULT_RULES_FILE",
    "KINDS",
    "SENSOR",
    "AnalysisSettings",
    "Assessment",
    "BacktestResult",
    "BacktestWorkOrder",
    "Recording",
    "analyse",
    "backtest",
    "default_rules",
    "load_recording",
    "replay",
    "rules_for",
]

DEFAULT_RULES_FILE = Path(__file__).with_name("backtest_rules.toml")
DEFAULT_ASSET_TYPE = "machine"
SENSOR = "accel"
# Simulated time starts here (2001-09-09): rule state treats a time of 0 as "never".
EPOCH_NS = 1_000_000_000 * 10**9
KINDS = {"corrective": "condition", "preventive": "preventive", "data_quality": "data_quality"}
# As agent/vibration_monitor.py: a speed outside what the block can resolve is not used (estimated instead).
MIN_RPM = 30.0
MAX_RPM = 60_000.0
VIBRATION_RULES = (IsoZoneRule, BearingRule, PrognosisRule)


@dataclass(frozen=True, slots=True)
class Recording:
    path: Path
    accel: np.ndarray  # (N, n) acceleration in g
    t_s: np.ndarray  # (N,) seconds since the first snapshot
    fs: float
    rpm: float

    @property
    def name(self) -> str:
        return self.path.name


def _scalar(data: Any, key: str, path: Path) -> float:
    try:
        value = float(np.asarray(data[key]).reshape(()))
    except (TypeError, ValueError):
        raise DecodeError(f"{path}: {key!r} must be a number, got {data[key]!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise DecodeError(f"{path}: {key!r} must be a positive number, got {value!r}")
    return value


def load_recording(path: str | Path) -> Recording:
    """Read a recording (.npz, see the module docstring); DecodeError says what is wrong with it."""
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as data:
            missing = [k for k in ("accel", "t_s", "fs", "rpm") if k not in data.files]
            if missing:
                raise DecodeError(f"{p}: missing key(s) {', '.join(missing)} (a recording has accel, t_s, fs, rpm)")
            accel = np.asarray(data["accel"])
            t_s = np.asarray(data["t_s"], dtype=np.float64)
            fs, rpm = _scalar(data, "fs", p), _scalar(data, "rpm", p)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DecodeError(f"{p}: not a readable .npz recording: {exc}") from None
    if accel.ndim != 2 or not np.issubdtype(accel.dtype, np.number):
        raise DecodeError(f"{p}: 'accel' must be a numeric (N, n) array, got {accel.dtype} {accel.shape}")
    if t_s.shape != (accel.shape[0],):
        raise DecodeError(f"{p}: 't_s' must have one time per snapshot ({accel.shape[0]}), got shape {t_s.shape}")
    if len(t_s) == 0:
        raise DecodeError(f"{p}: no snapshots")
    if not np.isfinite(t_s).all() or np.any(np.diff(t_s) <= 0):
        raise DecodeError(f"{p}: 't_s' must be finite and strictly increasing")
    return Recording(p, accel, t_s, fs, rpm)


@dataclass(frozen=True, slots=True)
class AnalysisSettings:
    """How the agent would analyse this machine (its `[assets.vibration]` table)."""

    bearing: BearingDefects | None = None
    machine_group: int = 2
    foundation: str = "rigid"
    average_blocks: int = 8
    units: str = "g"


def indicators_doc(ind: VibrationIndicators, ts_ns: int, asset: str, sensor: str) -> dict[str, Any]:
    """The block as the collector's rules see it: through the wire message (as the agent sends it)
    and collector/workorders/history.py's document."""
    names = {f.name for f in twin_pb2.VibrationIndicators.DESCRIPTOR.fields} - {"asset", "sensor", "ts_ns",
                                                                                 "diagnosis"}
    msg = twin_pb2.VibrationIndicators(
        asset=asset, sensor=sensor, ts_ns=ts_ns, **{n: getattr(ind, n) for n in names},
        diagnosis=[twin_pb2.DiagnosisEntry(fault=d.fault, confidence=d.confidence, evidence=d.evidence)
                   for d in ind.diagnosis])
    return history.vibration_doc(msg)


def analyse(recording: Recording, settings: AnalysisSettings, *, asset: str = "",
            sensor: str = SENSOR) -> Iterator[tuple[int, dict[str, Any] | None, str]]:
    """Each snapshot's indicator document (index, doc, ""), or (index, None, why) when the agent could
    not analyse it (the agent sends nothing upstream for such a block)."""
    limit = min(MAX_RPM, recording.fs * 60.0 / 80.0)
    rpm: float | None = recording.rpm if MIN_RPM <= recording.rpm <= limit else None
    source = "config" if rpm is not None else "estimated"
    averager = (EnvelopeAverager(settings.bearing, blocks=settings.average_blocks)
                if settings.bearing is not None and settings.average_blocks > 1 else None)
    for i, row in enumerate(recording.accel):
        x = np.asarray(row, dtype=np.float64)
        try:
            result = analyze_block_evidence(x, recording.fs, rpm=rpm, rpm_source=source, bearing=settings.bearing,
                                            machine_group=settings.machine_group, foundation=settings.foundation,
                                            units=settings.units)
        except ValueError as exc:
            yield i, None, str(exc)
            continue
        ind = result.indicators
        if averager is not None:
            try:
                ind = with_averaged(ind, averager.add(x, recording.fs, ind.rpm, units=settings.units,
                                                      analysis=result))
            except ValueError:  # as the agent: the block's own indicators stand, the window restarts
                averager.reset()
        yield i, indicators_doc(ind, snapshot_ns(float(recording.t_s[i])), asset, sensor), ""


def snapshot_ns(t_s: float) -> int:
    return EPOCH_NS + round(t_s * 1e9)


def snapshot_s(ts_ns: int) -> float:
    return (ts_ns - EPOCH_NS) / 1e9


class BacktestStore(RuleStateInMemory):
    """Rule state and indicator history in memory, the history growing as the replay advances (each
    block sees only itself and the past, as in production)."""

    def __init__(self) -> None:
        super().__init__()
        self._ts: dict[tuple[str, str], list[int]] = {}
        self._values: dict[tuple[str, str, str], list[float]] = {}
        self._arrays: dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray]] = {}
        self.assessments: list[Assessment] = []

    def add_block(self, asset: str, sensor: str, ts_ns: int, doc: dict[str, Any]) -> None:
        self._ts.setdefault((asset, sensor), []).append(ts_ns)
        for name in VIBRATION_FIELDS:
            value = doc.get(name)
            ok = isinstance(value, int | float) and math.isfinite(value)
            self._values.setdefault((asset, sensor, name), []).append(float(value) if ok else math.nan)
        self._arrays.clear()

    async def series(self, asset: str, key: str, since_ns: int, until_ns: int) -> tuple[np.ndarray, np.ndarray]:
        kind, _, rest = key.partition(":")
        sensor, _, name = rest.rpartition(":")
        if kind != "vibration" or name not in VIBRATION_FIELDS:
            return np.empty(0, dtype=np.int64), np.empty(0)
        k = (asset, sensor, name)
        if k not in self._arrays:
            self._arrays[k] = (np.asarray(self._ts.get((asset, sensor), []), dtype=np.int64),
                               np.asarray(self._values.get(k, []), dtype=np.float64))
        ts, values = self._arrays[k]
        lo, hi = np.searchsorted(ts, since_ns, "left"), np.searchsorted(ts, until_ns, "right")
        ts, values = ts[lo:hi], values[lo:hi]
        ok = np.isfinite(values)  # as the SQLite history: a null value is no row
        return ts[ok], values[ok]

    async def record_remaining_life(self, asset: str, rule: str, subject: str, ts_ns: int,
                                    assessment: RemainingLife) -> None:
        self.assessments.append(Assessment(snapshot_s(ts_ns), rule, subject, assessment))


@dataclass(frozen=True, slots=True)
class Assessment:
    t_s: float
    rule: str
    sensor: str
    remaining_life: RemainingLife


@dataclass(frozen=True, slots=True)
class BacktestWorkOrder:
    t_s: float
    rule: str
    kind: str  # condition | preventive | data_quality
    severity: str  # the highest it reached
    title: str
    description: str = ""
    escalated_t_s: float | None = None
    cleared_t_s: float | None = None
    evidence: dict[str, Any] = field(default_factory=dict)

    def contract(self) -> dict[str, Any]:
        return {"t_s": round(self.t_s, 3), "rule": self.rule, "kind": self.kind, "severity": self.severity,
                "title": self.title}


@dataclass
class BacktestResult:
    file: str
    snapshots: int
    duration_s: float
    work_orders: list[BacktestWorkOrder]
    assessments: list[Assessment]
    skipped: list[tuple[int, str]] = field(default_factory=list)  # snapshots the analytics refused
    rules: list[str] = field(default_factory=list)
    start_t_s: float = 0.0  # t_s of the first and the last snapshot
    end_t_s: float = 0.0

    @property
    def last_assessment(self) -> Assessment | None:
        """The latest assessment, the earliest remaining life among the prognosis rules at that time."""
        if not self.assessments:
            return None
        t = max(a.t_s for a in self.assessments)
        return min((a for a in self.assessments if a.t_s == t), key=lambda a: a.remaining_life.estimate_s)

    @property
    def rul_s(self) -> dict[str, float] | None:
        """Remaining life at the last snapshot: the latest assessment, less the time since it was made."""
        last = self.last_assessment
        if last is None:
            return None
        rl, gone = last.remaining_life, self.end_t_s - last.t_s
        return {"estimate": round(max(0.0, rl.estimate_s - gone), 1), "low": round(max(0.0, rl.low_s - gone), 1),
                "high": round(max(0.0, rl.high_s - gone), 1) if math.isfinite(rl.high_s) else None}

    def contract(self) -> dict[str, Any]:
        """The `--json` object: exactly the documented keys."""
        return {"file": self.file, "snapshots": self.snapshots, "duration_s": round(self.duration_s, 3),
                "work_orders": [w.contract() for w in self.work_orders], "rul_s": self.rul_s}


def default_rules() -> tuple[Rule, ...]:
    return load_rules_file(DEFAULT_RULES_FILE)


def rules_for(rules: Sequence[Rule], asset: str, asset_type: str) -> tuple[list[Rule], list[str]]:
    """The rules a recording can exercise (vibration, vibration trend, stale data on the sensor) that
    target this asset; and the names of the others that target it but watch something a recording
    does not have (points, agents)."""
    used: list[Rule] = []
    ignored: list[str] = []
    for rule in rules:
        if not rule.targets_assets or not rule.applies_to(asset, asset_type):
            continue
        if isinstance(rule, VIBRATION_RULES) or (isinstance(rule, TrendRule) and rule.vibration) or (
                isinstance(rule, StaleRule) and rule.watches(SENSOR)):
            used.append(rule)
        else:
            ignored.append(rule.name)
    return used, ignored


async def replay(observations: Iterable[tuple[float, dict[str, Any] | None]], rules: Sequence[Rule], *,
                 asset: str, asset_type: str = DEFAULT_ASSET_TYPE, sensor: str = SENSOR,
                 expected_interval_s: float = 0.0) -> tuple[list[BacktestWorkOrder], list[Assessment]]:
    """Run `rules` over the documents of one sensor at their times (seconds), in order; a None document is a
    snapshot the agent could not analyse (nothing reaches the collector). Returns the work orders raised
    (a technician is assumed to close each once its condition clears) and the remaining-life assessments."""
    store = BacktestStore()
    life = SimulatedLifecycle()
    ticking = expected_interval_s > 0 and any(isinstance(r, StaleRule) for r in rules)
    last_ns: int | None = None
    for t_s, doc in observations:
        ts_ns = snapshot_ns(t_s)
        if ticking and last_ns is not None:  # silence since the previous block is judged as it ends
            points = [PointReport(asset, asset_type, sensor, expected_interval_s, last_ns, False, "")]
            for f in await evaluate_data_quality(rules, store, ts_ns, points):
                life.apply(f)
        if doc is None:
            continue
        store.add_block(asset, sensor, ts_ns, doc)
        last_ns = ts_ns
        for f in await evaluate_vibration(rules, store, VibrationObs(asset, sensor, ts_ns, doc), asset_type):
            life.apply(f)
        if ticking:  # the block itself ends any silence of its sensor
            points = [PointReport(asset, asset_type, sensor, expected_interval_s, ts_ns, False, "")]
            for f in await evaluate_data_quality(rules, store, ts_ns, points):
                life.apply(f)
    orders = [BacktestWorkOrder(snapshot_s(w.raised_ns), w.rule, KINDS.get(w.category, w.category), w.severity,
                                w.title, w.description, snapshot_s(w.escalated_ns) if w.escalated_ns else None,
                                snapshot_s(w.cleared_ns) if w.cleared_ns else None, w.evidence)
              for w in life.all]
    return orders, store.assessments


def asset_name(path: Path) -> str:
    """An asset id from a file name (letters, digits, ._-)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem) or "recording"


async def backtest(recording: Recording, rules: Sequence[Rule], settings: AnalysisSettings, *,
                   asset: str = "", asset_type: str = DEFAULT_ASSET_TYPE,
                   progress: Callable[[int, int], None] | None = None) -> BacktestResult:
    """Analyse every snapshot of `recording` and replay the documents through `rules`."""
    asset = asset or asset_name(recording.path)
    used, _ = rules_for(rules, asset, asset_type)
    if not used:
        raise ConfigError(f"no vibration rule applies to asset {asset!r} of type {asset_type!r}: "
                          "give the asset type the rules are written for (--asset-type)")
    skipped: list[tuple[int, str]] = []
    n = len(recording.t_s)

    def documents() -> Iterator[tuple[float, dict[str, Any] | None]]:
        for i, doc, why in analyse(recording, settings, asset=asset):
            if doc is None:
                skipped.append((i, why))
            if progress is not None:
                progress(i + 1, n)
            yield float(recording.t_s[i]), doc

    steps = np.diff(recording.t_s)
    interval = float(np.median(steps)) if len(steps) else 0.0
    orders, assessments = await replay(documents(), used, asset=asset, asset_type=asset_type,
                                       expected_interval_s=interval)
    duration = float(recording.t_s[-1] - recording.t_s[0])
    return BacktestResult(recording.name, n, duration, orders, assessments, skipped, [r.name for r in used],
                          float(recording.t_s[0]), float(recording.t_s[-1]))


def result_dict(result: BacktestResult) -> dict[str, Any]:
    """Everything of a result (for tools and the bench): the contract plus assessments and details."""
    doc = result.contract()
    doc["work_order_details"] = [asdict(w) for w in result.work_orders]
    doc["assessments"] = [{"t_s": a.t_s, "rule": a.rule, "sensor": a.sensor, **a.remaining_life.as_dict()}
                          for a in result.assessments]
    return doc
