"""The composition root: config → record → driver → controller → supervisor → MQTT.

Everything runs in one TaskGroup so no task outlives the daemon and no exception is
lost. SIGTERM and SIGINT stop the session (disarm first), close the session record and
the device, and return well inside the unit's ``TimeoutStopSec`` (``STOP_BUDGET_S``).
If the daemon dies instead, the device's own keep-alive expiry disarms it (habit 2) and
the next start closes the session as interrupted.
"""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from drivers.base import DeviceIdentity, Stimulator
from drivers.registry import create_driver
from stimd import __version__
from stimd.commands import Event
from stimd.config import StimdConfig
from stimd.controller import HandshakeFailed, SessionController, capabilities_json
from stimd.mqtt import serve_mqtt
from stimd.record import SessionRecord
from stimd.sdnotify import SystemdNotifier
from stimd.supervisor import TripCode

log = structlog.get_logger("stimd.daemon")

#: What shutdown may take before the process exits anyway; the unit's TimeoutStopSec
#: (systemd/stimd@.service) must stay above it. Disarm is bounded by the supervisor's
#: disarm_timeout_s (≤ 5 s) and closing the driver by 3 s.
STOP_BUDGET_S = 10.0


class _StopRequested(Exception):
    """Raised inside the TaskGroup to end it after an orderly shutdown."""


@dataclass(slots=True)
class DaemonLifecycle:
    """What the daemon is doing, for the MQTT ``status`` topic and sd_notify STATUS."""

    phase: str = "starting"      # starting | ready | stopping
    signal_name: str | None = None

    def __call__(self) -> str:
        return self.phase


def build_driver_factory(config: StimdConfig) -> Callable[[], Stimulator]:
    """A factory of fresh drivers for the configured port only (never a simulator)."""
    device = config.device

    def factory() -> Stimulator:
        return create_driver(
            device.driver, device.port, mains_voltage=device.mains_voltage,
            unlock_code=device.unlock_code, coil=device.coil,
        )

    return factory


#: Version of the ``meta`` payload's layout: bumped when a field is removed or changes
#: meaning (added fields keep it).
META_SCHEMA_VERSION = 1

#: Linux Documentation/admin-guide/devices.txt: "136-143 char Unix98 PTY slaves". Used
#: only when /proc/devices (which names the registered majors) cannot be read.
_UNIX98_PTY_SLAVE_MAJORS = frozenset(range(136, 144))
#: pyserial URL handlers that reach a serial port over the network
_NETWORK_SCHEMES = frozenset({"socket", "rfc2217"})


@dataclass(frozen=True, slots=True)
class PortFacts:
    """What the operating system says about the configured port."""

    port: str                    # as configured
    url_scheme: str | None       # "socket" for socket://host:port; None for a path
    resolved: str | None         # the path after following symlinks
    exists: bool
    char_major: int | None       # major device number when it is a character device


def simulated_verdict(
    facts: PortFacts, pty_slave_majors: frozenset[int]
) -> tuple[bool | None, str]:
    """Whether the device behind the port is simulated, and the fact that decided it.

    The daemon never guesses: a pseudo-terminal is what the simulator serves (hardware
    sits behind a USB or on-board serial device); a network serial server could be
    either, so it says unknown.
    """
    if facts.url_scheme is not None:
        if facts.url_scheme in _NETWORK_SCHEMES:
            return None, "network serial server: unknown"
        return None, f"serial URL {facts.url_scheme}://: unknown"
    if not facts.exists:
        return None, "port not found: unknown"
    if facts.char_major is None:
        return None, "port is not a character device: unknown"
    if facts.char_major in pty_slave_majors:
        return True, "port is a pseudo-terminal"
    return False, (
        f"port is a character device (major {facts.char_major}), not a pseudo-terminal"
    )


def port_facts(port: str) -> PortFacts:
    """Resolve ``port`` (symlinks followed) and stat it; never raises."""
    if "://" in port:        # pyserial's own test for a URL
        return PortFacts(port, port.split("://", 1)[0].lower(), None, False, None)
    resolved = os.path.realpath(port)
    try:
        info = os.stat(resolved)
    except OSError:
        return PortFacts(port, None, resolved, False, None)
    major = os.major(info.st_rdev) if stat.S_ISCHR(info.st_mode) else None
    return PortFacts(port, None, resolved, True, major)


def pty_slave_majors(proc_devices: Path = Path("/proc/devices")) -> frozenset[int]:
    """The major numbers the kernel registered for pty slaves ("pts")."""
    try:
        lines = proc_devices.read_text().splitlines()
    except OSError:
        return _UNIX98_PTY_SLAVE_MAJORS
    majors: set[int] = set()
    in_char = False
    for line in lines:
        if line.strip().endswith(":"):
            in_char = line.strip() == "Character devices:"
            continue
        parts = line.split()
        if in_char and len(parts) == 2 and parts[1] == "pts" and parts[0].isdigit():
            majors.add(int(parts[0]))
    return frozenset(majors) or _UNIX98_PTY_SLAVE_MAJORS


def device_meta(config: StimdConfig, controller: SessionController) -> dict[str, Any]:
    """The retained ``meta`` payload: what this daemon drives and under which limits."""
    identity = controller.identity
    caps = controller.capabilities
    facts = port_facts(config.device.port)
    simulated, basis = simulated_verdict(facts, pty_slave_majors())
    return {
        "schema_version": META_SCHEMA_VERSION,
        "device_id": config.device.id,
        "driver": config.device.driver,
        "coil": config.device.coil,
        "model": identity.model if identity else None,
        "vendor": identity.vendor if identity else None,
        "dialect": identity.dialect if identity else None,
        "firmware": identity.firmware if identity else None,
        "serial_number": identity.serial_number if identity else None,
        "port": config.device.port,
        "port_resolved": facts.resolved,
        "simulated": simulated,
        "simulated_basis": basis,
        "capabilities": None if caps is None else capabilities_json(caps),
        "site": config.site.model_dump(mode="json"),
        "supervisor": config.supervisor.model_dump(mode="json"),
    }


