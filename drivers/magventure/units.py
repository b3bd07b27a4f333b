"""TrainSpec (integer µs, onset to onset) → MagPro settings, here and only here.

A conventional train is rate ×10 (pulses per second in 0.1 steps) and pulses. A theta-
burst train uses the Biphasic Burst waveform: the train "rate" is the burst rate, its
"pulses" are bursts, and each burst has 2–5 pulses ``IPI`` apart (0.1 ms steps). The
device is told one train per start; the host times the gaps between trains.

MagVenture's ITI is last pulse → first pulse of the next train, and the MagPro uses it
only between trains of its own sequence. With one train per sequence it never applies,
so the field is set to the MagPro's longest ITI: if the trains count were ever misread
as more than one, the unit would wait as long as it can rather than fire early.
Values not exactly representable are rejected, never rounded.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocols.capabilities import DeviceCapabilities
from protocols.schedule import TrainSpec

from ..errors import InvalidSetting
from ..units import check_intensity, check_pulse_count, require_int, tenths_per_second
from .codec import burst_ipi_index
from .frames import WAVEFORM_BIPHASIC, WAVEFORM_BIPHASIC_BURST

_US_PER_TENTH_MS = 100
MIN_RATE_TENTHS = 1          # 0.1 pps
MAX_RATE_TENTHS = 1000       # 100 pps
MAX_ITI_TENTHS_S = 1200      # 120 s
MIN_BURST_PULSES = 2
MAX_BURST_PULSES = 5


@dataclass(frozen=True, slots=True)
class MagVentureTrain:
    """The MagPro settings of one train.

    ``single`` is one pulse fired with the single-fire command; a single burst is a train
    of one burst, so that the unit's burst timing applies to it.
    """

    amplitude: int
    waveform: int
    burst_pulses: int            # 1 unless waveform is Biphasic Burst
    ipi_tenths_ms: int           # within a burst; 0 unless bursting
    rate_tenths_hz: int          # pulses (or bursts) per second ×10; 0 when single
    pulses: int                  # pulses (or bursts) in the train
    single: bool

    def set_train_payload(self) -> bytes:
        """Payload of command 0x06: rate×10, pulses, trains=1, ITI×10, 16-bit big-endian."""
        fields = (self.rate_tenths_hz, self.pulses, 1, MAX_ITI_TENTHS_S)
        return bytes([0x06]) + b"".join(v.to_bytes(2, "big") for v in fields)


def _rate_tenths(name: str, interval_us: int) -> int:
    rate = tenths_per_second(
        name, interval_us, per_second="per second", unit="0.1 pps (the MagPro rate unit)"
    )
    if not MIN_RATE_TENTHS <= rate <= MAX_RATE_TENTHS:
        raise InvalidSetting(f"{name}={interval_us}: {rate / 10} pps outside the MagPro's 0.1..100")
    return rate


def magventure_train(train: TrainSpec, capabilities: DeviceCapabilities) -> MagVentureTrain:
    amplitude = check_intensity(train.intensity_pct_mso, capabilities)
    pulses = require_int("pulses", train.pulses)
    burst_pulses = require_int("burst_pulses", train.burst_pulses)
    bursts = require_int("bursts", train.bursts)
    interval_us = require_int("pulse_interval_us", train.pulse_interval_us)
    burst_interval_us = require_int("burst_interval_us", train.burst_interval_us)
    check_pulse_count(pulses, capabilities)
    if burst_pulses == 1:
        if bursts != pulses:
            raise InvalidSetting(f"bursts={bursts}: must equal pulses={pulses} without bursts")
        if pulses == 1:
            return MagVentureTrain(amplitude, WAVEFORM_BIPHASIC, 1, 0, 0, 1, single=True)
        rate = _rate_tenths("pulse_interval_us", interval_us)
        _check_frequency(rate, capabilities, amplitude, "pulse_interval_us", interval_us)
        return MagVentureTrain(amplitude, WAVEFORM_BIPHASIC, 1, 0, rate, pulses, single=False)
    if not capabilities.supports_bursts:
        raise InvalidSetting(f"burst_pulses={burst_pulses}: {capabilities.model} has no bursts")
    limit = min(MAX_BURST_PULSES, capabilities.max_burst_pulses)
    if not MIN_BURST_PULSES <= burst_pulses <= limit:
        raise InvalidSetting(
            f"burst_pulses={burst_pulses}: outside {MIN_BURST_PULSES}..{limit} on"
            f" {capabilities.model}"
        )
    if bursts < 1 or bursts * burst_pulses != pulses:
        raise InvalidSetting(
            f"bursts={bursts} × burst_pulses={burst_pulses} != pulses={pulses}"
        )
    if interval_us <= 0 or interval_us % _US_PER_TENTH_MS:
        raise InvalidSetting(
            f"pulse_interval_us={interval_us}: the burst IPI must be a positive whole number"
            " of 0.1 ms"
        )
    ipi = interval_us // _US_PER_TENTH_MS
    if burst_ipi_index(ipi) is None:
        raise InvalidSetting(
            f"pulse_interval_us={interval_us}: {ipi / 10} ms is not a MagPro burst IPI step"
            " (1 ms steps from 20 to 100 ms, 0.5 ms to 10 ms, 0.1 ms to 0.5 ms)"
        )
    if (burst_pulses - 1) * interval_us >= burst_interval_us:
        raise InvalidSetting(
            f"burst_interval_us={burst_interval_us}: a burst of {burst_pulses} pulses"
            f" {interval_us} µs apart does not fit before the next burst"
        )
    rate = _rate_tenths("burst_interval_us", burst_interval_us)
    _check_frequency(rate, capabilities, amplitude, "burst_interval_us", burst_interval_us)
    return MagVentureTrain(
        amplitude, WAVEFORM_BIPHASIC_BURST, burst_pulses, ipi, rate, bursts, single=False
    )


def _check_frequency(rate_tenths: int, capabilities: DeviceCapabilities, amplitude: int,
                     name: str, interval_us: int) -> None:
    limit = capabilities.max_frequency_at(amplitude)
    if rate_tenths > limit * 10:
        raise InvalidSetting(
            f"{name}={interval_us}: {rate_tenths / 10} pulses/s above {limit} Hz, the limit"
            f" of {capabilities.model}"
        )
