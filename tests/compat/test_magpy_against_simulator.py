"""MagPy 1.4, the public Python toolbox researchers use with real Magstim units, drives the
simulator unmodified (issue 3).

MagPy (PyPI ``magpy-tms``, module ``magpy.magstim``) is used exactly as its README tells a
researcher to: ``connect()``, get parameters, set power (and the Rapid's rTMS settings),
``arm()``, wait for ready, ``fire()``, ``disarm()``, ``disconnect()``. It runs its serial
I/O in a forked process with its own keep-alive ("poke"), and reads replies with no
timeout, so a reply of the wrong length would hang it: every exchange that completes is
evidence that the simulator answered with exactly the bytes MagPy expects. The verdict
comes from two independent sides: MagPy's own return values (its error codes and parsed
status dicts) and the simulator's pulse log (what was actually fired, at what power and
timing, and that remote control was never lost).

Not the simulator's doing, and handled in this file only:

* MagPy's serial process starts with ``setRTS(False)``. A Linux pty has no modem lines,
  so that ioctl fails with ENOTTY, MagPy's process dies, and ``connect()`` then waits
  forever. A real serial port has RTS. See ``pty_tolerant_rts``.
* ``quickFire()`` pulses RTS as a hardware trigger; a pty has no RTS and the simulator has
  no trigger input, so it is not used.
* MagPy 1.4's ``Rapid.setPower`` raises ``KeyError('rapid')`` when no unlock code is set:
  it asks ``isEnhanced()``, which reads the Rapid status from the ``Q@`` reply, and that
  reply (3 bytes on every Magstim, MagPy reads 3) carries none. Real users hit the same
  error on real units (github.com/nicolasmcnair/magpy/issues/11). Without an unlock code
  the test asserts that error and then sets the power with MagPy's base-class
  ``Magstim.setPower``, the code ``Rapid.setPower`` itself delegates to for the ``@``
  command.
* Other MagPy 1.4 bugs the test steps around: 110 % cannot be set in enhanced power mode
  (``Rapid.setPower`` hands the value to ``Magstim.setPower``, which refuses anything
  above 100), so enhanced mode is only switched on and off; ``setNPulses`` writes the
  derived duration in seconds where the unit takes tenths, so ``setDuration`` follows it;
  ``getChargeDelay()`` expects 8 reply bytes from every v9.x unit (it compares
  ``version > (9,)``; MAGIC and the reference say 7 until v10) and would wait forever, so
  it is not called; ``getErrorCode`` drops the last of the three code characters, and
  ``getSystemStatus`` decodes the extended status from the high byte (the reference and
  MAGIC use the low byte), which the assertions take into account.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import multiprocessing
import statistics
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import serial.serialposix
from magpy.magstim import BiStim, Magstim, Rapid, serialPortController

from simulator.testing import SimulatorProcess

pytestmark = pytest.mark.filterwarnings(
    # Python >= 3.12 warns when a multi-threaded process forks. MagPy starts its serial
    # process with the platform's default multiprocessing context (fork on Linux), which
    # cannot be changed without modifying MagPy; pytest may have helper threads running.
    r"ignore:This process \(pid=\d+\) is multi-threaded, use of fork\(\) may lead to "
    r"deadlocks:DeprecationWarning",
)

UNLOCK_CODE = "1234-12345678-ab"
# Arming takes about 1 s on the unit; the rest is headroom for a loaded 2-core machine.
READY_TIMEOUT_S = 10.0
# MagPy's disconnect() waits for the reply to R@ with no timeout of its own.
DISCONNECT_TIMEOUT_S = 5.0
PROCESS_EXIT_TIMEOUT_S = 5.0
# What this test judges is that the unit fires at the frequency MagPy set, not how finely
# the simulator times each pulse under load (tests/simulator/test_sim_realtime.py does that).
# The simulator schedules on absolute deadlines, so a late wake-up (tens of ms when the
# 2-core machine is saturated) delays one pulse without shifting the others: the median
# interval stays on the period, and 10 ms tells 10 Hz from 9.1 or 11.1 Hz. No pulse may be
# half a period off its slot, or it would belong to a neighbour's.
INTERVAL_TOLERANCE_NS = 10_000_000
# getTemperature() and the control socket read the coil a few ms apart; the coil cools
# by far less than the 0.1 °C resolution of the F@ reply in that time.
TEMPERATURE_TOLERANCE_C = 0.1


# ---- harness -------------------------------------------------------------------------
@pytest.fixture
def pty_tolerant_rts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let MagPy's ``setRTS(False)`` pass on a pty, as pyserial already does while opening.

    pyserial ignores ENOTTY for this very ioctl in ``open()`` (ptys and some adapters have
    no modem lines) but not in the ``rts`` setter that MagPy calls afterwards. The patch
    applies to this test process only; MagPy's serial process is forked from it and
    inherits it. Nothing else changes: other errors are raised, other ioctls untouched.
    """
    if multiprocessing.get_start_method() != "fork":
        pytest.fail("MagPy's serial process must be forked to inherit the pty RTS tolerance")
    original = serial.serialposix.Serial._update_rts_state

    def update_rts_state_tolerating_pty(port: Any) -> None:
        try:
            original(port)
        except OSError as error:
            if error.errno != errno.ENOTTY:
                raise

    monkeypatch.setattr(serial.serialposix.Serial, "_update_rts_state",
                        update_rts_state_tolerating_pty)


