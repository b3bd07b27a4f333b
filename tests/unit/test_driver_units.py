"""TrainSpec → vendor units: exact when representable, rejected with the reason otherwise."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.errors import InvalidSetting
from drivers.magstim.units import magstim_train_settings
from drivers.magventure.codec import burst_ipi_index
from drivers.magventure.units import MAX_ITI_TENTHS_S, magventure_train
from protocols.capabilities import device_profile
from protocols.schedule import TrainSpec

RAPID = device_profile("magstim-superrapid2-plus1", 240)
SINGLE = device_profile("magstim-200")
MAGPRO = device_profile("magventure-x100")
V9 = (9, 0, 0)

# divisors of 10 000 000 µs·0.1 Hz: the intervals Magstim and MagPro represent exactly
EXACT_INTERVALS = sorted(d for d in range(10_000, 10_000_001) if 10_000_000 % d == 0)


def train(pulses: object = 10, interval: object = 100_000, power: object = 50, *,
          burst_pulses: object = 1, bursts: object | None = None,
          burst_interval: object | None = None) -> TrainSpec:
    return TrainSpec(
        index=0, onset_us=0, pulses=pulses,  # type: ignore[arg-type]
        pulse_interval_us=interval,  # type: ignore[arg-type]
        burst_pulses=burst_pulses,  # type: ignore[arg-type]
        bursts=pulses if bursts is None else bursts,  # type: ignore[arg-type]
        burst_interval_us=interval if burst_interval is None else burst_interval,  # type: ignore[arg-type]
        intensity_pct_mso=power,  # type: ignore[arg-type]
    )


def tb(shape: tuple[int, int, int, int, int, int]) -> TrainSpec:
    """A theta-burst-shaped train: pulses, IPI µs, %MSO, burst pulses, bursts, burst period µs."""
    pulses, interval, power, burst_pulses, bursts, burst_interval = shape
    return train(pulses, interval, power, burst_pulses=burst_pulses, bursts=bursts,
                 burst_interval=burst_interval)


@settings(max_examples=200, deadline=None)
@given(interval=st.sampled_from(EXACT_INTERVALS), pulses=st.integers(2, 6000),
       power=st.integers(0, 100))
def test_magstim_conversion_is_exact_or_rejected(interval: int, pulses: int, power: int) -> None:
    spec = train(pulses, interval, power)
    try:
        settings_ = magstim_train_settings(spec, RAPID, V9)
    except InvalidSetting as exc:
        reason = exc.reason
        assert (
            "not a whole number of 0.1 s" in reason
            or "above" in reason
            or "does not fit" in reason
        ), reason
        return
    assert settings_.frequency_tenths_hz * interval == 10_000_000
    assert settings_.duration_tenths_s * 100_000 == pulses * interval
    assert settings_.pulses == pulses
    assert settings_.power == power
    assert settings_.frequency_tenths_hz <= RAPID.max_frequency_at(power) * 10


@settings(max_examples=200, deadline=None)
@given(interval=st.integers(1, 10_000_000).filter(lambda d: 10_000_000 % d != 0))
def test_magstim_rate_not_in_tenths_of_hz_is_rejected(interval: int) -> None:
    with pytest.raises(InvalidSetting, match=rf"pulse_interval_us={interval}: .* not a whole"):
        magstim_train_settings(train(10, interval), RAPID, V9)


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        (train(power=math.nan), r"intensity_pct_mso=nan: must be an integer, got float"),
        (train(power=50.0), r"intensity_pct_mso=50.0: must be an integer, got float"),
        (train(power=True), r"intensity_pct_mso=True: must be an integer, got bool"),
        (train(power="50"), r"intensity_pct_mso='50': must be an integer, got str"),
        (train(power=10**9), r"intensity_pct_mso=1000000000: outside 0..100 %MSO"),
        (train(pulses=-5), r"pulses=-5: a train has at least 1 pulse"),
        (train(pulses=10**12), r"pulses=1000000000000: above 6000 per train"),
        (train(interval=-100_000), r"pulse_interval_us=-100000: must be positive"),
        (train(interval=0), r"pulse_interval_us=0: must be positive"),
        (train(interval=math.inf), r"pulse_interval_us=inf: must be an integer"),
        (train(pulses=10, interval=20_000, power=100),
         r"50.0 Hz above 41.0 Hz, the limit of magstim-superrapid2-plus1 at 100 %MSO"),
    ],
)
def test_magstim_absurd_input_is_rejected_with_the_exact_reason(
    spec: TrainSpec, reason: str
) -> None:
    with pytest.raises(InvalidSetting, match=reason):
        magstim_train_settings(spec, RAPID, V9)


def test_magstim_single_pulse_units_and_200_limits() -> None:
    assert magstim_train_settings(train(1), SINGLE, None).single_pulse
    with pytest.raises(InvalidSetting, match="pulses=2: above 1 per train on magstim-200"):
        magstim_train_settings(train(2), SINGLE, None)


def test_magstim_widths_of_older_software() -> None:
    with pytest.raises(InvalidSetting, match=r"duration \[0.1 s\]=1000: does not fit the 3"):
        magstim_train_settings(train(1000, 100_000, 20), RAPID, (8, 0, 0))
    assert magstim_train_settings(train(999, 100_000, 20), RAPID, (8, 0, 0)).pulses == 999


@settings(max_examples=200, deadline=None)
@given(interval=st.sampled_from([i for i in EXACT_INTERVALS if i <= 10_000_000]),
       pulses=st.integers(2, 1000), power=st.integers(0, 100))
def test_magventure_train_units(interval: int, pulses: int, power: int) -> None:
    spec = train(pulses, interval, power)
    try:
        result = magventure_train(spec, MAGPRO)
    except InvalidSetting as exc:
        assert "pps outside the MagPro's 0.1..100" in exc.reason, exc.reason
        return
    assert result.rate_tenths_hz * interval == 10_000_000
    assert (result.pulses, result.amplitude, result.single) == (pulses, power, False)
    payload = result.set_train_payload()
    assert payload[0] == 0x06 and len(payload) == 9
    rate, count, trains, iti = (int.from_bytes(payload[i:i + 2], "big") for i in (1, 3, 5, 7))
    assert (rate, count, trains, iti) == (result.rate_tenths_hz, pulses, 1, MAX_ITI_TENTHS_S)


def test_magventure_theta_burst_uses_burst_rate_pulses_and_ipi() -> None:
    result = magventure_train(tb((600, 20_000, 30, 3, 200, 200_000)), MAGPRO)
    assert (result.waveform, result.burst_pulses, result.ipi_tenths_ms) == (3, 3, 200)
    assert (result.rate_tenths_hz, result.pulses) == (50, 200)
    assert burst_ipi_index(200) == 80


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        (tb((600, 20_000, 30, 6, 100, 200_000)), r"burst_pulses=6: outside 2..5"),
        (tb((600, 20_000, 30, 3, 100, 200_000)), r"bursts=100 × burst_pulses=3 != pulses=600"),
        (tb((600, 20_050, 30, 3, 200, 200_000)), r"pulse_interval_us=20050: the burst IPI"),
        (tb((600, 10_300, 30, 3, 200, 200_000)), r"10.3 ms is not a MagPro burst IPI step"),
        (tb((6, 100_000, 30, 3, 2, 150_000)), r"burst_interval_us=150000: a burst of 3"),
        (train(10, 100_000, 30, bursts=9), r"bursts=9: must equal pulses=10 without bursts"),
        (train(10, 5_000), r"200.0 pps outside the MagPro's 0.1..100"),
    ],
)
def test_magventure_rejects_what_it_cannot_represent(spec: TrainSpec, reason: str) -> None:
    with pytest.raises(InvalidSetting, match=reason):
        magventure_train(spec, MAGPRO)


@pytest.mark.parametrize(("ipi", "index"), [(1000, 0), (200, 80), (195, 81), (100, 100),
                                            (99, 101), (5, 195), (4, None), (1001, None),
                                            (215, None), (197, None)])
def test_burst_ipi_index_table(ipi: int, index: int | None) -> None:
    assert burst_ipi_index(ipi) == index
