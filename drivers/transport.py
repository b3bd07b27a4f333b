"""Byte transport: pyserial underneath, asyncio on top, every wait bounded.

A driver owns exactly one ``Transport``. Device paths, the simulator's pty links and
pyserial URLs (``socket://host:port`` for serial device servers) all expose a file
descriptor, which is registered with the event loop (``add_reader``): no thread, no
polling. Only a handle without a descriptor (e.g. ``loop://``) gets a reader thread.

Link loss — EIO or end of file on the descriptor, the simulator's pty vanishing, a
socket reset — is latched once: every waiting and later call raises ``LinkLost`` and
the ``on_lost`` callback fires, so a driver learns of an unplug even while idle.

A write is never left half done by a cancelled caller: the device frames commands by
length or start byte, so a command cut short would be misread together with the next
one. A cancelled ``write`` finishes (within its own timeout) before it re-raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import termios
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import serial

from .errors import DeviceTimeout, LinkLost
from .uninterrupted import finish_even_if_cancelled

log = logging.getLogger(__name__)

#: Opening a device path is immediate; a ``socket://`` URL connects over the network
#: and pyserial's own connect timeout is 5 s, so the bound sits just above it.
OPEN_TIMEOUT_S = 6.0
_READ_CHUNK = 4096
_THREAD_POLL_S = 0.05


class Transport(ABC):
    """An open byte link with an input buffer; reads and writes carry a timeout."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._buffer = bytearray()
        self._arrived = asyncio.Event()
        self._lost_reason: str | None = None
        self._closed = False
        self._on_lost: Callable[[LinkLost], None] | None = None
        self._bytes_received = 0
        self._last_arrival_at: float | None = None

    # -- state -------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        """True until closed or lost."""
        return not self._closed and self._lost_reason is None

    @property
    def lost_reason(self) -> str | None:
        return self._lost_reason

    @property
    def bytes_received(self) -> int:
        """Bytes received since opening, consumed or not: a link compares two readings to
        learn whether a reply it stopped waiting for has arrived in full."""
        self._drain_pending()
        return self._bytes_received

    @property
    def last_arrival_at(self) -> float | None:
        """Monotonic time the last bytes arrived (None: nothing yet)."""
        self._drain_pending()
        return self._last_arrival_at

    def set_on_lost(self, callback: Callable[[LinkLost], None] | None) -> None:
        """Called once, from the event loop, when the link is lost (not on ``close``)."""
        self._on_lost = callback

    def _check_usable(self) -> None:
        if self._lost_reason is not None:
            raise LinkLost(f"link {self.url} lost: {self._lost_reason}")
        if self._closed:
            raise LinkLost(f"link {self.url} is closed")

    def _mark_lost(self, reason: str) -> None:
        if self._lost_reason is not None or self._closed:
            return
        self._lost_reason = reason
        log.warning("serial link %s lost: %s", self.url, reason)
        self._stop_io()
        self._arrived.set()
        if self._on_lost is not None:
            self._on_lost(LinkLost(f"link {self.url} lost: {reason}"))

    def _deliver(self, data: bytes) -> None:
        self._buffer.extend(data)
        self._bytes_received += len(data)
        self._last_arrival_at = time.monotonic()
        self._arrived.set()

    # -- reading -----------------------------------------------------------------
    async def _wait_for_data(self, deadline: float, what: str) -> None:
        self._check_usable()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DeviceTimeout(f"{what}: nothing more from {self.url}")
        self._arrived.clear()
        try:
            async with asyncio.timeout(remaining):
                await self._arrived.wait()
        except TimeoutError:
            raise DeviceTimeout(f"{what}: nothing more from {self.url}") from None
        self._check_usable()

    async def read_exactly(self, count: int, timeout_s: float) -> bytes:
        """Exactly ``count`` bytes, or ``DeviceTimeout`` naming how many arrived."""
        deadline = time.monotonic() + timeout_s
        while len(self._buffer) < count:
            await self._wait_for_data(
                deadline,
                f"expected {count} byte(s) within {timeout_s:.3f} s, got {len(self._buffer)}"
                f" ({bytes(self._buffer).hex() or 'none'})",
            )
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        return data

    async def read_until(self, terminator: int, max_length: int, timeout_s: float) -> bytes:
        """Bytes up to and including ``terminator``; ``DeviceTimeout`` past ``max_length``."""
        deadline = time.monotonic() + timeout_s
        while True:
            index = self._buffer.find(bytes([terminator]))
            if 0 <= index < max_length:
                data = bytes(self._buffer[: index + 1])
                del self._buffer[: index + 1]
                return data
            if len(self._buffer) >= max_length:
                data = bytes(self._buffer[:max_length])
                del self._buffer[:max_length]
                raise DeviceTimeout(
                    f"no 0x{terminator:02x} terminator within {max_length} bytes: {data.hex()}"
                )
            await self._wait_for_data(
                deadline, f"expected a 0x{terminator:02x}-terminated reply within {timeout_s:.3f} s"
            )

    async def read_some(self, timeout_s: float | None) -> bytes:
        """Whatever has arrived, at least one byte; ``timeout_s=None`` waits until data or loss."""
        if timeout_s is None:
            while not self._buffer:
                self._check_usable()
                self._arrived.clear()
                await self._arrived.wait()
        else:
            deadline = time.monotonic() + timeout_s
            while not self._buffer:
                await self._wait_for_data(deadline, f"no byte within {timeout_s:.3f} s")
        data = bytes(self._buffer)
        self._buffer.clear()
        return data

    def discard_input(self) -> bytes:
        """Drop stale input (a late reply, noise) before a request; returns what was dropped."""
        self._drain_pending()
        dropped = bytes(self._buffer)
        self._buffer.clear()
        return dropped

    # -- writing -----------------------------------------------------------------
    async def write(self, data: bytes, timeout_s: float) -> None:
        """Write all of ``data`` or raise ``DeviceTimeout``/``LinkLost``.

        Cancelling the caller does not cut the write short: it completes (or fails)
        within ``timeout_s`` and then ``CancelledError`` propagates. The command the
        device receives is therefore whole — it may act on it, and the link that owns
        this transport must expect its reply — rather than a fragment that the device
        would join to the next command.
        """
        self._check_usable()
        await finish_even_if_cancelled(
            self._write_all(data, timeout_s), f"write of {len(data)} byte(s) to {self.url}"
        )

    # -- backend -----------------------------------------------------------------
    @abstractmethod
    async def _write_all(self, data: bytes, timeout_s: float) -> None:
        """Write all of ``data`` or raise ``DeviceTimeout``/``LinkLost``; ``write`` runs
        it to completion even when its caller is cancelled."""

    @abstractmethod
    def _drain_pending(self) -> None:
        """Move bytes already received by the OS into the buffer without blocking."""

    @abstractmethod
    def _stop_io(self) -> None:
        """Stop watching the handle (on loss or close); must not block."""

    async def close(self) -> None:
        """Close the handle. Idempotent; never raises for an already-lost link."""
        if self._closed:
            return
        self._stop_io()
        self._closed = True
        self._arrived.set()
        await self._release()

    @abstractmethod
    async def _release(self) -> None:
        """Let go of the handle once I/O has stopped; must not raise."""


