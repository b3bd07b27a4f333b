"""The driver contract, run for every built-in driver against the simulator.

Timing tolerances, where there are any, are stated with their reason; everything else
is exact (the pulse log counts every pulse the simulated unit delivered).
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import time

import pytest
from driver_contract_support import (
    MAGSTIMS,
    MAGVENTURES,
    RAPIDS,
    FaultLog,
    mains_for,
    train_for,
)

from drivers.base import Stimulator
from drivers.errors import (
    DeviceFault,
    DeviceRejected,
    DeviceTimeout,
    DriverError,
    FramingError,
    IdentityMismatch,
    KeepAliveGap,
    LinkLost,
)
from drivers.registry import create_driver
from protocols.schedule import TrainSpec
from simulator.testing import SimulatorProcess

#: Under the 0.4 s keep-alive and ≤ 0.55 s reply bound a fault surfaces in about 1 s;
#: the bound doubles that and adds room for a loaded two-core host.
FAULT_BOUND_S = 3.0
#: A pulse train is timed by the simulated unit from absolute deadlines; the span from
#: first to last pulse is off by at most one event-loop wake-up, which stays far below
#: 50 ms even when other test processes compete for the two cores.
SPAN_TOLERANCE_S = 0.05


async def test_identify(driver_name: str, driver: Stimulator) -> None:
    identity = driver.identity
    assert identity.model == driver_name
    assert driver.capabilities.model == driver_name
    if driver_name in MAGVENTURES:
        assert (identity.vendor, identity.dialect) == ("magventure", "magventure")
        assert identity.serial_number is not None and identity.serial_number.isdigit()
    else:
        assert (identity.vendor, identity.dialect) == ("magstim", "magstim")
        assert identity.serial_number is None
        if driver_name in RAPIDS:
            assert identity.firmware == "9.0.0"
    status = await driver.read_status()
    assert not status.armed
    assert status.coil_present
    assert status.coil_temperature_c is not None and 15 < status.coil_temperature_c < 40


MISMATCHED_UNIT = {
    "magstim-200": "magstim-rapid2",
    "magstim-bistim": "magstim-superrapid2",
    "magstim-rapid2": "magstim-200",
    "magstim-superrapid2": "magstim-superrapid2-plus1",
    "magstim-superrapid2-plus1": "magstim-rapid2",
    "magventure-r30": "magventure-x100",
    "magventure-x100": "magventure-r30",
}


async def test_another_unit_than_configured_is_an_identity_mismatch(driver_name: str) -> None:
    actual = MISMATCHED_UNIT[driver_name]
    async with SimulatorProcess(device=actual, mains=mains_for(actual)) as other:
        stimulator = create_driver(
            driver_name, str(other.link), mains_voltage=mains_for(driver_name)
        )
        with pytest.raises(IdentityMismatch, match=f"configured {driver_name}"):
            await stimulator.connect()
        await stimulator.close()


async def test_configure_arm_fire_delivers_exactly_the_train(
    driver: Stimulator, sim: SimulatorProcess, faults: FaultLog
) -> None:
    train = train_for(driver, power=55)
    await driver.configure_train(train)
    await driver.arm()
    assert (await driver.read_status()).ready
    await driver.fire_train()
    counted = await driver.wait_train_complete(5.0)
    await driver.disarm()
    pulses = sim.pulses()
    assert len(pulses) == train.pulses
    assert {p["pct_mso"] for p in pulses} == {55}
    if driver.name in MAGVENTURES:
        assert counted == train.pulses  # the unit's own di/dt reports
    else:
        assert counted is None  # Magstim reports no pulse count
    if train.pulses > 1:
        span_s = (pulses[-1]["mono_ns"] - pulses[0]["mono_ns"]) / 1e9
        assert abs(span_s - train.duration_us / 1e6) < SPAN_TOLERANCE_S
    state = await state_of_sim(sim)
    assert not state["armed"]
    assert not state["coil_safety_ignored"]  # the override was never sent
    assert faults.errors == []


async def state_of_sim(sim: SimulatorProcess) -> dict[str, object]:
    return await sim.astate()


async def test_disarm_from_every_state(
    driver: Stimulator, sim: SimulatorProcess, faults: FaultLog
) -> None:
    await driver.disarm()                      # connected, never configured
    await driver.configure_train(train_for(driver))
    await driver.disarm()                      # configured
    await driver.arm()
    await driver.disarm()                      # armed and ready
    assert not (await state_of_sim(sim))["armed"]
    await driver.disarm()                      # already disarmed: idempotent
    await driver.arm()
    await driver.fire_train()
    await asyncio.sleep(0.35)
    await driver.disarm()                      # mid-train (rTMS units) or recharging
    state = await state_of_sim(sim)
    assert not state["armed"]
    if driver.capabilities.supports_trains:
        assert len(sim.pulses()) < train_for(driver).pulses
        assert sim.events("train_aborted")
    await sim.ainject("unplug")
    await faults.wait_for(LinkLost, FAULT_BOUND_S)
    await driver.disarm()                      # link lost: must not raise
    await driver.close()
    await driver.disarm()                      # closed: must not raise
    disarms = [e for e in sim.events("disarmed") if e["cause"] == "command"]
    assert len(disarms) == 2                   # the two times the unit was armed


async def test_keepalive_holds_the_unit_armed_over_several_device_timeouts(
    driver: Stimulator, sim: SimulatorProcess, faults: FaultLog
) -> None:
    await driver.configure_train(train_for(driver))
    await driver.arm()
    armed_at = time.monotonic_ns()
    await asyncio.sleep(3.0)  # 3 of the Magstim's ~1 s remote-control timeouts
    state = await state_of_sim(sim)
    assert state["armed"] and state["ready"] and state["remote"] in (True, False)
    assert not sim.events("remote_lost")
    assert faults.errors == []
    if driver.name in MAGSTIMS:
        assert state["remote"]
        renewals = [e["mono_ns"] for e in sim.events("keepalive") if e["mono_ns"] >= armed_at]
        assert len(renewals) >= 6
        gaps = [(b - a) / 1e9 for a, b in itertools.pairwise(renewals)]
        assert max(gaps) < 0.75
    await driver.disarm()


@pytest.mark.parametrize(
    ("fault", "params", "expected"),
    [
        ("unplug", {}, LinkLost),
        ("stuck", {}, DeviceTimeout),
        ("garble", {"rate": 1.0, "seed": 7}, FramingError),
        ("device_error", {"code": "E07"}, DeviceFault),
    ],
)
async def test_injected_fault_surfaces_as_its_typed_error_while_armed(
    driver: Stimulator, sim: SimulatorProcess, faults: FaultLog, *, fault: str,
    params: dict[str, object], expected: type[DriverError],
) -> None:
    await driver.configure_train(train_for(driver))
    await driver.arm()
    await sim.ainject(fault, **params)
    elapsed = await faults.wait_for(expected, FAULT_BOUND_S)
    assert elapsed < FAULT_BOUND_S
    await driver.disarm()  # never raises, whatever the link's state


@pytest.mark.parametrize("driver_name", MAGSTIMS)
async def test_unit_disarms_on_its_own_when_the_driver_process_dies(
    driver_name: str, sim: SimulatorProcess
) -> None:
    script = (
        "import asyncio, sys\n"
        "from drivers.registry import create_driver\n"
        "from protocols.schedule import TrainSpec\n"
        "async def main():\n"
        f"    d = create_driver({driver_name!r}, {str(sim.link)!r},"
        f" mains_voltage={mains_for(driver_name)!r})\n"
        "    await d.connect()\n"
        "    await d.configure_train(TrainSpec(0, 0, 1, 100000, 1, 1, 100000, 40))\n"
        "    await d.arm()\n"
        "    print('ARMED', flush=True)\n"
        "    await asyncio.sleep(60)\n"
        "asyncio.run(main())\n"
    )
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 15.0)
        assert line.strip() == b"ARMED"
        assert (await state_of_sim(sim))["armed"]
        child.kill()
    finally:
        if child.returncode is None:
            child.kill()
        await child.wait()
    killed_ns = time.monotonic_ns()
    disarmed = await sim.await_event(
        "disarmed", timeout_s=5.0, where=lambda e: e["cause"] == "keepalive_expired"
    )
    # The unit drops control about 1 s after the last keep-alive it received.
    assert (disarmed[0]["mono_ns"] - killed_ns) / 1e9 < 1.5
    assert sim.events("remote_lost")
    assert sim.pulses() == []


@pytest.mark.parametrize("driver_name", RAPIDS[:1])
@pytest.mark.parametrize("firmware", ["6.0.0", "7.2.0", "9.0.0", "10.1.0"])
async def test_rapid_parameter_widths_follow_the_software_version(
    driver_name: str, firmware: str, faults: FaultLog
) -> None:
    async with SimulatorProcess(device=driver_name, mains=240, firmware=firmware) as sim:
        stimulator = create_driver(driver_name, str(sim.link), mains_voltage=240)
        stimulator.on_fault(faults)
        identity = await stimulator.connect()
        try:
            assert identity.firmware == firmware
            await stimulator.configure_train(train_for(stimulator, pulses=20, power=40))
            status = await stimulator.read_status()
            assert (status.extra["pulses"], status.extra["frequency_hz"]) == (20, 10.0)
            assert status.extra["duration_s"] == 2.0
        finally:
            await stimulator.close()
    assert faults.errors == []


@pytest.mark.parametrize("driver_name", RAPIDS[:1])
async def test_rapid_with_unlock_code(driver_name: str) -> None:
    code = "1234-56789012-ab"
    async with SimulatorProcess(device=driver_name, mains=240, unlock_code=code) as sim:
        without = create_driver(driver_name, str(sim.link), mains_voltage=240)
        with pytest.raises(DeviceRejected, match="needs its unlock code"):
            await without.connect()
        stimulator = create_driver(driver_name, str(sim.link), mains_voltage=240,
                                   unlock_code=code)
        await stimulator.connect()
        try:
            await stimulator.configure_train(train_for(stimulator))
            await stimulator.arm()
            await asyncio.sleep(1.5)  # the keep-alive (x@ with a code) holds it armed
            assert (await sim.astate())["armed"]
        finally:
            await stimulator.close()
        assert not sim.events("remote_lost")


@pytest.mark.parametrize("driver_name", MAGVENTURES)
async def test_magventure_native_theta_burst(
    driver: Stimulator, sim: SimulatorProcess, faults: FaultLog
) -> None:
    train = TrainSpec(
        index=0, onset_us=0, pulses=9, pulse_interval_us=20_000, burst_pulses=3, bursts=3,
        burst_interval_us=200_000, intensity_pct_mso=30,
    )
    await driver.configure_train(train)
    await driver.arm()
    await driver.fire_train()
    assert await driver.wait_train_complete(5.0) == 9
    await driver.disarm()
    onsets = [p["mono_ns"] / 1e9 for p in sim.pulses()]
    assert len(onsets) == 9
    first = onsets[0]
    for burst in range(3):
        for k in range(3):
            planned = burst * 0.2 + k * 0.02
            # same reason as SPAN_TOLERANCE_S: one wake-up of the simulated unit
            assert abs(onsets[burst * 3 + k] - first - planned) < SPAN_TOLERANCE_S
    assert faults.errors == []


@pytest.mark.parametrize("driver_name", ["magstim-rapid2", "magventure-r30"])
async def test_keepalive_gap_is_reported(driver: Stimulator, faults: FaultLog) -> None:
    """A stalled event loop (here: a blocking sleep) is seen by the watchdog."""
    await driver.configure_train(train_for(driver))
    await driver.arm()
    time.sleep(0.9)  # noqa: ASYNC251 - the point: a blocked loop sends no keep-alive
    await faults.wait_for(KeepAliveGap, FAULT_BOUND_S)
    await driver.disarm()
