"""What every serial stimulator driver does the same way, whatever its dialect.

``SerialStimulator`` holds the plumbing that the Magstim and MagVenture drivers share
and that a third-party serial driver can reuse: the fault listener (a lost link is
reported once), identity and capabilities, connecting (open the port, hand it to the
dialect's link, handshake, start the keep-alive — and undo all of it when any step
fails), arming that disarms again on any failure, a ``disarm`` that is idempotent and
never raises, and ``close``.

A subclass supplies the dialect through a handful of hooks: ``_open_link``,
``_handshake``, ``_renew``/``_last_renewal`` (the keep-alive), ``_disarm_and_confirm``
and, where its unit needs them, ``_release``, ``_shutdown_link`` and
``_on_disarm_unconfirmed``. Everything else of ``Stimulator`` (settings, arming, firing,
status) stays the subclass's own.
"""

from __future__ import annotations

import contextlib
import logging
from abc import abstractmethod
from collections.abc import AsyncIterator, Collection
from typing import Generic, Protocol, TypeVar

from protocols.capabilities import DeviceCapabilities, device_profile

from .base import DeviceIdentity, FaultListener, Stimulator
from .errors import (
    DeviceFault,
    DeviceRejected,
    DriverError,
    InvalidSetting,
    LinkLost,
    ReadbackMismatch,
)
from .keepalive import KeepAlive, KeepAlivePolicy
from .transport import Transport, open_transport
from .uninterrupted import finish_even_if_cancelled

log = logging.getLogger(__name__)


class SerialLink(Protocol):
    """The dialect's owner of the port: whatever it is, it exposes its transport."""

    @property
    def transport(self) -> Transport: ...


LinkT = TypeVar("LinkT", bound=SerialLink)


def builtin_capabilities(
    name: str, models: Collection[str], vendor: str, mains_voltage: int | None
) -> DeviceCapabilities:
    """The limit source of a built-in model; a name or mains voltage the model table
    does not know is an ``InvalidSetting`` naming it."""
    if name not in models:
        raise InvalidSetting(f"driver name {name!r}: not a {vendor} model {tuple(models)}")
    try:
        return device_profile(name, mains_voltage)
    except ValueError as exc:
        raise InvalidSetting(f"mains_voltage={mains_voltage!r}: {exc}") from exc


