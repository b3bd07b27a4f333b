"""Stop is accepted in every state, is idempotent, and always leaves the device disarmed."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from daemon.conftest import SHORT_PROTOCOL, Rig
from stimd.commands import Verb

ONE_TRAIN: dict[str, Any] = {
    **SHORT_PROTOCOL,
    "rtms": {"frequency_hz": 10, "pulses_per_train": 10, "trains": 1},
}


async def reach(rig: Rig, state: str) -> None:
    if state == "IDLE":
        return
    if state == "FAULT":
        await rig.sim.ainject("device_error", code="E07")
        await rig.wait_state("FAULT")
        return
    assert (await rig.load(ONE_TRAIN if state == "COMPLETED" else None)).ok
    if state == "LOADED":
        return
    if state == "ARMED":
        assert (await rig.command(Verb.ARM)).ok
        assert await rig.device_armed()
        return
    assert (await rig.command(Verb.START)).ok
    if state == "COMPLETED":
        await rig.wait_state("COMPLETED")
        return
    await rig.sim.await_event("pulse", 1)
    if state == "PAUSED":
        assert (await rig.command(Verb.PAUSE)).ok
        await rig.wait_state("PAUSED")
    if state == "ABORTED":
        assert (await rig.command(Verb.STOP)).ok


EXPECTED_AFTER_STOP = {
    "IDLE": "IDLE", "LOADED": "LOADED", "ARMED": "LOADED", "RUNNING": "ABORTED",
    "PAUSED": "ABORTED", "COMPLETED": "COMPLETED", "ABORTED": "ABORTED", "FAULT": "FAULT",
}


@pytest.mark.parametrize("state", list(EXPECTED_AFTER_STOP))
async def test_stop_in_every_state_disarms(rig: Rig, state: str) -> None:
    await reach(rig, state)
    assert rig.controller.state.value == state
    first = await rig.command(Verb.STOP)
    assert first.ok, first.error
    assert first.state == EXPECTED_AFTER_STOP[state]
    second = await rig.command(Verb.STOP)              # idempotent
    assert second.ok and second.state == first.state

    assert not await rig.device_armed()
    pulses_at_stop = len(rig.pulses())
    await asyncio.sleep(0.5)                            # nothing fires after a stop
    assert len(rig.pulses()) == pulses_at_stop
    assert pulses_at_stop <= 30
    armings = [e["event"] for e in rig.sim.events() if e["event"] in ("armed", "disarmed")]
    assert armings == [] or armings[-1] == "disarmed"


async def test_stop_mid_session_records_the_session_as_aborted(rig: Rig) -> None:
    assert (await rig.load()).ok
    started = await rig.command(Verb.START)
    assert started.result is not None
    await rig.sim.await_event("pulse", 12)
    assert (await rig.command(Verb.STOP, operator="tech-bob")).ok
    session = rig.record.session(started.result["session_id"])
    assert session["outcome"] == "aborted"
    assert session["end_reason"] == "stopped by tech-bob"
    # confirmed pulses plus those of a train cut short (uncertain) cover what the device did
    fired = len(rig.pulses())
    assert session["pulses_delivered"] <= fired <= (
        session["pulses_delivered"] + session["pulses_uncertain"])
    aborted = rig.of_type("session_aborted")[0]
    assert aborted["reason"] == "stopped by tech-bob"