class FdTransport(Transport):
    """A pyserial handle with a file descriptor, watched by the event loop."""

    def __init__(self, url: str, port: Any, fd: int) -> None:
        super().__init__(url)
        self._port = port
        self._fd = fd
        self._loop = asyncio.get_running_loop()
        self._watching = False
        os.set_blocking(fd, False)
        if os.isatty(fd):
            _read_blocks_until_one_byte(fd)
        self._loop.add_reader(fd, self._on_readable)
        self._watching = True

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, _READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._mark_lost(f"read failed: {exc}")
            return
        if not data:
            self._mark_lost("end of file (the other side closed the line)")
            return
        self._deliver(data)

    def _drain_pending(self) -> None:
        while self.is_open:
            before = len(self._buffer)
            self._on_readable()
            if len(self._buffer) == before:
                return

    def _stop_io(self) -> None:
        if self._watching:
            self._loop.remove_reader(self._fd)
            self._watching = False

    async def _write_all(self, data: bytes, timeout_s: float) -> None:
        view = memoryview(data)
        try:
            async with asyncio.timeout(timeout_s):
                while view:
                    try:
                        written = os.write(self._fd, view)
                    except BlockingIOError:
                        await self._writable()
                        self._check_usable()
                        continue
                    except OSError as exc:
                        self._mark_lost(f"write failed: {exc}")
                        raise LinkLost(f"link {self.url} lost: write failed: {exc}") from exc
                    view = view[written:]
        except TimeoutError:
            raise DeviceTimeout(
                f"write of {len(data)} byte(s) to {self.url} not done within {timeout_s:.3f} s"
            ) from None

    async def _writable(self) -> None:
        ready: asyncio.Future[None] = self._loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        self._loop.add_writer(self._fd, wake)
        try:
            await ready
        finally:
            self._loop.remove_writer(self._fd)

    async def _release(self) -> None:
        with contextlib.suppress(OSError, serial.SerialException):
            self._port.close()


