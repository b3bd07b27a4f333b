"""The hardware abstraction layer: what the daemon may ask of any stimulator.

A third party adds a device by subclassing ``Stimulator`` and registering it under
the ``stimd.drivers`` entry-point group. Everything vendor-specific — units, ITI
semantics, framing, keep-alive — stays behind this interface.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

from protocols.capabilities import DeviceCapabilities
from protocols.schedule import TrainSpec

from .errors import DeviceTimeout, DriverError


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    model: str                   # registry name of the unit that answered
    vendor: str
    firmware: str
    serial_number: str | None    # when the dialect reports one
    dialect: str                 # "magstim" | "magventure" | a plugin's own


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    armed: bool
    ready: bool
    train_running: bool
    coil_present: bool
    coil_temperature_c: float | None
    error_present: bool
    error_code: str | None
    remote_control: bool
    extra: dict[str, object] = field(default_factory=dict)


FaultListener = Callable[[DriverError], None]

_TRAIN_POLL_S = 0.1


class Stimulator(ABC):
    """One connected stimulator, owned by one task.

    Every method bounds its I/O with a timeout and raises a ``DriverError`` subclass.
    Anomalies found outside a call (keep-alive gap, link loss, an unsolicited error
    frame) go to the fault listener set with ``on_fault``; the daemon trips on them.
    """

    #: registry name, e.g. "magstim-rapid2"
    name: str

    @abstractmethod
    async def connect(self) -> DeviceIdentity:
        """Open the port, take remote control, identify; raise ``IdentityMismatch``
        when the unit is not the model this driver was created for."""

    @property
    @abstractmethod
    def identity(self) -> DeviceIdentity: ...

    @property
    @abstractmethod
    def capabilities(self) -> DeviceCapabilities: ...

    @abstractmethod
    def on_fault(self, listener: FaultListener) -> None:
        """Register the callback for anomalies detected between calls."""

    @abstractmethod
    async def set_intensity(self, pct_mso: int) -> None: ...

    @abstractmethod
    async def configure_train(self, train: TrainSpec) -> None:
        """Load one compiled train (rate, pulses, bursts) in vendor units; read back."""

    @abstractmethod
    async def arm(self) -> None:
        """Arm and return once the device reports ready to fire."""

    @abstractmethod
    async def fire_train(self) -> None:
        """Fire the configured train; returns when the device accepted the command."""

    async def wait_train_complete(self, timeout_s: float) -> int | None:
        """Wait until the device reports the fired train finished; return its pulse count.

        The daemon calls this after ``fire_train`` so that it never starts the next train,
        nor counts a train as delivered, on a guess. The count is what the device itself
        reported (``None`` when the dialect cannot count pulses). Raises
        ``DeviceTimeout`` when the train is still running after ``timeout_s``.

        This default polls ``read_status`` until ``train_running`` clears; drivers that
        learn more from their device override it.
        """
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    status = await self.read_status()
                    if not status.train_running:
                        break
                    await asyncio.sleep(_TRAIN_POLL_S)
        except TimeoutError:
            raise DeviceTimeout(f"train still running after {timeout_s:.1f} s") from None
        return None

    @abstractmethod
    async def disarm(self) -> None:
        """Disarm. Idempotent, valid in every state, best effort after link loss:
        it never raises for an already-disarmed or disconnected device."""

    @abstractmethod
    async def read_status(self) -> DeviceStatus: ...

    @abstractmethod
    async def close(self) -> None:
        """Disarm, release remote control, close the port. Idempotent."""
