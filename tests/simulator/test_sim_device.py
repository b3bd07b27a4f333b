"""Device physics in-process: watchdogs on an injected clock, rate limits, refusals,
and the whole simulator running inside the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import pytest
from sim_harness import wire

from drivers.magstim.codec import encode_command
from protocols.capabilities import device_profile
from simulator.app import Simulator, SimulatorConfig
from simulator.coils import coil_for
from simulator.control import ControlRequestError, dispatch
from simulator.device import ARM_DELAY_S, DeviceCore
from simulator.event_log import EventLog


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_armed_sixty_seconds_without_firing_disarms() -> None:
    clock = FakeClock()
    events = EventLog(None)
    async with asyncio.TaskGroup() as group:
        core = DeviceCore(device_profile("magstim-200"), coil_for("magstim-200", None),
                          events, group.create_task, clock=clock)
        watchdog = group.create_task(core.run_watchdogs())
        try:
            core.remote = True
            assert core.arm() is None
            clock.now += 59.0
            core.note_valid_command()
            await asyncio.sleep(0.05)
            assert core.armed
            clock.now += 2.0
            core.note_valid_command()          # host still polling: not a keep-alive loss
            for _ in range(100):
                if not core.armed:
                    break
                await asyncio.sleep(0.01)
            assert not core.armed
            assert events.records[-1]["event"] == "disarmed"
            assert events.records[-1]["cause"] == "armed_idle_timeout"
            assert core.remote                   # idle timeout keeps remote control
        finally:
            watchdog.cancel()
            core.shutdown()


async def test_single_pulse_rate_limit_and_recharge() -> None:
    async with wire("magstim-rapid2") as w:
        w.exchange(b"Q@n")
        w.exchange(encode_command(b"@", b"040"))
        w.exchange(b"EBx")
        await asyncio.sleep(ARM_DELAY_S + 0.2)
        assert w.exchange(b"EHr")[1] != ord("S")
        assert w.exchange(b"EHr") == b"ESg"      # 1 pulse/s: still recharging
        assert w.core.pulse_count == 1
        refused = [r for r in w.events.records if r["event"] == "refused"]
        assert refused[-1]["reason"] == "not charged"


async def test_train_refused_above_the_frequency_allowed_at_power() -> None:
    async with wire("magstim-rapid2") as w:
        w.exchange(b"Q@n")
        w.exchange(encode_command(b"B", b"0200"))      # 20 Hz, allowed at 0 %
        w.exchange(encode_command(b"D", b"00010"))
        w.exchange(encode_command(b"[", b"0005"))
        assert w.dialect.energy is not None  # type: ignore[union-attr]
        # raising power above the level where 20 Hz is allowed is refused as a value error
        too_high = next(p for p in range(101)
                        if w.dialect.energy.max_frequency_hz(p) < 20)  # type: ignore[union-attr]
        assert w.exchange(encode_command(b"@", f"{too_high:03d}".encode()))[1] == ord("?")
        assert w.core.power_a == 0


async def test_disarm_during_a_train_aborts_it() -> None:
    async with wire("magstim-rapid2") as w:
        w.exchange(b"Q@n")
        for body in (b"@030", b"B0100", b"D00040", b"[0040"):
            w.exchange(encode_command(body[:1], body[1:]))
        w.exchange(b"EBx")
        await asyncio.sleep(ARM_DELAY_S + 0.2)
        w.exchange(b"EHr")
        await asyncio.sleep(0.25)
        assert w.core.train_running
        w.exchange(b"EAy")
        delivered = w.core.pulse_count
        await asyncio.sleep(0.3)
        assert w.core.pulse_count == delivered < 40
        kinds = [r["event"] for r in w.events.records]
        assert "train_aborted" in kinds and kinds[-1] == "disarmed"


async def test_pulse_that_crosses_the_limit_trips_the_unit() -> None:
    async with wire("magstim-rapid2", coil="d70-figure8") as w:
        w.exchange(b"Q@n")
        w.exchange(encode_command(b"@", b"100"))
        w.exchange(b"EBx")
        await asyncio.sleep(ARM_DELAY_S + 0.2)
        w.core.set_coil_temperature(39.99)
        w.exchange(b"EHr")
        assert not w.core.armed
        faults = [r for r in w.events.records if r["event"] == "fault"]
        assert faults[-1]["cause"] == "coil_overtemp" and faults[-1]["coil_c"] > 40
        assert w.exchange(b"EBx") == b"ESg"


async def test_in_process_simulator_serves_the_pty(tmp_path: Path) -> None:
    config = SimulatorConfig(device="magstim-rapid2", link=tmp_path / "tty",
                             pulse_log=tmp_path / "log.jsonl", line_rate=False)
    simulator = Simulator(config)
    async with simulator.running():
        assert config.link.is_symlink()
        fd = os.open(config.link, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            os.write(fd, b"Q@n")
            reply = b""
            for _ in range(300):
                await asyncio.sleep(0.01)
                with contextlib.suppress(BlockingIOError):
                    reply += os.read(fd, 16)
                if len(reply) >= 3:
                    break
            assert reply == b"Q\x89%"
        finally:
            os.close(fd)
        assert dispatch(simulator, {"op": "pulse_count"}) == {"pulse_count": 0, "trains": 0}
        with pytest.raises(ControlRequestError, match="request must be a JSON object"):
            dispatch(simulator, ["state"])
    assert not config.link.is_symlink()
    assert simulator.events.records[-1]["event"] == "stop"
