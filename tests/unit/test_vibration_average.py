"""Envelope spectra averaged over consecutive blocks: weak bearing faults in short blocks.

Synthetic signals whose answers are known by construction, a few CWRU records, and the wiring in
the agent's VibrationMonitor (in-process, real asyncio loop and worker threads).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import pytest

from agent.analytics.averaging import EnvelopeAverager, block_envelope, choose_band, diagnose_averaged, with_averaged
from agent.analytics.bearings import lookup
from agent.analytics.envelope import single_block_equivalent_db
from agent.analytics.kurtogram import select_band
from agent.analytics.vibration import analyze_block, analyze_block_evidence, envelope_limits
from agent.model import AssetSpec, PointSpec, Reading, VibrationSpec
from agent.vibration_monitor import VibrationMonitor
from tests.unit.test_vibration import noise_with_machine_tones
from tests.unit.test_vibration_cwru import DATA, requires_cwru

FS = 12800.0
N = 8192  # 0.64 s: what field sensors send
FR = 30.0
BEARING = lookup("6205-2RS")


def weak_ball_fault(blocks: int, *, seed: int, amplitude: float = 0.12) -> np.ndarray:
    """A spalled ball: impacts at 2 x BSF (1 % jitter) ringing 3 kHz, load-zone modulated at the cage
    rate, in noise of 0.1 g r.m.s.; weak enough that one 0.64 s block does not show it."""
    rng = np.random.default_rng(seed)
    n = blocks * N
    kt = np.arange(int(0.01 * FS)) / FS
    kernel = np.exp(-400 * kt) * np.sin(2 * math.pi * 3000 * kt)
    x = np.zeros(n + len(kernel))
    rate, ftf, t = 2 * BEARING.bsf * FR, BEARING.ftf * FR, 0.0
    while (i := int(t * FS)) < n:
        x[i:i + len(kernel)] += amplitude * 0.5 * (1 + math.cos(2 * math.pi * ftf * t)) * kernel
        t += (1 + 0.01 * rng.standard_normal()) / rate
    return x[:n] + 0.1 * rng.standard_normal(n)


def blocks_of(x: np.ndarray, n: int = N) -> list[np.ndarray]:
    return [x[i:i + n] for i in range(0, len(x) - n + 1, n)]


# --- statistics ----------------------------------------------------------------------------------------


def test_single_block_equivalent_height_keeps_the_false_alarm_probability() -> None:
    heights = np.array([0.0, 3.0, 12.0, 20.0])
    assert np.allclose(single_block_equivalent_db(heights, 1), heights)
    # Mean of 2 blocks: power/mean is Gamma(2)/2, tail exp(-y)(1 + y) with y = 2 x power/mean.
    median_y = 1.678346990016661  # median of Gamma(2, 1)
    for h in (3.0, 6.0, 9.0):
        y = 10 ** (h / 10) * median_y
        tail = math.exp(-y) * (1 + y)
        assert single_block_equivalent_db(np.array([h]), 2)[0] == pytest.approx(
            10 * math.log10(-math.log(tail) / math.log(2)), abs=1e-6)
    assert single_block_equivalent_db(np.array([0.0]), 8)[0] == pytest.approx(0.0, abs=1e-6)
    assert single_block_equivalent_db(np.array([5.2]), 8)[0] == pytest.approx(12.0, abs=0.1)


# --- synthetic faults and noise ------------------------------------------------------------------------


def test_weak_ball_fault_missed_by_single_blocks_is_found_on_eight_averaged() -> None:
    averager = EnvelopeAverager(BEARING, blocks=8)
    per_block, averaged = [], []
    for x in blocks_of(weak_ball_fault(12, seed=3)):
        ind = analyze_block(x, FS, rpm=FR * 60, rpm_source="config", bearing=BEARING)
        per_block.append(ind.fault)
        avg = averager.add(x, FS, FR * 60)
        averaged.append((avg.blocks, avg.fault))
        merged = with_averaged(ind, avg)
    assert per_block.count("ball") <= 1, per_block
    assert [f for n, f in averaged if n == 8] == ["ball"] * 5, averaged
    assert len(averager) == 8  # the window rolls: memory stays at 8 blocks
    assert avg.ftf >= 12 and avg.confidence >= 0.5
    assert merged.fault == "ball" and merged.health < 70
    assert "averaged over 8 blocks" in merged.diagnosis[0].evidence


def test_averaging_does_not_override_a_fault_the_block_shows() -> None:
    x = weak_ball_fault(1, seed=4, amplitude=0.6)
    outer = analyze_block(x, FS, rpm=FR * 60, bearing=BEARING)
    assert outer.fault == "ball"  # strong enough for one block
    avg = EnvelopeAverager(BEARING).add(x, FS, FR * 60)
    assert with_averaged(outer, avg) is outer


def test_no_false_alarm_over_many_averaged_windows() -> None:
    """White noise, noise whose level jumps from block to block, and a tonal healthy machine."""
    rng = np.random.default_rng(7)
    makers = {
        "white": lambda: rng.standard_normal(N),
        "level jumps": lambda: rng.uniform(0.2, 5.0) * rng.standard_normal(N),
        "healthy machine": lambda: noise_with_machine_tones(rng, N),
    }
    for name, make in makers.items():
        averager = EnvelopeAverager(BEARING, blocks=8)
        faults = [averager.add(make(), FS, FR * 60).fault for _ in range(200)]
        assert faults.count("normal") == 200, (name, [f for f in faults if f != "normal"])


# --- window management ----------------------------------------------------------------------------------


def test_window_resets_on_a_changed_block_length_sample_rate_or_speed() -> None:
    rng = np.random.default_rng(8)
    averager = EnvelopeAverager(BEARING, blocks=4)
    for _ in range(6):
        averager.add(rng.standard_normal(N), FS, FR * 60)
    assert len(averager) == 4 and averager.resets == 0
    assert averager.add(rng.standard_normal(N // 2), FS, FR * 60).blocks == 1  # other length
    assert averager.add(rng.standard_normal(N // 2), FS, FR * 60).blocks == 2
    assert averager.add(rng.standard_normal(N // 2), 2 * FS, FR * 60).blocks == 1  # other sample rate
    assert averager.add(rng.standard_normal(N // 2), 2 * FS, FR * 60 * 1.005).blocks == 2  # within 1 %
    assert averager.add(rng.standard_normal(N // 2), 2 * FS, FR * 60 * 1.03).blocks == 1  # speed changed
    assert averager.resets == 3


def test_bad_block_is_refused_and_leaves_the_window_as_it_was() -> None:
    averager = EnvelopeAverager(BEARING, blocks=4)
    averager.add(np.random.default_rng(9).standard_normal(N), FS, FR * 60)
    with pytest.raises(ValueError, match="NaN"):
        averager.add(np.full(N, np.nan), FS, FR * 60)
    with pytest.raises(ValueError, match="constant"):
        averager.add(np.ones(N // 2), FS, FR * 60)
    assert len(averager) == 1 and averager.resets == 0
    with pytest.raises(ValueError, match="blocks"):
        EnvelopeAverager(BEARING, blocks=0)
    with pytest.raises(ValueError, match="no blocks"):
        diagnose_averaged([], BEARING)


def test_band_of_one_block_is_the_per_block_band_and_of_many_the_averaged_kurtosis_maximum() -> None:
    x = weak_ball_fault(4, seed=10, amplitude=0.4)
    blocks = [block_envelope(b, FS, shaft_hz=FR, bearing=BEARING) for b in blocks_of(x)]
    min_width, _ = envelope_limits(BEARING, FR, 0.02)
    one = select_band(np.fft.rfft(blocks_of(x)[0] - blocks_of(x)[0].mean()), FS / N, min_width_hz=min_width)
    assert (blocks[0].band.start, blocks[0].band.stop) == (one.start, one.stop)
    chosen = choose_band(blocks)
    assert chosen.low_hz <= 3000 <= chosen.high_hz  # the impacts' resonance
    assert chosen.kurtosis == pytest.approx(max(np.mean([b.band_sk for b in blocks], axis=0)))


# --- real records -----------------------------------------------------------------------------------------


@requires_cwru
@pytest.mark.parametrize(
    ("file", "channel", "fault"),
    [
        ("187_B014_2.npz", "de", "ball"),
        ("188_B014_3.npz", "de", "ball"),
        ("105_IR007_0.npz", "de", "inner_race"),
        ("234_OR021at6_0.npz", "de", "outer_race"),
        ("097_Normal_0_part1.npz", "de", "normal"),  # 2 blocks of 0.68 s in this part record
        ("097_Normal_0_part1.npz", "de_12k", "normal"),
    ],
)
def test_cwru_record_in_short_blocks_averaged(file: str, channel: str, fault: str) -> None:
    with np.load(DATA / file, allow_pickle=False) as data:
        x = data[channel].astype(np.float64)
        fs = float(data["fs_12k"] if channel.endswith("_12k") else data["fs"])
        rpm = float(data["rpm"])
    n = round(8192 / 12000 * fs)  # 0.68 s
    averager = EnvelopeAverager(BEARING, blocks=8)
    for block in blocks_of(x[: 8 * n], n):
        ind = analyze_block(block, fs, rpm=rpm, rpm_source="config", bearing=BEARING)
        merged = with_averaged(ind, averager.add(block, fs, rpm))
    assert merged.fault == fault, merged.diagnosis


# --- the agent's VibrationMonitor ----------------------------------------------------------------------


def _monitor(average_blocks: int) -> VibrationMonitor:
    spec = VibrationSpec(sensor_points=("de_accel",), nominal_rpm=FR * 60, bearing="6205-2RS",
                         average_blocks=average_blocks)
    point = PointSpec(asset="pump-1", name="de_accel", unit="g", kind="waveform", sample_rate_hz=FS)
    return VibrationMonitor([AssetSpec(id="pump-1", type="pump", vibration=spec, points=(point,))])


async def _feed(monitor: VibrationMonitor, blocks: list[np.ndarray]) -> list[object]:
    out = []
    for i, x in enumerate(blocks):
        monitor.submit(Reading("pump-1", "de_accel", x, ts_ns=1_000_000_000 * (i + 1)))
        deadline = time.monotonic() + 60
        while monitor.analysed_blocks + monitor.errors < i + 1:  # one block at a time: they stay in order
            assert time.monotonic() < deadline, f"block {i} not analysed within 60 s"
            await asyncio.sleep(0.01)
        out.extend(await monitor.drain())
    await monitor.close()
    return out


def test_monitor_reports_the_averaged_ball_fault_upstream() -> None:
    blocks = blocks_of(weak_ball_fault(8, seed=3))
    monitor = _monitor(8)
    messages = asyncio.run(_feed(monitor, blocks))
    assert len(messages) == 8 and monitor.errors == 0
    last = messages[-1]
    assert last.fault == "ball" and last.confidence >= 0.5 and last.health < 70
    assert "averaged over 8 blocks" in last.diagnosis[0].evidence
    assert monitor.averaged_findings >= 1
    assert messages[0].fault == "normal"  # one block alone shows nothing

    plain = _monitor(1)  # averaging off: blocks only
    assert [m.fault for m in asyncio.run(_feed(plain, blocks))].count("ball") <= 1


# --- configuration --------------------------------------------------------------------------------------


def test_average_blocks_is_configured_per_asset_and_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.config import build_agent_config
    from runtime.errors import ConfigError
    from tests.unit.test_config_errors import load_agent_example

    example = load_agent_example(tmp_path, monkeypatch)
    assert [a.vibration.average_blocks for a in example.assets if a.vibration] == [8]
    base = {"agent": {"id": "gw-1", "state_dir": "/tmp/x"},
            "uplink": {"collector": "127.0.0.1:50051", "token": "t" * 20}, "sources": [{"type": "nosuch"}]}
    vibration = {"sensors": ["de_accel"], "bearing": "6205-2RS", "average_blocks": 0}
    with pytest.raises(ConfigError, match=r"assets\[0\]\.vibration\.average_blocks"):
        build_agent_config(base | {"assets": [{"id": "pump-1", "type": "pump", "vibration": vibration}]})


def test_a_jittering_speed_keeps_averaging_as_the_window_rolls() -> None:
    """Real speed readings wander by a few tenths of a percent. The window's spectrum range is fixed
    by its reference speed, so blocks keep averaging after the oldest ones roll out."""
    rng = np.random.default_rng(1)
    averager = EnvelopeAverager(BEARING, blocks=4)
    jitter = (0, 0.003, -0.003, 0.004, -0.004, 0.002, -0.002, 0.0035, -0.0035, 0.001, 0.003, -0.003)
    counts = [averager.add(rng.standard_normal(N), FS, FR * 60 * (1 + d)).blocks for d in jitter]
    assert counts == [1, 2, 3] + [4] * 9 and averager.resets == 0
    # a real speed change (beyond half the slip tolerance) still starts a new window
    assert averager.add(rng.standard_normal(N), FS, FR * 60 * 1.05).blocks == 1 and averager.resets == 1


def _assert_same(a: object, b: object, path: str = "") -> None:
    """Exactly equal, field by field, arrays included."""
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        assert type(a) is type(b), path
        for f in dataclasses.fields(a):
            _assert_same(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}")
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for k in a:
            _assert_same(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), path
        for i, (u, v) in enumerate(zip(a, b, strict=True)):
            _assert_same(u, v, f"{path}[{i}]")
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True), path
    else:
        assert a == b or (a != a and b != b), (path, a, b)


@pytest.mark.parametrize("rpm, units", [(FR * 60, "g"), (None, "g"), (FR * 60, "m/s^2")])
def test_averaging_the_analysed_block_gives_what_averaging_the_samples_gives(rpm: float | None, units: str) -> None:
    """The agent's path (analysis reused) against `add(x, ...)` transforming and demodulating again.

    Eleven blocks: the band is chosen again after eight, so some blocks are demodulated in a band
    the block's own analysis did not choose; with the speed estimated the demodulation limits
    follow each block's estimate, not the window's reference, and less can be reused.
    """
    scale = 9.80665 if units == "m/s^2" else 1.0
    xs = [scale * b for b in blocks_of(weak_ball_fault(11, seed=5, amplitude=0.3))]
    shared, alone = EnvelopeAverager(BEARING, blocks=8), EnvelopeAverager(BEARING, blocks=8)
    reused, kurtosis_reused = 0, 0
    for x in xs:
        analysis = analyze_block_evidence(x, FS, rpm=rpm, bearing=BEARING, units=units)
        assert analysis.block is not None
        got = shared.add(x, FS, analysis.indicators.rpm, units=units, analysis=analysis)
        want = alone.add(x, FS, analysis.indicators.rpm, units=units)
        _assert_same(got, want)
        _assert_same(list(shared._window), list(alone._window))
        reused += shared._window[-1].accel_power is analysis.block.accel_power
        kurtosis_reused += shared._window[-1].band_sk is analysis.block.demodulation.candidate_kurtosis
    if rpm is not None:  # the configured speed: the same limits for every block, the same band for most
        assert kurtosis_reused == len(xs)
        assert reused >= len(xs) // 2


def test_an_analysis_in_other_units_is_not_reused() -> None:
    x = blocks_of(weak_ball_fault(1, seed=6))[0]
    analysis = analyze_block_evidence(x, FS, rpm=FR * 60, bearing=BEARING, units="g")
    shared, alone = EnvelopeAverager(BEARING, blocks=8), EnvelopeAverager(BEARING, blocks=8)
    _assert_same(shared.add(x, FS, FR * 60, units="m/s^2", analysis=analysis), alone.add(x, FS, FR * 60, units="m/s^2"))
    assert shared._window[-1].band_sk is not analysis.block.demodulation.candidate_kurtosis
