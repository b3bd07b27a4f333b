"""Magstim wire format, shared by the driver and the simulator.

Host → device: command byte + ASCII data + checksum. Device → host: the command
echoed, the instrument status byte, optional Rapid status byte and data, checksum.
The checksum is the one's complement of the low byte of the byte sum. Facts:
``shared/reference/magstim-serial-protocol.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

UNKNOWN_COMMAND = b"?"
VALUE_ERROR = ord("?")
STATE_ERROR = ord("S")
FILLER = b"@"

# Reply length (bytes, including echo, status bytes and checksum) per command, for
# Rapid software version ``v``; ``None`` for commands whose length needs parsing.
FIXED_REPLY_LENGTHS: dict[bytes, int] = {
    b"Q": 3, b"R": 3, b"@": 3, b"E": 3, b"J": 12, b"F": 9, b"I": 6,
    b"Y": 3, b"Z": 3, b"A": 3, b"C": 3, b"b": 3,
    b"^": 4, b"_": 4, b"B": 4, b"D": 4, b"[": 4, b"x": 6,
}


class ChecksumError(ValueError):
    """A message whose last byte is not the checksum of the others."""


def checksum(data: bytes) -> int:
    """One's complement of the low byte of the sum of ``data``."""
    return (~sum(data)) & 0xFF


def with_checksum(data: bytes) -> bytes:
    return data + bytes([checksum(data)])


def encode_command(command: bytes, data: bytes = FILLER) -> bytes:
    """A host command, e.g. ``encode_command(b"E", b"B")`` → ``b"EBx"``."""
    if len(command) != 1:
        raise ValueError(f"a Magstim command is one byte, got {command!r}")
    return with_checksum(command + data)


def encode_number(value: int, width: int) -> bytes:
    """Zero-padded ASCII decimal of exactly ``width`` digits."""
    if value < 0 or value >= 10**width:
        raise ValueError(f"{value} does not fit in {width} digits")
    return str(value).zfill(width).encode("ascii")


def verify(message: bytes) -> bytes:
    """Return ``message`` without its checksum, or raise ``ChecksumError``."""
    if len(message) < 2:
        raise ChecksumError(f"message too short for a checksum: {message.hex()}")
    body, crc = message[:-1], message[-1]
    if checksum(body) != crc:
        raise ChecksumError(
            f"checksum 0x{crc:02x} != expected 0x{checksum(body):02x} in {message.hex()}"
        )
    return body


def rapid_parameter_widths(version: tuple[int, int, int]) -> tuple[int, int, int, int, int]:
    """Digit widths of power, frequency, pulses, duration, wait in the ``\\@`` reply."""
    major = version[0]
    pulses = 5 if major >= 9 else 4
    duration = 4 if major >= 9 else 3
    wait = 4 if major >= 7 else 3
    return 3, 4, pulses, duration, wait


def rapid_parameters_reply_length(version: tuple[int, int, int]) -> int:
    """Total bytes of the ``\\@`` reply: 21 for v≤6, 22 for v7–8, 24 for v9+."""
    return 3 + sum(rapid_parameter_widths(version)) + 1


@dataclass(frozen=True, slots=True)
class InstrumentStatus:
    """The instrument status byte (second byte of every reply)."""

    standby: bool
    armed: bool
    ready: bool
    coil_present: bool
    replace_coil: bool
    error_present: bool
    error_type: bool
    remote_control: bool

    @classmethod
    def decode(cls, byte: int) -> InstrumentStatus:
        return cls(*(bool(byte >> bit & 1) for bit in range(8)))

    def encode(self) -> int:
        bits = (
            self.standby, self.armed, self.ready, self.coil_present, self.replace_coil,
            self.error_present, self.error_type, self.remote_control,
        )
        return sum(1 << i for i, on in enumerate(bits) if on)


@dataclass(frozen=True, slots=True)
class RapidStatus:
    """The Rapid status byte (third byte of Rapid replies)."""

    enhanced_power: bool
    train_running: bool
    wait: bool
    single_pulse_mode: bool
    hv_supply_connected: bool
    coil_ready: bool
    theta_psu_detected: bool
    modified_coil_algorithm: bool

    @classmethod
    def decode(cls, byte: int) -> RapidStatus:
        return cls(*(bool(byte >> bit & 1) for bit in range(8)))

    def encode(self) -> int:
        bits = (
            self.enhanced_power, self.train_running, self.wait, self.single_pulse_mode,
            self.hv_supply_connected, self.coil_ready, self.theta_psu_detected,
            self.modified_coil_algorithm,
        )
        return sum(1 << i for i, on in enumerate(bits) if on)
