"""Every anomaly trips with its reason and disarms; interlocks block with theirs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import stimd.controller as controller_module
from daemon.conftest import Rig, eventually, make_rig
from drivers.errors import DeviceCondition, DeviceFault
from stimd.commands import ErrorCode, Event, Verb
from stimd.supervisor import TripCode, trip_code_for


async def fault_of(rig: Rig) -> dict[str, Any]:
    await rig.wait_state("FAULT")
    fault = rig.controller.snapshot()["fault"]
    assert fault is not None
    assert not await rig.device_armed()
    events = rig.of_type("fault")
    assert events and events[0]["cause"] == fault["cause"]
    return dict(fault)


async def start_and_wait_for_pulses(rig: Rig, pulses: int = 1) -> int:
    assert (await rig.load()).ok
    started = await rig.command(Verb.START)
    assert started.ok and started.result is not None, started.error
    await rig.sim.await_event("pulse", pulses)
    session_id: int = started.result["session_id"]
    return session_id


async def test_coil_removed_while_running_trips(rig: Rig) -> None:
    session_id = await start_and_wait_for_pulses(rig)
    await rig.sim.ainject("coil_removed")
    fault = await fault_of(rig)
    assert fault["cause"] == "coil_not_present"
    # the detail says which reading saw it first: the status poll, or during a train
    # the keep-alive renewal's status byte
    assert fault["detail"] in {
        "coil not present while a session is active",
        "DEVICE_FAULT: magstim-rapid2: coil not present while armed",
    }
    session = rig.record.session(session_id)
    assert session["outcome"] == "fault"
    assert session["end_reason"].startswith("coil_not_present")


@pytest.mark.parametrize("condition", list(DeviceCondition))
def test_a_device_fault_trips_with_the_condition_the_driver_found(
    condition: DeviceCondition,
) -> None:
    # the same code a status poll gives for that condition, whichever reading saw it
    assert trip_code_for(DeviceFault("x", condition)) is TripCode(condition.value)


def test_a_device_fault_without_a_condition_is_a_device_error() -> None:
    assert trip_code_for(DeviceFault("error bit")) is TripCode.DEVICE_ERROR


async def test_coil_over_temperature_trips(rig: Rig) -> None:
    await start_and_wait_for_pulses(rig)
    await rig.sim.ainject("coil_overtemp", celsius=45)
    fault = await fault_of(rig)
    assert fault["cause"] == "coil_over_temperature"
    # the detail says which reading saw it first: a temperature read, or during a train
    # the keep-alive renewal's status byte (the unit's own coil-too-hot bit)
    assert fault["detail"] in {
        "coil temperature 45.0 °C reached the trip limit 40.0 °C",
        "DEVICE_FAULT: magstim-rapid2: the unit reports its coil too hot while armed",
    }


async def test_device_error_bit_trips_and_only_reset_leaves_fault(rig: Rig) -> None:
    assert (await rig.load()).ok
    await rig.sim.ainject("device_error", code="E42")
    fault = await fault_of(rig)
    assert fault["cause"] == "device_error"
    assert "E42" in fault["detail"]
    for verb in (Verb.START, Verb.ARM, Verb.UNLOAD, Verb.RESUME):
        refused = await rig.command(verb)
        assert refused.error is not None and refused.error.code is ErrorCode.FAULT
        assert "device_error" in refused.error.message
    assert rig.controller.state.value == "FAULT"
    await rig.sim.aclear()
    reset = await rig.command(Verb.RESET, operator="tech-bob", reason="error cleared on unit")
    assert reset.ok and reset.state == "IDLE", reset.error
    assert rig.controller.snapshot()["fault"] is None
    assert (await rig.load()).ok
    resets = [e for e in rig.record.sessions()]  # reset recorded in the event chain
    assert resets == []
    assert rig.record.verify().ok


async def test_hot_coil_blocks_arming_with_its_reason(rig: Rig) -> None:
    assert (await rig.load()).ok
    await rig.sim.ainject("coil_temperature", celsius=37.9)
    refused = await rig.command(Verb.START)
    assert refused.error is not None and refused.error.code is ErrorCode.REJECTED_BY_SAFETY
    assert "coil temperature 37.9 °C" in refused.error.message
    assert "warning limit 38.0 °C" in refused.error.message
    interlocks = {i["name"]: i for i in refused.error.details}  # type: ignore[union-attr]
    assert interlocks["coil_temperature"]["ok"] is False
    assert interlocks["plan_valid"]["ok"] is True
    assert rig.of_type("interlock")[0]["name"] == "coil_temperature"
    assert rig.controller.state.value == "LOADED"
    assert not await rig.device_armed()
    assert rig.record.sessions() == []          # no session began


async def test_missing_coil_blocks_arming_without_tripping(rig: Rig) -> None:
    assert (await rig.load()).ok
    await rig.sim.ainject("coil_removed")
    refused = await rig.command(Verb.ARM)
    assert refused.error is not None and refused.error.code is ErrorCode.REJECTED_BY_SAFETY
    assert refused.error.message == "interlock: coil not present: connect the coil"
    assert rig.controller.state.value == "LOADED"


async def test_predicted_overshoot_waits_then_pauses(tmp_path: Path) -> None:
    overrides = {"supervisor": {"status_poll_interval_s": 0.1, "max_cooldown_wait_s": 1.0}}
    async with make_rig(tmp_path, **overrides) as rig:
        await start_and_wait_for_pulses(rig, 10)
        # the coil is now too warm for the next train: it must wait, never fire into it
        await rig.sim.ainject("coil_temperature", celsius=37.95)
        await rig.wait_state("PAUSED", "FAULT")
        assert rig.controller.state.value == "PAUSED"
        waits = [i for i in rig.of_type("interlock") if i["name"] == "coil_temperature"]
        assert waits and waits[0]["waits"] is True
        reason = rig.of_type("session_paused")[0]["reason"]
        assert reason.startswith("interlock before train 1: waited 1 s (max_cooldown_wait_s)")
        assert len(rig.pulses()) == 10
        assert not await rig.device_armed()


async def test_silent_operator_pauses_after_the_current_train(tmp_path: Path) -> None:
    overrides = {"operators": {"heartbeat_timeout_s": 2.0},
                 "supervisor": {"status_poll_interval_s": 0.1}}
    async with make_rig(tmp_path, **overrides) as rig:
        assert (await rig.load()).ok
        assert (await rig.command(Verb.START)).ok
        await rig.wait_state("PAUSED", "FAULT", "COMPLETED")
        assert rig.controller.state.value == "PAUSED"
        paused = rig.of_type("session_paused")[0]
        assert paused["reason"] == (
            "operator 'tech-alice' not heard from for more than heartbeat_timeout_s = 2 s")
        # whole trains only (how many depends on how long arming took on this machine)
        assert len(rig.pulses()) in (0, 10, 20)
        assert not await rig.device_armed()
        resumed = await rig.command(Verb.RESUME)       # explicit resume, and heard again
        assert resumed.ok, resumed.error


async def test_transport_loss_pauses(rig: Rig) -> None:
    await start_and_wait_for_pulses(rig)
    rig.controller.transport_lost("broker connection lost")
    await rig.wait_state("PAUSED", "FAULT")
    assert rig.of_type("session_paused")[0]["reason"] == (
        "command transport lost: broker connection lost")


async def test_record_failure_mid_session_stops_safely(rig: Rig) -> None:
    await start_and_wait_for_pulses(rig, 10)
    rig.record.close()                                 # the record can no longer be written
    fault = await fault_of(rig)
    assert fault["cause"] == "record_write_failed"
    assert len(rig.pulses()) <= 20


async def test_an_exception_in_a_listener_trips(rig: Rig) -> None:
    def broken(event: Event) -> None:
        if event.type == "train_started":
            raise RuntimeError("listener bug")

    rig.controller.add_listener(broken)
    await start_and_wait_for_pulses(rig)
    fault = await fault_of(rig)
    assert fault["cause"] == "unexpected_exception"
    assert "listener bug" in fault["detail"]
    await eventually(lambda: len(rig.pulses()) <= 10, 1.0)


async def test_armed_without_start_is_disarmed_before_the_device_does_it(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(controller_module, "ARMED_IDLE_LIMIT_S", 0.5)
    assert (await rig.load()).ok
    assert (await rig.command(Verb.ARM)).ok
    await rig.wait_state("LOADED", "FAULT")
    assert rig.controller.state.value == "LOADED"
    assert not await rig.device_armed()
    assert (await rig.command(Verb.START)).ok          # the plan was kept
