"""The health indicator and the remaining-life forecast (collector/prognosis), and the prognosis rule on
synthetic machines with known answers: a baseline that spikes cannot move, isolated impulsive blocks
that must raise nothing, a sustained change that must, and a degradation whose crossing time is known."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

from collector.backtest import replay
from collector.prognosis.health_indicator import Baseline, fit_baseline, health_indicator, trailing_median
from collector.prognosis.remaining_life import ForecastSettings, assess, residual_life, trend_fit
from collector.workorders.evaluate import parse_rules
from collector.workorders.prognosis import (
    PrognosisRule,
    PrognosisState,
    evaluate_prognosis,
    format_duration,
    format_remaining_life,
)
from runtime.errors import ConfigError

DT = 10.0  # seconds between blocks, as the FEMTO snapshots


def prognosis_rule(**kw: object) -> PrognosisRule:
    table: dict[str, object] = {"name": "remaining_life", "kind": "prognosis", "asset_type": "machine",
                                "baseline_blocks": 30, "smooth_blocks": 5, "sustain_blocks": 5,
                                "alert_ratio": 1.3, "alert_sigma": 4.0, "failure_ratio": 6.0,
                                "fit_window_s": 600.0, "horizon_s": 1800.0, "confidence": 0.9,
                                "life_scale_s": 20_000.0, "life_shape": 2.0, "life_quantile": 0.2, **kw}
    [rule] = parse_rules([table])
    assert isinstance(rule, PrognosisRule)
    return rule


def run_rule(rule: PrognosisRule, rms: np.ndarray, *, dt: float = DT) -> tuple[list, list]:
    """Replay accel_rms values (one block each `dt`) through the rule as the backtest does."""
    docs = [(i * dt, {"accel_rms": float(v), "accel_peak": 4 * float(v), "kurtosis": 3.0})
            for i, v in enumerate(rms)]
    return asyncio.run(replay(docs, [rule], asset="m1", asset_type="machine"))


class TestBaseline:
    def test_median_and_spread_ignore_spikes(self) -> None:
        rng = np.random.default_rng(1)
        rms = 0.3 * np.exp(rng.normal(0, 0.05, 60))
        spiky = rms.copy()
        spiky[[5, 17, 40]] = 6.0  # three impulsive snapshots of 20x
        clean, noisy = (fit_baseline({"accel_rms": v}, {"accel_rms": 1.0}) for v in (rms, spiky))
        assert abs(noisy.center["accel_rms"] - clean.center["accel_rms"]) < 0.02
        assert noisy.spread == pytest.approx(clean.spread, rel=0.3)
        assert 0.03 < clean.spread < 0.07  # the 5 % scatter, as a standard deviation of the log

    def test_indicator_is_the_log_ratio_to_the_baseline(self) -> None:
        base = fit_baseline({"accel_rms": np.full(10, 0.5), "kurtosis": np.full(10, 3.0)},
                            {"accel_rms": 1.0, "kurtosis": 1.0})
        hi = health_indicator({"accel_rms": np.array([0.5, 1.0, 0.0]), "kurtosis": np.array([3.0, 6.0, 3.0])}, base)
        assert hi[0] == pytest.approx(0.0)
        assert hi[1] == pytest.approx(math.log(2))
        assert math.isnan(hi[2])  # a value that is not positive has no log ratio
        assert Baseline.from_dict(base.as_dict()) == base

    def test_needs_enough_blocks_and_positive_weights(self) -> None:
        with pytest.raises(ValueError, match="usable blocks"):
            fit_baseline({"accel_rms": np.array([0.3, 0.3, np.nan, 0.0])}, {"accel_rms": 1.0})
        with pytest.raises(ValueError, match="weights"):
            fit_baseline({"accel_rms": np.ones(10)}, {"accel_rms": 0.0})


def test_trailing_median_removes_one_spike_and_follows_a_step() -> None:
    x = np.zeros(30)
    x[10] = 5.0
    x[20:] = 1.0
    smooth = trailing_median(x, 5)
    assert smooth[10:15].max() == 0.0
    assert smooth[21] == 0.0 and smooth[22] == 1.0  # the step is followed within half the window
    assert np.array_equal(trailing_median(x, 1), x)


class TestAssess:
    settings = ForecastSettings(smooth_blocks=5, alert_ratio=1.3, alert_sigma=4.0, sustain_blocks=5,
                                failure_ratio=6.0, fit_window_s=600.0, confidence=0.9, life_scale_s=20_000.0,
                                life_shape=2.0, life_quantile=0.2)

    def test_flat_machine_gets_the_life_model(self) -> None:
        """No degradation: the Weibull residual life at the age reached (checked against scipy)."""
        weibull = pytest.importorskip("scipy.stats").weibull_min(2.0, scale=20_000.0)

        def residual(q: float) -> float:
            return float(weibull.isf((1 - q) * weibull.sf(5000.0))) - 5000.0

        rng = np.random.default_rng(2)
        t = np.arange(200) * DT
        rl = assess(t - t[-1], rng.normal(0, 0.05, 200), spread=0.05, running_s=5000.0, settings=self.settings)
        assert rl.basis == "healthy" and not rl.degraded and not rl.within(1e9)
        assert rl.estimate_s == pytest.approx(residual(0.2), rel=1e-9)
        assert (rl.low_s, rl.high_s) == pytest.approx((residual(0.05), residual(0.95)), rel=1e-9)
        assert residual_life(0.0, 20_000.0, 1.0, 0.5) == pytest.approx(20_000.0 * math.log(2))

    def test_known_crossing_is_bracketed(self) -> None:
        """HI = growth * t: the indicator grows exponentially and crosses 6x at a known time. A 90 % interval
        holds it in most of ten noise draws, and the estimates centre on it."""
        growth = math.log(6.0) / 3600.0  # reaches 6x one hour after it starts
        t = np.arange(0, 2400.0, DT)
        truth = 3600.0 - t[-1]
        slow = ForecastSettings(**{**_fields(self.settings), "life_scale_s": 1e9})
        inside, errors = [], []
        for seed in range(10):
            hi = growth * t + np.random.default_rng(seed).normal(0, 0.03, len(t))
            rl = assess(t - t[-1], hi, spread=0.03, running_s=float(t[-1]), settings=slow)
            assert rl.basis == "trend" and rl.degraded and rl.low_s <= rl.estimate_s <= rl.high_s
            inside.append(rl.low_s <= truth <= rl.high_s)
            errors.append(rl.estimate_s / truth - 1)
        assert sum(inside) >= 7
        assert abs(float(np.median(errors))) < 0.1
        assert rl.within(1800.0) and not rl.within(600.0)

    def test_the_earlier_of_life_model_and_trend(self) -> None:
        t = np.arange(0, 2400.0, DT)
        hi = math.log(6.0) / 36000.0 * t + 0.4  # a slow trend: 10 h
        old = 40_000.0  # twice the life scale: the life model expects the end sooner than the trend
        rl = assess(t - t[-1], hi, spread=0.03, running_s=old, settings=self.settings)
        assert rl.basis == "trend" and rl.crossing_s > 10_000
        assert rl.estimate_s == pytest.approx(residual_life(old, 20_000.0, 2.0, 0.2))
        assert rl.estimate_s < 10_000
        assert rl.low_s <= rl.estimate_s <= rl.high_s

    def test_failure_level_reached(self) -> None:
        hi = np.concatenate([np.zeros(50), np.full(8, math.log(7.0))])
        t = np.arange(len(hi)) * DT
        rl = assess(t - t[-1], hi, spread=0.05, running_s=float(t[-1]), settings=self.settings)
        assert rl.basis == "reached" and rl.estimate_s == 0.0 and rl.within(0.0)

    def test_fit_needs_blocks(self) -> None:
        assert all(math.isnan(v) for v in trend_fit(np.arange(3.0), np.arange(3.0), 600.0, 0.8))

    def test_bad_settings(self) -> None:
        with pytest.raises(ValueError, match="alert_ratio < failure_ratio"):
            ForecastSettings(alert_ratio=3.0, failure_ratio=2.0)
        with pytest.raises(ValueError, match="life_quantile"):
            ForecastSettings(life_quantile=1.0)


def _fields(s: ForecastSettings) -> dict[str, object]:
    return {name: getattr(s, name) for name in s.__slots__}  # type: ignore[attr-defined]


class TestRule:
    def healthy(self, n: int, seed: int = 4) -> np.ndarray:
        rng = np.random.default_rng(seed)
        return 0.3 * np.exp(rng.normal(0, 0.08, n))

    def test_isolated_spikes_raise_nothing(self) -> None:
        rms = self.healthy(600)
        rng = np.random.default_rng(5)
        spikes = rng.choice(np.arange(40, 600), 25, replace=False)
        rms[spikes] *= rng.uniform(5, 30, len(spikes))  # impulsive snapshots, up to 30x, never two in a row
        rms[np.arange(300, 304)] *= 8  # and one burst of four
        orders, assessments = run_rule(prognosis_rule(), rms)
        assert orders == []
        assert assessments and all(a.remaining_life.basis == "healthy" for a in assessments)

    def test_noisy_baseline_raises_nothing(self) -> None:
        rng = np.random.default_rng(6)
        rms = 0.3 * np.exp(rng.normal(0, 0.4, 800))  # 40 % scatter from block to block
        orders, _ = run_rule(prognosis_rule(), rms)
        assert orders == []

    def test_sustained_rise_raises_one_preventive_work_order(self) -> None:
        rms = self.healthy(500)
        rms[300:] *= np.exp(np.linspace(0, math.log(6.0), 200))  # grows to 6x over the last 2000 s
        orders, assessments = run_rule(prognosis_rule(), rms)
        assert [(o.rule, o.kind) for o in orders] == [("remaining_life", "preventive")]
        assert 3000 < orders[0].t_s < 5000  # after the rise starts, before the failure level
        ev = orders[0].evidence
        assert ev["kind"] == "prognosis" and ev["remaining_life_s"] is not None
        low, high = ev["remaining_life_band_s"]
        assert low <= ev["remaining_life_s"] <= high
        assert assessments[-1].remaining_life.basis in ("trend", "reached")

    def test_step_to_the_failure_level_escalates(self) -> None:
        rms = self.healthy(200)
        rms[150:] *= 8.0
        orders, _ = run_rule(prognosis_rule(), rms)
        [wo] = orders
        assert wo.severity == "critical" and "failure level" in wo.title

    def test_synthetic_degradation_with_known_crossing(self) -> None:
        """Exponential growth from t=3000 s, crossing 6x the baseline at t=6600 s: every trend estimate
        after the work order brackets the true remaining life with its interval, most of the time."""
        t_start, t_cross = 3000.0, 6600.0
        rng = np.random.default_rng(7)
        t = np.arange(0, 6400.0, DT)
        growth = np.where(t > t_start, (t - t_start) * math.log(6.0) / (t_cross - t_start), 0.0)
        rms = 0.3 * np.exp(growth + rng.normal(0, 0.05, len(t)))
        rule = prognosis_rule(life_scale_s=1e9, fit_window_s=1200.0)
        orders, assessments = run_rule(rule, rms)
        assert [o.kind for o in orders] == ["preventive"]
        trend = [a for a in assessments if a.remaining_life.basis == "trend" and a.t_s >= orders[0].t_s]
        assert len(trend) > 20
        inside = [a.remaining_life.low_s <= t_cross - a.t_s <= a.remaining_life.high_s for a in trend]
        assert np.mean(inside) >= 0.6  # 90 % slope band; consecutive windows overlap, so misses come in runs
        errors = [a.remaining_life.estimate_s / (t_cross - a.t_s) - 1 for a in trend]
        assert abs(float(np.median(errors))) < 0.15
        assert orders[0].evidence["remaining_life_s"] == pytest.approx(t_cross - orders[0].t_s, rel=0.3)

    def test_no_assessment_before_the_baseline(self) -> None:
        _, assessments = run_rule(prognosis_rule(baseline_blocks=50), self.healthy(49))
        assert assessments == []


@pytest.mark.parametrize(("table", "message"), [
    ({"indicators": {"rpm": 1.0}}, "indicators.rpm"),
    ({"indicators": {"accel_rms": 0.0}}, "weight must be positive"),
    ({"failure_ratio": 1.2}, "failure_ratio must be greater"),
    ({"horizon_s": 100.0, "clear_horizon_s": 50.0}, "clear_horizon_s"),
    ({"life_quantile": 1.5}, "life_quantile"),
    ({"baseline_blocks": 2}, "baseline_blocks"),
])
def test_rule_errors_name_the_key(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as exc:
        prognosis_rule(**table)
    assert "rules[0]" in str(exc.value)


def test_durations_read_well() -> None:
    assert [format_duration(s) for s in (5, 300, 9000, 864000, math.inf)] == ["5 s", "5 min", "2.5 h", "10 d",
                                                                              "never"]
    text = format_remaining_life({"estimate_s": 600.0, "low_s": 60.0, "high_s": 3600.0, "basis": "trend",
                                  "ratio_to_baseline": 2.5})
    assert text == "~10 min (60 s-60 min), forecast from the trend, vibration 2.50x baseline"


def test_changed_indicators_take_a_new_baseline() -> None:
    """A baseline of other indicators means nothing for the new HI: the rule starts a new one."""
    old = PrognosisState(started_ns=1, baseline=Baseline({"accel_rms": 1.0}, {"accel_rms": -1.2}, 0.05, 30).as_dict(),
                         baseline_end_ns=300)
    rule = prognosis_rule(indicators={"accel_rms": 1.0, "kurtosis": 1.0})
    now = 10**12
    one = {"accel_rms": np.array([now]), "kurtosis": np.array([now])}
    state, finding, assessment = evaluate_prognosis(rule, old, "m1", "accel", one,
                                                    {"accel_rms": np.array([0.3]), "kurtosis": np.array([3.0])}, now)
    assert state.baseline is None and state.started_ns == now
    assert finding is None and assessment is None
