"""The MagVenture driver: MagPro R30 and X100 behind ``Stimulator``.

Concerns live in their own modules: ``link`` (reader task, replies matched by command
id), ``frames`` (payload decoding), ``units`` (TrainSpec → MagPro settings), and
``SerialStimulator`` (connect, disarm and close plumbing shared with every serial
driver). The MagPro has no keep-alive of its own — it keeps remote control through
host silence — so the driver's keep-alive here is link supervision: a status request
every 0.4 s while the unit may be enabled (1 s otherwise) that surfaces an unplugged,
stuck or garbling link, and a unit that disabled itself, through the fault listener.
Because the unit will not stop on its own when the host dies, the daemon's disarm path
is the only one: see ``docs/drivers.md``.

Unsolicited frames are parsed as they arrive: di/dt frames (one per pulse) are counted
so ``wait_train_complete`` returns the pulses the unit itself reported.
"""

from __future__ import annotations

import asyncio
import logging
import time

from protocols.capabilities import MAGVENTURE_MODELS
from protocols.schedule import TrainSpec

from ..base import DeviceIdentity, DeviceStatus
from ..errors import (
    DeviceCondition,
    DeviceFault,
    DeviceRejected,
    DeviceTimeout,
    DriverError,
    IdentityMismatch,
    InvalidSetting,
)
from ..keepalive import KeepAlivePolicy
from ..serial_stimulator import SerialStimulator, builtin_capabilities
from ..transport import Transport
from ..units import check_intensity
from .codec import (
    CMD_AMPLITUDE,
    CMD_ENABLE,
    CMD_EXTENDED_STATUS,
    CMD_MODE,
    CMD_SINGLE_FIRE,
    CMD_START_TRAIN,
    CMD_STATUS,
    burst_ipi_index,
)
from .frames import (
    SHORT_AMPLITUDE,
    SHORT_DIDT,
    SHORT_PAGE_TRAIN,
    WAVEFORMS,
    ExtendedStatus,
    ModeSettings,
    ShortFrame,
    Status,
)
from .link import BAUDRATE, MagVentureLink
from .units import MagVentureTrain, magventure_train

log = logging.getLogger(__name__)

KEEPALIVE_POLICY = KeepAlivePolicy(armed_period_s=0.4, idle_period_s=1.0, gap_limit_s=0.75)
_POLL_S = 0.1
_STATUS_REPLY_BYTES = 13
_EXTENDED_REPLY_BYTES = 19
_MODE_REPLY_BYTES = 14
#: Accepted status-byte models per registry name (options do not change the dialect).
_MODEL_CODES = {"magventure-r30": (0, 2, 4), "magventure-x100": (1, 3)}
_SHORT_REPLY_BYTES = 8
_BA_RATIO_ONE = 100
_DEFAULT_IPI_TENTHS_MS = 200
_AMPLITUDE_REPORT = frozenset({SHORT_AMPLITUDE})
_PAGE_REPORT = frozenset({SHORT_PAGE_TRAIN})
_FIRE_REPORTS = frozenset({SHORT_AMPLITUDE, SHORT_DIDT})
#: The MagPro reports no "ready" state; it charges within about 1 s of being enabled
#: (the simulator models 1.0 s), so arming waits that long plus a margin.
CHARGE_TIME_S = 1.2
_TRAILING_FRAMES_S = 0.3