async def run_daemon(
    config: StimdConfig,
    record: SessionRecord,
    notifier: SystemdNotifier,
    *,
    controller: SessionController | None = None,
) -> int:
    """Serve until SIGTERM/SIGINT; 0 after an orderly stop, 1 if the device never answered."""
    loop = asyncio.get_running_loop()
    controller = controller or SessionController(
        config=config, driver_factory=build_driver_factory(config), record=record
    )
    lifecycle = DaemonLifecycle()
    stop = asyncio.Event()
    boot_id = uuid.uuid4().hex

    def on_signal(sig: signal.Signals) -> None:
        log.warning("signal received", signal=sig.name)
        lifecycle.signal_name = sig.name
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)

    def on_loop_exception(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        log.critical("unhandled exception in the event loop",
                     message=context.get("message"), error=repr(exc))
        controller.supervisor.trip_soon(
            TripCode.UNEXPECTED_EXCEPTION,
            f"unhandled: {context.get('message')}: {exc!r}",
        )

    loop.set_exception_handler(on_loop_exception)

    last_status: list[str] = []

    def on_event(event: Event) -> None:
        if event.type == "state_changed":
            line = _status_line(event.payload)
            if not last_status or last_status[-1] != line:
                last_status[:] = [line]
                notifier.status(line)

    controller.add_listener(on_event)
    log.info("starting", version=__version__, config_digest=config.digest(),
             device_id=config.device.id, driver=config.device.driver, port=config.device.port)
    notifier.status(f"connecting to {config.device.driver} on {config.device.port}")

    ready = asyncio.Event()

    def on_ready(identity: DeviceIdentity) -> None:
        ready.set()
        lifecycle.phase = "ready"
        notifier.ready()
        notifier.status(f"ready: {identity.model} firmware {identity.firmware}")
        simulated, basis = simulated_verdict(
            port_facts(config.device.port), pty_slave_majors()
        )
        log.info("ready", model=identity.model, firmware=identity.firmware,
                 simulated=simulated, simulated_basis=basis)

    exit_code = 0
    try:
        async with asyncio.TaskGroup() as tg:
            serve = tg.create_task(controller.serve(on_ready=on_ready), name="controller")
            tg.create_task(_watchdog(controller, notifier), name="watchdog")
            if config.mqtt is not None:
                tg.create_task(
                    _mqtt_when_ready(config, controller, lifecycle, boot_id, ready), name="mqtt"
                )
            await stop.wait()
            lifecycle.phase = "stopping"
            notifier.stopping()
            notifier.status(f"stopping ({lifecycle.signal_name or 'requested'})")
            if not serve.done():
                try:
                    async with asyncio.timeout(STOP_BUDGET_S):
                        await controller.shutdown(
                            f"daemon stopping on {lifecycle.signal_name or 'request'}"
                        )
                except TimeoutError:
                    log.critical("shutdown exceeded its budget", budget_s=STOP_BUDGET_S)
            raise _StopRequested
    except* _StopRequested:
        log.info("stopped")
    except* HandshakeFailed as group:
        for exc in _leaves(group):
            log.critical("device handshake failed", reason=str(exc))
        exit_code = 1
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return exit_code


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """The exceptions inside nested groups (each TaskGroup level wraps once)."""
    found: list[BaseException] = []
    for exc in group.exceptions:
        found.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found


async def _mqtt_when_ready(
    config: StimdConfig,
    controller: SessionController,
    lifecycle: DaemonLifecycle,
    boot_id: str,
    ready: asyncio.Event,
) -> None:
    """Start MQTT once the handshake filled in the device's identity for ``meta``."""
    mqtt = config.mqtt
    if mqtt is None:
        return
    await ready.wait()
    await serve_mqtt(
        mqtt, controller, device_id=config.device.id, boot_id=boot_id,
        version=__version__, meta=device_meta(config, controller), lifecycle=lifecycle,
        operators=config.operators.names,
    )


async def _watchdog(controller: SessionController, notifier: SystemdNotifier) -> None:
    """WATCHDOG=1 only while the supervisor's own loop is ticking."""
    period = notifier.watchdog_interval()     # already half of WatchdogSec
    if period is None:
        return
    while True:
        await asyncio.sleep(period)
        if controller.supervisor.alive(max_silence_s=period):
            notifier.watchdog()
        else:
            log.critical("supervisor silent: withholding the systemd watchdog ping")


def _status_line(snapshot: dict[str, Any]) -> str:
    """One line for ``systemctl status`` (device texts may carry newlines: flattened)."""
    return " ".join(_status_text(snapshot).split())


def _status_text(snapshot: dict[str, Any]) -> str:
    state = snapshot.get("state")
    progress = snapshot.get("progress") or {}
    fault = snapshot.get("fault")
    if fault:
        return f"FAULT: {fault.get('cause')}: {fault.get('detail')}"
    if progress:
        return (
            f"{state}: train {progress.get('train')}/{progress.get('trains')}, "
            f"{progress.get('pulses_delivered')}/{progress.get('pulses_planned')} pulses"
        )
    return str(state)

