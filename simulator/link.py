"""The cable: a pseudo-terminal whose device side is this process.

Bytes from the host are read as soon as they arrive (some MagVenture clients discard
their own unsent output before each command, which on a pty drops whatever the
device side has not read yet), then released to the dialect at the line rate: a
command counts as received when its last byte would have arrived over the wire.
Replies leave at the line rate too, so latencies measured against the simulator
include the serial transfer time a real unit imposes. Link faults (garble, drop,
delay, stuck, unplug) act here, between the unit and the cable.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .event_log import EventLog
from .faults import LinkFaults

log = logging.getLogger("simulator.link")

BITS_PER_BYTE = 10  # 8N1: start bit, 8 data bits, stop bit


def byte_time_ns(baud: int) -> int:
    """Time one byte occupies the line: ≈1.04 ms at 9600 baud, 0.26 ms at 38400."""
    return round(BITS_PER_BYTE * 1e9 / baud)


class LinkGone(RuntimeError):
    """The link path exists and is not ours to replace."""


@dataclass
class _Outgoing:
    data: bytes
    not_before_ns: int


Receiver = Callable[[bytes, int], None]  # (bytes, arrival of the last byte in mono ns)


class PtyLink:
    """One pty, its symlink, and line-rate pacing in both directions."""

    def __init__(
        self, link_path: Path, *, baud: int, line_rate: bool, faults: LinkFaults,
        events: EventLog,
    ) -> None:
        self.link_path = link_path
        self.baud = baud
        self.byte_ns = byte_time_ns(baud) if line_rate else 0
        self.faults = faults
        self.events = events
        self._master: int | None = None
        self._slave: int | None = None
        self._rx: asyncio.Queue[tuple[bytes, list[int]]] = asyncio.Queue()
        self._tx: asyncio.Queue[_Outgoing] = asyncio.Queue()
        self._rx_free_ns = 0
        self._tx_free_ns = 0
        self.plugged = False

    # ---- plug / unplug ---------------------------------------------------------------
    def plug(self) -> None:
        """Create the pty and point the link at it (replacing a stale symlink only)."""
        if self.plugged:
            return
        if self.link_path.exists() or self.link_path.is_symlink():
            if not self.link_path.is_symlink():
                raise LinkGone(f"--link {self.link_path} exists and is not a symlink")
            log.info("replacing stale link %s", self.link_path)
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line discipline: bytes pass untouched
        os.set_blocking(master, False)
        tmp = self.link_path.with_name(f".{self.link_path.name}.{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(os.ttyname(slave))
        tmp.replace(self.link_path)
        self._master, self._slave = master, slave
        self._rx_free_ns = self._tx_free_ns = 0
        asyncio.get_running_loop().add_reader(master, self._on_readable)
        self.plugged = True
        log.info("pty %s linked at %s", os.ttyname(slave), self.link_path)

    def unplug(self, cause: str) -> None:
        """The cable is pulled: the pty goes away, the host sees a hang-up."""
        if not self.plugged:
            return
        master, slave = self._master, self._slave
        self._master = self._slave = None
        self.plugged = False
        if master is not None:
            asyncio.get_running_loop().remove_reader(master)
            os.close(master)
        if slave is not None:
            os.close(slave)
        self.remove_link()
        self.events.emit("unplugged", cause=cause)

    def remove_link(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            if self.link_path.is_symlink():
                self.link_path.unlink()

    # ---- receive ---------------------------------------------------------------------
    def _on_readable(self) -> None:
        if self._master is None:
            return
        try:
            data = os.read(self._master, 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno == errno.EIO:  # no slave open: impossible while we hold one
                return
            raise
        if not data:
            return
        now = time.monotonic_ns()
        start = max(now, self._rx_free_ns)
        arrivals = [start + (i + 1) * self.byte_ns for i in range(len(data))]
        self._rx_free_ns = arrivals[-1]
        self._rx.put_nowait((data, arrivals))

    async def receive(self) -> tuple[bytes, list[int]]:
        """Next chunk read from the host with each byte's arrival time (mono ns)."""
        return await self._rx.get()

    # ---- send ------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        """Queue a reply or unsolicited frame, through the link faults."""
        faults = self.faults
        if not data or faults.stuck:
            return
        if faults.drop_rate and faults.rng.random() < faults.drop_rate:
            log.info("fault: dropped reply %s", data.hex())
            return
        if faults.garble_rate and faults.rng.random() < faults.garble_rate:
            position = faults.rng.randrange(len(data))
            flip = faults.rng.randrange(1, 256)
            garbled = bytearray(data)
            garbled[position] ^= flip
            log.info("fault: garbled reply %s → %s", data.hex(), garbled.hex())
            data = bytes(garbled)
        not_before = time.monotonic_ns() + round(faults.delay_s * 1e9)
        self._tx.put_nowait(_Outgoing(data, not_before))

    async def run_sender(self) -> None:
        """Write queued bytes at the line rate, byte k leaving (k+1) byte-times after
        the line becomes free."""
        while True:
            item = await self._tx.get()
            wait_ns = item.not_before_ns - time.monotonic_ns()
            if wait_ns > 0:
                await asyncio.sleep(wait_ns / 1e9)
            start = max(time.monotonic_ns(), self._tx_free_ns)
            sent = 0
            total = len(item.data)
            while sent < total:
                if self.byte_ns:
                    due = min(total, (time.monotonic_ns() - start) // self.byte_ns)
                else:
                    due = total
                if due > sent:
                    self._write(item.data[sent:due])
                    sent = due
                if sent < total:
                    next_due = start + (sent + 1) * self.byte_ns
                    await asyncio.sleep(max(0.0, (next_due - time.monotonic_ns()) / 1e9))
            self._tx_free_ns = start + total * self.byte_ns

    def _write(self, data: bytes) -> None:
        if self._master is None:
            return  # unplugged: the bytes go nowhere
        try:
            written = os.write(self._master, data)
        except BlockingIOError:
            written = 0
        if written < len(data):  # the host's input buffer is full: bytes go into the void
            log.debug("nobody reading: %d bytes lost", len(data) - written)

    def close(self) -> None:
        if self._master is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._master)
            os.close(self._master)
        if self._slave is not None:
            os.close(self._slave)
        self._master = self._slave = None
        self.plugged = False
        self.remove_link()
