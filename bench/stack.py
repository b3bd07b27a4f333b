"""The stack under test as real processes: one private broker, N simulator + daemon pairs.

The demo (``stimd.demo``) wires the same three parts for one device and a person
watching; its configuration writer and the tests' simulator launcher are reused here.
What the benchmarks need beyond it — N devices, the daemon's own ``READY`` notification
(a ``NOTIFY_SOCKET`` this module listens on) and its pid for /proc — is why the daemon is
launched here rather than through the demo's ``ChildProcess``. Everything lives in one
temporary directory.

Clean-up is layered so no process outlives a benchmark: every ``start`` is undone by
the ``ExitStack`` of ``BenchStack`` (also on an exception or Ctrl-C, and on SIGTERM,
which ``bench.cli`` turns into an exception); a daemon or burner that would still be
left after a SIGKILL of this process gets SIGTERM from the kernel (``setpriv --pdeathsig``),
and ``stimd-sim`` exits by itself when its parent is gone (``--parent-pid``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from bench.clients import wait_online
from simulator.testing import SimulatorOptions, SimulatorProcess
from stimd.demo import daemon_toml
from stimd.mqtt.private_broker import PrivateBroker, standard_accounts

OPERATOR = "bench-op"
DASHBOARD = "bench-dash"
#: A device account no daemon uses: the floor's subscriber reads commands sent to it.
FLOOR_DEVICE = "benchfloor"
MODEL = "magstim-rapid2"
#: A cold Python start of the daemon plus the Rapid's handshake at 9600 baud takes ~1 s
#: on an idle machine; fifty of them starting at once on two cores take far longer.
DAEMON_READY_TIMEOUT_S = 120.0
#: Above the daemon's own STOP_BUDGET_S (10 s): an orderly stop always fits.
DAEMON_STOP_TIMEOUT_S = 15.0
SIMULATOR_START_WORKERS = 8
#: The bench operator console heartbeats every 2 s (``bench.session``); 10 s is the
#: example configuration's value.
HEARTBEAT_TIMEOUT_S = 10.0
#: What production logs: the cost of logging every command is part of the daemon's cost.
LOG_LEVEL = "info"

#: util-linux (essential on Debian): makes the kernel SIGTERM a child whose parent dies.
SETPRIV = shutil.which("setpriv")


class StackError(RuntimeError):
    """A process of the stack did not start or misbehaved; the message says which and why."""


def dies_with_parent(argv: list[str]) -> list[str]:
    """``argv`` wrapped so that the child gets SIGTERM if this process is SIGKILLed.

    The kernel sends it when the *thread* that spawned the child ends, so children are
    spawned from the main thread only. Without ``setpriv`` the command runs unwrapped
    and only this process's own clean-up stops it.
    """
    if SETPRIV is None:
        return argv
    return [SETPRIV, "--pdeathsig", "TERM", "--", *argv]


def device_ids(count: int) -> list[str]:
    if count < 1:
        raise ValueError(f"count={count}: a stack has at least one device")
    return [f"bench{index:02d}" for index in range(1, count + 1)]


class DaemonProcess:
    """One ``stimd run`` child with its own notify socket, log file and state directory."""

    def __init__(self, device_id: str, config_file: Path, workdir: Path) -> None:
        self.device_id = device_id
        self.config_file = config_file
        self.workdir = workdir
        self.log_file = workdir / "daemon.log"
        self.notify_path = workdir / "notify.sock"
        self.process: subprocess.Popen[bytes] | None = None
        self.started_ns: int | None = None
        self.ready_ns: int | None = None
        self._notify: socket.socket | None = None

    @property
    def pid(self) -> int:
        if self.process is None:
            raise StackError(f"daemon {self.device_id} is not started")
        return self.process.pid

    def start(self) -> int:
        """Launch the daemon (from the main thread: see ``dies_with_parent``); returns the
        monotonic ns just before the spawn."""
        if self.process is not None:
            raise StackError(f"daemon {self.device_id} already started")
        with contextlib.suppress(FileNotFoundError):
            self.notify_path.unlink()
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        notify.bind(str(self.notify_path))
        notify.setblocking(False)
        self._notify = notify
        env = {**os.environ, "NOTIFY_SOCKET": str(self.notify_path)}
        for inherited in ("WATCHDOG_USEC", "WATCHDOG_PID", "INVOCATION_ID", "JOURNAL_STREAM"):
            env.pop(inherited, None)
        self.ready_ns = None
        with self.log_file.open("ab") as log:
            self.started_ns = time.monotonic_ns()
            self.process = subprocess.Popen(
                dies_with_parent([
                    sys.executable, "-m", "stimd.cli", "run", "--config", str(self.config_file),
                    "--log-format", "json", "--log-level", LOG_LEVEL]),
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
            )
        return self.started_ns

    def _drain_notifications(self) -> None:
        """Read every pending datagram; note the first ``READY=1``."""
        assert self._notify is not None
        while True:
            try:
                datagram = self._notify.recv(4096)
            except BlockingIOError:
                return
            now = time.monotonic_ns()
            if self.ready_ns is None and b"READY=1" in datagram.split(b"\n"):
                self.ready_ns = now

    async def wait_ready(self, timeout_s: float = DAEMON_READY_TIMEOUT_S) -> int:
        """Monotonic ns at which READY=1 arrived; ``StackError`` if it exits or is late."""
        if self.process is None or self._notify is None:
            raise StackError(f"daemon {self.device_id} is not started")
        loop = asyncio.get_running_loop()
        arrived = asyncio.Event()
        loop.add_reader(self._notify.fileno(), arrived.set)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                self._drain_notifications()
                if self.ready_ns is not None:
                    return self.ready_ns
                if self.process.poll() is not None:
                    raise StackError(
                        f"daemon {self.device_id} exited with {self.process.returncode} "
                        f"before READY: {self.log_tail()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise StackError(
                        f"daemon {self.device_id} not READY after {timeout_s} s: "
                        f"{self.log_tail()}")
                arrived.clear()
                # wake on a datagram, or every 0.2 s to notice an early exit
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(left, 0.2)):
                        await arrived.wait()
        finally:
            loop.remove_reader(self._notify.fileno())

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout_s: float = DAEMON_STOP_TIMEOUT_S) -> int | None:
        """SIGTERM (orderly: disarm, close the record), SIGKILL if it overruns."""
        process = self.process
        code = None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            code = process.returncode
        self.process = None
        if self._notify is not None:
            self._notify.close()
            self._notify = None
        return code


@dataclass
class DeviceRig:
    """One simulated device and the daemon serving it."""

    device_id: str
    simulator: SimulatorProcess
    daemon: DaemonProcess


class BenchStack:
    """A private broker and ``count`` simulator + daemon pairs, torn down on exit.

        with BenchStack(count=1, log_commands=True) as stack:
            await stack.start_daemons()
            rig = stack.rigs[0]
    """

    def __init__(self, count: int = 1, *, log_commands: bool = False) -> None:
        self.count = count
        self.log_commands = log_commands
        self.rigs: list[DeviceRig] = []
        self._exit = contextlib.ExitStack()
        ids = device_ids(count)
        self.workdir = Path(tempfile.mkdtemp(prefix="stimd-bench-"))
        try:
            accounts = standard_accounts([*ids, FLOOR_DEVICE], [OPERATOR], [DASHBOARD])
            self.broker = PrivateBroker(self.workdir / "broker", accounts)
        except BaseException:
            self._remove_workdir()
            raise

    # ---- lifecycle -------------------------------------------------------------------
    def __enter__(self) -> Self:
        try:
            self._exit.callback(self._remove_workdir)
            self.broker.start()
            self._exit.callback(self.broker.stop)
            self._start_simulators()
            for rig in self.rigs:
                self._exit.callback(rig.daemon.stop)
        except BaseException:
            self._exit.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._exit.close()

    def _remove_workdir(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _start_simulators(self) -> None:
        options = SimulatorOptions(device=MODEL, line_rate=True, log_commands=self.log_commands)
        simulators = [SimulatorProcess(options=options) for _ in range(self.count)]
        for simulator in simulators:
            self._exit.callback(simulator.stop)
        # Each start waits for the child's READY line; a cold start takes ~1 s, so a
        # fleet starts them a few at a time rather than one after another.
        with ThreadPoolExecutor(max_workers=SIMULATOR_START_WORKERS) as pool:
            list(pool.map(SimulatorProcess.start, simulators))
        for device_id, simulator in zip(device_ids(self.count), simulators, strict=True):
            workdir = self.workdir / device_id
            (workdir / "state").mkdir(parents=True)
            config_file = workdir / "stimd.toml"
            config_file.write_text(daemon_toml(
                device_id=device_id, driver=MODEL, port=simulator.link,
                state_dir=workdir / "state", broker=self.broker, operators=[OPERATOR],
                heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S), encoding="utf-8")
            daemon = DaemonProcess(device_id, config_file, workdir)
            self.rigs.append(DeviceRig(device_id, simulator, daemon))

    async def start_daemons(self) -> None:
        """Launch the daemons at once; return when every one said READY and is online."""
        for rig in self.rigs:
            rig.daemon.start()
        async with asyncio.TaskGroup() as group:
            for rig in self.rigs:
                group.create_task(rig.daemon.wait_ready())
        await wait_online(self.broker, DASHBOARD, [rig.device_id for rig in self.rigs])


@contextlib.contextmanager
def cpu_burners(count: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` processes that spin on a core each until the block ends."""
    burners: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(count):
            burners.append(subprocess.Popen(
                dies_with_parent([sys.executable, "-c", "while True: pass"]),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            ))
        yield burners
    finally:
        for burner in burners:
            burner.kill()
        for burner in burners:
            burner.wait()

