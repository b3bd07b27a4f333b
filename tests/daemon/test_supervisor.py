"""The one latch: disarm first, bounded; latch once; status anomalies; loop stalls."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from daemon.conftest import eventually
from drivers.base import DeviceStatus
from drivers.errors import KeepAliveGap, LinkLost
from stimd.supervisor import (
    SafetySupervisor,
    StatusLimits,
    TripCause,
    TripCode,
    status_anomaly,
    trip_code_for,
)


class Journal:
    """Records what the supervisor did, in order."""

    def __init__(self, disarm_behaviour: str = "ok") -> None:
        self.steps: list[str] = []
        self.latched: list[tuple[TripCause, bool]] = []
        self.behaviour = disarm_behaviour

    async def disarm(self) -> None:
        self.steps.append("disarm")
        if self.behaviour == "raise":
            raise LinkLost("pty gone")
        if self.behaviour == "hang":
            await asyncio.sleep(3600)

    async def latch(self, cause: TripCause, disarmed: bool) -> None:
        self.steps.append("latch")
        self.latched.append((cause, disarmed))


def make(journal: Journal, *, stall_matters: bool = False,
         stall_threshold_s: float = 0.5) -> SafetySupervisor:
    return SafetySupervisor(
        disarm=journal.disarm, latch=journal.latch, stall_matters=lambda: stall_matters,
        disarm_timeout_s=0.2, stall_threshold_s=stall_threshold_s,
    )


@contextlib.asynccontextmanager
async def running(sup: SafetySupervisor) -> AsyncIterator[None]:
    task = asyncio.create_task(sup.run())
    await asyncio.sleep(0)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_trip_disarms_before_latching() -> None:
    journal = Journal()
    sup = make(journal)
    await sup.trip(TripCode.COIL_NOT_PRESENT, "coil not present while a session is active")
    assert journal.steps == ["disarm", "latch"]
    cause, disarmed = journal.latched[0]
    assert cause.code is TripCode.COIL_NOT_PRESENT and disarmed
    assert sup.inhibited and sup.cause == cause


async def test_trip_is_idempotent() -> None:
    journal = Journal()
    sup = make(journal)
    await sup.trip(TripCode.LOOP_STALL, "first")
    await sup.trip(TripCode.DEVICE_ERROR, "second")
    assert journal.steps == ["disarm", "latch"]
    assert sup.cause is not None and sup.cause.detail == "first"


@pytest.mark.parametrize("behaviour", ["raise", "hang"])
async def test_a_broken_driver_cannot_hold_the_latch(behaviour: str) -> None:
    journal = Journal(behaviour)
    sup = make(journal)
    # 0.2 s disarm bound; 5 s leaves room for a loaded CI machine without hiding a hang
    async with asyncio.timeout(5):
        await sup.trip(TripCode.LINK_LOST, "gone")
    assert journal.steps == ["disarm", "latch"]
    assert journal.latched[0][1] is False


async def test_trip_soon_inhibits_at_once_and_trips_on_the_loop() -> None:
    journal = Journal()
    sup = make(journal)
    async with running(sup):
        sup.trip_on_driver_error(KeepAliveGap("keep-alive 1.2 s late"))
        assert sup.inhibited            # before any await: no fire can slip through
        await eventually(lambda: bool(journal.latched), 5.0)
    cause = journal.latched[0][0]
    assert cause.code is TripCode.KEEPALIVE_GAP
    assert cause.detail == "KEEPALIVE_GAP: keep-alive 1.2 s late"


async def test_clear_resets_the_latch() -> None:
    sup = make(Journal())
    await sup.trip(TripCode.DEVICE_ERROR, "x")
    sup.clear()
    assert not sup.inhibited and sup.cause is None


async def test_loop_stall_while_it_matters_trips() -> None:
    journal = Journal()
    sup = make(journal, stall_matters=True, stall_threshold_s=0.2)
    async with running(sup):
        await asyncio.sleep(0.1)
        time.sleep(0.5)  # noqa: ASYNC251 - blocking the loop is the stall under test
        await eventually(lambda: bool(journal.latched), 5.0)
    assert journal.latched[0][0].code is TripCode.LOOP_STALL
    assert "stall_threshold_s = 0.2" in journal.latched[0][0].detail


async def test_loop_stall_when_idle_does_not_trip() -> None:
    journal = Journal()
    sup = make(journal, stall_matters=False, stall_threshold_s=0.2)
    async with running(sup):
        await asyncio.sleep(0.1)
        time.sleep(0.5)  # noqa: ASYNC251 - blocking the loop is the stall under test
        await asyncio.sleep(0.2)
    assert journal.latched == []
    assert sup.alive(max_silence_s=1.0)


def status(**changes: object) -> DeviceStatus:
    base: dict[str, object] = dict(
        armed=True, ready=True, train_running=False, coil_present=True,
        coil_temperature_c=25.0, error_present=False, error_code=None, remote_control=True,
    )
    base.update(changes)
    return DeviceStatus(**base)  # type: ignore[arg-type]


LIMITS = StatusLimits(coil_trip_c=40.0)


def test_healthy_status_has_no_anomaly() -> None:
    assert status_anomaly(status(), LIMITS, device_should_be_armed=True,
                          session_active=True) is None


def test_error_bit_names_the_code() -> None:
    assert status_anomaly(status(error_present=True, error_code="E07"), LIMITS,
                          device_should_be_armed=False, session_active=False) == (
        TripCode.DEVICE_ERROR, "device reports an error (error code E07)")


def test_coil_at_trip_limit() -> None:
    assert status_anomaly(status(coil_temperature_c=40.0), LIMITS,
                          device_should_be_armed=False, session_active=False) == (
        TripCode.COIL_OVER_TEMPERATURE,
        "coil temperature 40.0 °C reached the trip limit 40.0 °C")


def test_missing_coil_is_an_anomaly_only_in_a_session() -> None:
    assert status_anomaly(status(coil_present=False), LIMITS, device_should_be_armed=False,
                          session_active=False) is None
    anomaly = status_anomaly(status(coil_present=False), LIMITS, device_should_be_armed=True,
                             session_active=True)
    assert anomaly is not None and anomaly[0] is TripCode.COIL_NOT_PRESENT


def test_device_that_disarmed_itself() -> None:
    anomaly = status_anomaly(status(armed=False), LIMITS, device_should_be_armed=True,
                             session_active=True)
    assert anomaly is not None and anomaly[0] is TripCode.DEVICE_DISARMED


def test_driver_error_codes_map_to_trip_codes() -> None:
    assert trip_code_for(LinkLost("x")) is TripCode.LINK_LOST
    assert trip_code_for(KeepAliveGap("x")) is TripCode.KEEPALIVE_GAP
