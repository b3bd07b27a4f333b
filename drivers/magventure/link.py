"""The MagPro port owner: one reader task, replies matched by frame id.

The MagPro sends frames on its own after pulses and state changes, so bytes cannot be
read "as the reply" of whatever was sent last. A reader task parses every frame as it
arrives; a frame whose id the pending request waits for completes that request, any
other goes to the unsolicited handler. One request is in flight at a time (one lock),
so frames never interleave.

A request that ends before its reply came — its caller cancelled, or the wait timed
out or was broken by a garbled frame — is *abandoned*, not forgotten: its reply may
still be on its way, and the next request waiting for the same id would take it as
its own. Until the abandoned reply arrives or its deadline passes, the next request
waits before it writes (the link resynchronises); the abandoned reply itself is
counted in ``late_replies`` and never completes another request. It still goes to the
unsolicited handler, because it reports the unit's state (a di/dt frame is a pulse
that happened). The transport completes a write even when its caller is cancelled,
so the unit never holds a fragment of a frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import DeviceTimeout, DriverError, FramingError, LinkLost
from ..transport import Transport
from .codec import FrameParser, encode_frame
from .codec import FramingError as CodecFramingError

log = logging.getLogger(__name__)

BAUDRATE = 38400
BYTE_TIME_S = 10 / BAUDRATE
#: The device answers within a few ms; the bound leaves room for a loaded host.
REPLY_MARGIN_S = 0.5
WRITE_TIMEOUT_S = 0.5


@dataclass(slots=True)
class _Abandoned:
    """A request whose reply had not come when its caller stopped waiting."""

    command: int
    reply_ids: frozenset[int]
    deadline: float                 # monotonic time its reply was due by
    settled: asyncio.Event = field(default_factory=asyncio.Event)


class MagVentureLink:
    """Frames out, frames in; ``request`` waits for the reply with the same id."""

    def __init__(
        self,
        transport: Transport,
        *,
        on_unsolicited: Callable[[bytes], None],
        on_error: Callable[[DriverError], None],
    ) -> None:
        self._transport = transport
        self._on_unsolicited = on_unsolicited
        self._on_error = on_error
        self._parser = FrameParser()
        self._request_lock = asyncio.Lock()
        self._waiting: tuple[frozenset[int], asyncio.Future[bytes]] | None = None
        self._abandoned: list[_Abandoned] = []
        self._reader: asyncio.Task[None] | None = None
        #: replies that arrived for an abandoned request and were kept from the next one
        self.late_replies = 0

    @property
    def transport(self) -> Transport:
        return self._transport

    def start(self) -> None:
        if self._reader is not None:
            raise RuntimeError("MagVenture reader already started")
        self._reader = asyncio.create_task(self._read_forever(), name="magventure-reader")
        self._reader.add_done_callback(self._on_reader_done)

    def _on_reader_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            error = LinkLost(f"MagVenture reader stopped: {exc!r}")
            self._fail_all(error)
            self._on_error(error)

    async def stop(self) -> None:
        reader = self._reader
        if reader is not None and not reader.done():
            reader.cancel()
            await asyncio.wait({reader})  # a caller cancelled meanwhile stays cancelled
        self._fail_all(LinkLost("MagVenture link closed"))
        self._abandoned.clear()

    async def request(self, payload: bytes, reply_ids: frozenset[int], reply_length: int) -> bytes:
        """Write one frame; return the payload of the next frame whose id is in ``reply_ids``.

        The MagPro answers most commands with a frame of another id (amplitude and enable
        with the amplitude report 0x01, set train with the page report 0x08), so the
        caller names what answers it. Requests run one at a time, frames received before
        the write are dispatched first, and a reply to an abandoned request is kept from
        the next one: that is what keeps a reply from being claimed by the wrong request.
        """
        frame = encode_frame(payload)
        timeout_s = REPLY_MARGIN_S + (len(frame) + reply_length) * BYTE_TIME_S
        async with self._request_lock:
            await self._settle_abandoned()
            self._dispatch_received()
            future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
            self._waiting = (reply_ids, future)
            # Due by: the write's bound plus the reply's (the write is never cut short).
            deadline = time.monotonic() + WRITE_TIMEOUT_S + timeout_s
            try:
                await self._transport.write(frame, WRITE_TIMEOUT_S)
                deadline = time.monotonic() + timeout_s
                async with asyncio.timeout(timeout_s):
                    return await future
            except TimeoutError:
                raise DeviceTimeout(
                    f"no reply to MagVenture command 0x{payload[0]:02x} within {timeout_s:.3f} s"
                ) from None
            finally:
                self._waiting = None
                if future.cancelled() or not future.done() or future.exception() is not None:
                    self._abandoned.append(_Abandoned(payload[0], reply_ids, deadline))

    async def _settle_abandoned(self) -> None:
        """Wait until every abandoned request's reply came or its deadline passed."""
        while self._abandoned:
            abandoned = self._abandoned[0]
            remaining = abandoned.deadline - time.monotonic()
            if remaining > 0 and self._transport.is_open and not abandoned.settled.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await abandoned.settled.wait()
            if not abandoned.settled.is_set():
                log.info("no late reply to abandoned MagVenture command 0x%02x by its deadline",
                         abandoned.command)
            self._abandoned.pop(0)

    def _dispatch_received(self) -> None:
        """Parse what has arrived but the reader has not taken yet, before a request
        starts waiting: a frame sent before the command is never its reply."""
        pending = self._transport.discard_input()
        if pending:
            self._parser.feed(pending)
            self._dispatch()

    def _fail_all(self, error: DriverError) -> None:
        if self._waiting is not None and not self._waiting[1].done():
            self._waiting[1].set_exception(error)

    async def _read_forever(self) -> None:
        while True:
            try:
                data = await self._transport.read_some(None)
            except LinkLost as exc:
                self._fail_all(exc)
                return
            self._parser.feed(data)
            self._dispatch()

    def _dispatch(self) -> None:
        while True:
            skipped = self._parser.skipped_bytes
            try:
                for payload in self._parser.frames():
                    self._deliver(payload)
            except CodecFramingError as exc:
                self._framing_error(f"MagVenture frame: {exc}")
                continue
            if self._parser.skipped_bytes != skipped:
                self._framing_error(
                    f"{self._parser.skipped_bytes - skipped} byte(s) outside any MagVenture frame"
                )
            return

    def _framing_error(self, reason: str) -> None:
        error = FramingError(reason)
        if self._waiting is not None and not self._waiting[1].done():
            self._fail_all(error)
        else:
            self._on_error(error)

    def _deliver(self, payload: bytes) -> None:
        now = time.monotonic()
        for abandoned in self._abandoned:
            if (
                not abandoned.settled.is_set()
                and payload[0] in abandoned.reply_ids
                and now <= abandoned.deadline
            ):
                abandoned.settled.set()
                self.late_replies += 1
                log.warning("late reply %s to abandoned MagVenture command 0x%02x: not a reply"
                            " to any waiting request", payload.hex(), abandoned.command)
                self._on_unsolicited(payload)
                return
        waiting = self._waiting
        if waiting is not None and payload[0] in waiting[0] and not waiting[1].done():
            waiting[1].set_result(payload)
            return
        self._on_unsolicited(payload)
