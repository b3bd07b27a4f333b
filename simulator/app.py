"""One simulated stimulator: device core + dialect + pty link + control socket.

``Simulator.running()`` starts everything inside the caller's event loop (tests use
it in-process); ``simulator.cli`` wraps it into the ``stimd-sim`` process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocols.capabilities import DEVICE_MODELS, MAGSTIM_MODELS, device_profile

from .coils import CoilProfile, coil_for
from .control import ControlServer
from .device import DeviceCore
from .event_log import EventLog
from .faults import LinkFaults, validate_fault
from .link import PtyLink
from .magstim_dialect import MagstimDialect
from .magventure_dialect import MagVentureDialect

log = logging.getLogger("simulator")

Version = tuple[int, int, int]
RAPIDS = ("magstim-rapid2", "magstim-superrapid2", "magstim-superrapid2-plus1")
UNIX_SOCKET_PATH_MAX = 107  # sun_path is 108 bytes including the terminating NUL


class ConfigError(ValueError):
    """A simulator option that cannot describe a real unit."""


def parse_firmware(text: str) -> Version:
    match = re.fullmatch(r"(\d{1,3})\.(\d{1,3})\.(\d{1,3})", text)
    if match is None:
        raise ConfigError(f"--firmware {text!r} is not MAJOR.MINOR.PATCH, e.g. 9.0.0")
    major, minor, patch = (int(g) for g in match.groups())
    return major, minor, patch


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    device: str
    link: Path
    mains: int | None = None
    firmware: Version | None = None
    unlock_code: str | None = None
    coil: str | None = None
    pulse_log: Path | None = None
    control: Path | None = None
    line_rate: bool = True
    log_commands: bool = False
    coil_profile: CoilProfile = field(init=False)

    def __post_init__(self) -> None:
        if self.device not in DEVICE_MODELS:
            raise ConfigError(
                f"--device {self.device!r} unknown; choose one of {', '.join(DEVICE_MODELS)}")
        if self.mains is not None and self.mains not in (240, 115):
            raise ConfigError(f"--mains {self.mains} must be 240 or 115 (volts)")
        if self.firmware is not None and self.device not in RAPIDS:
            raise ConfigError(
                f"--firmware applies to the Rapid family only (it answers the version "
                f"query); {self.device} has none")
        if self.firmware is not None and not 5 <= self.firmware[0] <= 11:
            raise ConfigError(
                f"--firmware major version {self.firmware[0]} outside the known Rapid "
                "software versions 5..11")
        if self.unlock_code is not None:
            firmware = self.firmware or (9, 0, 0)
            if self.device not in RAPIDS or firmware[0] < 9:
                raise ConfigError("--unlock-code needs a Rapid with firmware 9 or later")
            code = self.unlock_code
            if not code or not code.isascii() or not code.isprintable() or code[0] == "@":
                raise ConfigError(
                    f"--unlock-code {code!r} must be printable ASCII not starting with '@'")
        if not self.link.parent.is_dir():
            raise ConfigError(f"--link {self.link}: directory {self.link.parent} does not exist")
        if self.link.exists() and not self.link.is_symlink():
            raise ConfigError(f"--link {self.link} exists and is not a symlink")
        if self.control is not None:
            if len(str(self.control).encode()) > UNIX_SOCKET_PATH_MAX:
                raise ConfigError(
                    f"--control {self.control} longer than {UNIX_SOCKET_PATH_MAX} bytes "
                    "(Unix socket path limit)")
            if not self.control.parent.is_dir():
                raise ConfigError(f"--control {self.control}: directory does not exist")
        if self.pulse_log is not None:
            if not self.pulse_log.parent.is_dir():
                raise ConfigError(f"--pulse-log {self.pulse_log}: directory does not exist")
            target = self.pulse_log if self.pulse_log.exists() else self.pulse_log.parent
            if not os.access(target, os.W_OK):
                raise ConfigError(f"--pulse-log {self.pulse_log}: not writable")
        try:
            object.__setattr__(self, "coil_profile", coil_for(self.device, self.coil))
        except ValueError as exc:
            raise ConfigError(f"--coil: {exc}") from None

    @property
    def effective_mains(self) -> int | None:
        if self.device in RAPIDS and self.mains is None:
            return 240
        return self.mains


class Simulator:
    """Everything one simulated unit needs, wired together."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.capabilities = device_profile(config.device, config.effective_mains)
        self.events = EventLog(config.pulse_log)
        self.link_faults = LinkFaults()
        self._tasks: set[asyncio.Task[None]] = set()
        self._group: asyncio.TaskGroup | None = None
        self.core = DeviceCore(self.capabilities, config.coil_profile, self.events, self._spawn)
        self.dialect: MagstimDialect | MagVentureDialect
        if config.device in MAGSTIM_MODELS:
            self.dialect = MagstimDialect(
                self.core, self.events, self._send, model=config.device,
                firmware=config.firmware, unlock_code=config.unlock_code,
                log_commands=config.log_commands)
        else:
            self.dialect = MagVentureDialect(
                self.core, self.events, self._send, model=config.device,
                log_commands=config.log_commands)
        self.link = PtyLink(config.link, baud=self.dialect.baud, line_rate=config.line_rate,
                            faults=self.link_faults, events=self.events)
        self.control_server = (
            ControlServer(config.control, self) if config.control is not None else None)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        if self._group is None:
            coro.close()
            raise RuntimeError("simulator is not running")
        task = self._group.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _send(self, data: bytes) -> None:
        self.link.send(data)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Simulator]:
        """Serve the pty (and the control socket) until the block exits."""
        async with asyncio.TaskGroup() as group:
            self._group = group
            try:
                self.link.plug()
                self.events.emit("start", cause="started", device=self.config.device,
                                 link=str(self.config.link), coil=self.config.coil_profile.name,
                                 line_rate=self.config.line_rate)
                self._spawn(self._serve())
                self._spawn(self.link.run_sender())
                self._spawn(self.core.run_watchdogs())
                if self.control_server is not None:
                    await self.control_server.start()
                yield self
            finally:
                self.core.shutdown()
                for task in list(self._tasks):
                    task.cancel()
                if self.control_server is not None:
                    await self.control_server.close()
                self.link.close()
                self.events.emit("stop", cause="shutdown", pulse_count=self.core.pulse_count)
                self.events.close()
                self._group = None

    async def _serve(self) -> None:
        """Feed host bytes to the dialect, each command at its line-rate arrival."""
        dialect = self.dialect
        while True:
            deadline = dialect.idle_deadline_ns()
            try:
                if deadline is None:
                    data, arrivals = await self.link.receive()
                else:
                    async with asyncio.timeout(max(0.0, (deadline - time.monotonic_ns()) / 1e9)):
                        data, arrivals = await self.link.receive()
            except TimeoutError:
                dialect.on_idle(time.monotonic_ns())
                continue
            if self.link_faults.stuck:
                continue
            for byte, arrival in zip(data, arrivals, strict=True):
                message = dialect.push(byte, arrival)
                if message is None:
                    continue
                wait_ns = arrival - time.monotonic_ns()
                if wait_ns > 0:
                    await asyncio.sleep(wait_ns / 1e9)
                dialect.handle(message, arrival)

    # ---- in-process control (the control socket calls these too) --------------------
    def inject(self, fault: str, **params: Any) -> dict[str, Any]:
        """Apply one fault; raises ``FaultRequestError`` for bad requests."""
        values = validate_fault(fault, params)
        self.events.emit("fault", cause="injected", fault=fault, **values)
        log.warning("fault injected: %s %s", fault, values)
        core, faults = self.core, self.link_faults
        if fault == "coil_overtemp":
            core.pin_coil_overtemp(values["celsius"])
        elif fault == "coil_removed":
            core.remove_coil()
        elif fault == "device_error":
            core.set_error(values["code"])
        elif fault in ("garble", "drop"):
            if "seed" in values:
                faults.rng.seed(values["seed"])
            if fault == "garble":
                faults.garble_rate = values["rate"]
            else:
                faults.drop_rate = values["rate"]
        elif fault == "delay":
            faults.delay_s = values["seconds"]
        elif fault == "stuck":
            faults.stuck = True
        elif fault == "unplug":
            self.link.unplug(cause="fault_injected")
        elif fault == "coil_temperature":
            core.set_coil_temperature(values["celsius"])
        return self.state()

    def clear(self) -> dict[str, Any]:
        """Remove every injected fault; a pulled cable is plugged back in (new pty,
        same link path)."""
        self.core.clear_faults()
        self.link_faults.clear()
        if not self.link.plugged:
            self.link.plug()
            self.events.emit("plugged", cause="fault_cleared")
        self.events.emit("fault_cleared", cause="clear")
        return self.state()

    def state(self) -> dict[str, Any]:
        core = self.core
        return {
            "device": self.config.device,
            "link": str(self.config.link),
            "plugged": self.link.plugged,
            "remote": core.remote,
            "armed": core.armed,
            "ready": core.ready,
            "train_running": core.train_running,
            "waiting": core.waiting,
            "power_pct": core.power_a,
            "power_b_pct": core.power_b,
            "enhanced": core.enhanced,
            "coil": self.config.coil_profile.name,
            "coil_present": core.coil_present,
            "coil_temperature_c": round(core.coil_temperature_c(), 2),
            "error_code": core.error_code,
            "pulse_count": core.pulse_count,
            "trains": core.train_count,
            "single_pulses": core.single_pulse_count,
            "coil_safety_ignored": core.coil_safety_ignored,
            "faults": {**self.link_faults.as_dict(),
                       "coil_overtemp_c": core.coil_overtemp_pin_c,
                       "unplugged": not self.link.plugged},
            "params": self.dialect.state(),
        }
