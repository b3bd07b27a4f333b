"""A transport loss or a stop that arrives while a start, resume or arm is executing.

Arming takes about a second (the capacitors charge); the command transport can be lost
or a stop can arrive meanwhile. Neither may be overtaken: no train starts, the device
ends disarmed, and the simulator's pulse log proves it.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from daemon.conftest import OPERATOR, Rig, eventually, make_rig
from stimd.commands import CommandOutcome, ErrorCode, Verb

LOST = "broker connection lost: test"
# Longer than arming plus the first train's onset (0 s): a run that began would have
# fired by then.
NO_PULSE_WINDOW_S = 1.5


async def while_arming(rig: Rig, verb: Verb) -> asyncio.Task[CommandOutcome]:
    """Send ``verb`` and return once the simulator saw the arm command (not yet ready)."""
    armed_before = len(rig.sim.events("armed"))
    task = asyncio.create_task(rig.command(verb))
    await rig.sim.await_event("armed", armed_before + 1)
    assert not task.done()
    return task


async def while_checking(rig: Rig, verb: Verb) -> asyncio.Task[CommandOutcome]:
    """Send ``verb`` and return while it awaits the device inside the command lock.

    One loop turn runs the command up to its first device read (the interlocks before
    a start), which is before any state change.
    """
    task = asyncio.create_task(rig.command(verb))
    await asyncio.sleep(0)
    assert not task.done()
    return task


async def assert_nothing_fires(rig: Rig) -> None:
    await asyncio.sleep(NO_PULSE_WINDOW_S)
    assert rig.pulses() == []
    assert not await rig.device_armed()


async def test_transport_lost_while_start_arms_pauses_before_the_first_train(rig: Rig) -> None:
    assert (await rig.load()).ok
    start = await while_arming(rig, Verb.START)
    rig.controller.transport_lost(LOST)
    outcome = await start
    assert outcome.error is not None and outcome.error.code is ErrorCode.REJECTED_BY_SAFETY
    assert outcome.state == "PAUSED"
    assert f"command transport lost: {LOST} while starting" in outcome.error.message
    await assert_nothing_fires(rig)
    assert rig.controller.state.value == "PAUSED"
    paused = rig.of_type("session_paused")
    assert [p["reason"] for p in paused] == [f"command transport lost: {LOST}"]
    assert paused[0]["next_train"] == 0
    session = rig.record.session(outcome.error.details["session_id"])  # type: ignore[index]
    assert session["trains"] == [] and session["outcome"] == "running"
    # the operator is back: an explicit resume starts with the first train
    resumed = await rig.command(Verb.RESUME)
    assert resumed.ok, resumed.error
    await eventually(lambda: bool(rig.of_type("train_completed")))
    assert rig.of_type("train_completed")[0]["train"] == 0
    assert len(rig.pulses()) >= 10


async def test_transport_lost_while_starting_an_armed_device(rig: Rig) -> None:
    assert (await rig.load()).ok
    assert (await rig.command(Verb.ARM)).ok
    start = await while_checking(rig, Verb.START)
    rig.controller.transport_lost(LOST)
    outcome = await start
    assert not outcome.ok
    await assert_nothing_fires(rig)
    assert rig.controller.state.value == "PAUSED"
    assert rig.controller.snapshot()["paused_reason"] == f"command transport lost: {LOST}"


async def test_transport_lost_while_resume_arms_stays_paused(rig: Rig) -> None:
    assert (await rig.load()).ok
    assert (await rig.command(Verb.START)).ok
    await rig.sim.await_event("pulse", 10)
    assert (await rig.command(Verb.PAUSE)).ok
    await rig.wait_state("PAUSED")
    fired = len(rig.pulses())
    resume = await while_arming(rig, Verb.RESUME)
    rig.controller.transport_lost(LOST)
    outcome = await resume
    assert outcome.error is not None and outcome.error.code is ErrorCode.REJECTED_BY_SAFETY
    await asyncio.sleep(NO_PULSE_WINDOW_S)
    assert len(rig.pulses()) == fired
    assert not await rig.device_armed()
    assert rig.controller.state.value == "PAUSED"
    assert rig.controller.snapshot()["paused_reason"] == f"command transport lost: {LOST}"


async def test_transport_lost_while_arming_goes_back_to_loaded(rig: Rig) -> None:
    assert (await rig.load()).ok
    arm = await while_arming(rig, Verb.ARM)
    rig.controller.transport_lost(LOST)
    outcome = await arm
    assert outcome.error is not None and outcome.error.code is ErrorCode.REJECTED_BY_SAFETY
    assert outcome.state == "LOADED"
    await assert_nothing_fires(rig)


async def test_stop_while_start_arms_wins_without_a_fault(rig: Rig) -> None:
    assert (await rig.load()).ok
    start = await while_arming(rig, Verb.START)
    stopped = await rig.command(Verb.STOP, operator="tech-bob")
    outcome = await start
    assert stopped.ok, stopped.error
    assert outcome.error is not None and outcome.error.code is ErrorCode.WRONG_STATE
    assert outcome.error.message == "stopped by tech-bob while arming: disarmed"
    await assert_nothing_fires(rig)
    assert rig.controller.state.value == "LOADED"
    assert rig.of_type("fault") == []
    sessions = rig.record.sessions()
    assert [(s["outcome"], s["pulses_delivered"]) for s in sessions] == [("aborted", 0)]


async def test_stop_while_starting_an_armed_device(rig: Rig) -> None:
    assert (await rig.load()).ok
    assert (await rig.command(Verb.ARM)).ok
    start = await while_checking(rig, Verb.START)
    stopped = await rig.command(Verb.STOP, operator="tech-bob")
    outcome = await start
    assert stopped.ok and stopped.state == "LOADED", stopped
    assert outcome.error is not None and outcome.error.code is ErrorCode.WRONG_STATE
    await assert_nothing_fires(rig)
    assert rig.controller.state.value == "LOADED"
    assert rig.of_type("fault") == []


async def test_resume_by_another_operator_makes_them_the_one_who_must_be_heard(
    tmp_path: Path,
) -> None:
    # tech-alice starts and pauses, then goes silent; tech-bob resumes and stays present:
    # the session follows tech-bob's presence (a resume proves nobody else present)
    async with make_rig(tmp_path, operators={"heartbeat_timeout_s": 2.0}) as rig:
        assert (await rig.load()).ok
        assert (await rig.command(Verb.START)).ok
        await rig.sim.await_event("pulse", 1)
        assert (await rig.command(Verb.PAUSE)).ok
        await rig.wait_state("PAUSED")

        async def bob_present() -> None:
            while True:
                await rig.command(Verb.HEARTBEAT, operator="tech-bob")
                await asyncio.sleep(0.5)

        heartbeats = asyncio.create_task(bob_present())
        try:
            resumed = await rig.command(Verb.RESUME, operator="tech-bob")
            assert resumed.ok, resumed.error
            # two trains and a re-arm take about 4 s: tech-alice is silent longer than 2 s
            assert await rig.wait_state("COMPLETED", "PAUSED", "FAULT") == "COMPLETED"
        finally:
            heartbeats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeats
        assert len(rig.pulses()) == 30
        assert rig.controller.snapshot()["session"]["operator"] == OPERATOR  # who started it
