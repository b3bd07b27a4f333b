"""Device-side interlocks: coil, temperature prediction, operator presence."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.base import DeviceStatus
from protocols.capabilities import rapid_joules_per_pulse
from protocols.schedule import TrainSpec
from stimd.interlocks import (
    CoilThermalPredictor,
    ThermalLimits,
    coil_present,
    coil_temperature,
    operator_present,
)

LIMITS = ThermalLimits(warning_c=38.0, trip_c=40.0, conservative_rise_c_per_kj=0.2)


def train(pulses: int = 40, pct: int = 60) -> TrainSpec:
    return TrainSpec(index=0, onset_us=0, pulses=pulses, pulse_interval_us=100_000,
                     burst_pulses=1, bursts=pulses, burst_interval_us=100_000,
                     intensity_pct_mso=pct)


def status(temp: float | None, *, coil: bool = True) -> DeviceStatus:
    return DeviceStatus(armed=False, ready=False, train_running=False, coil_present=coil,
                        coil_temperature_c=temp, error_present=False, error_code=None,
                        remote_control=True)


def test_conservative_model_before_any_observation() -> None:
    predictor = CoilThermalPredictor(LIMITS)
    expected = 40 * rapid_joules_per_pulse(60) / 1000 * 0.2
    assert abs(predictor.predicted_rise_c(train()) - expected) < 1e-9


def test_an_observed_hotter_coil_raises_the_prediction() -> None:
    predictor = CoilThermalPredictor(LIMITS)
    model = predictor.predicted_rise_c(train())
    predictor.observe(train(), 30.0, 30.0 + 3 * model)
    assert abs(predictor.predicted_rise_c(train()) - 3 * model) < 1e-9
    predictor.observe(train(), 30.0, 29.0)          # cooled during the train: no credit
    assert predictor.predicted_rise_c(train()) == model


def test_temperature_far_below_warning_passes() -> None:
    assert coil_temperature(status(25.0), 1.0, LIMITS).ok


def test_predicted_overshoot_waits() -> None:
    result = coil_temperature(status(37.5), 0.6, LIMITS)
    assert not result.ok and result.waits
    assert result.reason == (
        "coil temperature 37.5 °C + predicted rise 0.60 °C = 38.10 °C reaches the warning "
        "limit 38.0 °C: waiting for the coil to cool")


def test_at_trip_limit_blocks_without_waiting() -> None:
    result = coil_temperature(status(40.0), 0.0, LIMITS)
    assert not result.ok and not result.waits
    assert "trip limit 40.0 °C" in result.reason


def test_unknown_temperature_blocks() -> None:
    result = coil_temperature(status(None), 0.1, LIMITS)
    assert not result.ok and "not reported" in result.reason


def test_missing_coil_blocks() -> None:
    assert coil_present(status(25.0)).ok
    assert coil_present(status(25.0, coil=False)).reason == "coil not present: connect the coil"


def test_operator_presence() -> None:
    assert operator_present("tech-alice", 100.0, 105.0, 10.0).ok
    late = operator_present("tech-alice", 100.0, 110.5, 10.0)
    assert not late.ok
    assert late.reason == ("operator 'tech-alice' not heard from for more than "
                           "heartbeat_timeout_s = 10 s")
    assert not operator_present("tech-alice", None, 0.0, 10.0).ok


@settings(max_examples=200, deadline=None)
@given(temp=st.floats(-50, 200), rise=st.floats(0, 50))
def test_property_never_passes_a_train_predicted_to_reach_warning(temp: float,
                                                                   rise: float) -> None:
    result = coil_temperature(status(temp), rise, LIMITS)
    if result.ok:
        assert temp + rise < LIMITS.warning_c