class SerialStimulator(Stimulator, Generic[LinkT]):
    """A stimulator on one serial port, owned through one link of type ``LinkT``.

    State the subclass reads and writes: ``_may_be_armed`` (the keep-alive renews at its
    armed period and the watchdog looks for gaps while it is true), ``_armed_confirmed``
    (``arm`` saw the unit ready; a renewal that finds it disarmed is a fault), and
    ``_disarm_generation`` (bumped by every ``disarm``, so an ``arm`` in progress can
    tell it was overtaken).
    """

    def __init__(
        self,
        name: str,
        port: str,
        *,
        capabilities: DeviceCapabilities,
        baudrate: int,
        keepalive_policy: KeepAlivePolicy,
        coil: str | None = None,
    ) -> None:
        self.name = name
        self._port = port
        self._capabilities = capabilities
        self._baudrate = baudrate
        self._coil = coil
        self._link: LinkT | None = None
        self._identity: DeviceIdentity | None = None
        self._listener: FaultListener | None = None
        self._link_loss_reported = False
        self._may_be_armed = False
        self._armed_confirmed = False
        self._disarm_generation = 0
        self._closed = False
        self._keepalive = KeepAlive(
            name=f"{name} on {port}",
            policy=keepalive_policy,
            renew=self._renew,
            last_renewal=self._last_renewal,
            may_be_armed=lambda: self._may_be_armed,
            report=self._report,
        )

    # -- identity and faults -------------------------------------------------------------
    @property
    def identity(self) -> DeviceIdentity:
        if self._identity is None:
            raise RuntimeError(f"{self.name}: identity is known only after connect()")
        return self._identity

    @property
    def capabilities(self) -> DeviceCapabilities:
        return self._capabilities

    def on_fault(self, listener: FaultListener) -> None:
        self._listener = listener

    def _report(self, error: DriverError) -> None:
        """Hand an anomaly to the fault listener; a lost link is reported once."""
        if isinstance(error, LinkLost):
            if self._link_loss_reported:
                return
            self._link_loss_reported = True
        log.error("%s fault: %s: %s", self.name, error.code, error.reason)
        if self._listener is not None:
            self._listener(error)

    # -- connection ------------------------------------------------------------------------
    def _require_link(self) -> LinkT:
        if self._link is None or self._closed:
            raise LinkLost(f"{self.name}: not connected")
        return self._link

    async def connect(self) -> DeviceIdentity:
        if self._link is not None or self._closed:
            raise RuntimeError(f"{self.name}: connect() is called once per driver instance")
        transport = await open_transport(self._port, baudrate=self._baudrate)
        transport.set_on_lost(self._report)
        link = self._open_link(transport)
        self._link = link
        try:
            self._identity = await self._handshake()
            self._keepalive.start()
        except BaseException:
            await self._keepalive.stop()
            await self._shutdown_link(link)
            await transport.close()
            self._closed = True
            raise
        log.info("connected %s: %s", self.name, self._identity)
        return self._identity

    # -- arming ------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _arming(self) -> AsyncIterator[None]:
        """Wrap the commands that arm the unit and wait until it is ready.

        On entry the keep-alive switches to its armed period (the unit may be armed from
        the first command on); if the block fails in any way — an error, a timeout, a
        cancellation — the unit is disarmed before the exception propagates; when it
        completes, the unit counts as armed by ``arm`` (``_armed_confirmed``). Without a
        running keep-alive nothing would renew the unit or watch the link, so arming is
        refused.
        """
        if not self._keepalive.running:
            raise DeviceFault(
                f"{self.name}: refusing to arm without a running keep-alive (stopped after"
                " an unconfirmed disarm or a failure); reconnect with a fresh driver"
            )
        self._may_be_armed = True
        self._keepalive.nudge()
        try:
            yield
        except BaseException:
            await self.disarm()
            raise
        self._armed_confirmed = True

    def _raise_if_overtaken(self, generation: int) -> None:
        """An ``arm`` that started at ``generation`` gives up once a disarm came since."""
        if self._disarm_generation != generation:
            raise DeviceRejected(f"{self.name}: arming cancelled by a disarm")

    def _raise_on_differences(self, differences: list[str]) -> None:
        """Read-back differences, one phrase each, refuse arming as ``ReadbackMismatch``."""
        if differences:
            raise ReadbackMismatch(f"{self.name} read back: " + "; ".join(differences))

    async def disarm(self) -> None:
        """Idempotent, valid in every state, never raises.

        Without a usable link there is nothing to send (the unit is reached by its own
        timeout, or was never armed by us). Otherwise the dialect disarms and confirms;
        when it cannot, the fault is reported and ``_on_disarm_unconfirmed`` runs.
        A disarm runs to its end even when its caller is cancelled (every step is
        bounded): one abandoned while waiting for the port would leave the unit armed,
        and the keep-alive would keep it so. The cancellation is re-raised afterwards.
        """
        self._disarm_generation += 1
        self._armed_confirmed = False
        link = self._link
        if link is None or self._closed or not link.transport.is_open:
            self._may_be_armed = False
            return
        await finish_even_if_cancelled(self._disarm_or_report(link), f"{self.name}: disarm")

    async def _disarm_or_report(self, link: LinkT) -> None:
        try:
            await self._disarm_and_confirm(link)
        except DriverError as exc:
            self._report(exc)
            await self._on_disarm_unconfirmed(exc)
            return
        except Exception as exc:  # a bug must not turn disarm into a raising call
            log.exception("%s: disarm failed unexpectedly", self.name)
            error = DeviceFault(f"{self.name}: disarm failed unexpectedly: {exc!r}")
            self._report(error)
            await self._on_disarm_unconfirmed(error)
            return
        self._may_be_armed = False

    async def close(self) -> None:
        """Disarm, stop the keep-alive, release the unit, close the port. Idempotent;
        raises nothing for a unit that no longer answers or a lost link. Like ``disarm``
        it runs to its end when its caller is cancelled: stopping half-way would leave
        the keep-alive task running and the port held."""
        if self._closed:
            return
        await finish_even_if_cancelled(self._close(), f"{self.name}: close")

    async def _close(self) -> None:
        if self._closed:
            return
        await self.disarm()
        await self._keepalive.stop()
        link = self._link
        self._closed = True
        if link is None:
            return
        if link.transport.is_open:
            try:
                await self._release(link)
            except DriverError as exc:
                log.warning("%s: releasing the unit failed: %s", self.name, exc.reason)
        await self._shutdown_link(link)
        await link.transport.close()

    # -- dialect hooks -----------------------------------------------------------------
    @abstractmethod
    def _open_link(self, transport: Transport) -> LinkT:
        """Wrap the freshly opened transport in the dialect's link (start its reader)."""

    @abstractmethod
    async def _handshake(self) -> DeviceIdentity:
        """Take control of the unit and identify it (``IdentityMismatch`` when it is not
        the configured model); leave it disarmed."""

    @abstractmethod
    async def _renew(self) -> None:
        """One keep-alive renewal; raise a ``DriverError`` for what it finds wrong."""

    @abstractmethod
    def _last_renewal(self) -> float:
        """Monotonic time of the last command the unit accepted."""

    @abstractmethod
    async def _disarm_and_confirm(self, link: LinkT) -> None:
        """Send the dialect's disarm and read back that the unit is disarmed; raise a
        ``DriverError`` when it cannot be confirmed."""

    async def _on_disarm_unconfirmed(self, error: DriverError) -> None:
        """Last resort when ``disarm`` could not confirm (already reported). Default:
        nothing more can be done from the host."""

    async def _release(self, link: LinkT) -> None:
        """Give up remote control on ``close``, over a link still open; a ``DriverError``
        is logged, not raised (default: the dialect has no remote control to give up)."""

    async def _shutdown_link(self, link: LinkT) -> None:
        """Stop the link's own tasks before the port closes (default: it has none)."""

