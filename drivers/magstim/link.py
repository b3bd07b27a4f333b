"""One request, one matched reply: the Magstim port owner.

Every command goes through ``MagstimLink.exchange`` under one lock, so the keep-alive
and the driver's commands never interleave bytes. A reply is matched by its echo byte
and checksum and must be exactly as long as the command's reply; anything else is a
``FramingError``, silence is a ``DeviceTimeout``, and the device's own refusals
(``?`` alone, ``CMD ? CRC``, ``CMD S CRC``) are ``DeviceRejected`` with its reason.

Stale input is dropped before every write, as real Magstim clients do. That alone is
not enough after an exchange that ended before its reply was read in full — cancelled
by its caller, timed out, or garbled: the rest of that reply may still be on its way
and would be read as the next command's. Such an exchange leaves the link *in doubt*,
and the next one first resynchronises: it drains input until the interrupted reply
has arrived (or its deadline passed) and the line has then been quiet for
``RESYNC_QUIET_S``. The transport completes a write even when its caller is cancelled,
so the device never holds a fragment of a command that the next one would complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from ..errors import DeviceRejected, DeviceTimeout, FramingError
from ..transport import Transport
from .codec import (
    STATE_ERROR,
    UNKNOWN_COMMAND,
    VALUE_ERROR,
    ChecksumError,
    InstrumentStatus,
    RapidStatus,
    encode_command,
    verify,
)

log = logging.getLogger(__name__)

BAUDRATE = 9600
#: Line time of one byte at 9600 8N1 (10 bits).
BYTE_TIME_S = 10 / BAUDRATE
#: The device answers within a few ms; the bound adds room for a loaded host (and a
#: simulator process competing for two cores) on top of the reply's line time.
REPLY_MARGIN_S = 0.5
WRITE_TIMEOUT_S = 0.5
_VERSION_MAX_LENGTH = 24
#: A lone '?' is final when nothing follows it for this long (≈ 20 byte-times).
UNKNOWN_QUIET_S = 0.02
#: Quiet that ends a resynchronisation: the bytes of one reply follow each other within
#: a byte time, and a command cut short is answered '?' after the device's own gap of
#: about 20 byte-times; 50 ms of silence is well past both.
RESYNC_QUIET_S = 0.05
#: A line that keeps talking this long past the interrupted reply's deadline is noise.
RESYNC_NOISE_LIMIT_S = 0.5

#: The only commands this driver ever sends. The coil-safety-switch override and the
#: enhanced-power commands are absent on purpose: ``exchange`` refuses anything else.
SENDABLE_COMMANDS = frozenset(b"QR@EJFNI\\[BDx")
#: Replies that carry the Rapid status byte after the instrument status byte.
_RAPID_STATUS_REPLIES = frozenset(b"\\[BDx")


class UnknownCommand(DeviceRejected):
    """The device answered ``?`` alone: it does not know this command (e.g. ``ND`` on a
    200², which is how the Rapid family is told apart)."""


@dataclass(frozen=True, slots=True)
class _Interrupted:
    """An exchange that ended before its whole reply was read."""

    sent: bytes
    received_before: int    # ``transport.bytes_received`` when its command was written
    reply_length: int       # bytes of a complete reply (the longest, for the version)
    deadline: float         # monotonic time its reply was due by


@dataclass(frozen=True, slots=True)
class MagstimReply:
    """A verified reply: status bytes decoded, ``data`` without echo, status and checksum."""

    command: bytes
    instrument: InstrumentStatus
    rapid: RapidStatus | None
    data: bytes


class PortLock:
    """One holder of the port at a time; urgent requests (the disarm) go first.

    An urgent waiter is granted the port before every normal waiter, whenever they
    queued; nobody is interrupted: the exchange in progress finishes (cutting it in half
    would leave a fragment on the line that the unit joins to the next command).
    Ownership passes directly from the releasing holder to the next waiter, so a request
    arriving meanwhile cannot slip in between.
    """

    def __init__(self) -> None:
        self._held = False
        self._urgent: deque[asyncio.Future[None]] = deque()
        self._normal: deque[asyncio.Future[None]] = deque()

    @property
    def locked(self) -> bool:
        return self._held

    @contextlib.asynccontextmanager
    async def hold(self, *, urgent: bool = False) -> AsyncIterator[None]:
        await self._acquire(urgent)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, urgent: bool) -> None:
        if not self._held and not self._urgent and not self._normal:
            self._held = True
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._urgent if urgent else self._normal
        queue.append(granted)
        try:
            await granted
        except BaseException:
            if granted.done() and not granted.cancelled():
                self._release()   # granted just as we were cancelled: pass the port on
            else:
                with contextlib.suppress(ValueError):
                    queue.remove(granted)
            raise

    def _release(self) -> None:
        for queue in (self._urgent, self._normal):
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    waiter.set_result(None)   # the port passes to it, still held
                    return
        self._held = False


class MagstimLink:
    """Owns the transport for the Magstim dialect; records when the device was last renewed."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport
        self._lock = PortLock()
        #: monotonic time at which the last command that the device accepted was written
        self.last_accepted_at = time.monotonic()
        self._in_doubt: _Interrupted | None = None
        #: exchanges whose leftover reply bytes a later exchange drained (for status)
        self.resynchronisations = 0

    @property
    def transport(self) -> Transport:
        return self._transport

    async def exchange(
        self, command: bytes, data: bytes, reply_length: int | None, *, urgent: bool = False
    ) -> MagstimReply:
        """Send ``command`` + ``data`` and return its matched reply.

        ``reply_length`` is the full reply in bytes; ``None`` means the version reply,
        which ends with a NUL and a checksum. An ``urgent`` exchange (the disarm) takes
        the port before every exchange still waiting for it.
        """
        if len(command) != 1 or command[0] not in SENDABLE_COMMANDS:
            raise ValueError(f"command {command!r} is not one this driver may send")
        message = encode_command(command, data)
        expected = reply_length if reply_length is not None else _VERSION_MAX_LENGTH
        timeout_s = REPLY_MARGIN_S + (len(message) + expected) * BYTE_TIME_S
        async with self._lock.hold(urgent=urgent):
            if self._in_doubt is not None:
                await self._resynchronise(self._in_doubt)
                self._in_doubt = None
            dropped = self._transport.discard_input()
            if dropped:
                log.warning("discarded %d stale byte(s) before %r: %s",
                            len(dropped), message, dropped.hex())
            # In doubt until the whole reply is read: a cancellation, timeout or garbled
            # reply from here on leaves bytes the next exchange must not take as its own.
            received_before = self._transport.bytes_received
            self._in_doubt = _Interrupted(
                message, received_before, expected,
                time.monotonic() + WRITE_TIMEOUT_S + timeout_s,
            )
            await self._transport.write(message, WRITE_TIMEOUT_S)
            written_at = time.monotonic()
            self._in_doubt = _Interrupted(
                message, received_before, expected, written_at + timeout_s
            )
            try:
                reply = await self._read_reply(command, data, reply_length, timeout_s)
            except DeviceRejected:
                self._in_doubt = None  # the refusal was the whole reply
                raise
            self._in_doubt = None
            self.last_accepted_at = written_at
            return reply

    async def _resynchronise(self, interrupted: _Interrupted) -> None:
        """Drain what is left of an interrupted exchange's reply before the next command.

        Done when the reply had time to arrive in full (all its bytes came, or its
        deadline passed) and the line has been quiet for ``RESYNC_QUIET_S`` since.
        """
        give_up_at = max(interrupted.deadline, time.monotonic()) + RESYNC_NOISE_LIMIT_S
        dropped = bytearray(self._transport.discard_input())
        while True:
            arrived = self._transport.bytes_received - interrupted.received_before
            if arrived >= interrupted.reply_length:
                wait_s = RESYNC_QUIET_S
            else:
                wait_s = max(RESYNC_QUIET_S, interrupted.deadline - time.monotonic())
            if time.monotonic() + wait_s > give_up_at:
                raise FramingError(
                    f"line not quiet after the interrupted exchange {interrupted.sent!r}:"
                    f" {len(dropped)} byte(s) dropped ({bytes(dropped[:32]).hex()}…)"
                )
            try:
                dropped += await self._transport.read_some(wait_s)
            except DeviceTimeout:
                break
        self.resynchronisations += 1
        log.warning("resynchronised after the interrupted exchange %r: dropped %d byte(s) %s",
                    interrupted.sent, len(dropped), bytes(dropped).hex())

    async def _read_reply(
        self, command: bytes, data: bytes, reply_length: int | None, timeout_s: float
    ) -> MagstimReply:
        deadline = time.monotonic() + timeout_s

        def left() -> float:
            return max(0.0, deadline - time.monotonic())

        sent = (command + data).decode("ascii", "replace")
        echo = await self._transport.read_exactly(1, left())
        if echo == UNKNOWN_COMMAND and command != UNKNOWN_COMMAND:
            # A lone '?' carries no checksum; only silence after it tells it from a reply
            # whose echo byte was corrupted into '?'.
            try:
                trailing = await self._transport.read_some(UNKNOWN_QUIET_S)
            except DeviceTimeout:
                raise UnknownCommand(
                    f"device does not know command {sent!r} (replied '?')"
                ) from None
            raise FramingError(f"reply to {sent!r}: '?' followed by {trailing.hex()}")
        if echo != command:
            raise FramingError(
                f"reply to {sent!r} starts with {echo!r}, expected the echo {command!r}"
            )
        status = await self._transport.read_exactly(1, left())
        if status[0] in (VALUE_ERROR, STATE_ERROR):
            crc = await self._transport.read_exactly(1, left())
            self._verify(echo + status + crc, sent)
            if status[0] == VALUE_ERROR:
                raise DeviceRejected(f"device rejected {sent!r}: data value not acceptable ('?')")
            raise DeviceRejected(
                f"device rejected {sent!r}: conflicts with its current state ('S')"
            )
        if reply_length is None:
            rest = await self._transport.read_until(0x00, _VERSION_MAX_LENGTH, left())
            rest += await self._transport.read_exactly(1, left())
        else:
            rest = await self._transport.read_exactly(reply_length - 2, left())
        body = self._verify(echo + status + rest, sent)
        instrument = InstrumentStatus.decode(body[1])
        if command[0] in _RAPID_STATUS_REPLIES:
            return MagstimReply(command, instrument, RapidStatus.decode(body[2]), body[3:])
        return MagstimReply(command, instrument, None, body[2:])

    @staticmethod
    def _verify(message: bytes, sent: str) -> bytes:
        try:
            return verify(message)
        except ChecksumError as exc:
            raise FramingError(f"reply to {sent!r}: {exc}") from None
