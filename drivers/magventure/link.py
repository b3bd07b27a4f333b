"""The MagPro port owner: one reader task, replies matched by frame id.

The MagPro sends frames on its own after pulses and state changes, so bytes cannot be
read "as the reply" of whatever was sent last. A reader task parses every frame as it
arrives; a frame whose id the pending request waits for completes that request, any
other goes to the unsolicited handler. One request is in flight at a time (one lock),
so frames never interleave and a reply cannot complete the wrong request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

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
        self._reader: asyncio.Task[None] | None = None

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
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        self._fail_all(LinkLost("MagVenture link closed"))

    async def request(self, payload: bytes, reply_ids: frozenset[int], reply_length: int) -> bytes:
        """Write one frame; return the payload of the next frame whose id is in ``reply_ids``.

        The MagPro answers most commands with a frame of another id (amplitude and enable
        with the amplitude report 0x01, set train with the page report 0x08), so the
        caller names what answers it. Requests run one at a time, which is what keeps a
        reply from being claimed by the wrong request.
        """
        frame = encode_frame(payload)
        timeout_s = REPLY_MARGIN_S + (len(frame) + reply_length) * BYTE_TIME_S
        async with self._request_lock:
            future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
            self._waiting = (reply_ids, future)
            try:
                await self._transport.write(frame, WRITE_TIMEOUT_S)
                async with asyncio.timeout(timeout_s):
                    return await future
            except TimeoutError:
                raise DeviceTimeout(
                    f"no reply to MagVenture command 0x{payload[0]:02x} within {timeout_s:.3f} s"
                ) from None
            finally:
                self._waiting = None

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
        waiting = self._waiting
        if waiting is not None and payload[0] in waiting[0] and not waiting[1].done():
            waiting[1].set_result(payload)
            return
        self._on_unsolicited(payload)
