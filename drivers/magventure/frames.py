"""Decoding MagPro payloads (after ``FrameParser`` has checked length and CRC).

Layouts follow ``shared/reference/magventure-serial-protocol.md``; a payload of the
wrong length for its id is a ``FramingError`` naming the id, never a guess.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import FramingError
from .codec import CMD_EXTENDED_STATUS, CMD_MODE, CMD_STATUS

MODELS = ("R30", "X100", "R30+Option", "X100+Option", "R30+Option+Mono", "MST")
MODES = ("Standard", "Power", "Twin", "Dual")
WAVEFORMS = ("Monophasic", "Biphasic", "Half Sine", "Biphasic Burst")
WAVEFORM_BIPHASIC = 1
WAVEFORM_BIPHASIC_BURST = 3

SHORT_AMPLITUDE = 0x01
SHORT_DIDT = 0x02
SHORT_TEMPERATURE = (0x03, 0x06)
SHORT_AMPLITUDE_FACTOR = 0x07
SHORT_PAGE_TRAIN = 0x08

_STATUS_LENGTH = 9
_EXTENDED_LENGTH = 15
_MODE_LENGTH = 10
_SHORT_LENGTH = 4


def _expect(payload: bytes, length: int, what: str, command: int | None = None) -> None:
    """A reply payload of exactly ``length`` bytes, led by ``command`` when given."""
    if len(payload) != length:
        raise FramingError(
            f"{what} payload of {len(payload)} byte(s), expected {length}: {payload.hex()}"
        )
    if command is not None and payload[0] != command:
        raise FramingError(f"{what} payload starts with 0x{payload[0]:02x}")


@dataclass(frozen=True, slots=True)
class StatusByte:
    """Bits 1–0 mode, 3–2 waveform, 4 enabled, 7–5 model."""

    mode: int
    waveform: int
    enabled: bool
    model: int

    @classmethod
    def decode(cls, byte: int) -> StatusByte:
        return cls(byte & 0b11, byte >> 2 & 0b11, bool(byte >> 4 & 1), byte >> 5 & 0b111)

    @property
    def model_name(self) -> str:
        return MODELS[self.model] if self.model < len(MODELS) else f"unknown model {self.model}"


@dataclass(frozen=True, slots=True)
class Status:
    """Reply to 0x00 (and the head of 0x05)."""

    status: StatusByte
    serial_number: str
    coil_temperature_c: int
    coil_type: int
    amplitude_a: int
    amplitude_b: int

    @classmethod
    def decode(cls, payload: bytes) -> Status:
        _expect(payload, _STATUS_LENGTH, "status (0x00)", CMD_STATUS)
        return cls._from_fields(payload)

    @classmethod
    def _from_fields(cls, payload: bytes) -> Status:
        serial = int.from_bytes(payload[2:5], "big")
        return cls(
            StatusByte.decode(payload[1]), str(serial), payload[5], payload[6],
            payload[7], payload[8],
        )


@dataclass(frozen=True, slots=True)
class ExtendedStatus:
    """Reply to 0x05: status plus original amplitudes, factors, page and train running."""

    base: Status
    page: int
    train_running: bool

    @classmethod
    def decode(cls, payload: bytes) -> ExtendedStatus:
        _expect(payload, _EXTENDED_LENGTH, "extended status (0x05)", CMD_EXTENDED_STATUS)
        return cls(Status._from_fields(payload[:_STATUS_LENGTH]), payload[13], bool(payload[14]))


@dataclass(frozen=True, slots=True)
class ModeSettings:
    """The mode frame (0x09): model, mode, direction, waveform, burst pulses, IPI index."""

    model: int
    mode: int
    direction: int
    waveform: int
    burst_pulses: int
    ipi_index: int

    @classmethod
    def decode(cls, payload: bytes) -> ModeSettings:
        _expect(payload, _MODE_LENGTH, "mode settings (0x09)", CMD_MODE)
        return cls(
            payload[2], payload[3], payload[4], payload[5], 5 - payload[6],
            payload[7] | payload[8] << 8,
        )


@dataclass(frozen=True, slots=True)
class ShortFrame:
    """An 8-byte frame ``FE 04 ID v1 v2 S crc FF`` (amplitude, di/dt, temperature, …)."""

    kind: int
    value1: int
    value2: int
    status: StatusByte

    @classmethod
    def decode(cls, payload: bytes) -> ShortFrame:
        _expect(payload, _SHORT_LENGTH, f"short frame 0x{payload[0]:02x}")
        return cls(payload[0], payload[1], payload[2], StatusByte.decode(payload[3]))