@pytest.fixture(autouse=True)
def no_leftover_threads_or_processes() -> Iterator[None]:
    """MagPy starts a process and queue feeder threads; none may outlive a test."""
    threads_before = set(threading.enumerate())
    children_before = set(multiprocessing.active_children())
    yield
    leftover_threads = [t.name for t in threading.enumerate()
                        if t not in threads_before and t.is_alive()]
    leftover_children = [p for p in multiprocessing.active_children()
                         if p not in children_before]
    for child in leftover_children:
        child.kill()
        child.join(PROCESS_EXIT_TIMEOUT_S)
    assert not leftover_threads, f"threads left running: {leftover_threads}"
    assert not leftover_children, f"processes left running: {leftover_children}"


def _disconnect_within(stimulator: Magstim, timeout_s: float) -> None:
    """``disconnect()``, but never hang the suite if the unit stopped answering.

    MagPy blocks on its reply queue with no timeout; if no reply comes, its serial process
    is ended and the wait released with the error MagPy itself reports for a failed read.
    """
    failures: list[BaseException] = []

    def disconnect() -> None:
        try:
            stimulator.disconnect()
        except BaseException as error:  # re-raised below, in the test's thread
            failures.append(error)

    worker = threading.Thread(target=disconnect, name="magpy-disconnect", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        stimulator._connection.terminate()
        stimulator._receiveQueue.put(serialPortController.SERIAL_READ_ERR)
        worker.join(timeout_s)
        raise AssertionError(f"MagPy's disconnect() got no reply within {timeout_s} s")
    if failures:
        raise failures[0]


@contextlib.contextmanager
def magpy_session(stimulator: Magstim) -> Iterator[Magstim]:
    """``connect()``; afterwards, however the test went, disconnect (if the test did not)
    and leave no MagPy process, queue or feeder thread behind."""
    port_process = stimulator._connection
    try:
        stimulator.connect()
        yield stimulator
    finally:
        try:
            if stimulator._connected and port_process.is_alive():
                _disconnect_within(stimulator, DISCONNECT_TIMEOUT_S)
        finally:
            if port_process.pid is not None:
                port_process.join(PROCESS_EXIT_TIMEOUT_S)
                if port_process.is_alive():
                    port_process.terminate()
                    port_process.join(PROCESS_EXIT_TIMEOUT_S)
                if port_process.is_alive():
                    port_process.kill()
                    port_process.join(PROCESS_EXIT_TIMEOUT_S)
            for queue in (stimulator._sendQueue, stimulator._receiveQueue):
                queue.close()
                queue.join_thread()


def arm_and_wait_until_ready(stimulator: Magstim) -> None:
    error, reply = stimulator.arm(receipt=True)
    assert error == 0, reply
    assert reply["instr"]["standby"] == 1          # status before the command
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not stimulator.isReadyToFire():
        assert time.monotonic() < deadline, f"not ready {READY_TIMEOUT_S} s after arming"
        time.sleep(0.05)


def assert_remote_session_was_clean(sim: SimulatorProcess) -> None:
    """From the pulse log: MagPy took remote control, kept it (its poke renewed it) until
    it disarmed and released it itself, and the unit never had to refuse anything."""
    events = sim.events()
    kinds = [e["event"] for e in events]
    assert "remote_lost" not in kinds, [e for e in events if e["event"] == "remote_lost"]
    assert "refused" not in kinds, [e for e in events if e["event"] == "refused"]
    assert {e["cause"] for e in sim.events("disarmed")} == {"command"}
    remote = [e for e in events if e["event"] in ("remote_on", "remote_off")]
    assert [e["event"] for e in remote] == ["remote_on", "remote_off"]
    assert all(e["cause"] == "command" for e in remote)
    # disconnect() disarms (EA) before it releases remote control (R@)
    assert sim.events("command")[-1]["command"] == "EA"
    assert sim.events("command")[-1]["mono_ns"] < remote[-1]["mono_ns"]


def assert_train_on_grid(pulses: list[dict[str, Any]], count: int, frequency_hz: float,
                         pct_mso: int) -> None:
    assert len(pulses) == count
    assert [p["pulse"] for p in pulses] == list(range(count))
    assert {p["train"] for p in pulses} == {0}
    assert {p["mode"] for p in pulses} == {"train"}
    assert {p["pct_mso"] for p in pulses} == {pct_mso}
    period_ns = round(1e9 / frequency_hz)
    onsets = [p["mono_ns"] for p in pulses]
    intervals = [later - earlier for earlier, later in itertools.pairwise(onsets)]
    median_ns = statistics.median(intervals)
    assert abs(median_ns - period_ns) <= INTERVAL_TOLERANCE_NS, f"median {median_ns / 1e6} ms"
    for index, onset in enumerate(onsets):
        error_ns = onset - (onsets[0] + index * period_ns)
        assert abs(error_ns) < period_ns / 2, f"pulse {index} off by {error_ns / 1e6} ms"


def assert_temperature_matches(sim: SimulatorProcess, reading: dict[str, Any]) -> None:
    coil_c = sim.state()["coil_temperature_c"]
    assert abs(reading["magstimTemp"]["coil1Temp"] - coil_c) <= TEMPERATURE_TOLERANCE_C
    assert reading["magstimTemp"]["coil2Temp"] == 0.0


# ---- Magstim 200² ----------------------------------------------------------------------
def test_magstim_200_single_pulse(pty_tolerant_rts: None) -> None:
    with SimulatorProcess("magstim-200") as sim:
        with magpy_session(Magstim(str(sim.link))) as magstim:
            error, parameters = magstim.getParameters()
            assert error == 0, parameters
            assert parameters["instr"] == {
                "standby": 1, "armed": 0, "ready": 0, "coilPresent": 1, "replaceCoil": 0,
                "errorPresent": 0, "errorType": 0, "remoteStatus": 1}

            assert magstim.setPower(55, receipt=True)[0] == 0
            error, parameters = magstim.getParameters()
            assert (error, parameters["magstimParam"]) == (0, {"power": 55})

            arm_and_wait_until_ready(magstim)
            magstim.poke()   # MagPy's advice before a timed pulse: Q@ + its 0x00 checksum
            error, reply = magstim.fire(receipt=True)
            assert error == 0, reply
            assert reply["instr"]["ready"] == 1
            [pulse] = sim.wait_for_event("pulse")
            assert (pulse["pct_mso"], pulse["mode"], pulse["train"]) == (55, "single", None)

            error, temperature = magstim.getTemperature()
            assert error == 0, temperature
            assert_temperature_matches(sim, temperature)
            error, reply = magstim.disarm(receipt=True)
            assert error == 0, reply
            magstim.disconnect()
        assert len(sim.pulses()) == 1
        assert_remote_session_was_clean(sim)


# ---- BiStim² ---------------------------------------------------------------------------
def test_bistim_powers_interval_and_pulse(pty_tolerant_rts: None) -> None:
    with SimulatorProcess("magstim-bistim") as sim:
        with magpy_session(BiStim(str(sim.link))) as bistim:
            assert bistim.setPowerA(50, receipt=True)[0] == 0
            assert bistim.setPowerB(40, receipt=True)[0] == 0
            assert bistim.setPulseInterval(10, receipt=True)[0] == 0
            error, parameters = bistim.getParameters()
            assert error == 0, parameters
            assert parameters["bistimParam"] == {"powerA": 50, "powerB": 40, "ppOffset": 10}

            assert bistim.highResolutionMode(True, receipt=True)[0] == 0
            error, parameters = bistim.getParameters()   # the unit resets it to 1 ms
            assert (error, parameters["bistimParam"]["ppOffset"]) == (0, 1.0)
            assert bistim.setPulseInterval(2.5, receipt=True)[0] == 0   # 0.1 ms steps
            error, parameters = bistim.getParameters()
            assert (error, parameters["bistimParam"]["ppOffset"]) == (0, 2.5)
            assert sim.state()["params"]["interval"] == 25

            arm_and_wait_until_ready(bistim)
            error, reply = bistim.fire(receipt=True)
            assert error == 0, reply
            [pulse] = sim.wait_for_event("pulse")
            assert (pulse["pct_mso"], pulse["mode"]) == (50, "single")
            error, reply = bistim.disarm(receipt=True)
            assert error == 0, reply
            bistim.disconnect()
        assert_remote_session_was_clean(sim)


# ---- Rapid² ----------------------------------------------------------------------------
RAPID_POWER = 60
TRAIN_HZ = 10
TRAIN_PULSES = 20       # 1.9 s: longer than the 1 s keep-alive, so MagPy's poke must act
TRAIN_S = 2


@pytest.mark.parametrize(("firmware", "unlock_code"), [
    pytest.param("9.0.0", UNLOCK_CODE, id="v9-unlock-code"),
    pytest.param("9.0.0", None, id="v9"),
    pytest.param("8.0.0", None, id="v8"),   # D 4 digits, [ 3 digits, \@ 22 bytes
    pytest.param("6.0.0", None, id="v6"),   # and a 3-digit wait: \@ 21 bytes
])
def test_rapid_rtms_train(pty_tolerant_rts: None, firmware: str,
                          unlock_code: str | None) -> None:
    version = tuple(int(part) for part in firmware.split("."))
    with SimulatorProcess("magstim-rapid2", firmware=firmware, unlock_code=unlock_code) as sim:
        rapid = Rapid(str(sim.link), superRapid=0, unlockCode=unlock_code or "", voltage=240)
        with magpy_session(rapid):
            assert rapid.getVersion() == (0, version)
            error, parameters = rapid.getParameters()
            assert error == 0, parameters
            assert parameters["instr"]["remoteStatus"] == 1
            assert parameters["rapid"]["singlePulseMode"] == 1
            assert parameters["rapid"]["hvpsuConnected"] == 1
            assert parameters["rapid"]["coilReady"] == 1

            error, reply = rapid.getErrorCode()
            assert error == 0, reply
            assert reply["currentErrorCode"] == "00"   # "000"; MagPy keeps two characters
            if version >= (9,):
                error, system = rapid.getSystemStatus()
                assert error == 0, system
                assert system["rapid"] == parameters["rapid"]
                assert system["extInstr"] == {"plus1ModuleDetected": 0,
                                              "specialTriggerModeActive": 0,
                                              "chargeDelaySet": 0}
            else:   # MagPy knows x@ is v9+ and does not send it
                assert rapid.getSystemStatus() == Magstim.SYSTEM_STATUS_VERSION_ERR

            error, reply = rapid.enhancedPowerMode(True, receipt=True)
            assert (error, reply["rapid"]["enhancedPowerMode"]) == (0, 0)   # status before
            error, parameters = rapid.getParameters()
            assert (error, parameters["rapid"]["enhancedPowerMode"]) == (0, 1)
            error, reply = rapid.enhancedPowerMode(False, receipt=True)
            assert (error, reply["rapid"]["enhancedPowerMode"]) == (0, 1)

            if unlock_code:
                assert rapid.setPower(RAPID_POWER, receipt=True)[0] == 0
            else:
                with pytest.raises(KeyError, match="rapid"):   # MagPy issue #11, see top
                    rapid.setPower(RAPID_POWER, receipt=True)
                assert Magstim.setPower(rapid, RAPID_POWER, receipt=True)[0] == 0

            assert rapid.rTMSMode(True, receipt=True)[0] == 0
            assert rapid.enhancedPowerMode(True, receipt=True) == Magstim.COMMAND_CONFLICT_ERR
            assert rapid.setFrequency(TRAIN_HZ, receipt=True)[0] == 0
            assert rapid.setNPulses(TRAIN_PULSES, receipt=True)[0] == 0
            assert rapid.setDuration(TRAIN_S, receipt=True)[0] == 0
            error, parameters = rapid.getParameters()
            assert error == 0, parameters
            assert parameters["rapid"]["singlePulseMode"] == 0
            assert parameters["rapidParam"] == {
                "power": RAPID_POWER, "frequency": float(TRAIN_HZ), "nPulses": TRAIN_PULSES,
                "duration": float(TRAIN_S),
                "wait": Rapid.getRapidMinWaitTime(RAPID_POWER, TRAIN_PULSES, TRAIN_HZ)}
            unit = sim.state()["params"]
            assert (unit["frequency_hz"], unit["pulses"], unit["duration_s"]) == (
                TRAIN_HZ, TRAIN_PULSES, TRAIN_S)

            arm_and_wait_until_ready(rapid)
            error, validated = rapid.validateSequence()   # MagPy's energy check, host side
            assert error == 0, validated
            error, reply = rapid.fire(receipt=True)
            assert error == 0, reply
            assert reply["instr"]["ready"] == 1
            error, running = rapid.getParameters()
            assert error == 0, running
            assert running["rapid"]["train"] == 1

            sim.wait_for_event("train_completed", timeout_s=10)
            assert_train_on_grid(sim.pulses(), TRAIN_PULSES, TRAIN_HZ, RAPID_POWER)

            deadline = time.monotonic() + READY_TIMEOUT_S
            while not rapid.isReadyToFire():   # ready again once the post-train wait ends
                assert time.monotonic() < deadline, "not ready again after the train"
                time.sleep(0.05)
            error, temperature = rapid.getTemperature()
            assert error == 0, temperature
            assert_temperature_matches(sim, temperature)
            assert temperature["magstimTemp"]["coil1Temp"] > 22.0   # the train heated it

            error, reply = rapid.disarm(receipt=True)
            assert error == 0, reply
            rapid.disconnect()
        assert_remote_session_was_clean(sim)
        assert len(sim.pulses()) == TRAIN_PULSES
        # While the train ran the test sent no Q@ or x@, so every keep-alive the unit
        # received then was MagPy's own poke: x@ with an unlock code, Q@ without.
        first_pulse = sim.pulses()[0]["mono_ns"]
        train_end = sim.events("train_completed")[0]["mono_ns"]
        pokes = [e["command"] for e in sim.events("keepalive")
                 if first_pulse < e["mono_ns"] < train_end]
        assert pokes
        assert set(pokes) == {"x" if unlock_code else "Q"}


def test_rapid_error_code_reaches_magpy(pty_tolerant_rts: None) -> None:
    with SimulatorProcess("magstim-rapid2", firmware="9.0.0") as sim:
        rapid = Rapid(str(sim.link), superRapid=0, unlockCode="", voltage=240)
        with magpy_session(rapid):
            sim.inject("device_error", code="E42")
            error, reply = rapid.getErrorCode()
            assert error == 0, reply
            assert reply["instr"]["errorPresent"] == 1
            assert reply["currentErrorCode"] == "E4"   # MagPy drops the last character
            error, reply = rapid.arm(receipt=True)      # the unit refuses to arm
            assert (error, reply) == Magstim.COMMAND_CONFLICT_ERR
            rapid.disconnect()
        assert sim.pulses() == []
        assert sim.events("remote_off")[-1]["cause"] == "command"
