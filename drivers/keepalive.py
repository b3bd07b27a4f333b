"""The driver's own keep-alive and its watchdog.

A Magstim unit drops remote control and disarms when no valid command arrives for about
one second; that is the device's safety net when the host dies (habit 2), so the host
must renew in time while it is alive — and notice when it did not. Two loops share one
task: the sender renews whenever the last acknowledged command is older than the period
(any command renews, so a busy driver sends no extra keep-alives); the watchdog reports
a ``KeepAliveGap`` as soon as the time since the last renewal passes the gap limit while
the device may be armed, even if the sender itself is stuck behind the port lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .errors import DriverError, KeepAliveGap, LinkLost

log = logging.getLogger(__name__)

_WATCH_INTERVAL_S = 0.05


@dataclass(frozen=True, slots=True)
class KeepAlivePolicy:
    """Renewal periods and the gap that is reported.

    ``armed_period_s`` is kept below the 0.5 s that real clients use so that ordinary
    scheduling jitter on a loaded host does not push a renewal past ``gap_limit_s``.
    """

    armed_period_s: float
    idle_period_s: float
    gap_limit_s: float

    def __post_init__(self) -> None:
        if not 0 < self.armed_period_s < self.gap_limit_s:
            raise ValueError(
                f"armed_period_s {self.armed_period_s} must be positive and below "
                f"gap_limit_s {self.gap_limit_s}"
            )
        if self.idle_period_s < self.armed_period_s:
            raise ValueError(
                f"idle_period_s {self.idle_period_s} below armed_period_s {self.armed_period_s}"
            )


class KeepAlive:
    """Runs ``renew`` on time and reports late or failed renewals to ``report``."""

    def __init__(
        self,
        *,
        name: str,
        policy: KeepAlivePolicy,
        renew: Callable[[], Awaitable[None]],
        last_renewal: Callable[[], float],
        may_be_armed: Callable[[], bool],
        report: Callable[[DriverError], None],
    ) -> None:
        self._name = name
        self._policy = policy
        self._renew = renew
        self._last_renewal = last_renewal
        self._may_be_armed = may_be_armed
        self._report = report
        self._wake = asyncio.Event()
        self._armed_wake = asyncio.Event()   # wakes an idle watchdog when arming starts
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self._task is not None:
            raise RuntimeError(f"keep-alive for {self._name} already started")
        self._task = asyncio.create_task(self._run(), name=f"keepalive {self._name}")
        self._task.add_done_callback(self._on_done)

    def nudge(self) -> None:
        """Re-evaluate the period now: call when the device may have become armed."""
        self._wake.set()
        self._armed_wake.set()

    async def stop(self) -> None:
        """Stop renewing (the device's own timeout then takes over). Idempotent."""
        task = self._task
        if task is None or task.done():
            return
        task.cancel()
        # wait() rather than awaiting the task: its cancellation (or a late failure,
        # reported by _on_done) is not the caller's, and a caller cancelled meanwhile
        # must stay cancelled.
        await asyncio.wait({task})

    def _on_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("keep-alive for %s died: %r", self._name, exc)
            self._report(KeepAliveGap(f"keep-alive for {self._name} stopped: {exc!r}"))

    async def _run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._send_loop(), name=f"keepalive-send {self._name}")
            group.create_task(self._watch_loop(), name=f"keepalive-watch {self._name}")

    def _period(self) -> float:
        if self._may_be_armed():
            return self._policy.armed_period_s
        return self._policy.idle_period_s

    async def _sleep_or_wake(self, seconds: float) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, seconds)):
                await self._wake.wait()

    async def _send_loop(self) -> None:
        while True:
            due = self._last_renewal() + self._period()
            now = time.monotonic()
            if now < due:
                await self._sleep_or_wake(due - now)
                continue
            try:
                await self._renew()
            except LinkLost as exc:
                self._report(exc)
                return
            except DriverError as exc:
                self._report(exc)
                # The device answered wrongly or not at all; try again one period later
                # rather than hammering it (the report already made the daemon trip).
                await self._sleep_or_wake(self._period())

    async def _watch_loop(self) -> None:
        reported_for: float | None = None
        while True:
            if not self._may_be_armed():
                # nothing to watch while disarmed: sleep until arming starts (``nudge``)
                # rather than waking 20 times a second for nothing
                self._armed_wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._policy.idle_period_s):
                        await self._armed_wake.wait()
                continue
            await asyncio.sleep(_WATCH_INTERVAL_S)
            if not self._may_be_armed():
                continue
            last = self._last_renewal()
            gap = time.monotonic() - last
            if gap > self._policy.gap_limit_s and reported_for != last:
                reported_for = last
                self._report(
                    KeepAliveGap(
                        f"{self._name}: no command renewed remote control for {gap:.2f} s while"
                        f" the device may be armed (limit {self._policy.gap_limit_s:.2f} s;"
                        " the device drops remote control after about 1 s)"
                    )
                )
