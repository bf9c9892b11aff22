"""Exposition -> value per point against known answers: every metric type, rates, resets, quantiles."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from agent.connectors.prometheus.codec import (
    evaluate,
    histogram_quantile,
    lookup,
    parse_exposition,
    select,
    series_of,
)
from agent.connectors.prometheus.probe import describe
from runtime.errors import DecodeError

CASES = Path(__file__).parent / "cases"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def families(name: str, content_type: str = "text/plain; version=0.0.4"):
    return parse_exposition((CASES / name).read_text(), content_type)


def one(fams, metric: str, **labels: str):
    family = lookup(fams, metric)
    assert family is not None, metric
    chosen = select(series_of(family), "t", labels, {})
    assert len(chosen) == 1, chosen
    return family.type, chosen[0]


def test_every_text_format_type_is_parsed_with_its_type() -> None:
    fams = families("every_type_1.prom")
    assert {n: f.type for n, f in fams.items()} == {
        "crac_compressor_starts": "counter", "crac_supply_air_celsius": "gauge",
        "crac_valve_response_seconds": "histogram", "crac_poll_seconds": "summary", "crac_fan_speed_rpm": "unknown"}


def test_counter_rate_and_increase_over_the_interval_and_across_a_reset() -> None:
    a, b = families("every_type_1.prom"), families("every_type_2.prom")
    for unit, increase in (("crac-1", 30.0), ("crac-2", 7.0)):  # crac-2 went 4e9 -> 7: reset, counted 7 since
        kind, before = one(a, "crac_compressor_starts_total", unit=unit)
        _, now = one(b, "crac_compressor_starts_total", unit=unit)
        assert evaluate(kind, "increase", now, before, 10.0) == increase
        assert evaluate(kind, "rate", now, before, 10.0) == pytest.approx(increase / 10)
        assert evaluate(kind, "value", now, before, 10.0) == now.value
        assert evaluate(kind, "rate", now, None, 0.0) is None  # first scrape: no rate yet


def test_histogram_mean_quantile_and_count_rate_use_the_bucket_deltas() -> None:
    kind, before = one(families("every_type_1.prom"), "crac_valve_response_seconds")
    _, now = one(families("every_type_2.prom"), "crac_valve_response_seconds")
    # deltas: le 0.5: 0, le 1: 10, le 2: 20, +Inf: 20; sum 30, count 20
    assert evaluate(kind, "mean", now, before, 10.0) == pytest.approx(1.5)
    assert evaluate(kind, "quantile", now, before, 10.0, quantile=0.95) == pytest.approx(1.9)
    assert evaluate(kind, "quantile", now, before, 10.0, quantile=0.5) == pytest.approx(1.0)
    assert evaluate(kind, "count_rate", now, before, 10.0) == pytest.approx(2.0)
    assert evaluate(kind, "mean", now, now, 10.0) is None  # no observations in the interval


def test_summary_quantile_is_the_exposed_one_and_mean_is_delta_sum_over_delta_count() -> None:
    kind, before = one(families("every_type_1.prom"), "crac_poll_seconds")
    _, now = one(families("every_type_2.prom"), "crac_poll_seconds")
    assert evaluate(kind, "quantile", now, before, 10.0, quantile=0.99) == 1.1
    assert evaluate(kind, "mean", now, before, 10.0) == pytest.approx(0.3)
    assert evaluate(kind, "count_rate", now, before, 10.0) == pytest.approx(10.0)
    with pytest.raises(DecodeError, match=r"exposes quantiles \[0.5, 0.99\], not 0.9"):
        evaluate(kind, "quantile", now, before, 10.0, quantile=0.9)


def test_gauge_nan_and_untyped_with_the_exporters_timestamp() -> None:
    fams = families("every_type_2.prom")
    kind, st = one(fams, "crac_supply_air_celsius", unit="crac-1")
    assert evaluate(kind, "value", st, None, 0.0) == 18.75
    _, nan = one(fams, "crac_supply_air_celsius", unit="crac-3")
    assert math.isnan(nan.value)
    kind, fan = one(fams, "crac_fan_speed_rpm")
    assert (kind, fan.value, fan.timestamp_s) == ("unknown", 1460.0, 1700000010.0)


def test_every_openmetrics_type() -> None:
    fams = families("every_type.om", OPENMETRICS)
    kind, st = one(fams, "crac_mode")
    assert evaluate(kind, "value", st, None, 0.0) == "cooling"
    kind, st = one(fams, "crac_firmware_info")
    assert evaluate(kind, "value", st, None, 0.0, value_label="version") == "4.2.1"
    with pytest.raises(DecodeError, match="value_label"):
        evaluate(kind, "value", st, None, 0.0)
    kind, st = one(fams, "crac_filter_pressure_pa")
    assert kind == "gaugehistogram"
    assert evaluate(kind, "mean", st, None, 0.0) == pytest.approx(77.5)
    assert evaluate(kind, "quantile", st, None, 0.0, quantile=0.5) == pytest.approx(75.0)
    kind, st = one(fams, "crac_alarm_code")
    assert (kind, evaluate(kind, "value", st, None, 0.0)) == ("unknown", 17.0)
    kind, st = one(fams, "crac_compressor_starts_total", unit="crac-1")
    assert (kind, st.value) == ("counter", 100.0)  # _created is not the value


def test_a_function_that_does_not_fit_the_type_is_a_decode_error() -> None:
    kind, st = one(families("every_type_1.prom"), "crac_supply_air_celsius", unit="crac-1")
    with pytest.raises(DecodeError, match=r'function "rate" does not apply to a gauge'):
        evaluate(kind, "rate", st, st, 10.0)


def test_histogram_quantile_edges() -> None:
    inf = math.inf
    assert histogram_quantile(0.5, [(1.0, 0.0), (inf, 0.0)]) is None
    assert histogram_quantile(0.99, [(1.0, 1.0), (2.0, 1.0), (inf, 10.0)]) == 2.0  # in +Inf: highest bound
    assert histogram_quantile(0.5, [(4.0, 10.0), (inf, 10.0)]) == pytest.approx(2.0)  # first bucket from 0
    with pytest.raises(DecodeError, match=r"\+Inf"):
        histogram_quantile(0.5, [(1.0, 1.0)])


def test_label_matchers_and_the_target_pseudo_label() -> None:
    import re

    fam = lookup(families("every_type_1.prom"), "crac_supply_air_celsius")
    assert fam is not None
    series = series_of(fam)
    assert len(select(series, "cooling", {}, {"unit": re.compile("crac-[12]")})) == 2
    assert len(select(series, "cooling", {"__target__": "cooling", "unit": "crac-2"}, {})) == 1
    assert select(series, "cooling", {"__target__": "other"}, {}) == []


def test_garbage_is_a_decode_error_naming_the_problem() -> None:
    with pytest.raises(DecodeError, match="not valid exposition format"):
        parse_exposition('metric{unclosed="x 1\n')


def test_probe_report_lists_families_types_and_series() -> None:
    report = describe(families("every_type_1.prom"), "crac_(supply|compressor)")
    assert "crac_compressor_starts_total  (counter, default function rate, 2 series)" in report
    assert '    {unit="crac-2"}  19.25' in report
    assert "valve" not in report
