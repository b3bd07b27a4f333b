"""Exact arithmetic on the numbers clinicians write, so limits never drift by a float ulp.

TOML floats are decimal text; ``repr`` of the parsed float is the shortest decimal that
reads back to it, i.e. what was written. Converting through ``Decimal(repr(x))`` gives
the exact rational the author meant (``0.1`` is one tenth, not 0.1000000000000000055…).
"""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

MICROSECONDS_PER_S = 1_000_000


def exact(value: int | float) -> Fraction:
    """The rational the author wrote (``value`` must be finite)."""
    if isinstance(value, int):
        return Fraction(value)
    return Fraction(Decimal(repr(value)))


def ceil_us(seconds: Fraction) -> int:
    """Seconds to integer microseconds, rounded up so an interval never shrinks."""
    return math.ceil(seconds * MICROSECONDS_PER_S)


def period_us(frequency_hz: Fraction) -> int:
    """Onset-to-onset interval of a rate, rounded up (the rate never rises)."""
    return math.ceil(Fraction(MICROSECONDS_PER_S) / frequency_hz)


def round_half_up(value: Fraction) -> int:
    """Arithmetic rounding (0.5 goes up), unlike Python's round-half-to-even."""
    return math.floor(value + Fraction(1, 2))


def fmt_number(value: int | float | Fraction) -> str:
    """A number as a person would write it: no trailing zeros, no float noise."""
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    frac = value if isinstance(value, Fraction) else exact(value)
    if frac.denominator == 1:
        return str(frac.numerator)
    text = f"{Decimal(frac.numerator) / Decimal(frac.denominator):.6f}".rstrip("0")
    return text.rstrip(".")


def fmt_seconds_us(us: int) -> str:
    """Integer microseconds as seconds, e.g. ``3.9 s``."""
    return f"{fmt_number(Fraction(us, MICROSECONDS_PER_S))} s"


def fmt_duration_us(us: int) -> str:
    """A session length as people say it, e.g. ``36 min 56.5 s``."""
    total = Fraction(us, MICROSECONDS_PER_S)
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = []
    if hours:
        parts.append(f"{hours} h")
    if minutes or hours:
        parts.append(f"{minutes} min")
    parts.append(f"{fmt_number(seconds)} s")
    return " ".join(parts)
