"""Exact-conversion checks shared by the vendors' unit modules.

Every driver converts a ``TrainSpec`` (integer µs, onset to onset) into its unit's own
units and rejects what it cannot represent exactly, with ``InvalidSetting`` naming the
key, the value and the limit. The checks that read the same for every vendor live here
so that a third-party driver's ``units`` module can use them too.
"""

from __future__ import annotations

from protocols.capabilities import DeviceCapabilities

from .errors import InvalidSetting

#: A rate in tenths per second is 10 000 000 / interval in µs.
TENTHS_PER_SECOND_TIMES_US = 10_000_000


def require_int(name: str, value: object) -> int:
    """``value`` if it is an ``int`` (``bool`` is not); NaN, floats and strings are refused."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidSetting(f"{name}={value!r}: must be an integer, got {type(value).__name__}")
    return value


def check_intensity(pct_mso: object, capabilities: DeviceCapabilities) -> int:
    """Integer %MSO within 0..max_output of the unit (no enhanced or boosted output)."""
    intensity = require_int("intensity_pct_mso", pct_mso)
    limit = capabilities.max_output_pct_mso
    if not 0 <= intensity <= limit:
        raise InvalidSetting(
            f"intensity_pct_mso={intensity}: outside 0..{limit} %MSO of {capabilities.model}"
        )
    return intensity


def check_pulse_count(pulses: int, capabilities: DeviceCapabilities) -> None:
    """At least one pulse, at most the unit's pulses per train."""
    if pulses < 1:
        raise InvalidSetting(f"pulses={pulses}: a train has at least 1 pulse")
    if pulses > capabilities.max_pulses_per_train:
        raise InvalidSetting(
            f"pulses={pulses}: above {capabilities.max_pulses_per_train} per train"
            f" on {capabilities.model}"
        )


def tenths_per_second(name: str, interval_us: int, *, per_second: str, unit: str) -> int:
    """The rate of ``interval_us`` in 0.1 per second, or ``InvalidSetting`` when it is not
    a whole number of tenths (a 33 333 µs interval is 30.0003 Hz, not 30 Hz).

    ``per_second`` names the rate in the message ("Hz", "per second"); ``unit`` names the
    vendor's unit ("0.1 Hz (the Magstim frequency unit)").
    """
    if interval_us <= 0:
        raise InvalidSetting(f"{name}={interval_us}: must be positive")
    if TENTHS_PER_SECOND_TIMES_US % interval_us:
        raise InvalidSetting(
            f"{name}={interval_us}: {1e6 / interval_us:.4f} {per_second} is not a whole"
            f" number of {unit}"
        )
    return TENTHS_PER_SECOND_TIMES_US // interval_us
