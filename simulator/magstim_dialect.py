"""Magstim 200², BiStim² and Rapid² on the wire, byte for byte.

Commands have no delimiter, so the unit frames them by length: every command byte
implies a length (version-dependent for the Rapid's ``D``, ``[`` and ``n``; the
configured unlock code's length for ``Q`` + code). Bytes it cannot frame — an unknown
command, a bad checksum, a command cut short — are answered with a single ``?`` once
the line has been quiet for ``FRAME_GAP_NS``. A stray 0x00 between commands is
ignored (MagPy's ``poke()`` sends one). Replies carry the status as it was before
the command took effect, except for ``Q``/``R``. Facts:
``shared/reference/magstim-serial-protocol.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from drivers.magstim.codec import (
    STATE_ERROR,
    UNKNOWN_COMMAND,
    VALUE_ERROR,
    InstrumentStatus,
    RapidStatus,
    checksum,
    encode_number,
    rapid_parameter_widths,
    with_checksum,
)
from protocols.capabilities import RapidEnergyModel

from .device import DeviceCore
from .event_log import EventLog

log = logging.getLogger("simulator.magstim")

BAUD = 9600
# Quiet time after which an unframeable command is answered with "?": 20 byte-times
# at 9600 baud, far longer than the gap between bytes of one host write.
FRAME_GAP_NS = 20_000_000
DEFAULT_RAPID_FIRMWARE = (9, 0, 0)

Version = tuple[int, int, int]
Send = Callable[[bytes], None]

# Commands that change the unit and therefore need remote control (``S`` otherwise).
_NEEDS_REMOTE = frozenset(b"@EbYZAC^_BD[n")
_FILLER_COMMANDS = frozenset(b"RJFbYZ^_\\Ixo")


class MagstimDialect:
    """Frames host bytes into commands and answers them from a ``DeviceCore``."""

    baud = BAUD

    def __init__(
        self, core: DeviceCore, events: EventLog, send: Send, *, model: str,
        firmware: Version | None, unlock_code: str | None, log_commands: bool = False,
    ) -> None:
        self.core = core
        self.events = events
        self.send = send
        self.model = model
        self.rapid = model not in ("magstim-200", "magstim-bistim")
        self.bistim = model == "magstim-bistim"
        self.version: Version = firmware if firmware is not None else DEFAULT_RAPID_FIRMWARE
        self.unlock_code = unlock_code.encode("latin-1") if unlock_code else None
        self.log_commands = log_commands
        self.energy: RapidEnergyModel | None = core.capabilities.energy_model
        # Rapid train settings, device units
        self.frequency_tenths_hz = 10
        self.pulses = 1
        self.duration_tenths_s = 0   # 0: single-pulse mode
        self.charge_delay_ms = 0
        # BiStim settings
        self.interval = 0
        self.high_resolution = False
        self._buffer = bytearray()
        self._last_arrival_ns = 0
        self._supported = self._supported_commands()

    def _supported_commands(self) -> frozenset[int]:
        common = set(b"QR@EFb")
        if not self.rapid:
            common |= set(b"J")
            if self.bistim:
                common |= set(b"YZAC")
            return frozenset(common)
        common |= set(b"^_BD[\\NI")
        if self.version[0] >= 9:
            common |= set(b"xno")
        return frozenset(common)

    # ---- framing ---------------------------------------------------------------------
    def expected_length(self, buffer: bytes | bytearray) -> int | None:
        """Length of the command starting ``buffer``; None when it cannot be framed
        (unknown command) or the length is not known yet."""
        command = buffer[0]
        if command not in self._supported:
            return None
        v9 = self.version[0] >= 9
        if command == ord("Q"):
            if len(buffer) < 2:
                return 2  # decide once the first data byte is in
            if buffer[1] == ord("@"):
                return 3
            return 2 + len(self.unlock_code) if self.unlock_code else None
        lengths = {
            ord("@"): 5, ord("A"): 5, ord("C"): 5, ord("B"): 6,
            ord("D"): 7 if v9 else 6, ord("["): 6 if v9 else 5,
            ord("n"): 7 if self.version[0] >= 10 else 6,
        }
        return lengths.get(command, 3)

    def push(self, byte: int, arrival_ns: int) -> bytes | None:
        """Take one received byte; return a complete command when it ends one."""
        self._last_arrival_ns = arrival_ns
        if not self._buffer and byte == 0x00:
            return None  # stray NUL between commands (MagPy poke)
        self._buffer.append(byte)
        expected = self.expected_length(self._buffer)
        if expected is not None and len(self._buffer) >= expected:
            message = bytes(self._buffer[:expected])
            del self._buffer[:expected]
            return message
        return None

    def idle_deadline_ns(self) -> int | None:
        return self._last_arrival_ns + FRAME_GAP_NS if self._buffer else None

    def on_idle(self, now_ns: int) -> None:
        """The line went quiet with bytes that do not form a command."""
        pending = bytes(self._buffer)
        self._buffer.clear()
        # Q + a code the unit does not hold: a well-formed command with bad data.
        if pending[:1] == b"Q" and len(pending) >= 3 and checksum(pending[:-1]) == pending[-1]:
            self.core.note_valid_command()
            self.send(with_checksum(b"Q" + bytes([VALUE_ERROR])))
            return
        log.info("unframeable input %s: answering '?'", pending.hex())
        self.send(UNKNOWN_COMMAND)

    # ---- status bytes ----------------------------------------------------------------
    def instrument_status(self) -> int:
        core = self.core
        byte = InstrumentStatus(
            standby=not core.armed,
            armed=core.armed,
            ready=core.ready,
            coil_present=core.coil_present,
            replace_coil=core.coil_present and core.coil_too_hot(),
            error_present=core.error_code is not None,
            error_type=False,
            remote_control=core.remote,
        ).encode()
        # standby and armed are exclusive, so 0x3F and 0x53 (misread as '?'/'S') cannot occur
        assert byte not in (VALUE_ERROR, STATE_ERROR), f"status byte 0x{byte:02x}"
        return byte

    def rapid_status(self) -> int:
        core = self.core
        return RapidStatus(
            enhanced_power=core.enhanced,
            train_running=core.train_running,
            wait=core.waiting,
            single_pulse_mode=self.duration_tenths_s == 0,
            hv_supply_connected=True,
            coil_ready=core.coil_present and not core.coil_too_hot(),
            theta_psu_detected=False,
            modified_coil_algorithm=False,
        ).encode()

    def _status(self) -> bytes:
        if self.rapid:
            return bytes([self.instrument_status(), self.rapid_status()])
        return bytes([self.instrument_status()])

    # ---- command handling ------------------------------------------------------------
    def handle(self, message: bytes, received_ns: int) -> None:
        """Answer one framed command (``received_ns``: its last byte's arrival)."""
        body, crc = message[:-1], message[-1]
        if checksum(body) != crc:
            log.info("bad checksum in %s: answering '?'", message.hex())
            self.send(UNKNOWN_COMMAND)
            return
        command, data = body[:1], body[1:]
        self.core.note_valid_command()
        text = body.decode("latin-1")
        if (command == b"E" and data == b"A") or self.log_commands:
            self.events.emit("command", mono_ns=received_ns, command=text)
        if command in {b"Q", b"x"}:
            self.events.emit("keepalive", mono_ns=received_ns, command=text[:1])
        if command == b"b":
            self.events.emit("command", mono_ns=received_ns, command=text,
                             warning="ignore coil safety switch requested")
        if command in (b"Q", b"R"):
            self._remote(command, data)
            return
        if command[0] in _NEEDS_REMOTE and not self.core.remote and body != b"EA":
            self._state_error(command)
            return
        if command[0] in _FILLER_COMMANDS and data != b"@":
            self._value_error(command)
            return
        handler = getattr(self, f"_cmd_{command[0]:02x}")
        handler(command, data)

    def _ok(self, command: bytes, status: bytes, payload: bytes = b"") -> None:
        self.send(with_checksum(command + status + payload))

    def _value_error(self, command: bytes) -> None:
        self.send(with_checksum(command + bytes([VALUE_ERROR])))

    def _state_error(self, command: bytes) -> None:
        self.send(with_checksum(command + bytes([STATE_ERROR])))

    @staticmethod
    def _number(data: bytes, width: int) -> int | None:
        return int(data) if len(data) == width and data.isdigit() else None

    def _remote(self, command: bytes, data: bytes) -> None:
        if command == b"Q":
            if data == b"@":
                accepted = self.unlock_code is None
            else:
                accepted = self.unlock_code is not None and data == self.unlock_code
            if not accepted:
                self._value_error(command)
                return
            self.core.set_remote(True, cause="command")
        else:
            if data != b"@":
                self._value_error(command)
                return
            self.core.disarm(cause="remote_off")
            self.core.set_remote(False, cause="command")
        self._ok(command, bytes([self.instrument_status()]))

    def _cmd_40(self, command: bytes, data: bytes) -> None:  # "@": power A
        status = bytes([self.instrument_status()])
        value = self._number(data, 3)
        limit = 110 if self.core.enhanced else 100
        if value is None or value > limit:
            self._value_error(command)
            return
        if self.core.train_running:
            self._state_error(command)
            return
        if self.rapid and self.duration_tenths_s and self.energy is not None \
                and value <= 100 \
                and self.frequency_tenths_hz > self.energy.max_frequency_hz(value) * 10:
            self._value_error(command)  # the set frequency is not allowed at that power
            return
        self.core.set_power(value)
        self._ok(command, status)

    def _cmd_41(self, command: bytes, data: bytes) -> None:  # "A": BiStim power B
        status = bytes([self.instrument_status()])
        value = self._number(data, 3)
        if value is None or value > 100:
            self._value_error(command)
            return
        self.core.set_power(self.core.power_a, value)
        self._ok(command, status)

    def _cmd_43(self, command: bytes, data: bytes) -> None:  # "C": BiStim interval
        status = bytes([self.instrument_status()])
        value = self._number(data, 3)
        if value is None:
            self._value_error(command)
            return
        self.interval = value
        self._ok(command, status)

    def _high_resolution(self, command: bytes, on: bool) -> None:
        """Timing resolution of the interval: refused while armed; a change of mode resets
        the interval to 10 steps, 1 ms in high resolution and 10 ms otherwise (MagPy 1.4's
        ``BiStim.highResolutionMode`` documents both)."""
        if self.core.armed:
            self._state_error(command)
            return
        self._ok(command, bytes([self.instrument_status()]))
        if on != self.high_resolution:
            self.high_resolution = on
            self.interval = 10

    def _cmd_59(self, command: bytes, data: bytes) -> None:  # "Y": BiStim hi-res on
        self._high_resolution(command, True)

    def _cmd_5a(self, command: bytes, data: bytes) -> None:  # "Z": BiStim hi-res off
        self._high_resolution(command, False)

    def _cmd_45(self, command: bytes, data: bytes) -> None:  # "E": arm / disarm / fire
        status = self._status()[:1]
        core = self.core
        if data == b"A":
            core.disarm(cause="command")
            self._ok(command, status)
        elif data == b"B":
            if core.arm(cause="command") is not None:
                self._state_error(command)
                return
            self._ok(command, status)
        elif data == b"H":
            refusal = self._fire()
            if refusal is not None:
                log.info("fire refused: %s", refusal)
                self._state_error(command)
                return
            self._ok(command, status)
        else:
            self._value_error(command)

    def _fire(self) -> str | None:
        core = self.core
        if not (self.rapid and self.duration_tenths_s):
            return core.fire_single()
        frequency_hz = self.frequency_tenths_hz / 10
        if frequency_hz <= 0 or self.pulses <= 0:
            return f"train of {self.pulses} pulses at {frequency_hz} Hz"
        assert self.energy is not None
        power = min(core.power_a, 100)
        table_max = self.energy.max_frequency_hz(power)
        if frequency_hz > table_max:
            core.events.emit("refused", action="train",
                             reason=f"{frequency_hz} Hz above {table_max} Hz at {power} %")
            return f"{frequency_hz} Hz above the unit's {table_max} Hz at {power} %MSO"
        wait_s = self.energy.min_wait_s(power, frequency_hz, self.pulses)
        onsets = [k / frequency_hz for k in range(self.pulses)]
        return core.start_train(
            onsets, trains=[0] * self.pulses, wait_after_s=wait_s,
            detail={"frequency_hz": frequency_hz, "pulses": self.pulses,
                    "wait_s": round(wait_s, 3)},
        )

    def _cmd_46(self, command: bytes, data: bytes) -> None:  # "F": coil temperature
        status = bytes([self.instrument_status()])
        if self.core.coil_present:
            tenths = min(999, max(0, round(self.core.coil_temperature_c() * 10)))
        else:
            tenths = 0
        self._ok(command, status, encode_number(tenths, 3) + encode_number(0, 3))

    def _cmd_4a(self, command: bytes, data: bytes) -> None:  # "J": 200²/BiStim parameters
        status = bytes([self.instrument_status()])
        core = self.core
        if self.bistim:
            payload = (encode_number(core.power_a, 3) + encode_number(core.power_b, 3)
                       + encode_number(self.interval, 3))
        else:
            payload = encode_number(core.power_a, 3) + b"000000"
        self._ok(command, status, payload)

    def _cmd_62(self, command: bytes, data: bytes) -> None:  # "b": ignore coil safety
        self._ok(command, bytes([self.instrument_status()]))
        self.core.coil_safety_ignored = True

    def _enhanced(self, command: bytes, on: bool) -> None:
        """Only in standby, and on only in single-pulse mode; leaving it brings a power
        above 100 % down to 100 % (MagPy 1.4's ``Rapid.enhancedPowerMode`` notes)."""
        status = self._status()
        core = self.core
        if core.armed or (on and self.duration_tenths_s):
            self._state_error(command)
            return
        core.enhanced = on
        if not on and core.power_a > 100:
            core.set_power(100)
        self._ok(command, status)

    def _cmd_5e(self, command: bytes, data: bytes) -> None:  # "^": enhanced power on
        self._enhanced(command, True)

    def _cmd_5f(self, command: bytes, data: bytes) -> None:  # "_": enhanced power off
        self._enhanced(command, False)

    def _train_settings_locked(self) -> bool:
        """A Rapid refuses train-parameter changes while a train runs and during the
        post-train wait (MagPy's ``Rapid`` notes and MAGIC's ``rapid.m`` both say so)."""
        return self.core.train_running or self.core.waiting

    def _cmd_42(self, command: bytes, data: bytes) -> None:  # "B": frequency, 0.1 Hz
        status = self._status()
        value = self._number(data, 4)
        assert self.energy is not None
        limit = self.energy.max_frequency_hz(min(self.core.power_a, 100)) * 10
        if value is None or value > limit:
            self._value_error(command)
            return
        if self._train_settings_locked():
            self._state_error(command)
            return
        self.frequency_tenths_hz = value
        self._ok(command, status)

    def _cmd_44(self, command: bytes, data: bytes) -> None:  # "D": pulses per train
        status = self._status()
        v9 = self.version[0] >= 9
        value = self._number(data, 5 if v9 else 4)
        if value is None or value > (6000 if v9 else 1000):
            self._value_error(command)
            return
        if self._train_settings_locked():
            self._state_error(command)
            return
        self.pulses = value
        self._ok(command, status)

    def _cmd_5b(self, command: bytes, data: bytes) -> None:  # "[": duration, 0.1 s
        status = self._status()
        value = self._number(data, 4 if self.version[0] >= 9 else 3)
        if value is None:
            self._value_error(command)
            return
        if self._train_settings_locked():
            self._state_error(command)
            return
        self.duration_tenths_s = value
        self._ok(command, status)

    def _cmd_5c(self, command: bytes, data: bytes) -> None:  # "\": Rapid parameters
        status = self._status()
        widths = rapid_parameter_widths(self.version)
        wait_tenths = 0
        if self.energy is not None and self.frequency_tenths_hz and self.pulses:
            wait = self.energy.min_wait_s(min(self.core.power_a, 100),
                                          self.frequency_tenths_hz / 10, self.pulses)
            wait_tenths = min(10 ** widths[4] - 1, round(wait * 10))
        values = (self.core.power_a, self.frequency_tenths_hz, self.pulses,
                  self.duration_tenths_s, wait_tenths)
        payload = b"".join(encode_number(v, w) for v, w in zip(values, widths, strict=True))
        self._ok(command, status, payload)

    def _cmd_4e(self, command: bytes, data: bytes) -> None:  # "N": software version
        if data != b"D":
            self._value_error(command)
            return
        text = ".".join(str(part) for part in self.version).encode("ascii")
        self._ok(command, bytes([self.instrument_status()]), text + b"\x00")

    def _cmd_49(self, command: bytes, data: bytes) -> None:  # "I": error code
        code = (self.core.error_code or "000").encode("ascii")
        self._ok(command, bytes([self.instrument_status()]), code)

    def _extended_status(self) -> bytes:
        low = (int(self.model == "magstim-superrapid2-plus1")
               | (int(self.charge_delay_ms > 0) << 2))
        return bytes([0, low])

    def _cmd_78(self, command: bytes, data: bytes) -> None:  # "x": system status (v9+)
        self._ok(command, self._status(), self._extended_status())

    def _cmd_6e(self, command: bytes, data: bytes) -> None:  # "n": set charge delay (v9+)
        status = self._status()
        v10 = self.version[0] >= 10
        value = self._number(data, 5 if v10 else 4)
        # 10 s from v10, 2 s on v9 (the limits MagPy and MAGIC document)
        if value is None or value > (10_000 if v10 else 2_000):
            self._value_error(command)
            return
        self.charge_delay_ms = value
        self._ok(command, status, self._extended_status() if v10 else b"")

    def _cmd_6f(self, command: bytes, data: bytes) -> None:  # "o": get charge delay (v9+)
        width = 5 if self.version[0] >= 10 else 4
        self._ok(command, bytes([self.instrument_status()]),
                 encode_number(self.charge_delay_ms, width))

    def state(self) -> dict[str, object]:
        return {
            "firmware": ".".join(map(str, self.version)) if self.rapid else None,
            "frequency_hz": self.frequency_tenths_hz / 10 if self.rapid else None,
            "pulses": self.pulses if self.rapid else None,
            "duration_s": self.duration_tenths_s / 10 if self.rapid else None,
            "single_pulse_mode": not (self.rapid and self.duration_tenths_s),
            "charge_delay_ms": self.charge_delay_ms if self.rapid else None,
            "power_b": self.core.power_b if self.bistim else None,
            "interval": self.interval if self.bistim else None,
            "high_resolution": self.high_resolution if self.bistim else None,
        }
