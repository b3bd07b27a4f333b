"""The daemon as a process: SIGTERM budget, SIGKILL recovery, one instance per device."""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from daemon.conftest import OPERATOR
from simulator.testing import SimulatorProcess
from stimd.daemon import STOP_BUDGET_S
from stimd.record import SessionRecord

TESTS_DIR = Path(__file__).resolve().parents[1]


def write_config(path: Path, port: Path, state_dir: Path) -> Path:
    path.write_text(f"""
[device]
id = "dev01"
driver = "magstim-rapid2"
port = "{port}"
mains_voltage = 240

[operators]
names = ["{OPERATOR}"]
heartbeat_timeout_s = 30

[storage]
state_dir = "{state_dir}"
""")
    return path


@pytest.fixture
def sim() -> Iterator[SimulatorProcess]:
    with SimulatorProcess(device="magstim-rapid2", mains=240) as process:
        yield process


_SPAWNED: list[subprocess.Popen[bytes]] = []


@pytest.fixture(autouse=True)
def reap_daemons() -> Iterator[None]:
    """No daemon outlives its test, whatever the test did."""
    yield
    while _SPAWNED:
        process = _SPAWNED.pop()
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def spawn(*argv: str, log: Path, env: dict[str, str] | None = None) -> (
    subprocess.Popen[bytes]
):
    path = os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")]))
    base = {k: v for k, v in os.environ.items()
            if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    env = {**base, "PYTHONPATH": path, **(env or {})}
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, *argv], stdout=subprocess.PIPE, stderr=stderr,
            stdin=subprocess.DEVNULL, env=env,
        )
    _SPAWNED.append(process)
    return process


def read_line(process: subprocess.Popen[bytes], prefix: bytes, timeout_s: float,
              log: Path) -> bytes:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout_s
    buffer = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while True:
            for line in buffer.splitlines(keepends=True):
                if line.endswith(b"\n") and line.startswith(prefix):
                    return line.strip()
            left = deadline - time.monotonic()
            if left <= 0 or process.poll() is not None:
                raise AssertionError(f"no {prefix!r} line; daemon log:\n{log.read_text()}")
            if selector.select(timeout=left):
                chunk = os.read(process.stdout.fileno(), 4096)
                buffer += chunk


def start_session(
    sim: SimulatorProcess, tmp_path: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], Path, Path]:
    state_dir = tmp_path / "state"
    config = write_config(tmp_path / "dev01.toml", sim.link, state_dir)
    log = tmp_path / "daemon.log"
    process = spawn("-m", "daemon.session_script", str(config), log=log, env=env)
    # a cold interpreter start plus the handshake on a loaded 2-core machine
    line = read_line(process, b"RUNNING ", 60.0, log)
    assert line.split()[1] == b"1"
    sim.wait_for_event("pulse", 1, timeout_s=20.0)
    return process, state_dir, log


@dataclass
class NotifyListener:
    """A systemd-style notify socket, drained by a thread as systemd would."""

    path: Path
    messages: list[str]


@pytest.fixture
def notify_socket() -> Iterator[NotifyListener]:
    directory = Path(tempfile.mkdtemp(prefix="sdn-"))   # AF_UNIX paths: ≤ 108 bytes
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(directory / "notify"))
    sock.settimeout(0.1)
    listener = NotifyListener(directory / "notify", [])
    done = threading.Event()

    def drain() -> None:
        while not done.is_set():
            try:
                listener.messages.append(sock.recv(4096).decode())
            except TimeoutError:
                continue

    thread = threading.Thread(target=drain, daemon=True)
    thread.start()
    try:
        yield listener
    finally:
        done.set()
        thread.join()
        sock.close()
        shutil.rmtree(directory, ignore_errors=True)