class ThreadTransport(Transport):
    """A pyserial handle without a descriptor: one reader thread feeds the loop."""

    def __init__(self, url: str, port: Any) -> None:
        super().__init__(url)
        self._port = port
        self._loop = asyncio.get_running_loop()
        self._stopping = threading.Event()
        self._port.timeout = _THREAD_POLL_S
        self._thread = threading.Thread(
            target=self._read_forever, name=f"serial-reader {url}", daemon=True
        )
        self._thread.start()

    def _read_forever(self) -> None:
        while not self._stopping.is_set():
            try:
                data = self._port.read(max(1, self._port.in_waiting))
            except (OSError, serial.SerialException, TypeError, AttributeError) as exc:
                if not self._stopping.is_set():
                    self._loop.call_soon_threadsafe(self._mark_lost, f"read failed: {exc}")
                return
            if data:
                self._loop.call_soon_threadsafe(self._deliver, bytes(data))

    def _drain_pending(self) -> None:
        """The reader thread delivers continuously; nothing is held back here."""

    def _stop_io(self) -> None:
        self._stopping.set()

    async def _write_all(self, data: bytes, timeout_s: float) -> None:
        self._port.write_timeout = timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.to_thread(self._port.write, data)
        except TimeoutError:
            raise DeviceTimeout(
                f"write of {len(data)} byte(s) to {self.url} not done within {timeout_s:.3f} s"
            ) from None
        except serial.SerialTimeoutException:
            raise DeviceTimeout(
                f"write of {len(data)} byte(s) to {self.url} not done within {timeout_s:.3f} s"
            ) from None
        except (OSError, serial.SerialException) as exc:
            self._mark_lost(f"write failed: {exc}")
            raise LinkLost(f"link {self.url} lost: write failed: {exc}") from exc

    async def _release(self) -> None:
        # The thread wakes at least every _THREAD_POLL_S; a bounded join.
        await asyncio.to_thread(self._thread.join, 1.0)
        with contextlib.suppress(OSError, serial.SerialException):
            self._port.close()


def _read_blocks_until_one_byte(fd: int) -> None:
    """Set VMIN=1, VTIME=0 on a tty.

    pyserial opens with VMIN=0, under which a tty ``read`` with nothing to read returns
    0 bytes even on a non-blocking descriptor — indistinguishable from end of file. With
    VMIN=1 an empty read is EAGAIN, and a pty whose other side vanished reads EIO.
    """
    attributes = termios.tcgetattr(fd)
    attributes[6][termios.VMIN] = 1
    attributes[6][termios.VTIME] = 0
    termios.tcsetattr(fd, termios.TCSANOW, attributes)


def _file_descriptor(port: Any) -> int | None:
    try:
        fd = port.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation, serial.SerialException):
        return None
    return fd if isinstance(fd, int) and fd >= 0 else None


def _open_port(url: str, baudrate: int) -> Any:
    return serial.serial_for_url(
        url,
        baudrate=baudrate,
        bytesize=serial.EIGHTBITS,
        parity=serial.PARITY_NONE,
        stopbits=serial.STOPBITS_ONE,
        xonxoff=False,
        rtscts=False,
        dsrdtr=False,
        timeout=0,
        exclusive=True,
    )


async def open_transport(
    url: str, *, baudrate: int, timeout_s: float = OPEN_TIMEOUT_S
) -> Transport:
    """Open ``url`` (a device path, a pty link, or a pyserial URL) at 8N1, no flow control.

    The port is locked exclusively (one owner per port). pyserial already tolerates the
    pty quirk of modem-line ioctls failing with ENOTTY/EINVAL when it sets DTR/RTS on open,
    and no code here touches modem lines afterwards. An unopenable port is ``LinkLost``.
    """
    loop = asyncio.get_running_loop()
    opening = loop.run_in_executor(None, _open_port, url, baudrate)

    def close_late(done: asyncio.Future[Any]) -> None:
        if not done.cancelled() and done.exception() is None:
            with contextlib.suppress(OSError, serial.SerialException):
                done.result().close()

    try:
        async with asyncio.timeout(timeout_s):
            port = await asyncio.shield(opening)
    except TimeoutError:
        opening.add_done_callback(close_late)
        raise DeviceTimeout(f"opening {url} did not finish within {timeout_s:.1f} s") from None
    except (OSError, ValueError, serial.SerialException) as exc:
        raise LinkLost(f"cannot open {url}: {exc}") from exc
    fd = _file_descriptor(port)
    if fd is None:
        log.info("serial link %s has no file descriptor; using a reader thread", url)
        return ThreadTransport(url, port)
    return FdTransport(url, port, fd)
