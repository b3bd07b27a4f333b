"""The safety supervisor: the one latch (habit 1).

Every anomaly, wherever it is found, ends in ``trip``: it inhibits firing at once,
disarms the device first (bounded, so a broken driver cannot hold it up), and only then
asks the controller to latch FAULT and record the cause. Later anomalies while tripped
are logged and change nothing. Leaving FAULT is the controller's explicit reset.

The supervisor also watches the event loop itself: a loop that stalls while a session
is active cannot keep the device's keep-alive or the train clock, so it trips; and its
tick is the proof of life behind the systemd watchdog.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import structlog

from drivers.base import DeviceStatus
from drivers.errors import DeviceCondition, DeviceFault, DriverError

log = structlog.get_logger("stimd.supervisor")


class TripCode(StrEnum):
    DRIVER_ERROR = "driver_error"
    LINK_LOST = "link_lost"
    DEVICE_TIMEOUT = "device_timeout"
    FRAMING_ERROR = "framing_error"
    DEVICE_REJECTED = "device_rejected"
    KEEPALIVE_GAP = "keepalive_gap"
    IDENTITY_MISMATCH = "identity_mismatch"
    DEVICE_ERROR = "device_error"
    DEVICE_DISARMED = "device_disarmed"
    COIL_NOT_PRESENT = "coil_not_present"
    COIL_OVER_TEMPERATURE = "coil_over_temperature"
    PULSE_COUNT_MISMATCH = "pulse_count_mismatch"
    READBACK_MISMATCH = "readback_mismatch"
    TRAIN_OVERRUN = "train_overrun"
    LOOP_STALL = "loop_stall"
    UNEXPECTED_EXCEPTION = "unexpected_exception"
    RECORD_WRITE_FAILED = "record_write_failed"
    HANDSHAKE_FAILED = "handshake_failed"


_DRIVER_CODES: dict[str, TripCode] = {
    "LINK_LOST": TripCode.LINK_LOST,
    "DEVICE_TIMEOUT": TripCode.DEVICE_TIMEOUT,
    "FRAMING_ERROR": TripCode.FRAMING_ERROR,
    "DEVICE_REJECTED": TripCode.DEVICE_REJECTED,
    "KEEPALIVE_GAP": TripCode.KEEPALIVE_GAP,
    "IDENTITY_MISMATCH": TripCode.IDENTITY_MISMATCH,
    "READBACK_MISMATCH": TripCode.READBACK_MISMATCH,
}


_DEVICE_CONDITIONS: dict[DeviceCondition, TripCode] = {
    DeviceCondition.DEVICE_ERROR: TripCode.DEVICE_ERROR,
    DeviceCondition.DEVICE_DISARMED: TripCode.DEVICE_DISARMED,
    DeviceCondition.COIL_NOT_PRESENT: TripCode.COIL_NOT_PRESENT,
    DeviceCondition.COIL_OVER_TEMPERATURE: TripCode.COIL_OVER_TEMPERATURE,
}


def trip_code_for(error: DriverError) -> TripCode:
    """The trip code naming the real cause: a device fault by the condition the driver
    found (the same code a status poll would give), any other error by its kind."""
    if isinstance(error, DeviceFault):
        return _DEVICE_CONDITIONS[error.condition]
    return _DRIVER_CODES.get(error.code, TripCode.DRIVER_ERROR)


@dataclass(frozen=True, slots=True)
class TripCause:
    code: TripCode
    detail: str
    at: str            # UTC ISO 8601, when the anomaly was seen

    def to_json(self) -> dict[str, Any]:
        return {"cause": self.code.value, "detail": self.detail, "at": self.at}


@dataclass(frozen=True, slots=True)
class StatusLimits:
    coil_trip_c: float


def status_anomaly(
    status: DeviceStatus, limits: StatusLimits, *, device_should_be_armed: bool,
    session_active: bool,
) -> tuple[TripCode, str] | None:
    """The first anomaly in a status reading, or None. Pure, so each rule is testable.

    A missing coil is only an anomaly while a session is active (armed, running or
    paused); in IDLE or LOADED it is an interlock that blocks arming, so a technician
    can change coils without a reset.
    """
    if status.error_present:
        code = status.error_code or "unspecified"
        return TripCode.DEVICE_ERROR, f"device reports an error (error code {code})"
    temp = status.coil_temperature_c
    if temp is not None and temp >= limits.coil_trip_c:
        return (
            TripCode.COIL_OVER_TEMPERATURE,
            f"coil temperature {temp:.1f} °C reached the trip limit {limits.coil_trip_c:.1f} °C",
        )
    if session_active and not status.coil_present:
        return TripCode.COIL_NOT_PRESENT, "coil not present while a session is active"
    if device_should_be_armed and not status.armed and not status.train_running:
        return TripCode.DEVICE_DISARMED, "the device disarmed itself while the daemon had it armed"
    return None


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class SafetySupervisor:
    """Owns the latch; the controller owns the state and is told through ``latch``."""

    def __init__(
        self,
        *,
        disarm: Callable[[], Awaitable[None]],
        latch: Callable[[TripCause, bool], Awaitable[None]],
        stall_matters: Callable[[], bool],
        disarm_timeout_s: float,
        stall_threshold_s: float,
        tick_s: float = 0.05,
        idle_tick_s: float = 0.5,
    ) -> None:
        self._disarm = disarm
        self._latch = latch
        self._stall_matters = stall_matters
        self._disarm_timeout_s = disarm_timeout_s
        self._stall_threshold_s = stall_threshold_s
        self._tick_s = tick_s
        self._idle_tick_s = idle_tick_s
        self._cause: TripCause | None = None
        self._inhibited = False
        self._pending: asyncio.Queue[TripCause] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._last_tick = time.monotonic()

    # -- state other parts read -------------------------------------------------------

    @property
    def inhibited(self) -> bool:
        """True from the first instant of a trip: no fire command may be sent."""
        return self._inhibited

    @property
    def cause(self) -> TripCause | None:
        return self._cause

    def alive(self, max_silence_s: float) -> bool:
        """The supervisor's own loop ticked recently (drives the systemd watchdog)."""
        return time.monotonic() - self._last_tick <= max_silence_s

    # -- tripping ---------------------------------------------------------------------

    def trip_soon(self, code: TripCode, detail: str) -> None:
        """Trip from a callback or another thread: inhibit now, disarm on the loop."""
        self._inhibited = True
        cause = TripCause(code, detail, _utc_now())
        loop = self._loop
        if loop is not None and threading.get_ident() != self._loop_thread:
            loop.call_soon_threadsafe(self._pending.put_nowait, cause)
        else:
            self._pending.put_nowait(cause)

    def trip_on_driver_error(self, error: DriverError) -> None:
        """The driver's ``on_fault`` listener."""
        self.trip_soon(trip_code_for(error), f"{error.code}: {error.reason}")

    async def trip(self, code: TripCode, detail: str) -> None:
        await self._trip(TripCause(code, detail, _utc_now()))

    async def _trip(self, cause: TripCause) -> None:
        self._inhibited = True
        if self._cause is not None:
            log.warning(
                "anomaly while already tripped", cause=cause.code.value, detail=cause.detail,
                latched_cause=self._cause.code.value,
            )
            return
        self._cause = cause
        log.critical("trip: disarming", cause=cause.code.value, detail=cause.detail)
        disarmed = await self._disarm_bounded()
        await self._latch(cause, disarmed)

    async def _disarm_bounded(self) -> bool:
        """Disarm within the timeout; a broken driver is logged, not waited for.

        If this fails the device's own keep-alive expiry disarms it (habit 2).
        """
        try:
            async with asyncio.timeout(self._disarm_timeout_s):
                await self._disarm()
        except TimeoutError:
            log.critical("disarm timed out during trip", timeout_s=self._disarm_timeout_s)
            return False
        except Exception as exc:  # a broken driver must not stop the latch
            log.critical("disarm failed during trip", error=repr(exc))
            return False
        return True

    def clear(self) -> None:
        """Only the controller's reset calls this, after recording the reset."""
        self._cause = None
        self._inhibited = False
        while not self._pending.empty():
            self._pending.get_nowait()

    # -- the supervisor's own tasks ---------------------------------------------------

    async def run(self) -> None:
        """Consume queued trips and watch the loop, until cancelled."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._consume_trips(), name="supervisor-trips")
            tg.create_task(self._watch_loop(), name="supervisor-loop-watch")

    async def _consume_trips(self) -> None:
        while True:
            cause = await self._pending.get()
            await self._trip(cause)

    async def _watch_loop(self) -> None:
        """Measure how late the loop wakes us; a stall while it matters is an anomaly.

        The tick is fast only while a stall matters (a session is active); otherwise it
        ticks at ``idle_tick_s``, which still proves the loop alive to the systemd
        watchdog (pinged every half ``WatchdogSec``, 2.5 s) and still measures a stall
        when it happens: the lag is how late the wake-up came, whatever the tick.
        """
        while True:
            tick = self._tick_s if self._stall_matters() else self._idle_tick_s
            expected = time.monotonic() + tick
            await asyncio.sleep(tick)
            now = time.monotonic()
            self._last_tick = now
            lag = now - expected
            if lag > self._stall_threshold_s and self._stall_matters():
                self.trip_soon(
                    TripCode.LOOP_STALL,
                    f"event loop stalled {lag:.3f} s (stall_threshold_s = "
                    f"{self._stall_threshold_s:g}) while a session was active",
                )
