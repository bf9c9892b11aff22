"""The simulated power meter's model (no server): plausible values, faults, energy, node table."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from asyncua import ua

from agent.connectors.opcua.config import parse_browse_path
from simulator.power_meter import NODES, WAVEFORM_RATE_HZ, WAVEFORM_SAMPLES, PowerMeterSimulator


def averages(sim: PowerMeterSimulator, n: int = 50) -> dict[str, float]:
    samples = [sim.sample(t * sim.update_interval_s) for t in range(n)]
    return {k: float(np.mean([s[k] for s in samples])) for k in samples[0] if k != "voltage_waveform_l1"}


def test_healthy_meter_is_plausible_and_balanced() -> None:
    avg = averages(PowerMeterSimulator(seed=1))
    for phase in (1, 2, 3):
        assert 225.0 < avg[f"voltage_l{phase}"] < 235.0
        assert 110.0 < avg[f"current_l{phase}"] < 130.0
    assert 0.9 < avg["power_factor"] < 0.95
    assert 49.9 < avg["frequency"] < 50.1
    # P = sum(V * I) * pf: three phases of ~230 V x ~120 A at pf ~0.92 is ~76 kW.
    assert avg["active_power"] == pytest.approx(3 * 229 * 120 * 0.92 / 1000, rel=0.05)
    assert avg["reactive_power"] == pytest.approx(avg["active_power"] * np.tan(np.arccos(0.92)), rel=0.1)


def test_energy_only_increases_by_power_times_time() -> None:
    sim = PowerMeterSimulator(seed=2, update_interval_s=1.0)
    first = sim.sample(0.0)
    energies = [float(sim.sample(float(t))["energy"]) for t in range(1, 3601)]
    assert all(b > a for a, b in itertools.pairwise(energies))
    # One hour at ~76 kW adds ~76 kWh.
    assert energies[-1] - float(first["energy"]) == pytest.approx(76.0, rel=0.1)


def test_phase_imbalance_raises_current_and_sags_voltage_on_one_phase() -> None:
    sim = PowerMeterSimulator(seed=3)
    before = averages(sim)
    sim.inject("phase_imbalance", phase=2, current_factor=1.5, voltage_sag=0.1)
    during = averages(sim)
    assert during["current_l2"] == pytest.approx(1.5 * before["current_l2"], rel=0.03)
    assert during["voltage_l2"] == pytest.approx(0.9 * before["voltage_l2"], rel=0.01)
    assert during["current_l1"] == pytest.approx(before["current_l1"], rel=0.03)
    sim.clear("phase_imbalance")
    assert averages(sim)["current_l2"] == pytest.approx(before["current_l2"], rel=0.03)


def test_waveform_is_a_mains_cycle_block() -> None:
    wave = np.asarray(PowerMeterSimulator(seed=4).sample(0.0)["voltage_waveform_l1"])
    assert wave.shape == (WAVEFORM_SAMPLES,)
    spectrum = np.abs(np.fft.rfft(wave))
    freqs = np.fft.rfftfreq(WAVEFORM_SAMPLES, 1.0 / WAVEFORM_RATE_HZ)
    assert freqs[int(np.argmax(spectrum))] == pytest.approx(50.0, abs=WAVEFORM_RATE_HZ / WAVEFORM_SAMPLES)
    assert np.sqrt(np.mean(wave**2)) == pytest.approx(230.0, rel=0.03)


def test_fault_injection_rejects_unknown_faults_and_parameters() -> None:
    sim = PowerMeterSimulator()
    with pytest.raises(ValueError, match="unknown fault 'fire'"):
        sim.inject("fire")
    with pytest.raises(ValueError, match="unknown parameter"):
        sim.inject("phase_imbalance", severity=2.0)
    with pytest.raises(ValueError, match="phase must be 1, 2 or 3"):
        sim.inject("phase_imbalance", phase=4)


def test_never_binds_all_interfaces() -> None:
    with pytest.raises(ValueError, match="loopback"):
        PowerMeterSimulator(host="0.0.0.0")


def test_node_table_ids_and_paths_parse() -> None:
    for node in NODES.values():
        nid = ua.NodeId.from_string(node.node_id)
        assert (nid.NamespaceIndex, nid.Identifier) == (2, f"Meter.{node.browse_name}")
        assert parse_browse_path(node.browse_path)[-1] == ua.QualifiedName(node.browse_name, 2)
