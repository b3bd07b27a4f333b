"""Every injectable fault, seen from the serial side by a pyserial client."""

from __future__ import annotations

import termios
import time
from collections.abc import Iterator

import pytest
import serial
from sim_serial_client import MagstimClient

from drivers.magstim.codec import checksum
from drivers.magventure.codec import FrameParser, encode_frame
from simulator.testing import SimulatorError, SimulatorProcess

REPLACE_COIL, ERROR_PRESENT, COIL_PRESENT, READY = 0x10, 0x20, 0x08, 0x04


@pytest.fixture
def rapid() -> Iterator[tuple[SimulatorProcess, MagstimClient]]:
    with SimulatorProcess("magstim-rapid2") as sim:
        client = MagstimClient(sim.link, timeout_s=1.0)
        try:
            assert client.send(b"Q@", 3) == b"Q\x89%"
            yield sim, client
        finally:
            client.close()


def arm_and_wait(client: MagstimClient) -> None:
    assert client.send(b"EB", 3)[:1] == b"E"
    client.wait_ready()


def test_coil_overtemp_disarms_reports_and_refuses_to_arm(rapid: tuple) -> None:
    sim, client = rapid
    arm_and_wait(client)
    sim.inject("coil_overtemp", celsius=45.5)
    reply = client.send(b"F@", 9)
    assert reply[2:5] == b"455"
    assert reply[1] & REPLACE_COIL and not reply[1] & READY
    assert client.send(b"EB", 3) == b"ESg"
    assert sim.events("disarmed")[-1]["cause"] == "coil_overtemp"
    sim.clear()
    assert client.send(b"F@", 9)[2:5] == b"220"


def test_set_coil_temperature_is_reported_and_cools(rapid: tuple) -> None:
    sim, client = rapid
    sim.inject("coil_temperature", celsius=38.5)
    tenths = int(client.send(b"F@", 9)[2:5])
    assert 380 <= tenths <= 385       # cools towards ambient from 38.5 °C
    assert client.send(b"EB", 3)[:2] == b"E\x89"   # below the limit: arming allowed


def test_coil_removed(rapid: tuple) -> None:
    sim, client = rapid
    arm_and_wait(client)
    sim.inject("coil_removed")
    status = client.send(b"F@", 9)
    assert not status[1] & COIL_PRESENT and status[2:8] == b"000000"
    assert client.send(b"EB", 3) == b"ESg"
    assert sim.events("disarmed")[-1]["cause"] == "coil_removed"


def test_device_error_bit_and_code(rapid: tuple) -> None:
    sim, client = rapid
    sim.inject("device_error", code="E42")
    reply = client.send(b"I@", 6)
    assert reply[1] & ERROR_PRESENT and reply[2:5] == b"E42"
    assert client.send(b"EB", 3) == b"ESg"


def test_garbled_replies_fail_the_checksum(rapid: tuple) -> None:
    sim, client = rapid
    sim.inject("garble", rate=1.0, seed=7)
    for _ in range(5):
        reply = client.send(b"F@", 9)
        assert len(reply) == 9
        # one corrupted byte (data or checksum) always breaks the one's-complement sum
        assert checksum(reply[:-1]) != reply[-1]


def test_dropped_replies(rapid: tuple) -> None:
    sim, client = rapid
    sim.inject("drop", rate=1.0)
    assert client.send(b"F@", 9) == b""
    sim.clear()
    assert client.send(b"F@", 9) == b"F\x89220000\x0c"


def test_delayed_replies(rapid: tuple) -> None:
    sim, client = rapid
    sim.inject("delay", seconds=0.4)
    start = time.monotonic()
    assert client.send(b"F@", 9) == b"F\x89220000\x0c"
    assert time.monotonic() - start >= 0.4


def test_stuck_unit_stops_answering_and_its_keepalive_expires(rapid: tuple) -> None:
    sim, client = rapid
    arm_and_wait(client)
    sim.inject("stuck")
    assert client.send(b"Q@", 3) == b""
    assert client.send(b"Q@", 3) == b""
    lost = sim.wait_for_event("remote_lost", timeout_s=10)
    assert lost[0]["cause"] == "keepalive_expired"
    sim.clear()
    assert client.send(b"Q@", 3) == b"Q\x89%"


def test_unplug_hangs_up_and_clear_plugs_back_in(rapid: tuple) -> None:
    sim, client = rapid
    sim.inject("unplug")
    assert not sim.link.exists()
    # a hung-up pty fails like an unplugged USB adapter: EIO from termios or read
    with pytest.raises((serial.SerialException, termios.error)):
        client.send(b"Q@", 3)
    client.close()
    sim.clear()
    assert sim.link.is_symlink()
    again = MagstimClient(sim.link)
    try:
        assert again.send(b"Q@", 3)[:1] == b"Q"
    finally:
        again.close()
    assert [e["event"] for e in sim.events() if e["event"] in ("unplugged", "plugged")] == \
        ["unplugged", "plugged"]


def test_bad_fault_requests_are_rejected_with_reasons(rapid: tuple) -> None:
    sim, _ = rapid
    cases = {
        ("garble", "rate", 1.5): "garble.rate=1.5 outside 0.0..1.0",
        ("garble", "rate", float("nan")): "garble.rate=nan outside 0.0..1.0",
        ("delay", "seconds", -1): "delay.seconds=-1 outside 0.0..30.0",
        ("delay", "seconds", "soon"): "delay.seconds must be a number, got 'soon'",
        ("coil_overtemp", "celsius", 39.0): "coil_overtemp.celsius=39.0 outside 40.1..99.9",
        ("device_error", "code", "TOOLONG"): "device_error.code must be 3 characters",
        ("stuck", "forever", True): "fault 'stuck' takes no parameters, got unknown ['forever']",
        ("drop", "rate", True): "drop.rate must be a number, got True",
    }
    for (fault, key, value), reason in cases.items():
        with pytest.raises(SimulatorError) as info:
            sim.inject(fault, **{key: value})
        assert reason in str(info.value), str(info.value)
    unknown = sim.control({"op": "explode"})
    assert unknown == {"ok": False,
                       "error": "unknown op 'explode'; known: state, pulse_count, inject, clear"}
    assert sim.control({"op": "state", "x": 1})["ok"] is False


def test_state_and_pulse_count_queries(rapid: tuple) -> None:
    sim, client = rapid
    client.send(b"@030", 3)
    arm_and_wait(client)
    client.send(b"EH", 3)
    sim.wait_for_event("pulse")
    state = sim.state()
    assert state["pulse_count"] == sim.pulse_count() == 1
    assert state["armed"] and state["remote"] and state["power_pct"] == 30
    assert state["params"]["single_pulse_mode"] is True
    assert sim.pulses()[0]["train"] is None and sim.pulses()[0]["mode"] == "single"


def test_magventure_overtemp_is_reported_unsolicited() -> None:
    with SimulatorProcess("magventure-r30") as sim:
        port = serial.Serial(str(sim.link), 38400, timeout=1)
        try:
            port.write(encode_frame(b"\x02\x01"))
            assert len(port.read(8)) == 8
            port.reset_input_buffer()
            sim.inject("coil_overtemp", celsius=41.0)
            time.sleep(0.2)
            parser = FrameParser()
            parser.feed(port.read(port.in_waiting))
            reports = list(parser.frames())
        finally:
            port.close()
        assert [r[0] for r in reports] == [0x01, 0x03]      # disabled, then temperature
        assert not reports[0][3] & 0x10 and reports[1][1] == 41
