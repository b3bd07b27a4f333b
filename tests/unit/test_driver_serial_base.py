"""``SerialStimulator``, the base a serial driver (ours or a third party's) builds on.

A deliberately tiny line-based dialect ("ARM\\n" → "OK armed\\n") runs against a
scripted unit on a real pty: enough to exercise the plumbing the base owns — connect
and its clean-up on failure, arming that disarms on failure, a disarm that never
raises, link loss reported once, close.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator

import pytest

from drivers.base import DeviceIdentity, DeviceStatus
from drivers.errors import DeviceFault, DeviceRejected, DriverError, IdentityMismatch, LinkLost
from drivers.keepalive import KeepAlivePolicy
from drivers.serial_stimulator import SerialStimulator, builtin_capabilities
from drivers.transport import Transport
from protocols.capabilities import DEVICE_MODELS, device_profile
from protocols.schedule import TrainSpec

POLICY = KeepAlivePolicy(armed_period_s=0.1, idle_period_s=0.2, gap_limit_s=0.3)


class LineLink:
    """One request line, one reply line, under one lock."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport
        self._lock = asyncio.Lock()

    @property
    def transport(self) -> Transport:
        return self._transport

    async def ask(self, line: str) -> str:
        async with self._lock:
            self._transport.discard_input()
            await self._transport.write(line.encode() + b"\n", 0.5)
            reply = await self._transport.read_until(ord("\n"), 64, 0.5)
        text = reply.decode().strip()
        if not text.startswith("OK"):
            raise DeviceRejected(f"unit answered {text!r} to {line!r}")
        return text[2:].strip()


class LineStimulator(SerialStimulator[LineLink]):
    """The example third-party driver: every hook the base asks for, nothing more."""

    def __init__(self, port: str, *, disarm_bug: bool = False) -> None:
        super().__init__(
            "acme-line", port, capabilities=device_profile("magventure-r30"),
            baudrate=9600, keepalive_policy=POLICY,
        )
        self._disarm_bug = disarm_bug
        self._renewed_at = time.monotonic()
        self.renewals = 0

    def _open_link(self, transport: Transport) -> LineLink:
        return LineLink(transport)

    async def _handshake(self) -> DeviceIdentity:
        model = await self._require_link().ask("ID")
        if model != "acme-line":
            raise IdentityMismatch(f"configured acme-line, but the unit is {model!r}")
        await self._require_link().ask("DISARM")
        return DeviceIdentity("acme-line", "acme", "1.0", None, "line")

    async def _renew(self) -> None:
        await self._require_link().ask("PING")
        self._renewed_at = time.monotonic()
        self.renewals += 1

    def _last_renewal(self) -> float:
        return self._renewed_at

    async def _disarm_and_confirm(self, link: LineLink) -> None:
        if self._disarm_bug:
            raise KeyError("a bug in the dialect's disarm")
        if await link.ask("DISARM") != "disarmed":
            raise DeviceFault("still armed after DISARM")

    async def _release(self, link: LineLink) -> None:
        await link.ask("LOCAL")

    async def set_intensity(self, pct_mso: int) -> None:
        await self._require_link().ask(f"POWER {pct_mso}")

    async def configure_train(self, train: TrainSpec) -> None:
        await self.set_intensity(train.intensity_pct_mso)

    async def arm(self) -> None:
        async with self._arming():
            if await self._require_link().ask("ARM") != "armed":
                raise DeviceFault("not armed after ARM")

    async def fire_train(self) -> None:
        await self._require_link().ask("FIRE")

    async def read_status(self) -> DeviceStatus:
        armed = await self._require_link().ask("STATUS") == "armed"
        return DeviceStatus(armed, armed, False, True, None, False, None, True)


class LineUnit:
    """The unit's end of the pty: answers from a table, records what it received."""

    def __init__(self, master: int) -> None:
        self.master = master
        self.armed = False
        self.identity = "acme-line"
        self.arm_reply = "OK armed"
        self.received: list[str] = []
        self._buffer = b""
        asyncio.get_running_loop().add_reader(master, self._on_readable)

    def _on_readable(self) -> None:
        try:
            self._buffer += os.read(self.master, 4096)
        except OSError:
            return
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            command = line.decode()
            self.received.append(command)
            os.write(self.master, self._answer(command).encode() + b"\n")

    def _answer(self, command: str) -> str:
        if command == "ID":
            return f"OK {self.identity}"
        if command == "ARM":
            self.armed = True
            return self.arm_reply
        if command == "DISARM":
            self.armed = False
            return "OK disarmed"
        if command == "STATUS":
            return "OK armed" if self.armed else "OK disarmed"
        return "OK"

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.master)


