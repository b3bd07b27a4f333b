"""A minimal client that talks to the simulator the way MagPy does: real pyserial on
the pty, flush before every write, read exactly the expected reply length."""

from __future__ import annotations

import time
from pathlib import Path

import serial

from drivers.magstim.codec import encode_command

# Generous read timeout: the machine is shared with other test runs; the tests assert
# on content, never on how close to this bound a reply comes.
READ_TIMEOUT_S = 3.0


class MagstimClient:
    def __init__(self, link: Path, timeout_s: float = READ_TIMEOUT_S) -> None:
        self.port = serial.Serial(str(link), 9600, timeout=timeout_s)

    def send(self, body: bytes, reply_length: int) -> bytes:
        self.port.reset_input_buffer()
        self.port.write(encode_command(body[:1], body[1:]))
        reply: bytes = self.port.read(reply_length)
        return reply

    def keep_alive_for(self, seconds: float, period_s: float = 0.25) -> None:
        """Poll ``Q@`` like MagPy does while armed (every 0.5 s; here 0.25 s for margin)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            assert self.send(b"Q@", 3)[:1] == b"Q"
            time.sleep(period_s)

    def wait_ready(self, timeout_s: float = 10.0) -> None:
        """Poll until the instrument status shows ready, keeping remote control alive."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            status = self.send(b"Q@", 3)[1]
            if status & 0b100:
                return
            time.sleep(0.1)
        raise AssertionError("unit never became ready")

    def close(self) -> None:
        self.port.close()
