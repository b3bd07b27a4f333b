"""Fixtures of the driver contract suite: a real simulator per test, a connected driver.

Every test runs once per built-in driver name against ``stimd-sim`` simulating that
model over a real pty; the simulator's pulse log is the ground truth.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from driver_contract_support import FaultLog, mains_for

from drivers.base import Stimulator
from drivers.registry import BUILTIN_NAMES, create_driver
from simulator.testing import SimulatorProcess


@pytest.fixture(params=BUILTIN_NAMES)
def driver_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
async def sim(driver_name: str) -> AsyncIterator[SimulatorProcess]:
    async with SimulatorProcess(device=driver_name, mains=mains_for(driver_name)) as process:
        yield process


@pytest.fixture
def faults() -> FaultLog:
    return FaultLog()


@pytest.fixture
async def driver(
    driver_name: str, sim: SimulatorProcess, faults: FaultLog
) -> AsyncIterator[Stimulator]:
    stimulator = create_driver(driver_name, str(sim.link), mains_voltage=mains_for(driver_name))
    stimulator.on_fault(faults)
    await stimulator.connect()
    try:
        yield stimulator
    finally:
        await stimulator.close()