@pytest.fixture
async def unit(pty_pair: tuple[int, str]) -> AsyncIterator[LineUnit]:
    peer = LineUnit(pty_pair[0])
    yield peer
    peer.close()


async def test_connect_arm_disarm_close_and_the_keepalive(
    unit: LineUnit, pty_pair: tuple[int, str]
) -> None:
    driver = LineStimulator(pty_pair[1])
    assert (await driver.connect()).model == "acme-line"
    await driver.arm()
    await asyncio.sleep(0.35)  # at the 0.1 s armed period: several renewals
    assert driver.renewals >= 2
    await driver.disarm()
    assert not unit.armed
    await driver.close()
    await driver.close()  # idempotent
    assert unit.received[-2:] == ["DISARM", "LOCAL"]


async def test_a_failed_handshake_closes_the_port_and_stops_everything(
    unit: LineUnit, pty_pair: tuple[int, str]
) -> None:
    unit.identity = "other-unit"
    driver = LineStimulator(pty_pair[1])
    with pytest.raises(IdentityMismatch, match="'other-unit'"):
        await driver.connect()
    with pytest.raises(RuntimeError, match="called once"):
        await driver.connect()
    await driver.disarm()  # after a failed connect: nothing to send, no error
    # The port was released: another owner may open it.
    again = LineStimulator(pty_pair[1])
    unit.identity = "acme-line"
    await again.connect()
    await again.close()


async def test_an_arm_that_fails_disarms_before_raising(
    unit: LineUnit, pty_pair: tuple[int, str]
) -> None:
    unit.arm_reply = "OK charging"
    driver = LineStimulator(pty_pair[1])
    await driver.connect()
    with pytest.raises(DeviceFault, match="not armed after ARM"):
        await driver.arm()
    assert unit.received[-2:] == ["ARM", "DISARM"]
    assert not unit.armed
    await driver.close()


async def test_a_bug_in_the_dialects_disarm_is_reported_not_raised(
    unit: LineUnit, pty_pair: tuple[int, str]
) -> None:
    faults: list[DriverError] = []
    driver = LineStimulator(pty_pair[1], disarm_bug=True)
    driver.on_fault(faults.append)
    await driver.connect()
    await driver.disarm()
    assert [type(f) for f in faults] == [DeviceFault]
    assert "disarm failed unexpectedly: KeyError" in faults[0].reason
    await driver.close()


async def test_link_loss_is_reported_once_and_disarm_then_stays_quiet(
    unit: LineUnit, pty_pair: tuple[int, str]
) -> None:
    faults: list[DriverError] = []
    reported = asyncio.Event()

    def listener(error: DriverError) -> None:
        faults.append(error)
        reported.set()

    driver = LineStimulator(pty_pair[1])
    driver.on_fault(listener)
    await driver.connect()
    unit.close()
    os.close(pty_pair[0])
    async with asyncio.timeout(2.0):
        await reported.wait()
    await asyncio.sleep(0.3)  # keep-alive renewals fail on the dead link meanwhile
    await driver.disarm()
    await driver.close()
    assert [type(f) for f in faults] == [LinkLost]


def test_builtin_capabilities_name_the_unknown_model_and_voltage() -> None:
    with pytest.raises(ValueError, match=r"driver name 'acme-line': not a Magstim model"):
        builtin_capabilities("acme-line", DEVICE_MODELS[:5], "Magstim", None)
    with pytest.raises(ValueError, match=r"mains_voltage=230: .*needs mains_voltage 240 or 115"):
        builtin_capabilities("magstim-rapid2", DEVICE_MODELS, "Magstim", 230)


async def test_a_cancelled_close_still_releases_the_unit_and_the_port(
    unit: LineUnit, pty_pair: tuple[int, str]
) -> None:
    driver = LineStimulator(pty_pair[1])
    await driver.connect()
    await driver.arm()
    closing = asyncio.create_task(driver.close())
    await asyncio.sleep(0)  # close has started: its disarm is under way
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    assert not unit.armed
    assert unit.received[-2:] == ["DISARM", "LOCAL"]
    successor = LineStimulator(pty_pair[1])  # the port is free again
    await successor.connect()
    await successor.close()
