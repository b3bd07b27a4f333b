"""Decoding the data part of Magstim replies (after echo and status bytes).

Widths follow ``codec.rapid_parameter_widths``; every field is zero-padded ASCII
decimal and anything else is a ``FramingError`` naming the field, never a guess.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import FramingError
from .codec import rapid_parameter_widths

Version = tuple[int, int, int]


def _digits(data: bytes, start: int, width: int, field: str) -> int:
    chunk = data[start : start + width]
    if len(chunk) != width or not chunk.isdigit():
        raise FramingError(f"{field}: expected {width} ASCII digits at {start}, got {chunk!r}")
    return int(chunk)


def parse_version(data: bytes) -> Version:
    """``b"9.0.0\\x00"`` → ``(9, 0, 0)``; the Rapid's ``ND`` reply."""
    text = data.rstrip(b"\x00").decode("ascii", "replace").strip()
    parts = text.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise FramingError(f"software version {text!r} is not major.minor.patch")
    return int(parts[0]), int(parts[1]), int(parts[2])


@dataclass(frozen=True, slots=True)
class RapidParameters:
    """The ``\\@`` reply: power %MSO, frequency 0.1 Hz, pulses, duration and wait 0.1 s."""

    power: int
    frequency_tenths_hz: int
    pulses: int
    duration_tenths_s: int
    wait_tenths_s: int

    @classmethod
    def parse(cls, data: bytes, version: Version) -> RapidParameters:
        widths = rapid_parameter_widths(version)
        if len(data) != sum(widths):
            raise FramingError(
                f"Rapid parameters for v{'.'.join(map(str, version))}: expected"
                f" {sum(widths)} digits, got {len(data)} ({data!r})"
            )
        names = ("power", "frequency", "pulses", "duration", "wait")
        values: list[int] = []
        offset = 0
        for width, name in zip(widths, names, strict=True):
            values.append(_digits(data, offset, width, name))
            offset += width
        return cls(*values)


@dataclass(frozen=True, slots=True)
class SingleParameters:
    """The ``J@`` reply of a 200² (power) or BiStim² (power A, power B, interval)."""

    power_a: int
    power_b: int
    interval: int

    @classmethod
    def parse(cls, data: bytes) -> SingleParameters:
        if len(data) != 9:
            raise FramingError(f"J@ parameters: expected 9 digits, got {len(data)} ({data!r})")
        return cls(
            _digits(data, 0, 3, "power A"),
            _digits(data, 3, 3, "power B"),
            _digits(data, 6, 3, "interval"),
        )


def parse_coil_temperatures(data: bytes) -> tuple[float, float]:
    """The ``F@`` reply: coil 1 and coil 2 temperatures in °C (sent in tenths)."""
    if len(data) != 6:
        raise FramingError(f"coil temperature: expected 6 digits, got {len(data)} ({data!r})")
    return _digits(data, 0, 3, "coil 1 temperature") / 10, _digits(
        data, 3, 3, "coil 2 temperature"
    ) / 10


def parse_error_code(data: bytes) -> str:
    """The ``I@`` reply: three characters the device uses as its error code."""
    if len(data) != 3:
        raise FramingError(f"error code: expected 3 characters, got {len(data)} ({data!r})")
    return data.decode("ascii", "replace")


@dataclass(frozen=True, slots=True)
class ExtendedStatus:
    """The ``x@`` reply (Rapid v9+), decoded from the low byte as MAGIC does."""

    plus1_module: bool
    special_trigger_mode: bool
    charge_delay_set: bool

    @classmethod
    def parse(cls, data: bytes) -> ExtendedStatus:
        if len(data) != 2:
            raise FramingError(f"system status: expected 2 bytes, got {len(data)} ({data!r})")
        low = data[1]
        return cls(bool(low & 1), bool(low >> 1 & 1), bool(low >> 2 & 1))
