"""A stop that lands in the middle of a start: nothing may fire, the unit ends disarmed.

The window (the start's interlock reading, before it arms) is a few milliseconds wide on
the wire, too narrow to hit reliably through the broker, so the real controller drives
the real simulator in-process and the start's device reading is held at a gate while
the stop arrives. The simulator's pulse log and state are the judge.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from drivers.base import DeviceStatus, Stimulator
from drivers.registry import create_driver
from simulator.testing import SimulatorProcess
from stimd.commands import COMMAND_MODELS, CommandOutcome, Verb
from stimd.config import parse_config
from stimd.controller import SessionController
from stimd.record import SessionRecord

from .judge import load_fields

OPERATOR = "tech-alice"


class GatedReads:
    """Holds the first status read made while a command owns the controller's lock."""

    def __init__(self, controller_ref: list[SessionController]) -> None:
        self.controller_ref = controller_ref
        self.armed_gate = False
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    def wrap(self, driver: Stimulator) -> Stimulator:
        original: Callable[[], Awaitable[DeviceStatus]] = driver.read_status

        async def read_status() -> DeviceStatus:
            controller = self.controller_ref[0]
            if self.armed_gate and controller._lock.locked():
                self.armed_gate = False
                self.entered.set()
                await self.release.wait()
            return await original()

        driver.read_status = read_status  # type: ignore[method-assign]
        return driver


async def _run(controller: SessionController, verb: Verb, **fields: Any) -> CommandOutcome:
    command = COMMAND_MODELS[verb].model_validate({"id": f"race-{verb.value}", **fields})
    return await controller.execute(OPERATOR, command, verb)


async def test_stop_during_the_start_interlock_check_fires_nothing(tmp_path: Path) -> None:
    async with SimulatorProcess(device="magstim-rapid2", mains=240) as sim:
        state_dir = tmp_path / "state"
        config = parse_config({
            "device": {"id": "dev01", "driver": "magstim-rapid2", "port": str(sim.link),
                       "mains_voltage": 240},
            "operators": {"names": [OPERATOR], "heartbeat_timeout_s": 60.0},
            "storage": {"state_dir": str(state_dir)},
            "supervisor": {"status_poll_interval_s": 0.1},
        }, source="test")
        ref: list[SessionController] = []
        gates = GatedReads(ref)
        with SessionRecord.open(state_dir) as record:
            controller = SessionController(
                config=config, record=record,
                driver_factory=lambda: gates.wrap(
                    create_driver("magstim-rapid2", str(sim.link), mains_voltage=240)),
            )
            ref.append(controller)
            ready = asyncio.Event()
            async with asyncio.TaskGroup() as tg:
                serving = tg.create_task(controller.serve(on_ready=lambda _i: ready.set()))
                try:
                    await asyncio.wait_for(ready.wait(), 20)
                    loaded = await _run(controller, Verb.LOAD, **load_fields())
                    assert loaded.ok, loaded
                    gates.armed_gate = True
                    start = tg.create_task(_run(controller, Verb.START))
                    await asyncio.wait_for(gates.entered.wait(), 10)
                    stop = tg.create_task(_run(controller, Verb.STOP))
                    await asyncio.sleep(0.2)  # the stop disarmed and now waits for the lock
                    gates.release.set()
                    started, stopped = await start, await stop
                    await asyncio.sleep(1.5)  # a train would have fired by now
                    state = controller.state.value
                    sim_state = await sim.astate()
                    pulses = len(sim.pulses())
                finally:
                    await controller.shutdown("test finished")
                    serving.cancel()
    assert stopped.ok, stopped
    assert not started.ok, f"the start ran after the stop: {started}"
    assert pulses == 0, f"{pulses} pulses after a stop"
    assert not sim_state["armed"], "the unit was left armed after the stop"
    assert state not in ("RUNNING", "ARMED"), state
