"""Golden bytes: exactly what the Magstim driver writes, against a scripted peer on a pty.

The peer answers canned replies keyed by the exact command bytes, so any change in what
the driver sends (command, digits, width, checksum, order) fails here.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from drivers.errors import (
    DeviceFault,
    DeviceRejected,
    DeviceTimeout,
    DriverError,
    FramingError,
    IdentityMismatch,
    InvalidSetting,
    ReadbackMismatch,
)
from drivers.magstim.codec import InstrumentStatus, RapidStatus, encode_command, with_checksum
from drivers.magstim.driver import MagstimDriver
from drivers.magstim.link import SENDABLE_COMMANDS
from protocols.schedule import TrainSpec

REMOTE_IDLE = InstrumentStatus(True, False, False, True, False, False, False, True).encode()
REMOTE_ARMED_READY = InstrumentStatus(
    False, True, True, True, False, False, False, True
).encode()
REMOTE_ERROR = InstrumentStatus(True, False, False, True, False, True, False, True).encode()
RAPID_IDLE = RapidStatus(False, False, False, True, True, True, False, False).encode()


def reply(command: bytes, *status: int, data: bytes = b"") -> bytes:
    return with_checksum(command + bytes(status) + data)


class ScriptedPeer:
    """The device end of a pty: answers known commands, records everything received."""

    def __init__(self, master: int) -> None:
        self.master = master
        self.replies: dict[bytes, list[bytes]] = {}
        self.received: list[bytes] = []
        self._buffer = b""
        asyncio.get_running_loop().add_reader(master, self._on_readable)

    def answer(self, command: bytes, *responses: bytes) -> None:
        """Answer ``command`` with ``responses`` in turn, repeating the last one."""
        self.replies[with_checksum(command)] = list(responses)

    def _on_readable(self) -> None:
        try:
            self._buffer += os.read(self.master, 4096)
        except OSError:
            return
        progressed = True
        while progressed and self._buffer:
            progressed = False
            for command, responses in self.replies.items():
                if self._buffer.startswith(command):
                    self._buffer = self._buffer[len(command) :]
                    self.received.append(command)
                    os.write(self.master, responses[0] if len(responses) == 1
                             else responses.pop(0))
                    progressed = True
                    break

    def commands(self, *, without: tuple[bytes, ...] = ()) -> list[bytes]:
        return [c for c in self.received if c[:-1] not in without]

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.master)


@pytest.fixture
async def rapid_peer(pty_pair: tuple[int, str]) -> AsyncIterator[ScriptedPeer]:
    peer = ScriptedPeer(pty_pair[0])
    peer.answer(b"Q@", reply(b"Q", REMOTE_IDLE))
    peer.answer(b"ND", reply(b"N", REMOTE_IDLE, data=b"9.0.0\x00"))
    peer.answer(b"x@", reply(b"x", REMOTE_IDLE, RAPID_IDLE, data=b"\x00\x00"))
    peer.answer(b"\\@", reply(b"\\", REMOTE_IDLE, RAPID_IDLE, data=b"000" b"0010" b"00001"
                              b"0000" b"0005"))
    peer.answer(b"F@", reply(b"F", REMOTE_IDLE, data=b"215000"))
    peer.answer(b"EA", reply(b"E", REMOTE_IDLE))
    peer.answer(b"R@", reply(b"R", REMOTE_IDLE & 0x7F))
    yield peer
    peer.close()


def ten_hz_train(pulses: int = 40, power: int = 60) -> TrainSpec:
    return TrainSpec(
        index=0, onset_us=0, pulses=pulses, pulse_interval_us=100_000, burst_pulses=1,
        bursts=pulses, burst_interval_us=100_000, intensity_pct_mso=power,
    )


async def test_connect_sends_remote_version_extended_status_parameters_temperature(
    rapid_peer: ScriptedPeer, pty_pair: tuple[int, str]
) -> None:
    driver = MagstimDriver("magstim-rapid2", pty_pair[1], mains_voltage=240)
    identity = await driver.connect()
    await driver.close()
    assert identity.firmware == "9.0.0"
    assert identity.serial_number is None
    assert rapid_peer.commands(without=(b"Q@",))[:4] == [b"NDm", b"x@G", b"\\@c", b"F@y"]
    assert rapid_peer.received[0] == b"Q@n"
    # close: disarm, confirm by status, release remote control
    assert rapid_peer.commands(without=(b"Q@",))[-4:] == [b"EAy", b"\\@c", b"F@y", b"R@m"]


async def test_unlock_code_is_sent_with_q_and_keepalive_uses_x(
    rapid_peer: ScriptedPeer, pty_pair: tuple[int, str]
) -> None:
    rapid_peer.answer(b"Q1234-12345678-ab", reply(b"Q", REMOTE_IDLE))
    driver = MagstimDriver(
        "magstim-rapid2", pty_pair[1], mains_voltage=240, unlock_code="1234-12345678-ab"
    )
    await driver.connect()
    await asyncio.sleep(1.2)  # one idle keep-alive period (1 s) and a margin
    await driver.close()
    sent = rapid_peer.received
    assert sent[0] == with_checksum(b"Q1234-12345678-ab")
    assert b"Q@n" not in sent
    assert sent.count(b"x@G") >= 2  # identification, then at least one keep-alive


async def test_configure_train_sends_vendor_units_in_a_valid_order(
    rapid_peer: ScriptedPeer, pty_pair: tuple[int, str]
) -> None:
    driver = MagstimDriver("magstim-rapid2", pty_pair[1], mains_voltage=240)
    await driver.connect()
    before = len(rapid_peer.received)
    rapid_peer.answer(b"@060", reply(b"@", REMOTE_IDLE))
    rapid_peer.answer(b"B0100", reply(b"B", REMOTE_IDLE, RAPID_IDLE))
    rapid_peer.answer(b"D00040", reply(b"D", REMOTE_IDLE, RAPID_IDLE))
    rapid_peer.answer(b"[0040", reply(b"[", REMOTE_IDLE, RAPID_IDLE))
    # what the unit has, then what it reads back once set (v9: 3+4+5+4+4 digits)
    rapid_peer.answer(
        b"\\@",
        reply(b"\\", REMOTE_IDLE, RAPID_IDLE, data=b"000" b"0010" b"00001" b"0000" b"0005"),
        reply(b"\\", REMOTE_IDLE, RAPID_IDLE, data=b"060" b"0100" b"00040" b"0040" b"0005"),
    )
    await driver.configure_train(ten_hz_train())
    sent = [c[:-1] for c in rapid_peer.received[before:] if c[:-1] != b"Q@"]
    # frequency goes up (1.0 → 10.0 Hz): power first, then frequency, pulses, duration
    assert sent == [b"\\@", b"F@", b"@060", b"B0100", b"D00040", b"[0040", b"\\@", b"F@"]
    await driver.close()


async def test_readback_difference_refuses_to_arm(
    rapid_peer: ScriptedPeer, pty_pair: tuple[int, str]
) -> None:
    driver = MagstimDriver("magstim-rapid2", pty_pair[1], mains_voltage=240)
    await driver.connect()
    rapid_peer.answer(b"@060", reply(b"@", REMOTE_IDLE))
    # the unit ignores the power: it still reads back 0 %MSO
    with pytest.raises(ReadbackMismatch, match=r"power 0 %MSO != set 60"):
        await driver.configure_train(ten_hz_train(pulses=1))
    with pytest.raises(ReadbackMismatch, match=r"power 0 %MSO != set 60"):
        await driver.arm()
    assert b"EBx" not in rapid_peer.received
    await driver.close()


async def test_arm_before_a_train_is_configured_is_refused(
    rapid_peer: ScriptedPeer, pty_pair: tuple[int, str]
) -> None:
    driver = MagstimDriver("magstim-rapid2", pty_pair[1], mains_voltage=240)
    await driver.connect()
    with pytest.raises(InvalidSetting, match="arm before a train was configured"):
        await driver.arm()
    assert b"EBx" not in rapid_peer.received
    await driver.close()


def test_the_coil_safety_override_is_never_sendable() -> None:
    assert ord("b") not in SENDABLE_COMMANDS
    assert ord("^") not in SENDABLE_COMMANDS  # enhanced power (above 100 %MSO) neither


def test_no_driver_source_contains_the_coil_safety_override() -> None:
    root = Path(__file__).resolve().parents[2] / "drivers"
    offenders = []
    for path in root.rglob("*.py"):
        if path.name == "codec.py":
            continue  # the shared codec lists every reply length, including that one
        text = path.read_text()
        for needle in ('b"b@"', "b'b@'", 'b"b"', "b'b'", '"b@"', "'b@'"):
            if needle in text:
                offenders.append(f"{path.name}: {needle}")
    assert not offenders


async def test_a_200_answering_nd_with_unknown_is_not_a_rapid(
    pty_pair: tuple[int, str],
) -> None:
    peer = ScriptedPeer(pty_pair[0])
    peer.answer(b"Q@", reply(b"Q", REMOTE_IDLE))
    peer.answer(b"ND", b"?")
    peer.answer(b"EA", reply(b"E", REMOTE_IDLE))
    peer.answer(b"R@", reply(b"R", REMOTE_IDLE & 0x7F))
    driver = MagstimDriver("magstim-rapid2", pty_pair[1], mains_voltage=240)
    with pytest.raises(IdentityMismatch, match="not a Rapid"):
        await driver.connect()
    peer.close()


async def test_remote_refused_without_unlock_code_says_so(pty_pair: tuple[int, str]) -> None:
    peer = ScriptedPeer(pty_pair[0])
    peer.answer(b"Q@", reply(b"Q", ord("?")))
    driver = MagstimDriver("magstim-rapid2", pty_pair[1], mains_voltage=240)
    with pytest.raises(DeviceRejected, match="needs its unlock code"):
        await driver.connect()
    peer.close()


async def test_wrong_echo_and_bad_checksum_are_framing_errors(
    pty_pair: tuple[int, str],
) -> None:
    peer = ScriptedPeer(pty_pair[0])
    peer.answer(b"Q@", b"R\x89" + bytes([0]))
    driver = MagstimDriver("magstim-200", pty_pair[1])
    with pytest.raises(FramingError, match="expected the echo b'Q'"):
        await driver.connect()
    peer.answer(b"Q@", b"Q\x89\x00")
    driver = MagstimDriver("magstim-200", pty_pair[1])
    with pytest.raises(FramingError, match="checksum"):
        await driver.connect()
    peer.close()


async def test_silence_is_a_device_timeout(pty_pair: tuple[int, str]) -> None:
    driver = MagstimDriver("magstim-200", pty_pair[1])
    with pytest.raises(DeviceTimeout, match=r"expected 1 byte\(s\)"):
        await driver.connect()


async def test_error_bit_at_connect_is_a_device_fault_with_the_code(
    rapid_peer: ScriptedPeer, pty_pair: tuple[int, str]
) -> None:
    rapid_peer.answer(b"\\@", reply(b"\\", REMOTE_ERROR, RAPID_IDLE, data=b"0000010000010000"
                                    b"0005"))
    rapid_peer.answer(b"I@", reply(b"I", REMOTE_ERROR, data=b"E42"))
    driver = MagstimDriver("magstim-rapid2", pty_pair[1], mains_voltage=240)
    with pytest.raises(DeviceFault, match="code E42"):
        await driver.connect()


@pytest.mark.parametrize(
    ("train", "reason"),
    [
        (TrainSpec(0, 0, 25, 50_000, 1, 25, 50_000, 60),
         r"train duration 1.25 s .* not a whole number of 0.1 s"),
        (TrainSpec(0, 0, 10, 33_333, 1, 10, 33_333, 60), r"30.0003 Hz is not a whole number"),
        (TrainSpec(0, 0, 6, 20_000, 3, 2, 200_000, 60), r"burst_pulses=3: .* no burst"),
        (ten_hz_train(power=101), r"intensity_pct_mso=101: outside 0..100"),
        (ten_hz_train(power=-1), r"intensity_pct_mso=-1: outside 0..100"),
        (ten_hz_train(pulses=0), r"pulses=0: a train has at least 1 pulse"),
        (ten_hz_train(pulses=10_000), r"pulses=10000: above 6000"),
    ],
)
async def test_unrepresentable_trains_are_rejected_before_sending(
    rapid_peer: ScriptedPeer, pty_pair: tuple[int, str], train: TrainSpec, reason: str
) -> None:
    driver = MagstimDriver("magstim-rapid2", pty_pair[1], mains_voltage=240)
    await driver.connect()
    before = len(rapid_peer.received)
    with pytest.raises(InvalidSetting, match=reason):
        await driver.configure_train(train)
    assert rapid_peer.received[before:] == []
    await driver.close()


async def test_unconfirmed_disarm_silences_the_keepalive_and_arming_is_then_refused(
    rapid_peer: ScriptedPeer, pty_pair: tuple[int, str]
) -> None:
    """A unit still armed after the disarm command: the fault is reported, the
    keep-alive stops (the unit's own ~1 s timeout disarms it), and the driver will not
    arm again without a keep-alive."""
    faults: list[DriverError] = []
    driver = MagstimDriver("magstim-rapid2", pty_pair[1], mains_voltage=240)
    driver.on_fault(faults.append)
    await driver.connect()
    rapid_peer.answer(b"\\@", reply(b"\\", REMOTE_ARMED_READY, RAPID_IDLE,
                                    data=b"000" b"0010" b"00001" b"0000" b"0005"))
    await driver.disarm()  # never raises
    assert [type(f) for f in faults] == [DeviceFault]
    assert "still armed after the disarm command" in faults[0].reason
    await driver.configure_train(TrainSpec(0, 0, 1, 100_000, 1, 1, 100_000, 0))
    before = len(rapid_peer.received)
    with pytest.raises(DeviceFault, match="refusing to arm without a running keep-alive"):
        await driver.arm()
    assert encode_command(b"E", b"B") not in rapid_peer.received[before:]
    await driver.close()
