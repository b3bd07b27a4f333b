"""The ``stimd-sim`` command-line contract and ``simulator.testing`` hygiene."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sim_serial_client import MagstimClient

from simulator.testing import (
    SimulatorOptions,
    SimulatorProcess,
    read_events,
    simulator_fixture,
)

SIM = [sys.executable, "-m", "simulator.cli"]


def run_sim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SIM, *args], capture_output=True, text=True, timeout=60,
                          check=False)


@pytest.mark.parametrize(("args", "message"), [
    (["--device", "magstim-9000", "--link", "/tmp/x"], "invalid choice: 'magstim-9000'"),
    (["--link", "/tmp/x"], "the following arguments are required: --device"),
    (["--device", "magstim-rapid2"], "the following arguments are required: --link"),
    (["--device", "magstim-rapid2", "--link", "/tmp/x", "--mains", "230"],
     "invalid choice: 230"),
    (["--device", "magstim-rapid2", "--link", "/tmp/x", "--firmware", "nine"],
     "--firmware 'nine' is not MAJOR.MINOR.PATCH"),
    (["--device", "magstim-200", "--link", "/tmp/x", "--firmware", "9.0.0"],
     "--firmware applies to the Rapid family only"),
    (["--device", "magstim-rapid2", "--link", "/tmp/x", "--firmware", "8.0.0",
      "--unlock-code", "abc"], "--unlock-code needs a Rapid with firmware 9 or later"),
    (["--device", "magventure-r30", "--link", "/tmp/x", "--coil", "d70-air-film"],
     "is a magstim coil and does not fit magventure-r30"),
    (["--device", "magstim-rapid2", "--link", "/nonexistent-dir/tty"],
     "directory /nonexistent-dir does not exist"),
    (["--device", "magstim-rapid2", "--link", "/tmp/x", "--control", "/tmp/" + "s" * 120],
     "Unix socket path limit"),
])
def test_bad_arguments_exit_2_with_a_clear_message(args: list[str], message: str) -> None:
    result = run_sim(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""


def test_link_that_is_a_regular_file_is_refused(tmp_path: Path) -> None:
    occupied = tmp_path / "tty"
    occupied.write_text("not a link")
    result = run_sim("--device", "magstim-rapid2", "--link", str(occupied))
    assert result.returncode == 2
    assert "exists and is not a symlink" in result.stderr
    assert occupied.read_text() == "not a link"


def test_ready_line_link_and_clean_sigterm(tmp_path: Path) -> None:
    link, log, control = tmp_path / "tty", tmp_path / "p.jsonl", tmp_path / "c.sock"
    process = subprocess.Popen(
        [*SIM, "--device", "magstim-200", "--link", str(link), "--pulse-log", str(log),
         "--control", str(control)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == f"READY {link}\n"
        assert link.is_symlink() and os.readlink(link).startswith("/dev/pts/")
        assert control.is_socket()
        client = MagstimClient(link)
        assert client.send(b"Q@", 3) == b"Q\x89%"   # accepts bytes once READY is out
        client.close()
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
    assert out == ""                                # exactly one line on stdout
    assert "simulating magstim-200" in err          # logs go to stderr
    assert not link.exists() and not link.is_symlink()
    assert not control.exists()
    assert [e["event"] for e in read_events(log)][-1] == "stop"


def test_sigint_also_stops_cleanly(tmp_path: Path) -> None:
    link = tmp_path / "tty"
    process = subprocess.Popen([*SIM, "--device", "magventure-r30", "--link", str(link)],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert process.stdout is not None
    assert process.stdout.readline().startswith("READY")
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=20) == 0
    process.stdout.close()
    assert not link.is_symlink()


def test_several_simulators_side_by_side() -> None:
    with SimulatorProcess("magstim-rapid2") as a, SimulatorProcess("magventure-x100") as b, \
            SimulatorProcess("magstim-bistim") as c:
        targets = {os.readlink(sim.link) for sim in (a, b, c)}
        assert len(targets) == 3
        assert a.state()["device"] == "magstim-rapid2"
        assert b.state()["device"] == "magventure-x100"
        assert c.state()["device"] == "magstim-bistim"


def test_simulator_process_leaves_nothing_behind() -> None:
    sim = SimulatorProcess("magstim-rapid2").start()
    directory, pid = sim.directory, sim.process.pid if sim.process else -1
    assert sim.link.is_symlink()
    assert sim.stop() == 0
    assert not directory.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_kill_keeps_a_complete_log_and_cleans_up() -> None:
    sim = SimulatorProcess("magstim-rapid2").start()
    client = MagstimClient(sim.link)
    client.send(b"Q@", 3)
    client.close()
    events = sim.wait_for_event("keepalive")
    assert events[0]["command"] == "Q"
    directory = sim.directory
    assert sim.kill() == -signal.SIGKILL
    assert not directory.exists()


def test_simulator_exits_when_its_parent_dies(tmp_path: Path) -> None:
    """A test process that dies must not leave a simulator behind (--parent-pid)."""
    link = tmp_path / "tty"
    script = (
        "import subprocess, sys, os\n"
        f"p = subprocess.Popen({[*SIM, '--device', 'magstim-200', '--link', str(link)]!r} "
        "+ ['--parent-pid', str(os.getpid())], stdout=subprocess.PIPE, "
        "stderr=subprocess.DEVNULL)\n"
        "sys.stdout.write(p.stdout.readline().decode()); sys.stdout.write(str(p.pid) + '\\n')\n"
        "sys.stdout.flush(); os._exit(0)\n"
    )
    parent = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, check=True)
    ready, child = parent.stdout.splitlines()
    assert ready == f"READY {link}"
    deadline = time.monotonic() + 20
    while link.is_symlink() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not link.is_symlink(), "orphaned simulator kept its link"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(int(child), 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(int(child), signal.SIGKILL)
        pytest.fail("orphaned simulator still running")


async def test_async_context_manager_and_control() -> None:
    async with SimulatorProcess("magventure-r30") as sim:
        state = await sim.astate()
        assert state["device"] == "magventure-r30" and state["pulse_count"] == 0
        result = await sim.ainject("coil_temperature", celsius=30.5)
        assert result["coil_temperature_c"] == pytest.approx(30.5, abs=0.05)
        refused = await sim.acontrol({"op": "inject", "fault": "meltdown"})
        assert refused["ok"] is False and "unknown fault 'meltdown'" in refused["error"]
        assert (await sim.aclear())["faults"]["unplugged"] is False


simulator = simulator_fixture(device="magstim-bistim")


@pytest.mark.parametrize("simulator", [
    {"device": "magventure-r30", "coil": "mcf-b65", "line_rate": False},
    SimulatorOptions(device="magstim-rapid2", mains=115, firmware="10.0.0",
                     unlock_code="abc-123"),
], indirect=True)
def test_fixture_passes_options_through(simulator: SimulatorProcess) -> None:
    start = simulator.events("start")[0]
    state = simulator.state()
    assert state["device"] == simulator.options.device == start["device"]
    if simulator.options.device == "magventure-r30":
        assert state["coil"] == "mcf-b65" and start["line_rate"] is False
    else:
        assert state["params"]["firmware"] == "10.0.0"
        client = MagstimClient(simulator.link)
        try:
            assert client.send(b"Q@", 3) == b"Q?o"          # the unlock code is required
            assert client.send(b"Qabc-123", 3) == b"Q\x89%"
        finally:
            client.close()


def test_fixture_defaults(simulator: SimulatorProcess) -> None:
    assert simulator.state()["device"] == "magstim-bistim"
