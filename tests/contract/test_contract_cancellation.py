"""Cancelling a driver call mid-exchange, against the real simulator over a pty.

The daemon cancels driver calls (stop, shutdown, a supervisor's timeout); the next call
must still work, and nothing of the cancelled exchange may be read as its reply.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from driver_contract_support import FaultLog, train_for

from drivers.base import Stimulator
from simulator.testing import SimulatorProcess

#: Cancellation points from "before the command went out" to "after its reply": a
#: status read is several exchanges of 3–24 bytes at ~1 ms a byte (9600 baud), or one
#: 19-byte frame at 38 400 baud, so these land before, inside and between replies.
CANCEL_AFTER_S = (0.0, 0.001, 0.003, 0.006, 0.01, 0.015, 0.025, 0.04)


async def cancel_and_wait(call: asyncio.Task[Any]) -> None:
    """Cancel ``call`` and let it unwind (it may also have finished just before)."""
    call.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await call


async def test_a_call_cancelled_mid_exchange_leaves_the_driver_usable(
    driver: Stimulator, sim: SimulatorProcess, faults: FaultLog
) -> None:
    reference = await driver.read_status()
    for delay_s in CANCEL_AFTER_S:
        call = asyncio.create_task(driver.read_status())
        await asyncio.sleep(delay_s)
        await cancel_and_wait(call)
        status = await driver.read_status()
        assert status.coil_present == reference.coil_present
        assert not status.armed
    # An arm cancelled while it waits for the unit to become ready disarms the unit
    # (arm's own cleanup, itself right after the cancelled exchange) and the next
    # arm and train work.
    train = train_for(driver, power=45)
    await driver.configure_train(train)
    arming = asyncio.create_task(driver.arm())
    await asyncio.sleep(0.3)
    await cancel_and_wait(arming)
    assert not (await sim.astate())["armed"]
    await driver.arm()
    await driver.fire_train()
    await driver.wait_train_complete(5.0)
    await driver.disarm()
    assert len(sim.pulses()) == train.pulses
    assert faults.errors == []


async def test_a_disarm_whose_caller_is_cancelled_still_disarms(
    driver: Stimulator, sim: SimulatorProcess, faults: FaultLog
) -> None:
    """The disarm waits for the port behind a status read when its caller is cancelled;
    it must still go out and be confirmed (then the caller sees its cancellation),
    since nobody may be left to call disarm again, and the keep-alive would otherwise
    hold the unit armed."""
    await driver.configure_train(train_for(driver))
    await driver.arm()
    for _ in range(3):
        reading = asyncio.create_task(driver.read_status())
        await asyncio.sleep(0.001)  # the status read holds the port
        disarming = asyncio.create_task(driver.disarm())
        await asyncio.sleep(0.001)  # the disarm has started and waits for the port
        disarming.cancel()
        try:
            await disarming
        except asyncio.CancelledError:
            pass
        else:
            raise AssertionError("the disarm swallowed its caller's cancellation")
        await reading
        assert not (await sim.astate())["armed"]
        await driver.arm()
    await driver.disarm()
    assert faults.errors == []
