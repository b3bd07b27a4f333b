"""TrainSpec (integer µs, onset to onset) → Magstim units, here and only here.

Magstim sets a train as frequency (0.1 Hz), number of pulses and duration (0.1 s),
where the unit's duration is pulses / frequency (MagPy keeps ``D = duration × f``).
A train that is not exactly representable is rejected with the reason; nothing is
rounded, because a rounded rate or count is a different treatment.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocols.capabilities import DeviceCapabilities
from protocols.schedule import TrainSpec

from ..errors import InvalidSetting
from ..units import check_intensity, check_pulse_count, require_int, tenths_per_second
from .codec import rapid_parameter_widths
from .replies import Version

_US_PER_TENTH_S = 100_000


@dataclass(frozen=True, slots=True)
class MagstimTrainSettings:
    """What the driver sends and expects to read back.

    ``duration_tenths_s == 0`` is single-pulse mode (frequency and pulses not sent).
    """

    power: int
    frequency_tenths_hz: int
    pulses: int
    duration_tenths_s: int

    @property
    def single_pulse(self) -> bool:
        return self.duration_tenths_s == 0


def magstim_train_settings(
    train: TrainSpec, capabilities: DeviceCapabilities, version: Version | None
) -> MagstimTrainSettings:
    """Convert one train; ``version`` is the Rapid software version (None: 200²/BiStim²)."""
    power = check_intensity(train.intensity_pct_mso, capabilities)
    pulses = require_int("pulses", train.pulses)
    burst_pulses = require_int("burst_pulses", train.burst_pulses)
    interval_us = require_int("pulse_interval_us", train.pulse_interval_us)
    if burst_pulses != 1:
        raise InvalidSetting(
            f"burst_pulses={burst_pulses}: {capabilities.model} has no burst command over"
            " serial (limit 1)"
        )
    check_pulse_count(pulses, capabilities)
    if pulses == 1:
        return MagstimTrainSettings(power, 0, 1, 0)
    if version is None or not capabilities.supports_trains:
        raise InvalidSetting(f"pulses={pulses}: {capabilities.model} fires single pulses only")
    frequency = tenths_per_second(
        "pulse_interval_us", interval_us,
        per_second="Hz", unit="0.1 Hz (the Magstim frequency unit)",
    )
    max_hz = capabilities.max_frequency_at(power)
    if frequency > max_hz * 10:
        raise InvalidSetting(
            f"pulse_interval_us={interval_us}: {frequency / 10} Hz above {max_hz} Hz,"
            f" the limit of {capabilities.model} at {power} %MSO"
        )
    span_us = pulses * interval_us
    if span_us % _US_PER_TENTH_S:
        raise InvalidSetting(
            f"pulses={pulses} at pulse_interval_us={interval_us}: train duration"
            f" {span_us / 1e6} s (pulses / frequency) is not a whole number of 0.1 s"
            " (the Magstim duration unit)"
        )
    duration = span_us // _US_PER_TENTH_S
    _, frequency_width, pulses_width, duration_width, _ = rapid_parameter_widths(version)
    for name, value, width in (
        ("frequency [0.1 Hz]", frequency, frequency_width),
        ("pulses", pulses, pulses_width),
        ("duration [0.1 s]", duration, duration_width),
    ):
        if value >= 10**width:
            raise InvalidSetting(
                f"{name}={value}: does not fit the {width} digits of software"
                f" v{'.'.join(map(str, version))}"
            )
    return MagstimTrainSettings(power, frequency, pulses, duration)
