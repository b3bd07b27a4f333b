"""The two-command demo: a whole clinic on one machine, started and cleaned up in one go.

A private mosquitto with generated accounts, a simulated stimulator (``stimd-sim``, a
separate process on a pseudo-terminal, exactly as hardware would be reached), the daemon
(``stimd run``), and ``stimctl`` as the technician. The daemon never imports the
simulator; neither does this module: it starts it by command like any other process.
Every process it starts is stopped again, also on Ctrl-C, and every file lives in one
temporary directory that is removed at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any, TextIO

from stimd.mqtt.broker_config import Account, Role
from stimd.mqtt.operator_client import NoReply, OperatorClient
from stimd.mqtt.private_broker import BrokerError, PrivateBroker, generated_password

DEMO_DEVICE_ID = "dev01"
DEMO_OPERATOR = "tech-demo"
DEMO_PATIENT = "DEMO-0001"
DEMO_MT_PCT_MSO = 55
DEFAULT_DEVICE = "magstim-rapid2"
DEFAULT_PROTOCOL = "demo-10hz-short"
#: A cold Python start of the simulator on a busy 2-core machine takes seconds.
SIMULATOR_READY_S = 30.0
#: Daemon start plus the device handshake at the device's baud rate.
DAEMON_ONLINE_S = 40.0
STOP_TIMEOUT_S = 15.0


def tool(name: str) -> str:
    """A console script installed next to this Python (the virtual environment's)."""
    beside = Path(sys.executable).with_name(name)
    return str(beside) if beside.exists() else name


def mains_for(driver: str) -> int | None:
    """Rapid limits depend on the mains voltage; other models take none."""
    return 240 if "rapid" in driver else None


def daemon_toml(
    *,
    device_id: str,
    driver: str,
    port: Path,
    state_dir: Path,
    broker: PrivateBroker,
    operators: Sequence[str],
    heartbeat_timeout_s: float = 10.0,
    mqtt: dict[str, Any] | None = None,
) -> str:
    """The daemon's configuration file for a private broker (TOML text)."""
    mains = mains_for(driver)
    lines = [
        "[device]",
        f"id = {json.dumps(device_id)}",
        f"driver = {json.dumps(driver)}",
        f"port = {json.dumps(str(port))}",
        *([f"mains_voltage = {mains}"] if mains is not None else []),
        "",
        "[operators]",
        f"names = {json.dumps(list(operators))}",
        f"heartbeat_timeout_s = {heartbeat_timeout_s!r}",
        "",
        "[storage]",
        f"state_dir = {json.dumps(str(state_dir))}",
        "",
        "[mqtt]",
    ]
    table: dict[str, Any] = {
        "host": broker.host, "port": broker.port, "username": device_id,
        "password_file": str(broker.password_file(device_id)), **(mqtt or {}),
    }
    lines += [f"{key} = {json.dumps(value)}" for key, value in table.items()]
    return "\n".join(lines) + "\n"


class ChildProcess:
    """One started program: its output goes to a log file; ``stop`` always ends it."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self, *, stdout_pipe: bool = False) -> None:
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout_pipe else self._log,
            stderr=self._log,
        )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def read_line(self, within_s: float) -> str:
        """The first line the program prints on stdout (started with ``stdout_pipe``)."""
        assert self.process is not None and self.process.stdout is not None
        deadline = time.monotonic() + within_s
        line = b""
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            while not line.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DemoError(f"{self.name} printed nothing within {within_s} s: "
                                    f"{self.log_tail()}")
                if not selector.select(timeout=left):
                    continue
                chunk = os.read(self.process.stdout.fileno(), 1)
                if not chunk:
                    raise DemoError(f"{self.name} exited at start: {self.log_tail()}")
                line += chunk
        return line.decode(errors="replace").strip()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=timeout_s)
        if process.stdout is not None:
            process.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None
        return process.returncode

    def log_tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


class DemoError(RuntimeError):
    """The demo could not go on; the message says which part failed and why."""


def start_simulator(workdir: Path, device: str) -> tuple[ChildProcess, Path]:
    link = workdir / "stimulator-tty"
    sim = ChildProcess("stimd-sim", [
        tool("stimd-sim"), "--device", device, "--link", str(link),
        "--pulse-log", str(workdir / "pulses.jsonl"), "--parent-pid", str(os.getpid()),
        *(["--mains", str(mains)] if (mains := mains_for(device)) is not None else []),
    ], workdir / "simulator.log")
    sim.start(stdout_pipe=True)
    ready = sim.read_line(SIMULATOR_READY_S)
    if ready != f"READY {link}":
        raise DemoError(f"stimd-sim said {ready!r} instead of READY: {sim.log_tail()}")
    return sim, link


async def wait_online(broker: PrivateBroker, daemon: ChildProcess) -> None:
    """Until the daemon's retained status says online and ready."""
    config = broker.client_config(DEMO_OPERATOR)
    async with OperatorClient(config, DEMO_DEVICE_ID, reply_timeout_s=10) as client:
        await client.watch(client.topics.status)
        deadline = time.monotonic() + DAEMON_ONLINE_S
        while time.monotonic() < deadline:
            if not daemon.running:
                raise DemoError(f"stimd run exited: {daemon.log_tail()}")
            try:
                async with asyncio.timeout(0.5):
                    _, status = await client.next_update()
            except TimeoutError:
                continue
            if isinstance(status, dict) and status.get("online") and (
                status.get("lifecycle") == "ready"
            ):
                return
    raise DemoError(f"the daemon did not come online within {DAEMON_ONLINE_S} s: "
                    f"{daemon.log_tail()}")


@contextlib.contextmanager
def stopping(children: list[ChildProcess], out: TextIO) -> Iterator[None]:
    try:
        yield
    finally:
        for child in reversed(children):
            if child.running:
                print(f"demo: stopping {child.name}", file=out, flush=True)
            child.stop()


def run_demo(device: str, protocol: str, out: TextIO) -> int:
    with tempfile.TemporaryDirectory(prefix="stimd-demo-") as tmp:
        workdir = Path(tmp)
        print(f"demo: working in {workdir} (removed at the end)", file=out, flush=True)
        accounts = [
            Account(DEMO_DEVICE_ID, Role.DEVICE, generated_password()),
            Account(DEMO_OPERATOR, Role.OPERATOR, generated_password()),
        ]
        print("demo: starting a private mosquitto on loopback with generated accounts",
              file=out, flush=True)
        with PrivateBroker(workdir / "broker", accounts) as broker:
            children: list[ChildProcess] = []
            with stopping(children, out):
                print(f"demo: starting a simulated {device} on a pseudo-terminal",
                      file=out, flush=True)
                sim, link = start_simulator(workdir, device)
                children.append(sim)
                state_dir = workdir / "state"
                config_path = workdir / "stimd.toml"
                config_path.write_text(daemon_toml(
                    device_id=DEMO_DEVICE_ID, driver=device, port=link, state_dir=state_dir,
                    broker=broker, operators=[DEMO_OPERATOR],
                ), encoding="utf-8")
                print(f"demo: starting the daemon (stimd run --config {config_path})",
                      file=out, flush=True)
                daemon = ChildProcess("stimd run", [
                    tool("stimd"), "run", "--config", str(config_path), "--log-format", "json",
                ], workdir / "daemon.log")
                daemon.start()
                children.append(daemon)
                asyncio.run(wait_online(broker, daemon))
                print(f"demo: daemon online; daemon log: {daemon.log_path}", file=out,
                      flush=True)
                code = technician(broker, protocol, out)
                print("demo: the session record (stimd history):", file=out, flush=True)
                history = subprocess.run(
                    [tool("stimd"), "history", "--state-dir", str(state_dir)],
                    stdout=out, stderr=subprocess.STDOUT, check=False, timeout=60,
                )
                return code or history.returncode


def technician(broker: PrivateBroker, protocol: str, out: TextIO) -> int:
    """What a technician types: load, then start and follow to the end."""
    base = [
        tool("stimctl"), "--host", broker.host, "--port", str(broker.port),
        "--user", DEMO_OPERATOR, "--password-file", str(broker.password_file(DEMO_OPERATOR)),
        "--device", DEMO_DEVICE_ID,
    ]
    steps = [
        ["load", protocol, "--mt", str(DEMO_MT_PCT_MSO), "--mt-method", "emg",
         "--patient", DEMO_PATIENT],
        ["start", "--follow"],
    ]
    for step in steps:
        print(f"\n$ stimctl --device {DEMO_DEVICE_ID} {' '.join(step)}", file=out, flush=True)
        result = subprocess.run([*base, *step], stdout=out, stderr=subprocess.STDOUT,
                                check=False)
        if result.returncode != 0:
            print(f"demo: stimctl {step[0]} exited {result.returncode}", file=out, flush=True)
            return result.returncode
    return 0


def demo_main(device: str, protocol: str, out: TextIO = sys.stdout) -> int:
    try:
        return run_demo(device, protocol, out)
    except KeyboardInterrupt:
        print("\ndemo: interrupted; everything it started has been stopped", file=out)
        return 130
    except (DemoError, BrokerError, NoReply, OSError) as exc:
        print(f"demo: failed: {exc}", file=out)
        return 1
