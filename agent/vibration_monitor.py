"""Runs the vibration analytics on waveform readings, off the event loop, and keeps the results.

Waveform blocks arrive from connectors (MQTT or OPC-UA arrays). Each block of an asset with a
vibration spec is analysed in a worker thread (numpy releases the GIL in its FFTs), and the
resulting indicators wait in `drain()` for the next uplink batch: the uplink carries indicators,
never raw samples. If analysis falls behind, new blocks are dropped and counted until it catches up
rather than letting memory grow on a small gateway.

Each sensor with a bearing also keeps the envelope spectra of its last `average_blocks` blocks
(agent.analytics.averaging: a few hundred bins per block, not the samples). A bearing fault the
averaged spectra show but the block alone does not (a weak ball defect in 0.64 s blocks) is added
to that block's indicators, its evidence saying over how many blocks it was averaged. A block of
another length or sample rate, or a shaft speed 1 % off the window's, starts a new window.

An asset with two or more sensors (one bearing spec per asset: they watch the same bearing) gets a
second opinion: a block's bearing evidence is merged with the latest evidence of the asset's other
sensors taken at the same time (within one block length; agent.analytics.diagnosis.merge_evidence).
A line clearer on the other sensor counts, and sensors that point to different locations make the
diagnosis "bearing" (location undetermined) with both candidates.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from agent.model import AssetSpec, PointSpec, Reading, VibrationSpec
from protos.twin.v1 import twin_pb2
from runtime.logs import RateLimitedLog

if TYPE_CHECKING:  # the analytics are imported only by agents that have vibration sensors
    from agent.analytics.averaging import AveragedDiagnosis, EnvelopeAverager
    from agent.analytics.bearings import BearingDefects
    from agent.analytics.diagnosis import LocationEvidence
    from agent.analytics.vibration import BlockAnalysis, VibrationIndicators

__all__ = ["VibrationMonitor", "indicators_message"]

log = logging.getLogger("twin.agent.vibration")

MAX_PENDING_BLOCKS = 8
MIN_RPM = 30.0  # below this the machine is taken as stopped: no shaft-order analysis
MAX_RPM = 60_000.0
LOG_INTERVAL_S = 60.0  # a sensor's repeated analysis problem is logged at most this often


@dataclass(frozen=True, slots=True)
class _Sensor:
    asset: AssetSpec
    spec: VibrationSpec
    point: PointSpec
    bearing: BearingDefects | None
    averager: EnvelopeAverager | None  # None without a bearing or with average_blocks = 1
    lock: threading.Lock  # one block of a sensor at a time through its averager (two worker threads)


@dataclass(frozen=True, slots=True)
class _Evidence:
    """A sensor's latest bearing evidence, for the asset's other sensors' second opinion."""

    ts_ns: int
    seconds: float
    evidence: LocationEvidence


def indicators_message(asset: str, sensor: str, ts_ns: int, ind: VibrationIndicators) -> twin_pb2.VibrationIndicators:
    return twin_pb2.VibrationIndicators(
        asset=asset, sensor=sensor, ts_ns=ts_ns,
        accel_rms=ind.accel_rms, accel_peak=ind.accel_peak, crest_factor=ind.crest_factor,
        kurtosis=ind.kurtosis, velocity_rms_mm_s=ind.velocity_rms_mm_s, iso_zone=ind.iso_zone,
        rpm=ind.rpm, rpm_source=ind.rpm_source, amp_1x=ind.amp_1x, amp_2x=ind.amp_2x, amp_3x=ind.amp_3x,
        bpfo=ind.bpfo, bpfi=ind.bpfi, bsf=ind.bsf, ftf=ind.ftf, health=ind.health, fault=ind.fault,
        confidence=ind.confidence,
        diagnosis=[twin_pb2.DiagnosisEntry(fault=d.fault, confidence=d.confidence, evidence=d.evidence)
                   for d in ind.diagnosis],
    )


def _bearing_for(spec: VibrationSpec) -> BearingDefects | None:
    from agent.analytics.bearings import bearing_defects

    return bearing_defects(spec.bearing, bpfo=spec.bpfo, bpfi=spec.bpfi, bsf=spec.bsf, ftf=spec.ftf)


