"""The physical unit behind either dialect: charge, pulses, trains, coil, watchdogs.

Dialects translate bytes into calls on ``DeviceCore`` and read its state back; the
core owns everything that happens in time (arming delay, recharge, train timing,
keep-alive, thermal trips) and writes every state change to the event log. A
refusal is returned as a reason string so each dialect can answer it its own way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from protocols.capabilities import DeviceCapabilities

from .coils import COIL_TRIP_C, CoilProfile
from .event_log import EventLog
from .thermal import CoilThermalModel

log = logging.getLogger("simulator.device")

ARM_DELAY_S = 1.0          # armed → ready: the capacitors charge (Magstim, MagPro alike)
POWER_SETTLE_S = 0.5       # ready drops while the charge follows a power change when armed
ARMED_IDLE_LIMIT_S = 60.0  # Magstim: armed this long without a pulse → disarm
KEEPALIVE_S = 1.0          # Magstim: armed/ready and no valid command this long → drop remote

Spawn = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[None]"]


@dataclass(frozen=True, slots=True)
class DeviceTiming:
    """Per-model timing rules (see ``docs/simulator.md``)."""

    keepalive_s: float | None            # None: the unit has no keep-alive (MagVenture)
    armed_idle_limit_s: float | None
    single_recharge_s: Callable[[int, bool], float]  # (power %MSO, enhanced) → seconds


def timing_for(capabilities: DeviceCapabilities) -> DeviceTiming:
    if capabilities.vendor == "magventure":
        interval = 1.0 / capabilities.max_frequency_hz
        return DeviceTiming(None, None, lambda _p, _e: interval)
    recharge = capabilities.min_single_pulse_interval_at
    return DeviceTiming(
        KEEPALIVE_S,
        ARMED_IDLE_LIMIT_S,
        lambda power, enhanced: recharge(min(power, 100)) * (2 if enhanced else 1),
    )


class DeviceCore:
    """State and timing of one simulated stimulator."""

    def __init__(
        self,
        capabilities: DeviceCapabilities,
        coil: CoilProfile,
        events: EventLog,
        spawn: Spawn,
        *,
        timing: DeviceTiming | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capabilities = capabilities
        self.coil = coil
        self.events = events
        self.timing = timing if timing is not None else timing_for(capabilities)
        self._spawn = spawn
        self._clock = clock
        self.thermal = CoilThermalModel(coil, now_s=clock())
        self.remote = False
        self.armed = False
        self.charged = False       # capacitors at the set power (armed only)
        self.train_running = False
        self.waiting = False       # post-train wait (Rapid "wait" bit)
        self.power_a = 0
        self.power_b = 0
        self.enhanced = False
        self.coil_present = True
        self.coil_overtemp_pin_c: float | None = None
        self.error_code: str | None = None
        self.pulse_count = 0
        self.train_count = 0
        self.single_pulse_count = 0
        self.coil_safety_ignored = False
        self._armed_since = 0.0
        self._last_valid_command = clock()
        self._activity: asyncio.Task[None] | None = None

    # ---- derived state -------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.armed and self.charged and not self.train_running and not self.waiting

    def coil_temperature_c(self) -> float:
        if self.coil_overtemp_pin_c is not None:
            return self.coil_overtemp_pin_c
        return self.thermal.temperature_at(self._clock())

    def coil_too_hot(self) -> bool:
        return self.coil_temperature_c() > COIL_TRIP_C

    def arm_blocker(self) -> str | None:
        """Why the unit would refuse to arm now, or None."""
        if not self.coil_present:
            return "coil not connected"
        if self.coil_too_hot():
            return f"coil temperature {self.coil_temperature_c():.1f} °C above {COIL_TRIP_C} °C"
        if self.error_code is not None:
            return f"device error {self.error_code} present"
        return None

    # ---- remote control and watchdogs ------------------------------------------------
    def note_valid_command(self) -> None:
        self._last_valid_command = self._clock()

    def set_remote(self, on: bool, cause: str) -> None:
        if on == self.remote:
            return
        self.remote = on
        self.events.emit("remote_on" if on else "remote_off", cause=cause)

    async def run_watchdogs(self) -> None:
        """Keep-alive and armed-idle limits, checked every 10 ms (1 % of the keep-alive
        period, far below its ~1 s tolerance on a real unit)."""
        while True:
            await asyncio.sleep(0.01)
            now = self._clock()
            keepalive = self.timing.keepalive_s
            if keepalive is not None and self.armed and now - self._last_valid_command > keepalive:
                silent_ms = round((now - self._last_valid_command) * 1000)
                self._disarm("keepalive_expired")
                self.remote = False
                self.events.emit("remote_lost", cause="keepalive_expired", silent_ms=silent_ms)
                log.warning("no valid command for %d ms while armed: disarmed, remote lost",
                            silent_ms)
            idle = self.timing.armed_idle_limit_s
            if idle is not None and self.armed and not self.train_running \
                    and now - self._armed_since > idle:
                self._disarm("armed_idle_timeout")

    # ---- arming ----------------------------------------------------------------------
    def arm(self, cause: str = "command") -> str | None:
        """Start charging; ready after ``ARM_DELAY_S``. Returns a refusal reason or None."""
        if self.armed:
            return "already armed"
        blocker = self.arm_blocker()
        if blocker is not None:
            self.events.emit("refused", action="arm", reason=blocker)
            return blocker
        self.armed = True
        self.charged = False
        self._armed_since = self._clock()
        self.events.emit("armed", cause=cause, pct_mso=self.power_a)
        self._start_activity(self._charge(ARM_DELAY_S))
        return None

    def disarm(self, cause: str = "command") -> None:
        """Always accepted; idempotent."""
        self._disarm(cause)

    def _disarm(self, cause: str) -> None:
        self._cancel_activity()
        was_armed = self.armed
        aborted = self.train_running
        self.armed = self.charged = self.train_running = self.waiting = False
        if aborted:
            self.events.emit("train_aborted", cause=cause, train=self.train_count - 1)
        if was_armed:
            self.events.emit("disarmed", cause=cause)

    async def _charge(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self.charged = True
        self.events.emit("ready", cause="charged", pct_mso=self.power_a)

    def _start_activity(self, coro: Coroutine[Any, Any, None]) -> None:
        self._cancel_activity()
        self._activity = self._spawn(coro)

    def _cancel_activity(self) -> None:
        if self._activity is not None and not self._activity.done():
            self._activity.cancel()
        self._activity = None

    # ---- settings --------------------------------------------------------------------
    def set_power(self, pct_a: int, pct_b: int | None = None) -> None:
        """Change the output; an armed, charged unit is not ready until the charge
        follows (``POWER_SETTLE_S``)."""
        changed = pct_a != self.power_a or (pct_b is not None and pct_b != self.power_b)
        self.power_a = pct_a
        if pct_b is not None:
            self.power_b = pct_b
        if changed and self.armed and self.charged and not self.train_running \
                and not self.waiting:
            self.charged = False
            self._start_activity(self._charge(POWER_SETTLE_S))

    # ---- firing ----------------------------------------------------------------------
    def fire_blocker(self) -> str | None:
        if not self.armed:
            return "not armed"
        if self.train_running:
            return "train running"
        if self.waiting:
            return "waiting after train"
        if not self.charged:
            return "not charged"
        return None

    def fire_single(self) -> str | None:
        """One pulse now, then recharge for the model's single-pulse interval."""
        blocker = self.fire_blocker()
        if blocker is not None:
            self.events.emit("refused", action="fire", reason=blocker)
            return blocker
        self._pulse(train=None, index=self.single_pulse_count, mode="single")
        self.single_pulse_count += 1
        if self.armed:  # the pulse may have tripped the coil limit
            self.charged = False
            recharge = self.timing.single_recharge_s(self.power_a, self.enhanced)
            self._start_activity(self._charge(recharge))
        return None

    def start_train(
        self, onsets_s: Sequence[float], *, trains: Sequence[int], wait_after_s: float,
        detail: dict[str, Any],
    ) -> str | None:
        """Fire pulses at ``onsets_s`` (seconds after the first); ``trains[k]`` is the
        sub-train index of pulse k (MagVenture sequences hold several trains)."""
        blocker = self.fire_blocker()
        if blocker is None and not onsets_s:
            blocker = "train has no pulses"
        if blocker is not None:
            self.events.emit("refused", action="train", reason=blocker)
            return blocker
        self.train_running = True
        self._start_activity(self._run_train(list(onsets_s), list(trains), wait_after_s, detail))
        return None

    async def _run_train(
        self, onsets: list[float], trains: list[int], wait_after_s: float,
        detail: dict[str, Any],
    ) -> None:
        # Absolute deadlines from one start time, so wake-up jitter never accumulates.
        start = self._clock()
        base_train = self.train_count
        current = -1
        index_in_train = 0
        for onset, sub in zip(onsets, trains, strict=True):
            if sub != current:
                if current >= 0:
                    self.events.emit("train_completed", train=base_train + current,
                                     pulses=index_in_train, cause="done")
                current = sub
                index_in_train = 0
                self.train_count = base_train + sub + 1
                self.events.emit("train_started", train=base_train + sub,
                                 pct_mso=self.power_a, **detail)
            delay = start + onset - self._clock()
            if delay > 0:
                await asyncio.sleep(delay)
            self._pulse(train=base_train + sub, index=index_in_train, mode="train")
            index_in_train += 1
            if not self.armed:
                return  # tripped by the coil limit mid-train
        self.events.emit("train_completed", train=base_train + current, pulses=index_in_train,
                         cause="done")
        self.train_running = False
        self.waiting = True
        await asyncio.sleep(wait_after_s)
        self.waiting = False
        self.events.emit("ready", cause="wait_elapsed", pct_mso=self.power_a)

    def _pulse(self, *, train: int | None, index: int, mode: str) -> None:
        mono_ns = time.monotonic_ns()
        temp = self.thermal.add_pulse(self._clock(), self.power_a)
        self.pulse_count += 1
        self._armed_since = self._clock()
        self.events.emit("pulse", mono_ns=mono_ns, pct_mso=self.power_a, train=train,
                         pulse=index, mode=mode, seq=self.pulse_count - 1,
                         coil_c=round(temp, 2))
        if self.coil_too_hot():
            self.trip_overtemp()

    # ---- faults ----------------------------------------------------------------------
    def trip_overtemp(self) -> None:
        temp = self.coil_temperature_c()
        self.events.emit("fault", cause="coil_overtemp", coil_c=round(temp, 2))
        log.warning("coil at %.1f °C above %.1f °C: disarming", temp, COIL_TRIP_C)
        self._disarm("coil_overtemp")

    def set_coil_temperature(self, celsius: float) -> None:
        self.thermal.set_temperature(self._clock(), celsius)
        if self.coil_too_hot() and self.armed:
            self.trip_overtemp()

    def pin_coil_overtemp(self, celsius: float) -> None:
        self.coil_overtemp_pin_c = celsius
        self.trip_overtemp()

    def remove_coil(self) -> None:
        self.coil_present = False
        self.events.emit("fault", cause="coil_removed")
        self._disarm("coil_removed")

    def set_error(self, code: str) -> None:
        self.error_code = code
        self.events.emit("fault", cause="device_error", code=code)
        self._disarm("device_error")

    def clear_faults(self) -> None:
        self.coil_present = True
        self.coil_overtemp_pin_c = None
        self.error_code = None

    def shutdown(self) -> None:
        self._cancel_activity()
