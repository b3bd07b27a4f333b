"""MagVenture MagPro R30 / X100 on the wire: binary frames, replies and reports.

Frames are ``FE LEN PAYLOAD CRC8 FF`` (codec in ``drivers.magventure.codec``).
Every command a host can send is answered the way MAGIC expects the unit to answer
(13 bytes for status, 19 for extended status, 14 for mode, 8 for everything else),
and the unit reports by itself, promptly and never on a timer, after a pulse (di/dt,
ID 2), a train starting or ending (page and train status, ID 8), and the unit
disabling itself (amplitude and status, ID 1; temperature and coil, ID 3). An idle
unit is silent. Where the model has a free choice (amplitude B in Standard mode,
rounding of a measured temperature or di/dt) it avoids a 0xFF inside a frame, since
some clients split frames at every 0xFF. Layouts: ``docs/simulator.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from drivers.magventure.codec import (
    CMD_AMPLITUDE,
    CMD_ENABLE,
    CMD_EXTENDED_STATUS,
    CMD_MODE,
    CMD_PAGE,
    CMD_SET_TRAIN,
    CMD_SINGLE_FIRE,
    CMD_START_TRAIN,
    CMD_STATUS,
    CMD_TRIGGER_DELAY,
    END,
    FrameParser,
    FramingError,
    burst_ipi_index,
    encode_frame,
)

from .device import DeviceCore
from .event_log import EventLog

log = logging.getLogger("simulator.magventure")

BAUD = 38400
PARTIAL_FRAME_TIMEOUT_NS = 50_000_000  # a frame cut short is dropped after 50 ms of quiet
SERIAL_NUMBERS = {"magventure-r30": bytes([0x01, 0x23, 0x45]),
                  "magventure-x100": bytes([0x02, 0x46, 0x8A])}
MODEL_CODES = {"magventure-r30": 0, "magventure-x100": 1}

REPORT_AMPLITUDE = 0x01
REPORT_DIDT = 0x02
REPORT_TEMPERATURE = 0x03
REPORT_PAGE = 0x08

PAGE_MAIN, PAGE_TRAIN = 1, 2
VALID_PAGES = frozenset({1, 2, 3, 4, 7})
WAVE_BIPHASIC_BURST = 3
DIDT_PER_PCT = 1.6  # A/µs per %MSO for the simulated coil (R30 + MCF-B65 order of magnitude)

Send = Callable[[bytes], None]


def _u16(data: bytes, offset: int) -> int:
    return data[offset] << 8 | data[offset + 1]


def frame_avoiding_ff(candidates: Sequence[bytes]) -> bytes:
    """The first candidate payload whose frame has no 0xFF before its terminator."""
    for payload in candidates:
        frame = encode_frame(payload)
        if END not in frame[:-1]:
            return frame
    log.warning("no 0xFF-free encoding among %s", [c.hex() for c in candidates])
    return encode_frame(candidates[0])


class MagVentureDialect:
    """Parses host frames and answers from a ``DeviceCore``; reports state changes."""

    baud = BAUD

    def __init__(
        self, core: DeviceCore, events: EventLog, send: Send, *, model: str,
        log_commands: bool = False,
    ) -> None:
        self.core = core
        self.events = events
        self.send = send
        self.model = model
        self.log_commands = log_commands
        self.serial_number = SERIAL_NUMBERS[model]
        self.mode = 0          # Standard
        self.waveform = 1      # Biphasic
        self.direction = 0     # Normal
        self.burst_pulses = 2
        self.burst_ipi_tenths_ms = 200   # 20 ms: theta burst
        self.ba_ratio_hundredths = 100
        self.page = PAGE_MAIN
        self.rate_tenths_pps = 10
        self.pulses_per_train = 1
        self.trains = 1
        self.iti_tenths_s = 10
        self.trigger_delays = (0, 0, 0)
        self._parser = FrameParser()
        self._pending = False  # bytes fed that have not completed a frame
        self._last_arrival_ns = 0
        events.subscribe(self._on_event)

    # ---- framing ---------------------------------------------------------------------
    def push(self, byte: int, arrival_ns: int) -> bytes | None:
        self._last_arrival_ns = arrival_ns
        self._parser.feed(bytes([byte]))
        self._pending = True
        while True:
            try:
                for payload in self._parser.frames():
                    self._pending = False
                    return payload
                return None
            except FramingError as exc:
                log.info("ignoring malformed frame: %s", exc)

    def idle_deadline_ns(self) -> int | None:
        return self._last_arrival_ns + PARTIAL_FRAME_TIMEOUT_NS if self._pending else None

    def on_idle(self, now_ns: int) -> None:
        """The line went quiet inside a frame: drop it so it cannot swallow the next."""
        self._pending = False
        self._parser = FrameParser()

    # ---- status bytes ----------------------------------------------------------------
    def status_byte(self) -> int:
        return (self.mode | self.waveform << 2 | int(self.core.armed) << 4
                | MODEL_CODES[self.model] << 5)

    def _temperature_candidates(self) -> list[int]:
        """Whole °C readings of the measured temperature: nearest first, then the other
        neighbour (a free rounding choice used to keep 0xFF out of frames)."""
        if not self.core.coil_present:
            return [0]
        celsius = max(0.0, min(254.0, self.core.coil_temperature_c()))
        nearest = round(celsius)
        other = int(celsius) if nearest != int(celsius) else min(254, nearest + 1)
        return [nearest, other]

    def _coil_code(self) -> int:
        return self.core.coil.type_code if self.core.coil_present else 0

    def _amplitude_b_candidates(self) -> list[int]:
        if self.mode == 0:  # Standard: B is unused, 0 or mirroring A are both honest
            return [self.core.power_b, self.core.power_a]
        return [self.core.power_b]

    def status_frame(self, command: int = CMD_STATUS) -> bytes:
        core = self.core
        candidates = []
        for temp in self._temperature_candidates():
            for amp_b in self._amplitude_b_candidates():
                head = bytes([command, self.status_byte()]) + self.serial_number + bytes(
                    [temp, self._coil_code(), core.power_a, amp_b])
                if command == CMD_EXTENDED_STATUS:
                    head += bytes([core.power_a, amp_b, 100, 100, self.page,
                                   int(core.train_running)])
                candidates.append(head)
        return frame_avoiding_ff(candidates)

    def amplitude_report(self) -> bytes:
        return frame_avoiding_ff([
            bytes([REPORT_AMPLITUDE, self.core.power_a, b, self.status_byte()])
            for b in self._amplitude_b_candidates()
        ])

    def temperature_report(self) -> bytes:
        return frame_avoiding_ff([
            bytes([REPORT_TEMPERATURE, t, self._coil_code(), self.status_byte()])
            for t in self._temperature_candidates()
        ])

    def page_report(self) -> bytes:
        return frame_avoiding_ff(
            [bytes([REPORT_PAGE, self.page, int(self.core.train_running), self.status_byte()])])

    def didt_report(self) -> bytes:
        didt = min(254.0, self.core.power_a * DIDT_PER_PCT)
        nearest = round(didt)
        return frame_avoiding_ff([
            bytes([REPORT_DIDT, value, 0, self.status_byte()])
            for value in (nearest, int(didt) if nearest != int(didt) else max(0, nearest - 1))
        ])

    def mode_frame(self) -> bytes:
        ipi_index = burst_ipi_index(self.burst_ipi_tenths_ms) or 0
        ba_index = max(0, min(254, round((500 - self.ba_ratio_hundredths) / 5)))
        return frame_avoiding_ff([bytes([
            CMD_MODE, 0, MODEL_CODES[self.model], self.mode, self.direction, self.waveform,
            5 - self.burst_pulses, ipi_index & 0xFF, ipi_index >> 8, ba_index,
        ])])

    # ---- unsolicited reports ---------------------------------------------------------
    def _on_event(self, record: dict[str, Any]) -> None:
        event = record["event"]
        if event == "pulse":
            self.send(self.didt_report())
        elif event in {"train_started", "train_aborted"}:
            self.send(self.page_report())
        elif event == "ready" and record.get("cause") == "wait_elapsed":
            self.send(self.page_report())
            self.send(self.temperature_report())
        elif event == "disarmed" and record.get("cause") != "command":
            self.send(self.amplitude_report())
            self.send(self.temperature_report())
        elif event == "fault" and record.get("cause") in ("coil_removed", "coil_overtemp") \
                and not self.core.armed:  # an armed unit reports with its "disarmed" frames
            self.send(self.temperature_report())

    # ---- command handling ------------------------------------------------------------
    def handle(self, payload: bytes, received_ns: int) -> None:
        command, data = payload[0], payload[1:]
        disarm = command == CMD_ENABLE and data[:1] == b"\x00"
        if disarm or self.log_commands:
            self.events.emit("command", mono_ns=received_ns, command=payload.hex())
        handler = {
            CMD_STATUS: self._status,
            CMD_AMPLITUDE: self._amplitude,
            CMD_ENABLE: self._enable,
            CMD_SINGLE_FIRE: self._single_fire,
            CMD_START_TRAIN: self._start_train,
            CMD_EXTENDED_STATUS: self._extended_status,
            CMD_SET_TRAIN: self._set_train,
            CMD_PAGE: self._set_page,
            CMD_TRIGGER_DELAY: self._trigger_delay,
            CMD_MODE: self._mode,
        }.get(command)
        if handler is None:
            log.info("ignoring unknown command 0x%02x", command)
            return
        self.core.note_valid_command()
        handler(data)

    def _status(self, data: bytes) -> None:
        self.send(self.status_frame(CMD_STATUS))

    def _extended_status(self, data: bytes) -> None:
        self.send(self.status_frame(CMD_EXTENDED_STATUS))

    def _amplitude(self, data: bytes) -> None:
        if len(data) in (1, 2) and all(v <= 100 for v in data) and not self.core.train_running:
            self.core.set_power(data[0], data[1] if len(data) == 2 else None)
        else:
            self.events.emit("refused", action="amplitude", reason=f"payload {data.hex()}")
        self.send(self.amplitude_report())

    def _enable(self, data: bytes) -> None:
        if data == b"\x01":
            self.core.arm(cause="command")
        elif data == b"\x00":
            self.core.disarm(cause="command")
        else:
            self.events.emit("refused", action="enable", reason=f"payload {data.hex()}")
        self.send(self.amplitude_report())

    def _single_fire(self, data: bytes) -> None:
        if data != b"\x01":
            self.events.emit("refused", action="fire", reason=f"payload {data.hex()}")
            self.send(self.amplitude_report())
            return
        if self.core.fire_single() is not None:
            self.send(self.amplitude_report())
        # a delivered pulse is answered by its di/dt report

    def train_onsets(self) -> tuple[list[float], list[int]]:
        """Pulse times of the loaded sequence: bursts at the rate, trains separated by
        the ITI measured from the last pulse to the next first pulse (MagVenture)."""
        rate = self.rate_tenths_pps / 10
        burst = self.burst_pulses if self.waveform == WAVE_BIPHASIC_BURST else 1
        ipi_s = self.burst_ipi_tenths_ms / 10_000
        onsets: list[float] = []
        trains: list[int] = []
        start = 0.0
        for train in range(self.trains):
            for k in range(self.pulses_per_train):
                for b in range(burst):
                    onsets.append(start + k / rate + b * ipi_s)
                    trains.append(train)
            start = onsets[-1] + self.iti_tenths_s / 10
        return onsets, trains

    def _start_train(self, data: bytes) -> None:
        onsets, trains = self.train_onsets()
        refusal = self.core.start_train(
            onsets, trains=trains, wait_after_s=self.core.capabilities.min_inter_train_gap_s,
            detail={"frequency_hz": self.rate_tenths_pps / 10,
                    "pulses": self.pulses_per_train, "trains_in_sequence": self.trains,
                    "burst_pulses": self.burst_pulses
                    if self.waveform == WAVE_BIPHASIC_BURST else 1},
        )
        if refusal is not None:
            self.send(self.page_report())
        # a started train is announced by the train_started report

    def _set_train(self, data: bytes) -> None:
        caps = self.core.capabilities
        reason = None
        if len(data) != 8:
            reason = f"set train needs 8 data bytes, got {len(data)}"
        else:
            rate, pulses, trains, iti = (_u16(data, i) for i in (0, 2, 4, 6))
            if not 1 <= rate <= caps.max_frequency_hz * 10:
                reason = f"rate {rate / 10} pps outside 0.1..{caps.max_frequency_hz}"
            elif not 1 <= pulses <= caps.max_pulses_per_train:
                reason = f"pulses {pulses} outside 1..{caps.max_pulses_per_train}"
            elif not 1 <= trains <= 500:
                reason = f"trains {trains} outside 1..500"
            elif not 1 <= iti <= 1200:
                reason = f"ITI {iti / 10} s outside 0.1..120"
            elif self.core.train_running:
                reason = "train running"
            else:
                self.rate_tenths_pps, self.pulses_per_train = rate, pulses
                self.trains, self.iti_tenths_s = trains, iti
                self.page = PAGE_TRAIN
        if reason is not None:
            self.events.emit("refused", action="set_train", reason=reason)
        self.send(self.page_report())

    def _set_page(self, data: bytes) -> None:
        if len(data) == 2 and data[0] in VALID_PAGES:
            self.page = data[0]
        else:
            self.events.emit("refused", action="page", reason=f"payload {data.hex()}")
        self.send(self.page_report())

    def _trigger_delay(self, data: bytes) -> None:
        if len(data) == 8:
            self.trigger_delays = (_u16(data, 0), _u16(data, 2), _u16(data, 4))
        else:
            self.events.emit("refused", action="trigger_delay", reason=f"payload {data.hex()}")
        self.send(self.page_report())

    def _mode(self, data: bytes) -> None:
        if len(data) == 10 and data[0] == 1:
            reason = self._apply_mode(data)
            if reason is not None:
                self.events.emit("refused", action="mode", reason=reason)
        elif not (len(data) >= 1 and data[0] == 0):
            self.events.emit("refused", action="mode", reason=f"payload {data.hex()}")
        self.send(self.mode_frame())

    def _apply_mode(self, data: bytes) -> str | None:
        _model, mode, direction, waveform, burst_index = data[1:6]
        ipi, ratio = _u16(data, 6), _u16(data, 8)
        caps = self.core.capabilities
        if mode > 3 or direction > 1 or waveform > 3:
            return f"mode {mode} / direction {direction} / waveform {waveform} out of range"
        if not 0 <= burst_index <= 3:
            return f"burst index {burst_index} outside 0..3 (5..2 pulses)"
        if waveform == WAVE_BIPHASIC_BURST and not caps.supports_bursts:
            return "biphasic burst not available"
        if burst_ipi_index(ipi) is None:
            return f"IPI {ipi / 10} ms not on the MagPro's burst IPI steps"
        if not 20 <= ratio <= 500:
            return f"B/A ratio {ratio / 100} outside 0.2..5.0"
        if self.core.armed:
            return "mode changes need the unit disabled"
        self.mode, self.direction, self.waveform = mode, direction, waveform
        self.burst_pulses = 5 - burst_index
        self.burst_ipi_tenths_ms = ipi
        self.ba_ratio_hundredths = ratio
        return None

    def state(self) -> dict[str, object]:
        return {
            "serial_number": self.serial_number.hex(),
            "mode": self.mode, "waveform": self.waveform, "direction": self.direction,
            "burst_pulses": self.burst_pulses, "burst_ipi_ms": self.burst_ipi_tenths_ms / 10,
            "page": self.page, "rate_pps": self.rate_tenths_pps / 10,
            "pulses_per_train": self.pulses_per_train, "trains": self.trains,
            "iti_s": self.iti_tenths_s / 10,
        }
