"""A daemon controller wired to a real simulator over a real pty, for each test.

The simulator runs as its own process (``SimulatorProcess``) so its timing is not
disturbed by the controller under test; the pulse log is the ground truth.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from drivers.registry import create_driver
from simulator.testing import SimulatorProcess
from stimd.commands import (
    COMMAND_MODELS,
    CommandOutcome,
    Event,
    Verb,
)
from stimd.config import StimdConfig, parse_config
from stimd.controller import SessionController
from stimd.record import SessionRecord

OPERATOR = "tech-alice"

# 3 trains × 10 pulses at 10 Hz, 1 s apart, at 100 % MT: inside Rossi's 10 Hz / 100 % cell
# and below 100 % MT so Chen's 5-s rule does not apply. About 5 s including arming.
SHORT_PROTOCOL: dict[str, Any] = {
    "protocol": {"name": "test-short", "description": "daemon tests", "reference": "tests",
                 "kind": "rtms", "intensity_pct_mt": 100},
    "rtms": {"frequency_hz": 10, "pulses_per_train": 10, "trains": 3,
             "inter_train_interval_s": 1},
}
MT_PCT_MSO = 50


def daemon_config(port: Path, state_dir: Path, **overrides: dict[str, Any]) -> StimdConfig:
    data: dict[str, Any] = {
        "device": {"id": "dev01", "driver": "magstim-rapid2", "port": str(port),
                   "mains_voltage": 240},
        "operators": {"names": [OPERATOR, "tech-bob"], "heartbeat_timeout_s": 20.0},
        "storage": {"state_dir": str(state_dir)},
        # the poll interval bounds how fast a status anomaly is seen; 0.1 s keeps tests short
        "supervisor": {"status_poll_interval_s": 0.1},
    }
    for table, values in overrides.items():
        data[table] = {**data.get(table, {}), **values}
    return parse_config(data, source="test")


def motor_threshold(pct_mso: int = MT_PCT_MSO) -> dict[str, Any]:
    return {"pct_mso": pct_mso, "method": "emg", "measured_at": datetime.now(UTC)}


async def eventually(predicate: Callable[[], bool], timeout_s: float = 20.0) -> None:
    """Poll ``predicate`` until true; TimeoutError after ``timeout_s``."""
    async with asyncio.timeout(timeout_s):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.02)


@dataclass
class Rig:
    sim: SimulatorProcess
    controller: SessionController
    record: SessionRecord
    events: list[Event] = field(default_factory=list)
    _ids: int = 0

    async def command(self, verb: Verb, operator: str = OPERATOR, **fields: Any) -> (
        CommandOutcome
    ):
        self._ids += 1
        model = COMMAND_MODELS[verb]
        command = model.model_validate({"id": f"c{self._ids}", **fields})
        return await self.controller.execute(operator, command, verb)

    async def load(self, protocol: Any = None, **fields: Any) -> CommandOutcome:
        return await self.command(
            Verb.LOAD, protocol=SHORT_PROTOCOL if protocol is None else protocol,
            motor_threshold=fields.pop("motor_threshold", motor_threshold()),
            patient_ref=fields.pop("patient_ref", "patient-0001"), **fields,
        )

    async def wait_state(self, *states: str, timeout_s: float = 20.0) -> str:
        await eventually(lambda: self.controller.state.value in states, timeout_s)
        return self.controller.state.value

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e.payload for e in self.events if e.type == kind]

    def pulses(self) -> list[dict[str, Any]]:
        return self.sim.pulses()

    async def device_armed(self) -> bool:
        state = await self.sim.astate()
        return bool(state["armed"])


@contextlib.asynccontextmanager
async def make_rig(
    tmp_path: Path, device: str = "magstim-rapid2", **overrides: dict[str, Any]
) -> AsyncIterator[Rig]:
    mains = 240 if device.startswith("magstim") else None
    async with SimulatorProcess(device=device, mains=mains) as sim:
        state_dir = tmp_path / "state"
        overrides["device"] = {"driver": device, "mains_voltage": mains,
                               **overrides.get("device", {})}
        config = daemon_config(sim.link, state_dir, **overrides)
        record = SessionRecord.open(state_dir)
        controller = SessionController(
            config=config,
            driver_factory=lambda: create_driver(device, str(sim.link), mains_voltage=mains),
            record=record,
        )
        rig = Rig(sim=sim, controller=controller, record=record)
        controller.add_listener(rig.events.append)
        serve = asyncio.create_task(controller.serve(), name="test-serve")
        try:
            await rig.wait_state("IDLE")
            yield rig
        finally:
            with contextlib.suppress(Exception):
                await controller.shutdown("test finished")
            serve.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serve
            record.close()


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with make_rig(tmp_path) as made:
        yield made
