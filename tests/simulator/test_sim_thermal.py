"""Coil thermal model on simulated time: calibration targets and physical sanity."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.coils import AMBIENT_C, COIL_TRIP_C, COILS, coil_for
from simulator.thermal import CoilThermalModel, pulse_energy_j, simulate_protocol

FDA_10HZ = {"trains": 75, "pulses_per_train": 40, "frequency_hz": 10.0,
            "train_period_s": 30.0}   # 4 s train + 26 s gap, onset to onset


@pytest.mark.parametrize("coil", ["d70-air-film", "cool-b65"])
def test_fda_10hz_at_60_percent_completes_on_a_cooled_clinical_coil(coil: str) -> None:
    result = simulate_protocol(COILS[coil], pct_mso=60, **FDA_10HZ)
    assert result.completed and result.pulses_delivered == 3000
    assert result.peak_c < COIL_TRIP_C - 5      # with margin, not by luck


@pytest.mark.parametrize("coil", ["d70-figure8", "mcf-b65"])
def test_long_high_intensity_protocol_trips_an_uncooled_coil(coil: str) -> None:
    result = simulate_protocol(COILS[coil], pct_mso=90, **FDA_10HZ)
    assert not result.completed and result.tripped_at_s is not None
    assert result.pulses_delivered < 3000
    assert result.peak_c > COIL_TRIP_C


def test_cooling_is_exponential_towards_ambient() -> None:
    coil = COILS["d70-figure8"]
    model = CoilThermalModel(coil, now_s=0.0, start_c=40.0)
    tau = coil.cooling_time_constant_s
    assert model.temperature_at(tau) == pytest.approx(
        AMBIENT_C + (40.0 - AMBIENT_C) / math.e)
    assert model.temperature_at(100 * tau) == pytest.approx(AMBIENT_C, abs=1e-6)


def test_one_pulse_heats_by_its_energy_share() -> None:
    coil = COILS["d70-air-film"]
    model = CoilThermalModel(coil, now_s=0.0)
    after = model.add_pulse(0.0, 100)
    assert after - AMBIENT_C == pytest.approx(
        coil.heat_fraction * 252.0 / coil.heat_capacity_j_per_k)


@settings(max_examples=200, deadline=None)
@given(pct=st.integers(0, 100), pulses=st.integers(1, 200),
       coil=st.sampled_from(sorted(COILS)))
def test_more_energy_never_cools(pct: int, pulses: int, coil: str) -> None:
    low = simulate_protocol(COILS[coil], pct_mso=pct, trains=1, pulses_per_train=pulses,
                            frequency_hz=10.0, train_period_s=10.0, limit_c=1e9)
    high = simulate_protocol(COILS[coil], pct_mso=min(100, pct + 10), trains=1,
                             pulses_per_train=pulses, frequency_hz=10.0,
                             train_period_s=10.0, limit_c=1e9)
    assert high.peak_c >= low.peak_c >= AMBIENT_C


def test_enhanced_power_energy_scales_with_the_square() -> None:
    assert pulse_energy_j(110) == pytest.approx(252.0 * 1.21)


@pytest.mark.parametrize(("device", "coil", "reason"), [
    ("magstim-rapid2", "cool-b65", "is a magventure coil and does not fit magstim-rapid2"),
    ("magventure-x100", "d70-figure8", "is a magstim coil and does not fit magventure-x100"),
    ("magstim-200", "warp-coil", "unknown coil 'warp-coil'"),
])
def test_coil_must_exist_and_fit(device: str, coil: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        coil_for(device, coil)


def test_magventure_coil_codes_never_0xff() -> None:
    assert all(0 <= coil.type_code < 0xFF for coil in COILS.values())
