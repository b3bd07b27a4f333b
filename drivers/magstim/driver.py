"""The Magstim driver: 200², BiStim² and the Rapid² family behind ``Stimulator``.

Concerns live in their own modules: ``link`` (one owner of the port, matched replies),
``replies`` (decoding), ``units`` (TrainSpec → Magstim units), ``keepalive`` (the
renewal the unit needs to stay armed), and ``SerialStimulator`` (connect, disarm and
close plumbing shared with every serial driver). This module sequences them into the
interface.

Safety decisions made here:
- parameters are read back after setting and again before arming; a difference is a
  ``ReadbackMismatch`` and the unit is not armed;
- the keep-alive renews every 0.4 s while the unit may be armed and every 1 s
  otherwise; a renewal that finds its error bit set, or, while armed, the coil gone or
  too hot or the unit disarmed behind our back, is reported as ``DeviceFault`` whose
  ``condition`` names which;
- ``disarm`` never raises: when it cannot confirm the unit is disarmed it reports the
  fault and *stops the keep-alive*, so the unit's own ~1 s remote-control timeout
  disarms it (the device stops on its own when the host goes silent).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from protocols.capabilities import MAGSTIM_MODELS
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
    FIXED_REPLY_LENGTHS,
    encode_number,
    rapid_parameter_widths,
    rapid_parameters_reply_length,
)
from .link import BAUDRATE, MagstimLink, MagstimReply, UnknownCommand
from .replies import (
    ExtendedStatus,
    RapidParameters,
    SingleParameters,
    Version,
    parse_coil_temperatures,
    parse_error_code,
    parse_version,
)
from .units import MagstimTrainSettings, magstim_train_settings

log = logging.getLogger(__name__)

RAPID_MODELS = frozenset({"magstim-rapid2", "magstim-superrapid2", "magstim-superrapid2-plus1"})
PLUS1_MODEL = "magstim-superrapid2-plus1"

KEEPALIVE_POLICY = KeepAlivePolicy(armed_period_s=0.4, idle_period_s=1.0, gap_limit_s=0.75)
#: Arming takes about 1 s; a 200² recharging at high power needs up to 4 s more.
ARM_TIMEOUT_S = 6.0
_POLL_S = 0.1
_UNLOCK_CODE_MAX = 32


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """One status read: the reply of the parameter query plus temperatures."""

    parameters: MagstimReply
    rapid_parameters: RapidParameters | None
    single_parameters: SingleParameters | None
    temperatures_c: tuple[float, float]

    @property
    def power(self) -> int:
        if self.rapid_parameters is not None:
            return self.rapid_parameters.power
        assert self.single_parameters is not None
        return self.single_parameters.power_a


def _check_unlock_code(code: str | None) -> str | None:
    if code is None:
        return None
    if (
        not isinstance(code, str)
        or not 0 < len(code) <= _UNLOCK_CODE_MAX
        or not code.isascii()
        or not code.isprintable()
    ):
        raise InvalidSetting(
            f"unlock_code={code!r}: must be 1..{_UNLOCK_CODE_MAX} printable ASCII characters"
        )
    return code


class MagstimDriver(SerialStimulator[MagstimLink]):
    """One Magstim unit on one serial port."""

    def __init__(
        self,
        name: str,
        port: str,
        *,
        mains_voltage: int | None = None,
        unlock_code: str | None = None,
        coil: str | None = None,
    ) -> None:
        super().__init__(
            name,
            port,
            capabilities=builtin_capabilities(name, MAGSTIM_MODELS, "Magstim", mains_voltage),
            baudrate=BAUDRATE,
            keepalive_policy=KEEPALIVE_POLICY,
            coil=coil,
        )
        self._unlock_code = _check_unlock_code(unlock_code)
        self._is_rapid = name in RAPID_MODELS
        self._version: Version | None = None
        self._expected: MagstimTrainSettings | None = None
        self._expected_power: int | None = None
        self._fired_at: float | None = None
        self._fired_span_s = 0.0
        self._last_snapshot: _Snapshot | None = None

    @property
    def software_version(self) -> Version | None:
        """The Rapid's reported software version (None for 200²/BiStim²)."""
        return self._version

    # -- connection ----------------------------------------------------------------
    def _open_link(self, transport: Transport) -> MagstimLink:
        return MagstimLink(transport)

    async def _handshake(self) -> DeviceIdentity:
        await self._take_remote_control()
        identity = await self._identify()
        snapshot = await self._snapshot()
        await self._raise_if_error(snapshot.parameters)
        return identity

    async def _take_remote_control(self) -> None:
        link = self._require_link()
        data = self._unlock_code.encode("ascii") if self._unlock_code else b"@"
        try:
            reply = await link.exchange(b"Q", data, FIXED_REPLY_LENGTHS[b"Q"])
        except DeviceRejected as exc:
            hint = (
                "" if self._unlock_code else
                "; a Rapid with software v9 or later needs its unlock code (unlock_code)"
            )
            raise DeviceRejected(f"remote control refused: {exc.reason}{hint}") from exc
        if not reply.instrument.remote_control:
            raise DeviceRejected("remote control not granted: status byte has no remote bit")

    async def _identify(self) -> DeviceIdentity:
        link = self._require_link()
        try:
            reply = await link.exchange(b"N", b"D", None)
        except UnknownCommand:
            version = None
        else:
            version = parse_version(reply.data)
        if self._is_rapid and version is None:
            raise IdentityMismatch(
                f"configured {self.name}, but the unit does not answer the Rapid version"
                " query (ND): it is a 200² or BiStim², not a Rapid²"
            )
        if not self._is_rapid and version is not None:
            raise IdentityMismatch(
                f"configured {self.name}, but the unit reports Rapid software"
                f" v{'.'.join(map(str, version))}: it is a Rapid²"
            )
        self._version = version
        if version is not None and version[0] >= 9:
            extended = ExtendedStatus.parse(
                (await link.exchange(b"x", b"@", FIXED_REPLY_LENGTHS[b"x"])).data
            )
            if extended.plus1_module != (self.name == PLUS1_MODEL):
                found = "a Plus1 module" if extended.plus1_module else "no Plus1 module"
                raise IdentityMismatch(f"configured {self.name}, but the unit reports {found}")
        return DeviceIdentity(
            model=self.name,
            vendor="magstim",
            firmware=".".join(map(str, version)) if version else "not reported",
            serial_number=None,
            dialect="magstim",
        )

    # -- queries -------------------------------------------------------------------
    async def _snapshot(self, *, urgent: bool = False) -> _Snapshot:
        link = self._require_link()
        if self._version is not None:
            reply = await link.exchange(
                b"\\", b"@", rapid_parameters_reply_length(self._version), urgent=urgent
            )
            rapid, single = RapidParameters.parse(reply.data, self._version), None
        else:
            reply = await link.exchange(b"J", b"@", FIXED_REPLY_LENGTHS[b"J"], urgent=urgent)
            rapid, single = None, SingleParameters.parse(reply.data)
        temperature = await link.exchange(
            b"F", b"@", FIXED_REPLY_LENGTHS[b"F"], urgent=urgent
        )
        snapshot = _Snapshot(reply, rapid, single, parse_coil_temperatures(temperature.data))
        self._last_snapshot = snapshot
        return snapshot

    async def _snapshot_during_train(self, last: _Snapshot) -> _Snapshot:
        """While a fired train runs: the temperatures only (12 bytes on the line, not 40).

        The unit refuses parameter changes while a train runs, so the parameters read
        before it still hold; the temperature reply carries a fresh instrument status
        byte (armed, ready, error, coil present), which replaces the old one.
        """
        temperature = await self._require_link().exchange(
            b"F", b"@", FIXED_REPLY_LENGTHS[b"F"]
        )
        parameters = MagstimReply(
            last.parameters.command, temperature.instrument, last.parameters.rapid,
            last.parameters.data,
        )
        return _Snapshot(parameters, last.rapid_parameters, last.single_parameters,
                         parse_coil_temperatures(temperature.data))

    def _train_in_span(self) -> bool:
        """A fired train is still within its span (the unit times it, ``fire_train``'s
        reply said it started): nothing but temperature and status can change."""
        fired_at = self._fired_at
        return fired_at is not None and time.monotonic() < fired_at + self._fired_span_s

    async def _error_code(self) -> str | None:
        if self._version is None:
            return None
        reply = await self._require_link().exchange(b"I", b"@", FIXED_REPLY_LENGTHS[b"I"])
        return parse_error_code(reply.data)

    async def _raise_if_error(self, reply: MagstimReply) -> None:
        if reply.instrument.error_present:
            code = await self._error_code()
            kind = "type 1" if reply.instrument.error_type else "type 0"
            raise DeviceFault(
                f"{self.name} reports an error ({kind}, code {code or 'not reported'})"
            )

    async def read_status(self) -> DeviceStatus:
        """Everything ``DeviceStatus`` holds. While a fired train is within its span the
        parameters are not read again (see ``_snapshot_during_train``) and
        ``train_running`` is true: the unit accepted the train and times it."""
        last = self._last_snapshot
        in_span = self._train_in_span() and last is not None
        if in_span and last is not None:
            snapshot = await self._snapshot_during_train(last)
        else:
            snapshot = await self._snapshot()
        instrument, rapid = snapshot.parameters.instrument, snapshot.parameters.rapid
        code = await self._error_code() if instrument.error_present else None
        extra: dict[str, object] = {
            "coil_temperatures_c": list(snapshot.temperatures_c),
            "replace_coil": instrument.replace_coil,
            "standby": instrument.standby,
            "power_pct_mso": snapshot.power,
        }
        if rapid is not None and snapshot.rapid_parameters is not None:
            params = snapshot.rapid_parameters
            extra.update(
                wait=rapid.wait,
                single_pulse_mode=rapid.single_pulse_mode,
                coil_ready=rapid.coil_ready,
                frequency_hz=params.frequency_tenths_hz / 10,
                pulses=params.pulses,
                duration_s=params.duration_tenths_s / 10,
                wait_s=params.wait_tenths_s / 10,
            )
        if self._coil is not None:
            extra["configured_coil"] = self._coil
        return DeviceStatus(
            armed=instrument.armed,
            ready=instrument.ready,
            train_running=in_span or bool(rapid and rapid.train_running),
            coil_present=instrument.coil_present,
            # Two sensors are reported; the hotter one is the one that matters.
            coil_temperature_c=max(snapshot.temperatures_c),
            error_present=instrument.error_present,
            error_code=code,
            remote_control=instrument.remote_control,
            extra=extra,
        )

    # -- settings ------------------------------------------------------------------
    async def set_intensity(self, pct_mso: int) -> None:
        power = check_intensity(pct_mso, self._capabilities)
        await self._send_power(power)
        self._expected_power = power
        if self._expected is not None:
            self._expected = MagstimTrainSettings(
                power,
                self._expected.frequency_tenths_hz,
                self._expected.pulses,
                self._expected.duration_tenths_s,
            )
        self._check_readback(await self._snapshot())

    async def _send_power(self, power: int) -> None:
        await self._require_link().exchange(b"@", encode_number(power, 3), 3)

    async def configure_train(self, train: TrainSpec) -> None:
        """Set power and (Rapid) train parameters, then read them back.

        Only parameters that differ from the unit's are sent, so reconfiguring the same
        train during the Rapid's post-train wait (when it refuses changes) is harmless.
        """
        settings = magstim_train_settings(train, self._capabilities, self._version)
        snapshot = await self._snapshot()
        await self._apply(settings, snapshot)
        self._expected = settings
        self._expected_power = settings.power
        self._check_readback(await self._snapshot())

    async def _apply(self, settings: MagstimTrainSettings, snapshot: _Snapshot) -> None:
        """Send what differs, in an order in which every intermediate state is valid.

        The Rapid refuses a frequency above its table limit at the *current* power and a
        power at which the *current* frequency is too high (in rTMS mode). Lowering the
        frequency first, or raising it only after the power changed, keeps every step
        within the table, since the old and the new combinations both are.
        """
        link = self._require_link()
        now = snapshot.rapid_parameters
        power_differs = snapshot.power != settings.power
        if now is None or self._version is None:
            if power_differs:
                await self._send_power(settings.power)
            return
        _, freq_w, pulses_w, duration_w, _ = rapid_parameter_widths(self._version)
        duration = encode_number(settings.duration_tenths_s, duration_w)
        if settings.single_pulse:
            if now.duration_tenths_s != 0:
                await link.exchange(b"[", duration, 4)
            if power_differs:
                await self._send_power(settings.power)
            return
        frequency_differs = now.frequency_tenths_hz != settings.frequency_tenths_hz
        frequency = encode_number(settings.frequency_tenths_hz, freq_w)
        if settings.frequency_tenths_hz <= now.frequency_tenths_hz:
            if frequency_differs:
                await link.exchange(b"B", frequency, 4)
            if power_differs:
                await self._send_power(settings.power)
        else:
            if power_differs:
                await self._send_power(settings.power)
            await link.exchange(b"B", frequency, 4)
        if now.pulses != settings.pulses:
            await link.exchange(b"D", encode_number(settings.pulses, pulses_w), 4)
        if now.duration_tenths_s != settings.duration_tenths_s:
            await link.exchange(b"[", duration, 4)

    def _check_readback(self, snapshot: _Snapshot) -> None:
        differences: list[str] = []
        if self._expected_power is not None and snapshot.power != self._expected_power:
            differences.append(f"power {snapshot.power} %MSO != set {self._expected_power}")
        expected, actual = self._expected, snapshot.rapid_parameters
        if expected is not None and actual is not None:
            if actual.duration_tenths_s != expected.duration_tenths_s:
                differences.append(
                    f"duration {actual.duration_tenths_s / 10} s != set"
                    f" {expected.duration_tenths_s / 10} s"
                )
            if not expected.single_pulse:
                if actual.frequency_tenths_hz != expected.frequency_tenths_hz:
                    differences.append(
                        f"frequency {actual.frequency_tenths_hz / 10} Hz != set"
                        f" {expected.frequency_tenths_hz / 10} Hz"
                    )
                if actual.pulses != expected.pulses:
                    differences.append(f"pulses {actual.pulses} != set {expected.pulses}")
        self._raise_on_differences(differences)

    # -- arming and firing -----------------------------------------------------------
    async def arm(self) -> None:
        if self._expected is None:
            raise InvalidSetting(f"{self.name}: arm before a train was configured")
        generation = self._disarm_generation
        snapshot = await self._snapshot()
        self._check_readback(snapshot)
        await self._raise_if_error(snapshot.parameters)
        if not snapshot.parameters.instrument.coil_present:
            raise DeviceRejected(f"{self.name}: refusing to arm, the unit reports no coil")
        async with self._arming():
            if not snapshot.parameters.instrument.armed:
                await self._require_link().exchange(b"E", b"B", 3)
            await self._wait_ready(generation)

    async def _wait_ready(self, generation: int) -> None:
        deadline = time.monotonic() + ARM_TIMEOUT_S
        while True:
            self._raise_if_overtaken(generation)
            snapshot = await self._snapshot()
            instrument = snapshot.parameters.instrument
            await self._raise_if_error(snapshot.parameters)
            if instrument.armed and instrument.ready:
                self._check_readback(snapshot)
                return
            if time.monotonic() >= deadline:
                raise DeviceTimeout(
                    f"{self.name}: not ready {ARM_TIMEOUT_S:.0f} s after arming"
                    f" (armed={instrument.armed}, ready={instrument.ready})"
                )
            await asyncio.sleep(_POLL_S)

    async def fire_train(self) -> None:
        if not self._armed_confirmed or self._expected is None:
            raise DeviceRejected(f"{self.name}: fire refused, the unit was not armed by arm()")
        await self._require_link().exchange(b"E", b"H", 3)
        self._fired_at = time.monotonic()
        expected = self._expected
        self._fired_span_s = (
            0.0 if expected.single_pulse
            else (expected.pulses - 1) / (expected.frequency_tenths_hz / 10)
        )

    async def wait_train_complete(self, timeout_s: float) -> int | None:
        """Poll until the Rapid clears "train running" (no earlier than the train's span).

        Magstim reports no pulse count, so the result is ``None``.
        """
        fired_at = self._fired_at
        if fired_at is None:
            raise DeviceRejected(f"{self.name}: no train was fired")
        deadline = time.monotonic() + timeout_s
        while True:
            status = await self.read_status()
            spanned = time.monotonic() - fired_at >= self._fired_span_s
            if spanned and not status.train_running:
                return None
            if time.monotonic() >= deadline:
                raise DeviceTimeout(f"{self.name}: train still running after {timeout_s:.1f} s")
            await asyncio.sleep(_POLL_S)

    async def _disarm_and_confirm(self, link: MagstimLink) -> None:
        # urgent: the disarm takes the port before every request waiting for it (the
        # exchange in progress, if any, still finishes first)
        self._fired_at = None
        try:
            await link.exchange(b"E", b"A", 3, urgent=True)
        except DeviceRejected as exc:
            # 'S': the unit is not in a state to disarm (e.g. it already left
            # remote control, which disarms it). The status read below decides.
            log.info("%s: disarm answered %s", self.name, exc.reason)
        snapshot = await self._snapshot(urgent=True)
        if snapshot.parameters.instrument.armed:
            raise DeviceFault(f"{self.name}: still armed after the disarm command")

    async def _on_disarm_unconfirmed(self, error: DriverError) -> None:
        log.error("%s: disarm not confirmed (%s); silencing the keep-alive so the unit's"
                  " own remote-control timeout disarms it", self.name, error.reason)
        await self._keepalive.stop()

    async def _release(self, link: MagstimLink) -> None:
        await link.exchange(b"R", b"@", FIXED_REPLY_LENGTHS[b"R"])

    # -- keep-alive ----------------------------------------------------------------
    def _last_renewal(self) -> float:
        return self._link.last_accepted_at if self._link is not None else time.monotonic()

    async def _renew(self) -> None:
        link = self._require_link()
        if self._unlock_code and self._version is not None and self._version[0] >= 9:
            reply = await link.exchange(b"x", b"@", FIXED_REPLY_LENGTHS[b"x"])
        else:
            reply = await link.exchange(b"Q", b"@", FIXED_REPLY_LENGTHS[b"Q"])
        await self._raise_if_error(reply)
        if not self._armed_confirmed:
            return
        # The renewal's status byte supervises the unit between the daemon's polls. The
        # unit disarms itself on each of these, so the specific cause is checked before
        # the self-disarm: the trip must say "coil removed", not "disarmed".
        instrument = reply.instrument
        if not instrument.coil_present:
            self._armed_confirmed = False
            raise DeviceFault(f"{self.name}: coil not present while armed",
                              DeviceCondition.COIL_NOT_PRESENT)
        if instrument.replace_coil:
            self._armed_confirmed = False
            raise DeviceFault(f"{self.name}: the unit reports its coil too hot while armed",
                              DeviceCondition.COIL_OVER_TEMPERATURE)
        if not instrument.armed:
            self._armed_confirmed = False
            raise DeviceFault(
                f"{self.name} disarmed on its own (remote-control timeout, coil temperature,"
                " or the 60 s armed-without-firing limit)",
                DeviceCondition.DEVICE_DISARMED,
            )
