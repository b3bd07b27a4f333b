"""Cancelling a request mid-exchange must not poison the next one (both dialects).

A scripted device on a real pty answers late or in pieces, so the moment of the
cancellation relative to the reply bytes is fixed rather than left to scheduling: the
leftover of the cancelled reply is still on its way when the next request is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from drivers.errors import DeviceTimeout, DriverError
from drivers.magstim.codec import InstrumentStatus, encode_command, with_checksum
from drivers.magstim.link import BAUDRATE as MAGSTIM_BAUD
from drivers.magstim.link import MagstimLink
from drivers.magventure.codec import CMD_STATUS, FrameParser, encode_frame
from drivers.magventure.link import BAUDRATE as MAGVENTURE_BAUD
from drivers.magventure.link import MagVentureLink
from drivers.transport import Transport, open_transport

REMOTE_IDLE = InstrumentStatus(True, False, False, True, False, False, False, True).encode()
TEMPERATURE_REPLY = with_checksum(b"F" + bytes([REMOTE_IDLE]) + b"215230")
REMOTE_REPLY = with_checksum(b"Q" + bytes([REMOTE_IDLE]))


class PacedDevice:
    """Answers each expected command with reply pieces, each after its own delay.

    ``script`` is consumed in order: (command bytes, [(delay_s, piece), ...]). The
    device runs as a task so that it keeps answering while the driver side is
    cancelled; ``sent_first_piece`` is set when the first piece of a reply went out.
    """

    def __init__(self, master: int, script: list[tuple[bytes, list[tuple[float, bytes]]]],
                 framed: bool) -> None:
        self.master = master
        self.script = list(script)
        self.framed = framed
        self.received: list[bytes] = []
        self.sent_first_piece = asyncio.Event()
        self._commands: asyncio.Queue[bytes] = asyncio.Queue()
        self._buffer = b""
        self._parser = FrameParser()
        asyncio.get_running_loop().add_reader(master, self._on_readable)

    def _on_readable(self) -> None:
        try:
            data = os.read(self.master, 4096)
        except OSError:
            return
        if self.framed:
            self._parser.feed(data)
            for payload in self._parser.frames():
                self._commands.put_nowait(encode_frame(payload))
            return
        self._buffer += data
        for command, _ in self.script:
            if self._buffer.startswith(command):
                self._buffer = self._buffer[len(command):]
                self._commands.put_nowait(command)
                return

    async def run(self) -> None:
        for expected, pieces in self.script:
            command = await self._commands.get()
            self.received.append(command)
            assert command == expected, f"device got {command.hex()}, expected {expected.hex()}"
            for number, (delay_s, piece) in enumerate(pieces):
                await asyncio.sleep(delay_s)
                os.write(self.master, piece)
                if number == 0:
                    self.sent_first_piece.set()

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.master)


@contextlib.asynccontextmanager
async def running(device: PacedDevice) -> AsyncIterator[PacedDevice]:
    async with asyncio.TaskGroup() as group:
        task = group.create_task(device.run())
        try:
            yield device
            async with asyncio.timeout(5.0):
                await task  # the device played its whole script: nothing was left unsent
        finally:
            device.close()
            task.cancel()


async def cancelled(call: asyncio.Task[Any]) -> None:
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call


@pytest.fixture
async def magstim_transport(pty_pair: tuple[int, str]) -> AsyncIterator[Transport]:
    transport = await open_transport(pty_pair[1], baudrate=MAGSTIM_BAUD)
    yield transport
    await transport.close()


@pytest.mark.parametrize("split", [0, 1, 4], ids=["before-reply", "after-echo", "mid-data"])
async def test_magstim_exchange_cancelled_mid_reply_does_not_poison_the_next(
    pty_pair: tuple[int, str], magstim_transport: Transport, split: int
) -> None:
    """The temperature reply comes in two pieces 80 ms apart; the caller is cancelled
    after the first. The rest of it arrives after the next command was due; the next
    exchange must get its own reply, not the leftover (formerly a FramingError)."""
    first = [(0.0, TEMPERATURE_REPLY[:split]), (0.08, TEMPERATURE_REPLY[split:])]
    if split == 0:
        first = [(0.0, b""), (0.08, TEMPERATURE_REPLY)]
    script = [
        (encode_command(b"F"), first),
        (encode_command(b"Q"), [(0.0, REMOTE_REPLY)]),
    ]
    device = PacedDevice(pty_pair[0], script, framed=False)
    link = MagstimLink(magstim_transport)
    async with running(device):
        call = asyncio.create_task(link.exchange(b"F", b"@", 9))
        await device.sent_first_piece.wait()
        await asyncio.sleep(0.01)
        await cancelled(call)
        async with asyncio.timeout(2.0):  # the port lock was released
            reply = await link.exchange(b"Q", b"@", 3)
    assert reply.command == b"Q"
    assert reply.instrument.remote_control
    assert link.resynchronisations == 1
    assert device.received == [encode_command(b"F"), encode_command(b"Q")]


async def test_magstim_exchange_after_a_timeout_drains_the_late_reply(
    pty_pair: tuple[int, str], magstim_transport: Transport
) -> None:
    """A reply later than its bound is a DeviceTimeout; when the rest of it turns up
    just as the next exchange starts (after that exchange dropped stale input), it is
    drained instead of being read as the next reply."""
    script = [
        (encode_command(b"F"), [(0.0, TEMPERATURE_REPLY[:3])]),
        (encode_command(b"Q"), [(0.0, REMOTE_REPLY)]),
    ]
    device = PacedDevice(pty_pair[0], script, framed=False)
    link = MagstimLink(magstim_transport)
    async with running(device):
        with pytest.raises(DeviceTimeout):
            await link.exchange(b"F", b"@", 9)
        following = asyncio.create_task(link.exchange(b"Q", b"@", 3))
        await asyncio.sleep(0)  # it has started and flushed the input
        os.write(pty_pair[0], TEMPERATURE_REPLY[3:])  # the late rest, only now
        reply = await following
    assert reply.command == b"Q"
    assert link.resynchronisations == 1


def magpro_status(amplitude: int) -> bytes:
    return encode_frame(bytes([CMD_STATUS, 0b001_0_01_00, 0x02, 0x46, 0x8A, 23, 72,
                               amplitude, 0]))


STATUS_REQUEST = encode_frame(bytes([CMD_STATUS]))


class MagVentureHarness:
    def __init__(self, transport: Transport) -> None:
        self.unsolicited: list[bytes] = []
        self.errors: list[DriverError] = []
        self.link = MagVentureLink(
            transport, on_unsolicited=self.unsolicited.append, on_error=self.errors.append
        )

    async def status(self) -> bytes:
        return await self.link.request(STATUS_REQUEST[2:3], frozenset({CMD_STATUS}), 13)


@pytest.fixture
async def magventure(pty_pair: tuple[int, str]) -> AsyncIterator[MagVentureHarness]:
    transport = await open_transport(pty_pair[1], baudrate=MAGVENTURE_BAUD)
    harness = MagVentureHarness(transport)
    harness.link.start()
    yield harness
    await harness.link.stop()
    await transport.close()


async def test_magventure_reply_to_a_cancelled_request_is_not_the_next_ones(
    pty_pair: tuple[int, str], magventure: MagVentureHarness
) -> None:
    """The first status reply (amplitude 11) comes 60 ms late, after its caller gave
    up; the second request asks the same id. It must get its own reply (amplitude 22),
    and the late one is counted and handed to the unsolicited handler instead."""
    script = [
        (STATUS_REQUEST, [(0.06, magpro_status(11))]),
        (STATUS_REQUEST, [(0.03, magpro_status(22))]),
    ]
    device = PacedDevice(pty_pair[0], script, framed=True)
    async with running(device):
        call = asyncio.create_task(magventure.status())
        await asyncio.sleep(0.02)  # written, reply not yet sent
        assert not device.sent_first_piece.is_set()
        await cancelled(call)
        async with asyncio.timeout(2.0):
            payload = await magventure.status()
    assert payload[7] == 22
    assert magventure.link.late_replies == 1
    assert [p[7] for p in magventure.unsolicited] == [11]
    assert magventure.errors == []


async def test_magventure_abandoned_reply_that_never_comes_delays_only_until_its_deadline(
    pty_pair: tuple[int, str], magventure: MagVentureHarness
) -> None:
    """A unit that dropped the cancelled command: the next request waits out the
    abandoned reply's bound (~0.5 s), then gets its own reply."""
    script = [
        (STATUS_REQUEST, []),
        (STATUS_REQUEST, [(0.0, magpro_status(22))]),
    ]
    device = PacedDevice(pty_pair[0], script, framed=True)
    async with running(device):
        call = asyncio.create_task(magventure.status())
        await asyncio.sleep(0.02)
        await cancelled(call)
        async with asyncio.timeout(2.0):
            payload = await magventure.status()
    assert payload[7] == 22
    assert magventure.link.late_replies == 0


async def test_magventure_frame_received_before_the_request_is_not_its_reply(
    pty_pair: tuple[int, str], magventure: MagVentureHarness
) -> None:
    """A status frame already on its way in when the request starts (the reader has not
    taken it yet) was sent before the command: it is unsolicited, not the reply."""
    script = [(STATUS_REQUEST, [(0.03, magpro_status(22))])]
    device = PacedDevice(pty_pair[0], script, framed=True)
    async with running(device):
        os.write(pty_pair[0], magpro_status(11))
        # Block the loop so the reader task cannot take the frame before the request
        # starts; the pty hands it to the slave side within this time.
        time.sleep(0.05)  # noqa: ASYNC251
        payload = await magventure.status()
    assert payload[7] == 22
    assert [p[7] for p in magventure.unsolicited] == [11]
