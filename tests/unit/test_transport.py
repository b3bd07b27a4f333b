"""The serial transport over real ptys, a real socket and pyserial's loop:// handle."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from drivers.errors import DeviceTimeout, LinkLost
from drivers.transport import FdTransport, ThreadTransport, Transport, open_transport


@pytest.fixture
async def pty_transport(pty_pair: tuple[int, str]) -> AsyncIterator[Transport]:
    transport = await open_transport(pty_pair[1], baudrate=9600)
    yield transport
    await transport.close()


async def test_pty_uses_the_event_loop_not_a_thread(pty_transport: Transport) -> None:
    assert isinstance(pty_transport, FdTransport)


async def test_bytes_round_trip_over_a_pty(
    pty_pair: tuple[int, str], pty_transport: Transport
) -> None:
    master, _ = pty_pair
    await pty_transport.write(b"Q@n", 1.0)
    received = b""
    while len(received) < 3:
        await asyncio.sleep(0.01)
        with contextlib.suppress(BlockingIOError):
            received += os.read(master, 16)
    assert received == b"Q@n"
    os.write(master, b"Q\x89\x15rest")
    assert await pty_transport.read_exactly(3, 1.0) == b"Q\x89\x15"
    assert await pty_transport.read_some(1.0) == b"rest"


async def test_read_until_returns_through_the_terminator(
    pty_pair: tuple[int, str], pty_transport: Transport
) -> None:
    os.write(pty_pair[0], b"N\x899.0.0\x00m")
    assert await pty_transport.read_until(0x00, 24, 1.0) == b"N\x899.0.0\x00"
    assert await pty_transport.read_exactly(1, 1.0) == b"m"


async def test_read_until_without_terminator_is_a_timeout(
    pty_pair: tuple[int, str], pty_transport: Transport
) -> None:
    os.write(pty_pair[0], b"abcdef")
    with pytest.raises(DeviceTimeout, match="no 0x00 terminator within 4 bytes"):
        await pty_transport.read_until(0x00, 4, 1.0)


async def test_silence_is_a_timeout_naming_what_arrived(
    pty_pair: tuple[int, str], pty_transport: Transport
) -> None:
    os.write(pty_pair[0], b"Q")
    with pytest.raises(DeviceTimeout, match=r"expected 3 byte\(s\) within 0.100 s, got 1 \(51\)"):
        await pty_transport.read_exactly(3, 0.1)


async def test_discard_input_drops_stale_bytes(
    pty_pair: tuple[int, str], pty_transport: Transport
) -> None:
    os.write(pty_pair[0], b"stale")
    await asyncio.sleep(0.05)
    assert pty_transport.discard_input() == b"stale"
    os.write(pty_pair[0], b"x")
    assert await pty_transport.read_exactly(1, 1.0) == b"x"


async def test_vanishing_pty_is_link_lost_for_waiters_and_callback(
    pty_pair: tuple[int, str],
) -> None:
    master, path = pty_pair
    transport = await open_transport(path, baudrate=9600)
    lost: list[LinkLost] = []
    transport.set_on_lost(lost.append)
    try:
        waiter = asyncio.create_task(transport.read_exactly(1, 5.0))
        await asyncio.sleep(0.05)
        os.close(master)
        # The other end of our own slave fd must go too for the hang-up to show.
        with pytest.raises(LinkLost, match="lost"):
            await waiter
        assert len(lost) == 1
        assert not transport.is_open
        with pytest.raises(LinkLost):
            await transport.write(b"EAz", 0.5)
    finally:
        await transport.close()


async def test_missing_port_is_link_lost(tmp_path: Path) -> None:
    with pytest.raises(LinkLost, match="cannot open"):
        await open_transport(str(tmp_path / "no-such-port"), baudrate=9600)


async def test_second_owner_of_a_port_is_refused(
    pty_pair: tuple[int, str], pty_transport: Transport
) -> None:
    with pytest.raises(LinkLost, match="cannot open"):
        await open_transport(pty_pair[1], baudrate=9600)


async def test_socket_url_round_trip_and_reset() -> None:
    received: asyncio.Queue[bytes] = asyncio.Queue()
    writers: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        received.put_nowait(await reader.readexactly(3))
        writer.write(b"ok")
        await writer.drain()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport = await open_transport(f"socket://127.0.0.1:{port}", baudrate=9600)
    try:
        assert isinstance(transport, FdTransport)
        await transport.write(b"abc", 1.0)
        assert await asyncio.wait_for(received.get(), 2.0) == b"abc"
        assert await transport.read_exactly(2, 2.0) == b"ok"
        writers[0].close()
        await writers[0].wait_closed()
        with pytest.raises(LinkLost, match="end of file"):
            await transport.read_some(2.0)
    finally:
        await transport.close()
        server.close()
        await server.wait_closed()


async def test_handle_without_descriptor_gets_a_reader_thread() -> None:
    transport = await open_transport("loop://", baudrate=9600)
    try:
        assert isinstance(transport, ThreadTransport)
        await transport.write(b"echo", 1.0)
        assert await transport.read_exactly(4, 2.0) == b"echo"
    finally:
        await transport.close()
    with pytest.raises(LinkLost, match="closed"):
        await transport.write(b"x", 0.5)


async def test_a_cancelled_write_finishes_before_the_cancellation_propagates(
    pty_pair: tuple[int, str], pty_transport: Transport
) -> None:
    """What the device sees: the whole command or none of it, never a fragment.

    Nobody reads the master at first, so the pty's buffer fills and the write blocks
    part-way; the caller is cancelled there. Once the device side reads again, every
    byte must arrive, and only then does the caller see its cancellation.
    """
    master, _ = pty_pair
    command = bytes(range(256)) * 1024  # far more than a pty buffers
    writing = asyncio.create_task(pty_transport.write(command, 5.0))
    await asyncio.sleep(0.1)
    assert not writing.done()  # blocked on the full buffer
    writing.cancel()
    await asyncio.sleep(0.05)
    assert not writing.done()  # still finishing the command, not abandoning it
    received = bytearray()
    os.set_blocking(master, False)
    async with asyncio.timeout(5.0):
        while len(received) < len(command):
            with contextlib.suppress(BlockingIOError):
                received += os.read(master, 65536)
            await asyncio.sleep(0)
    with pytest.raises(asyncio.CancelledError):
        await writing
    assert bytes(received) == command


async def test_bytes_received_counts_consumed_and_buffered_input(
    pty_pair: tuple[int, str], pty_transport: Transport
) -> None:
    before = pty_transport.bytes_received
    os.write(pty_pair[0], b"abcde")
    assert await pty_transport.read_exactly(2, 1.0) == b"ab"
    assert pty_transport.bytes_received - before == 5
    assert pty_transport.last_arrival_at is not None
