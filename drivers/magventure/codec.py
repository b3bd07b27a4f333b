"""MagVenture MagPro wire format, shared by the driver and the simulator.

Frames are ``0xFE, LEN, PAYLOAD[LEN], CRC8(PAYLOAD), 0xFF`` with CRC-8 Dallas/Maxim
(reflected polynomial 0x8C, initial value 0). Facts:
``shared/reference/magventure-serial-protocol.md``.
"""

from __future__ import annotations

from collections.abc import Iterator

START = 0xFE
END = 0xFF
MAX_PAYLOAD = 32

CMD_STATUS = 0x00
CMD_AMPLITUDE = 0x01
CMD_ENABLE = 0x02
CMD_SINGLE_FIRE = 0x03
CMD_START_TRAIN = 0x04
CMD_EXTENDED_STATUS = 0x05
CMD_SET_TRAIN = 0x06
CMD_PAGE = 0x07
CMD_TRIGGER_DELAY = 0x08
CMD_MODE = 0x09


class FramingError(ValueError):
    """Bytes that are not a well-formed frame (bad length, CRC or terminator)."""


def _crc8_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8C if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _crc8_table()


def crc8(data: bytes) -> int:
    """CRC-8 Dallas/Maxim; ``crc8(b"123456789") == 0xA1``."""
    crc = 0
    for byte in data:
        crc = _TABLE[crc ^ byte]
    return crc


def encode_frame(payload: bytes) -> bytes:
    if not 1 <= len(payload) <= MAX_PAYLOAD:
        raise ValueError(f"payload length {len(payload)} outside 1..{MAX_PAYLOAD}")
    return bytes([START, len(payload)]) + payload + bytes([crc8(payload), END])


class FrameParser:
    """Incremental parser: feed bytes as they arrive, take complete payloads out.

    Garbage before a start byte is skipped and counted; a frame with a bad CRC or
    terminator raises ``FramingError`` from ``frames()`` after resynchronising, so a
    caller sees every error yet never loses the frames that follow.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.skipped_bytes = 0

    def feed(self, data: bytes) -> None:
        self._buffer.extend(data)

    def frames(self) -> Iterator[bytes]:
        buf = self._buffer
        while True:
            start = buf.find(START)
            if start < 0:
                self.skipped_bytes += len(buf)
                buf.clear()
                return
            if start:
                self.skipped_bytes += start
                del buf[:start]
            if len(buf) < 2:
                return
            length = buf[1]
            if not 1 <= length <= MAX_PAYLOAD:
                del buf[:1]
                raise FramingError(f"frame length {length} outside 1..{MAX_PAYLOAD}")
            total = length + 4
            if len(buf) < total:
                return
            frame = bytes(buf[:total])
            payload, crc, end = frame[2:-2], frame[-2], frame[-1]
            if end != END:
                del buf[:1]
                raise FramingError(f"frame not terminated by 0xFF: {frame.hex()}")
            del buf[:total]
            if crc8(payload) != crc:
                raise FramingError(
                    f"CRC 0x{crc:02x} != expected 0x{crc8(payload):02x} in {frame.hex()}"
                )
            yield payload


def burst_ipi_index(ipi_tenths_ms: int) -> int | None:
    """The MagPro's index of a Biphasic Burst IPI (MAGIC's table), or None if not a step.

    The set command (0x09) takes the IPI in 0.1 ms; the mode reply reports this index:
    100 − IPI[ms] for 20–100 ms in 1 ms steps, then 0.5 ms steps from 19.5 down to 10 ms,
    then 0.1 ms steps from 9.9 down to 0.5 ms.
    """
    if 200 <= ipi_tenths_ms <= 1000 and ipi_tenths_ms % 10 == 0:
        return 100 - ipi_tenths_ms // 10
    if 100 <= ipi_tenths_ms < 200 and ipi_tenths_ms % 5 == 0:
        return 80 + (200 - ipi_tenths_ms) // 5
    if 5 <= ipi_tenths_ms < 100:
        return 100 + (100 - ipi_tenths_ms)
    return None