def _averager_for(spec: VibrationSpec, bearing: BearingDefects | None) -> EnvelopeAverager | None:
    if bearing is None or spec.average_blocks <= 1:
        return None
    from agent.analytics.averaging import EnvelopeAverager

    return EnvelopeAverager(bearing, blocks=spec.average_blocks)


class VibrationMonitor:
    def __init__(self, assets: Sequence[AssetSpec]) -> None:
        self._sensors: dict[tuple[str, str], _Sensor] = {}
        self._speed_points: dict[tuple[str, str], str] = {}
        for a in assets:
            if a.vibration is None:
                continue
            bearing = _bearing_for(a.vibration)
            for p in a.points:
                if p.name in a.vibration.sensor_points:
                    self._sensors[(a.id, p.name)] = _Sensor(a, a.vibration, p, bearing,
                                                            _averager_for(a.vibration, bearing), threading.Lock())
            if a.vibration.speed_point:
                self._speed_points[(a.id, a.vibration.speed_point)] = a.id
        self._rpm: dict[str, float] = {}
        self._pending: set[asyncio.Task[None]] = set()
        self._done: list[twin_pb2.VibrationIndicators] = []
        self._latest: dict[tuple[str, str], twin_pb2.VibrationIndicators] = {}
        self._health: dict[str, float] = {}
        self._last_block: dict[tuple[str, str], tuple[np.ndarray, float, float]] = {}
        self._evidence: dict[str, dict[str, _Evidence]] = {}  # asset -> sensor -> latest evidence
        self.dropped_blocks = 0
        self.analysed_blocks = 0
        self.averaged_findings = 0  # blocks whose bearing fault came from the averaged spectra only
        self.merged_blocks = 0  # blocks diagnosed together with another sensor of the same asset
        self.errors = 0
        self.rejected_speeds = 0
        self._log = RateLimitedLog(log, LOG_INTERVAL_S)
        self._executor = ThreadPoolExecutor(max_workers=max(1, min(2, os.cpu_count() or 1)),
                                            thread_name_prefix="vibration") if self._sensors else None

    def observe_scalar(self, r: Reading) -> None:
        asset = self._speed_points.get((r.asset, r.point))
        if asset is not None and isinstance(r.value, int | float) and not isinstance(r.value, bool):
            self._rpm[asset] = float(r.value)

    def _speed(self, sensor: _Sensor) -> tuple[float | None, str]:
        """The shaft speed to analyse with, and where it came from.

        A speed point value outside what the block can resolve (a stopped machine, or a register
        decoded with the wrong word order reading 1e9 rpm) is not used: it would make the analysis
        meaningless or, worse, allocate gigabytes. The configured nominal speed, else the estimate
        from the spectrum, stands in, and the rejection is counted and logged (rate-limited).
        """
        spec = sensor.spec
        limit = min(MAX_RPM, sensor.point.sample_rate_hz * 60.0 / 80.0)  # 40 shaft orders below Nyquist
        measured = self._rpm.get(sensor.asset.id)
        if measured is not None:
            if MIN_RPM <= measured <= limit:
                return measured, "speed_point"
            self.rejected_speeds += 1
            self._log.warning(f"{sensor.asset.id}/speed", f"vibration {sensor.asset.id}: speed point reads "
                              f"{measured:g} rpm, outside {MIN_RPM:g}-{limit:g}; using "
                              f"{'nominal_rpm' if spec.nominal_rpm > 0 else 'the spectrum estimate'}")
        if 0 < spec.nominal_rpm <= limit:
            return spec.nominal_rpm, "config"
        return None, "estimated"

    def submit(self, r: Reading) -> None:
        sensor = self._sensors.get((r.asset, r.point))
        if sensor is None or self._executor is None or not isinstance(r.value, np.ndarray):
            return
        if len(self._pending) >= MAX_PENDING_BLOCKS:
            self.dropped_blocks += 1
            return
        task = asyncio.get_running_loop().create_task(self._analyse(sensor, r))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _analyse(self, sensor: _Sensor, r: Reading) -> None:
        spec = sensor.spec
        rpm, source = self._speed(sensor)
        from agent.analytics.averaging import with_averaged
        from agent.analytics.vibration import analyze_block_evidence

        fs = sensor.point.sample_rate_hz
        x = np.asarray(r.value, dtype=np.float64)
        units = sensor.point.unit or "g"

        def analyse() -> tuple[BlockAnalysis, AveragedDiagnosis | None]:
            result = analyze_block_evidence(x, fs, rpm=rpm, rpm_source=source, bearing=sensor.bearing,
                                            machine_group=spec.machine_group, foundation=spec.foundation,
                                            units=units, sensor=r.point)
            if sensor.averager is None:
                return result, None
            with sensor.lock:
                try:
                    return result, sensor.averager.add(x, fs, result.indicators.rpm, units=units, analysis=result)
                except ValueError as exc:  # the block's own indicators are still good: keep them
                    self._log.warning(f"{r.asset}/{r.point}/average",
                                      f"vibration {r.asset}/{r.point}: block not averaged: {exc}")
                    sensor.averager.reset()
                    return result, None

        try:
            result, avg = await asyncio.get_running_loop().run_in_executor(self._executor, analyse)
        except Exception as exc:
            self.errors += 1
            self._log.warning(f"{r.asset}/{r.point}", f"vibration {r.asset}/{r.point}: analysis failed: {exc}")
            return
        ind = self._second_opinion(r, result, len(x) / fs)
        if avg is not None:
            merged = with_averaged(ind, avg)
            self.averaged_findings += merged is not ind
            ind = merged
        self._last_block[(r.asset, r.point)] = (x, fs, ind.rpm)
        msg = indicators_message(r.asset, r.point, r.ts_ns, ind)
        self.analysed_blocks += 1
        self._done.append(msg)
        self._latest[(r.asset, r.point)] = msg
        self._health[r.asset] = ind.health

    def _second_opinion(self, r: Reading, result: BlockAnalysis, seconds: float) -> VibrationIndicators:
        """The block's indicators, its bearing evidence merged with the asset's other sensors' of the same time."""
        if result.evidence is None:
            return result.indicators
        from agent.analytics.diagnosis import merge_evidence
        from agent.analytics.vibration import with_bearing_evidence

        latest = self._evidence.setdefault(r.asset, {})
        latest[r.point] = _Evidence(r.ts_ns, seconds, result.evidence)
        others = [e.evidence for point, e in latest.items()
                  if point != r.point and abs(e.ts_ns - r.ts_ns) <= max(e.seconds, seconds) * 1e9]
        if not others:
            return result.indicators
        self.merged_blocks += 1
        return with_bearing_evidence(result.indicators, merge_evidence([result.evidence, *others]))

    async def drain(self) -> list[twin_pb2.VibrationIndicators]:
        """Indicators finished since the last call (blocks still in analysis go in the next batch)."""
        out, self._done = self._done, []
        return out

    def health(self, asset: str) -> float:
        return self._health.get(asset, 100.0)

    def latest_summary(self) -> dict[str, dict[str, object]]:
        return {
            f"{a}/{s}": {"velocity_rms_mm_s": round(m.velocity_rms_mm_s, 3), "iso_zone": m.iso_zone,
                         "rpm": round(m.rpm, 1), "fault": m.fault, "confidence": round(m.confidence, 2),
                         "health": round(m.health, 1), "bpfo": round(m.bpfo, 3), "bpfi": round(m.bpfi, 3)}
            for (a, s), m in self._latest.items()
        }

    def save_last_blocks(self, folder: Path) -> list[Path]:
        """Write each sensor's last analysed block as `<asset>.<sensor>.npz` (keys: sensor, fs, rpm).

        Done at shutdown only (flash storage on gateways wears out), so that `twin-agent diagnose`
        or a person can look at what the analytics last saw.
        """
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        for (asset, sensor), (x, fs, rpm) in self._last_block.items():
            path = folder / f"{asset}.{sensor}.npz"
            np.savez_compressed(path, **{sensor: x.astype(np.float32)}, fs=fs, rpm=rpm)
            written.append(path)
        return written

    async def close(self) -> None:
        for t in list(self._pending):
            t.cancel()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
