"""Golden bytes: exactly what the MagVenture driver writes, against a scripted MagPro.

The peer parses the driver's frames with the shared codec and answers each command id
with a canned frame; the hex literals below pin the driver's output byte for byte.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest

from drivers.errors import DeviceFault, FramingError, IdentityMismatch, ReadbackMismatch
from drivers.magventure.codec import FrameParser, encode_frame
from drivers.magventure.driver import MagVentureDriver
from protocols.schedule import TrainSpec

X100_IDLE = 0b001_0_01_00        # model X100, not enabled, Biphasic, Standard
X100_ENABLED = 0b001_1_01_00


def status(byte: int, amplitude: int = 0) -> bytes:
    # serial 0x02468A, 23 °C, coil type 72, amplitude A, B
    return encode_frame(bytes([0x00, byte, 0x02, 0x46, 0x8A, 23, 72, amplitude, 0]))


class ScriptedMagPro:
    """Answers by command id; records every payload the driver sent."""

    def __init__(self, master: int) -> None:
        self.master = master
        self.parser = FrameParser()
        self.sent: list[bytes] = []
        self.answers: dict[int, list[bytes]] = {}
        asyncio.get_running_loop().add_reader(master, self._on_readable)

    def answer(self, command: int, *frames: bytes) -> None:
        self.answers[command] = list(frames)

    def _on_readable(self) -> None:
        try:
            self.parser.feed(os.read(self.master, 4096))
        except OSError:
            return
        for payload in self.parser.frames():
            self.sent.append(encode_frame(payload))
            frames = self.answers.get(payload[0], [])
            if frames:
                os.write(self.master, frames[0] if len(frames) == 1 else frames.pop(0))

    def unsolicited(self, frame: bytes) -> None:
        os.write(self.master, frame)

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.master)


@pytest.fixture
async def magpro(pty_pair: tuple[int, str]) -> AsyncIterator[ScriptedMagPro]:
    peer = ScriptedMagPro(pty_pair[0])
    peer.answer(0x00, status(X100_IDLE))
    peer.answer(0x02, encode_frame(bytes([0x01, 0, 0, X100_IDLE])))
    yield peer
    peer.close()


def hexes(frames: list[bytes]) -> list[str]:
    return [f.hex(" ") for f in frames]


async def test_connect_asks_status_and_disables_close_disables_and_confirms(
    magpro: ScriptedMagPro, pty_pair: tuple[int, str]
) -> None:
    driver = MagVentureDriver("magventure-x100", pty_pair[1])
    identity = await driver.connect()
    assert identity.serial_number == str(0x02468A)
    await driver.close()
    assert hexes(magpro.sent) == [
        "fe 01 00 00 ff", "fe 02 02 00 91 ff",   # connect: status, disable
        "fe 02 02 00 91 ff", "fe 01 00 00 ff",   # close: disable, confirm by status
    ]


async def test_configure_train_frames(magpro: ScriptedMagPro, pty_pair: tuple[int, str]) -> None:
    driver = MagVentureDriver("magventure-x100", pty_pair[1])
    await driver.connect()
    magpro.answer(0x00, status(X100_IDLE, amplitude=50))
    magpro.answer(0x01, encode_frame(bytes([0x01, 50, 0, X100_IDLE])))
    magpro.answer(0x06, encode_frame(bytes([0x08, 2, 0, X100_IDLE])))
    magpro.answer(0x09, encode_frame(bytes([0x09, 0, 1, 0, 0, 1, 3, 80, 0, 80])))
    before = len(magpro.sent)
    await driver.configure_train(TrainSpec(0, 0, 10, 100_000, 1, 10, 100_000, 50))
    assert hexes(magpro.sent[before:]) == [
        "fe 02 01 32 c6 ff",                                   # amplitude 50 %
        "fe 0b 09 01 01 00 00 01 03 00 c8 00 64 4a ff",        # set mode: Biphasic
        "fe 09 06 00 64 00 0a 00 01 04 b0 30 ff",              # 10.0 pps, 10, 1 train, 120 s
        "fe 01 00 00 ff",                                      # read back amplitude
        "fe 02 09 00 b2 ff",                                   # read back mode
    ]
    await driver.close()


async def test_amplitude_readback_difference_is_refused(
    magpro: ScriptedMagPro, pty_pair: tuple[int, str]
) -> None:
    driver = MagVentureDriver("magventure-x100", pty_pair[1])
    await driver.connect()
    magpro.answer(0x01, encode_frame(bytes([0x01, 0, 0, X100_IDLE])))  # unit ignores it
    with pytest.raises(ReadbackMismatch, match=r"amplitude 0 %MSO != set 70"):
        await driver.set_intensity(70)
    await driver.close()


async def test_an_r30_on_an_x100_configuration_is_a_mismatch(
    pty_pair: tuple[int, str],
) -> None:
    peer = ScriptedMagPro(pty_pair[0])
    peer.answer(0x00, status(0b000_0_01_00))
    driver = MagVentureDriver("magventure-x100", pty_pair[1])
    with pytest.raises(IdentityMismatch, match="reports model R30"):
        await driver.connect()
    peer.close()


async def test_unsolicited_frames_are_parsed_as_they_arrive(
    magpro: ScriptedMagPro, pty_pair: tuple[int, str]
) -> None:
    errors: list[Exception] = []
    driver = MagVentureDriver("magventure-x100", pty_pair[1])
    driver.on_fault(errors.append)
    await driver.connect()
    magpro.unsolicited(encode_frame(bytes([0x02, 80, 0, X100_IDLE])))  # a di/dt report
    magpro.unsolicited(b"\xfe\x04\x02\x50\x00\x24\x00\xff")             # bad CRC
    for _ in range(100):
        if errors:
            break
        await asyncio.sleep(0.01)
    assert [type(e) for e in errors] == [FramingError]
    assert "CRC" in str(errors[0])
    await driver.close()


async def test_unit_disabling_itself_while_armed_is_a_fault(
    magpro: ScriptedMagPro, pty_pair: tuple[int, str]
) -> None:
    errors: list[Exception] = []
    driver = MagVentureDriver("magventure-x100", pty_pair[1])
    driver.on_fault(errors.append)
    await driver.connect()
    magpro.answer(
        0x00, status(X100_IDLE, amplitude=50), status(X100_IDLE, amplitude=50),
        status(X100_ENABLED, amplitude=50),
    )
    magpro.answer(0x01, encode_frame(bytes([0x01, 50, 0, X100_IDLE])))
    magpro.answer(0x09, encode_frame(bytes([0x09, 0, 1, 0, 0, 1, 3, 80, 0, 80])))
    await driver.configure_train(TrainSpec(0, 0, 1, 100_000, 1, 1, 100_000, 50))
    magpro.answer(0x02, encode_frame(bytes([0x01, 50, 0, X100_ENABLED])))
    await driver.arm()
    magpro.unsolicited(encode_frame(bytes([0x01, 50, 0, X100_IDLE])))
    for _ in range(100):
        if errors:
            break
        await asyncio.sleep(0.01)
    assert [type(e) for e in errors] == [DeviceFault]
    assert "disabled itself" in str(errors[0])
    magpro.answer(0x00, status(X100_IDLE, amplitude=50))
    magpro.answer(0x02, encode_frame(bytes([0x01, 50, 0, X100_IDLE])))
    await driver.close()