def test_sigterm_mid_session_disarms_and_closes_the_record_within_budget(
    sim: SimulatorProcess, tmp_path: Path, notify_socket: NotifyListener
) -> None:
    env = {"NOTIFY_SOCKET": str(notify_socket.path), "WATCHDOG_USEC": "1000000"}
    process, state_dir, log = start_session(sim, tmp_path, env)
    time.sleep(0.6)                                     # at least one watchdog period
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout=STOP_BUDGET_S + 30)
    elapsed = time.monotonic() - sent
    # the unit's TimeoutStopSec is 15 s; the daemon's own budget is STOP_BUDGET_S
    assert elapsed < STOP_BUDGET_S, f"stopped in {elapsed:.1f} s\n{log.read_text()}"
    assert code == 0, log.read_text()
    time.sleep(0.2)                                     # let the drain thread catch up
    sent_to_systemd = list(notify_socket.messages)
    assert sent_to_systemd.count("READY=1") == 1
    assert "WATCHDOG=1" in sent_to_systemd
    assert sent_to_systemd.index("READY=1") < sent_to_systemd.index("WATCHDOG=1")
    assert "STOPPING=1" in sent_to_systemd
    assert any(m.startswith("STATUS=RUNNING: train ") for m in sent_to_systemd)

    kinds = [e["event"] for e in sim.events() if e["event"] in ("armed", "disarmed", "pulse")]
    assert "disarmed" in kinds
    assert kinds[-1] == "disarmed"                      # nothing fired after the disarm
    assert sim.events("disarmed")[-1]["cause"] == "command"
    with SessionRecord.open(state_dir, read_only=True) as record:
        (session,) = record.sessions()
    assert session["outcome"] == "aborted"
    assert session["end_reason"] == "daemon stopping on SIGTERM"
    fired = len(sim.pulses())
    assert session["pulses_delivered"] <= fired <= (
        session["pulses_delivered"] + session["pulses_uncertain"])


def test_sigkill_mid_session_device_disarms_itself_and_restart_records_interrupted(
    sim: SimulatorProcess, tmp_path: Path
) -> None:
    process, state_dir, _log = start_session(sim, tmp_path)
    process.kill()
    process.wait(timeout=10)
    # the unit's own keep-alive expiry (~1 s of silence) is what disarms it now
    sim.wait_for_event("remote_lost", 1, timeout_s=10.0)
    assert not sim.state()["armed"]
    fired = len(sim.pulses())

    restart_log = tmp_path / "restart.log"
    restart = spawn("-m", "stimd.cli", "run", "--config", str(tmp_path / "dev01.toml"),
                    "--log-format", "json", log=restart_log)
    try:
        deadline = time.monotonic() + 60
        while b"ready" not in restart_log.read_bytes():
            assert restart.poll() is None, restart_log.read_text()
            assert time.monotonic() < deadline, restart_log.read_text()
            time.sleep(0.05)
        assert b"session closed as interrupted" in restart_log.read_bytes()
    finally:
        restart.send_signal(signal.SIGTERM)
        assert restart.wait(timeout=30) == 0, restart_log.read_text()
    assert len(sim.pulses()) == fired                  # never resumed
    with SessionRecord.open(state_dir, read_only=True) as record:
        (session,) = record.sessions()
        assert record.verify().ok
    assert session["outcome"] == "interrupted"
    assert session["pulses_delivered"] % 10 == 0
    assert session["pulses_delivered"] <= fired <= (
        session["pulses_delivered"] + session["pulses_uncertain"])


def test_a_second_instance_for_the_same_device_refuses_to_start(
    sim: SimulatorProcess, tmp_path: Path
) -> None:
    process, _state_dir, _log = start_session(sim, tmp_path)
    try:
        second = subprocess.run(
            [sys.executable, "-m", "stimd.cli", "run", "--config", str(tmp_path / "dev01.toml")],
            check=False, capture_output=True, timeout=60, stdin=subprocess.DEVNULL,
        )
        assert second.returncode == 1
        assert b"refusing to start: another stimd already runs device 'dev01'" in second.stderr
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def test_a_device_that_does_not_answer_exits_1_with_the_reason(tmp_path: Path) -> None:
    config = write_config(tmp_path / "dev01.toml", tmp_path / "no-such-tty", tmp_path / "state")
    result = subprocess.run(
        [sys.executable, "-m", "stimd.cli", "run", "--config", str(config),
         "--log-format", "console"],
        check=False, capture_output=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 1
    assert b"device handshake failed" in result.stderr
    assert b"no-such-tty" in result.stderr
    assert b"did not complete the handshake" in result.stderr