class MagVentureDriver(SerialStimulator[MagVentureLink]):
    """One MagPro on one serial port."""

    def __init__(
        self, name: str, port: str, *, mains_voltage: int | None = None, coil: str | None = None
    ) -> None:
        super().__init__(
            name,
            port,
            capabilities=builtin_capabilities(
                name, MAGVENTURE_MODELS, "MagVenture", mains_voltage
            ),
            baudrate=BAUDRATE,
            keepalive_policy=KEEPALIVE_POLICY,
            coil=coil,
        )
        self._model_code = 0
        self._expected: MagVentureTrain | None = None
        self._expected_amplitude: int | None = None
        self._last_renewal_at = time.monotonic()
        self._pulses_reported = 0
        self._fired_pulses_base: int | None = None
        self._fired_at = 0.0
        self._fired_span_s = 0.0
        self._last_didt: tuple[int, int] | None = None

    # -- connection ----------------------------------------------------------------
    def _open_link(self, transport: Transport) -> MagVentureLink:
        link = MagVentureLink(
            transport, on_unsolicited=self._on_unsolicited, on_error=self._report
        )
        link.start()
        return link

    async def _handshake(self) -> DeviceIdentity:
        identity = self._identify(await self._status())
        if (await self._enable(False)).status.enabled:
            raise DeviceFault(f"{self.name}: still enabled after the disable command")
        return identity

    async def _shutdown_link(self, link: MagVentureLink) -> None:
        await link.stop()

    def _identify(self, status: Status) -> DeviceIdentity:
        model = status.status.model
        if model not in _MODEL_CODES[self.name]:
            raise IdentityMismatch(
                f"configured {self.name}, but the unit reports model {status.status.model_name}"
            )
        self._model_code = model
        return DeviceIdentity(
            model=self.name,
            vendor="magventure",
            firmware="not reported",
            serial_number=status.serial_number,
            dialect="magventure",
        )

    # -- unsolicited frames ----------------------------------------------------------
    def _on_unsolicited(self, payload: bytes) -> None:
        if len(payload) == 4:
            try:
                frame = ShortFrame.decode(payload)
            except DriverError as exc:
                self._report(exc)
                return
            if frame.kind == SHORT_DIDT:
                self._count_pulse(frame)
            if self._armed_confirmed and not frame.status.enabled:
                self._armed_confirmed = False
                self._report(DeviceFault(f"{self.name} disabled itself (unsolicited frame)",
                                         DeviceCondition.DEVICE_DISARMED))
            return
        log.debug("%s: unsolicited frame %s", self.name, payload.hex())

    def _count_pulse(self, frame: ShortFrame) -> None:
        self._pulses_reported += 1
        self._last_didt = (frame.value1, frame.value2)

    # -- queries -------------------------------------------------------------------
    async def _status(self) -> Status:
        payload = await self._require_link().request(
            bytes([CMD_STATUS]), frozenset({CMD_STATUS}), _STATUS_REPLY_BYTES
        )
        self._last_renewal_at = time.monotonic()
        return Status.decode(payload)

    async def _extended_status(self) -> ExtendedStatus:
        payload = await self._require_link().request(
            bytes([CMD_EXTENDED_STATUS]), frozenset({CMD_EXTENDED_STATUS}), _EXTENDED_REPLY_BYTES
        )
        self._last_renewal_at = time.monotonic()
        return ExtendedStatus.decode(payload)

    async def _mode(self, payload: bytes = bytes([CMD_MODE, 0])) -> ModeSettings:
        """Get (default) or set the mode settings; both are answered with the mode frame."""
        reply = await self._require_link().request(
            payload, frozenset({CMD_MODE}), _MODE_REPLY_BYTES
        )
        return ModeSettings.decode(reply)

    async def _amplitude(self, amplitude: int) -> ShortFrame:
        reply = await self._require_link().request(
            bytes([CMD_AMPLITUDE, amplitude]), _AMPLITUDE_REPORT, _SHORT_REPLY_BYTES
        )
        return ShortFrame.decode(reply)

    async def _enable(self, on: bool) -> ShortFrame:
        reply = await self._require_link().request(
            bytes([CMD_ENABLE, int(on)]), _AMPLITUDE_REPORT, _SHORT_REPLY_BYTES
        )
        self._last_renewal_at = time.monotonic()
        return ShortFrame.decode(reply)

    async def read_status(self) -> DeviceStatus:
        extended = await self._extended_status()
        status = extended.base
        extra: dict[str, object] = {
            "serial_number": status.serial_number,
            "model": status.status.model_name,
            "waveform": WAVEFORMS[status.status.waveform],
            "coil_type": status.coil_type,
            "amplitude_pct_mso": status.amplitude_a,
            "page": extended.page,
            "pulses_reported": self._pulses_reported,
        }
        if self._last_didt is not None:
            extra["last_didt"] = list(self._last_didt)
        if self._coil is not None:
            extra["configured_coil"] = self._coil
        return DeviceStatus(
            armed=status.status.enabled,
            ready=status.status.enabled and not extended.train_running,
            train_running=extended.train_running,
            coil_present=status.coil_type != 0,
            coil_temperature_c=float(status.coil_temperature_c),
            error_present=False,
            error_code=None,
            remote_control=True,
            extra=extra,
        )

    # -- settings ------------------------------------------------------------------
    async def set_intensity(self, pct_mso: int) -> None:
        amplitude = check_intensity(pct_mso, self._capabilities)
        self._expected_amplitude = amplitude
        await self._amplitude(amplitude)
        await self._check_readback()

    async def configure_train(self, train: TrainSpec) -> None:
        """Set amplitude, waveform/burst (0x09) and the train (0x06), then read back.

        The MagPro has no train read-back; amplitude (status) and mode (mode frame) are
        verified, and the pulses it delivers are counted from its di/dt reports.
        """
        settings = magventure_train(train, self._capabilities)
        self._expected = settings
        self._expected_amplitude = settings.amplitude
        await self._amplitude(settings.amplitude)
        await self._mode(self._mode_payload(settings))
        if not settings.single:
            await self._require_link().request(
                settings.set_train_payload(), _PAGE_REPORT, _SHORT_REPLY_BYTES
            )
        await self._check_readback()

    def _mode_payload(self, settings: MagVentureTrain) -> bytes:
        """0x09 set: model, Standard mode, Normal direction, waveform, 5 − burst pulses,
        IPI ×10 and B/A ratio ×100 (16-bit big-endian). Without bursts the burst fields
        keep valid values (2 pulses, 20 ms) that the Biphasic waveform ignores."""
        burst = settings.burst_pulses if settings.burst_pulses > 1 else 2
        ipi = settings.ipi_tenths_ms if settings.burst_pulses > 1 else _DEFAULT_IPI_TENTHS_MS
        return (
            bytes([CMD_MODE, 1, self._model_code, 0, 0, settings.waveform, 5 - burst])
            + ipi.to_bytes(2, "big")
            + _BA_RATIO_ONE.to_bytes(2, "big")
        )

    async def _check_readback(self) -> None:
        status = await self._status()
        differences: list[str] = []
        if self._expected_amplitude is not None and status.amplitude_a != self._expected_amplitude:
            differences.append(
                f"amplitude {status.amplitude_a} %MSO != set {self._expected_amplitude}"
            )
        expected = self._expected
        if expected is not None:
            mode = await self._mode()
            if mode.waveform != expected.waveform:
                differences.append(
                    f"waveform {WAVEFORMS[mode.waveform]} != set {WAVEFORMS[expected.waveform]}"
                )
            if expected.burst_pulses > 1:
                if mode.burst_pulses != expected.burst_pulses:
                    differences.append(
                        f"burst pulses {mode.burst_pulses} != set {expected.burst_pulses}"
                    )
                if mode.ipi_index != burst_ipi_index(expected.ipi_tenths_ms):
                    differences.append(
                        f"IPI index {mode.ipi_index} != that of the set"
                        f" {expected.ipi_tenths_ms / 10} ms"
                    )
        self._raise_on_differences(differences)

    # -- arming and firing -----------------------------------------------------------
    async def arm(self) -> None:
        """Enable, then wait the charge time: the MagPro reports no "ready" state."""
        if self._expected is None:
            raise InvalidSetting(f"{self.name}: arm before a train was configured")
        generation = self._disarm_generation
        await self._check_readback()
        async with self._arming():
            report = await self._enable(True)
            if not report.status.enabled:
                raise DeviceRejected(
                    f"{self.name} refused to enable (coil absent or too hot, or a device error)"
                )
            await asyncio.sleep(CHARGE_TIME_S)
            self._raise_if_overtaken(generation)
            if not (await self._status()).status.enabled:
                raise DeviceFault(f"{self.name} disabled itself while charging",
                                  DeviceCondition.DEVICE_DISARMED)

    async def fire_train(self) -> None:
        expected = self._expected
        if not self._armed_confirmed or expected is None:
            raise DeviceRejected(f"{self.name}: fire refused, the unit was not armed by arm()")
        link = self._require_link()
        self._fired_pulses_base = self._pulses_reported
        if expected.single:
            reply = await link.request(
                bytes([CMD_SINGLE_FIRE, 1]), _FIRE_REPORTS, _SHORT_REPLY_BYTES
            )
            self._fired_at = time.monotonic()
            self._fired_span_s = 0.0
            frame = ShortFrame.decode(reply)
            if frame.kind != SHORT_DIDT:
                raise DeviceRejected(f"{self.name} refused the single fire")
            self._count_pulse(frame)
            return
        reply = await link.request(bytes([CMD_START_TRAIN]), _PAGE_REPORT, _SHORT_REPLY_BYTES)
        self._fired_at = time.monotonic()
        self._fired_span_s = (expected.pulses - 1) / (expected.rate_tenths_hz / 10)
        if not ShortFrame.decode(reply).value2:
            raise DeviceRejected(f"{self.name} did not start the train (train status 0)")

    def _expected_pulse_count(self) -> int:
        expected = self._expected
        assert expected is not None
        return expected.pulses * expected.burst_pulses

    async def wait_train_complete(self, timeout_s: float) -> int | None:
        """Poll the extended status until the train has ended; return the pulses the unit
        reported (one di/dt frame per pulse) since ``fire_train``.

        Frames of the last pulses may trail the status change by a few ms, so after the
        train ends the count gets ``_TRAILING_FRAMES_S`` to complete before it is returned.
        """
        base = self._fired_pulses_base
        if base is None:
            raise DeviceRejected(f"{self.name}: no train was fired")
        deadline = time.monotonic() + timeout_s
        ended_at: float | None = None
        while True:
            now = time.monotonic()
            if ended_at is None:
                extended = await self._extended_status()
                spanned = now - self._fired_at >= self._fired_span_s
                if spanned and not extended.train_running:
                    ended_at = now
            counted = self._pulses_reported - base
            if ended_at is not None and (
                counted >= self._expected_pulse_count() or now - ended_at >= _TRAILING_FRAMES_S
            ):
                return counted
            if now >= deadline:
                raise DeviceTimeout(f"{self.name}: train still running after {timeout_s:.1f} s")
            await asyncio.sleep(_POLL_S)

    async def _disarm_and_confirm(self, link: MagVentureLink) -> None:
        await self._enable(False)
        status = await self._status()
        if status.status.enabled:
            raise DeviceFault(f"{self.name}: still enabled after the disable command")

    async def _on_disarm_unconfirmed(self, error: DriverError) -> None:
        # The MagPro does not disable itself on host silence: nothing more can be
        # done from here; the daemon trips on the report.
        log.error("%s: disarm not confirmed: %s", self.name, error.reason)

    # -- keep-alive ----------------------------------------------------------------
    def _last_renewal(self) -> float:
        return self._last_renewal_at

    async def _renew(self) -> None:
        status = await self._status()
        if self._armed_confirmed and not status.status.enabled:
            self._armed_confirmed = False
            if status.coil_type == 0:
                raise DeviceFault(f"{self.name} disabled itself: coil not present",
                                  DeviceCondition.COIL_NOT_PRESENT)
            raise DeviceFault(f"{self.name} disabled itself", DeviceCondition.DEVICE_DISARMED)
