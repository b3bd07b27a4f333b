"""``state`` tells the truth about the device right after the daemon arms or disarms it.

The poller runs at its slowest allowed rate here (every 2 s) so that it cannot paper over
a snapshot published with the reading from before the disarm; the simulator's own state
is the ground truth.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from daemon.conftest import SHORT_PROTOCOL, Rig, make_rig
from stimd.commands import Verb

ONE_TRAIN: dict[str, Any] = {
    **SHORT_PROTOCOL,
    "rtms": {"frequency_hz": 10, "pulses_per_train": 10, "trains": 1},
}


@pytest.fixture
async def slow_poll_rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with make_rig(tmp_path, supervisor={"status_poll_interval_s": 2.0}) as rig:
        yield rig


def device_when_entering(rig: Rig, state: str) -> dict[str, Any]:
    """The device part of the first snapshot announced in ``state``."""
    for event in rig.events:
        if event.type == "state_changed" and event.payload["state"] == state:
            device: dict[str, Any] = event.payload["device"]
            return device
    raise AssertionError(f"no state_changed to {state}")


async def test_completed_snapshot_says_disarmed(slow_poll_rig: Rig) -> None:
    rig = slow_poll_rig
    assert (await rig.load(ONE_TRAIN)).ok
    assert (await rig.command(Verb.START)).ok
    assert await rig.wait_state("COMPLETED", "FAULT") == "COMPLETED"
    assert device_when_entering(rig, "RUNNING")["armed"] is True
    assert device_when_entering(rig, "COMPLETED")["armed"] is False
    assert rig.controller.snapshot()["device"]["armed"] is False
    assert not await rig.device_armed()


async def test_pause_and_stop_snapshots_say_disarmed(slow_poll_rig: Rig) -> None:
    rig = slow_poll_rig
    assert (await rig.load()).ok
    assert (await rig.command(Verb.START)).ok
    await rig.sim.await_event("pulse", 1)
    assert (await rig.command(Verb.PAUSE)).ok
    await rig.wait_state("PAUSED")
    assert device_when_entering(rig, "PAUSED")["armed"] is False
    assert not await rig.device_armed()
    assert (await rig.command(Verb.STOP)).ok
    assert device_when_entering(rig, "ABORTED")["armed"] is False


async def test_arm_then_stop_snapshots_follow_the_device(slow_poll_rig: Rig) -> None:
    rig = slow_poll_rig
    assert (await rig.load()).ok
    assert (await rig.command(Verb.ARM)).ok
    assert device_when_entering(rig, "ARMED")["armed"] is True
    assert await rig.device_armed()
    stopped = await rig.command(Verb.STOP)
    assert stopped.ok and stopped.state == "LOADED"
    assert rig.controller.snapshot()["device"]["armed"] is False
    assert not await rig.device_armed()
