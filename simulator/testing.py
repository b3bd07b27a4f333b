"""Run ``stimd-sim`` from tests, benchmarks and demos, and always clean up after it.

    with SimulatorProcess(device="magstim-rapid2") as sim:
        port = serial.Serial(str(sim.link), 9600, timeout=1)
        ...
        sim.inject("coil_overtemp", celsius=45)
        assert sim.events("disarmed")[-1]["cause"] == "coil_overtemp"

    async with SimulatorProcess(device="magventure-x100") as sim:
        state = await sim.astate()

Everything lives in a private temporary directory (link, pulse log, control socket,
stderr log) that ``stop()``/``kill()`` remove. The child is started with
``--parent-pid`` so it exits by itself if the test process dies first. With pytest,
``simulator_fixture()`` builds a fixture that takes ``SimulatorOptions`` (or a dict)
through indirect parametrisation.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

STARTUP_TIMEOUT_S = 20.0  # a cold Python start on a loaded 2-core CI box takes seconds
CONTROL_TIMEOUT_S = 10.0


class SimulatorError(RuntimeError):
    """The simulator did not start, or a control request failed."""


@dataclass(frozen=True, slots=True)
class SimulatorOptions:
    """``stimd-sim`` options; ``None`` leaves the simulator's default."""

    device: str = "magstim-rapid2"
    mains: int | None = None
    firmware: str | None = None
    unlock_code: str | None = None
    coil: str | None = None
    line_rate: bool = True
    log_commands: bool = False

    def replace(self, **changes: Any) -> SimulatorOptions:
        return dataclasses.replace(self, **changes)

    def argv(self) -> list[str]:
        args = ["--device", self.device]
        if self.mains is not None:
            args += ["--mains", str(self.mains)]
        if self.firmware is not None:
            args += ["--firmware", self.firmware]
        if self.unlock_code is not None:
            args += ["--unlock-code", self.unlock_code]
        if self.coil is not None:
            args += ["--coil", self.coil]
        if not self.line_rate:
            args.append("--no-line-rate")
        if self.log_commands:
            args.append("--log-commands")
        return args


class SimulatorProcess:
    """One ``stimd-sim`` child process with its link, pulse log and control socket."""

    def __init__(
        self, device: str | None = None, *, options: SimulatorOptions | None = None,
        link: Path | None = None, startup_timeout_s: float = STARTUP_TIMEOUT_S,
        **option_changes: Any,
    ) -> None:
        base = options if options is not None else SimulatorOptions()
        if device is not None:
            option_changes["device"] = device
        self.options = base.replace(**option_changes) if option_changes else base
        self.startup_timeout_s = startup_timeout_s
        self.directory = Path(tempfile.mkdtemp(prefix="stimd-sim-"))
        self.link = link if link is not None else self.directory / "tty"
        self.pulse_log = self.directory / "pulses.jsonl"
        self.control_socket = self.directory / "control.sock"
        self.stderr_log = self.directory / "stderr.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None

    # ---- lifecycle -------------------------------------------------------------------
    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "simulator.cli", *self.options.argv(),
            "--link", str(self.link), "--pulse-log", str(self.pulse_log),
            "--control", str(self.control_socket), "--parent-pid", str(os.getpid()),
        ]

    def start(self) -> SimulatorProcess:
        """Start the child and wait for its ``READY`` line."""
        if self.process is not None:
            raise SimulatorError("simulator already started")
        self._stderr = self.stderr_log.open("wb")
        self.process = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.kill()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        deadline = time.monotonic() + self.startup_timeout_s
        expected = f"READY {self.link}".encode()
        line = b""
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            while not line.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SimulatorError(
                        f"stimd-sim not ready after {self.startup_timeout_s} s: {self.stderr()}")
                if not selector.select(timeout=left):
                    continue
                chunk = os.read(self.process.stdout.fileno(), 1)
                if not chunk:
                    self.process.wait(timeout=5)
                    raise SimulatorError(
                        f"stimd-sim exited with {self.process.returncode} before READY: "
                        f"{self.stderr()}")
                line += chunk
        if line.strip() != expected:
            raise SimulatorError(f"stimd-sim printed {line!r}, expected {expected!r}")

    def stderr(self) -> str:
        """What the simulator logged so far (for assertion messages)."""
        try:
            return self.stderr_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM, wait, then clean up; SIGKILL if it does not stop in time."""
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return self._cleanup()

    def kill(self) -> int | None:
        """SIGKILL (the pulse log stays complete; it is flushed per line)."""
        process = self.process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        return self._cleanup()

    def _cleanup(self) -> int | None:
        code = None
        if self.process is not None:
            code = self.process.returncode
            if self.process.stdout is not None:
                self.process.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        with contextlib.suppress(FileNotFoundError):
            if self.link.is_symlink():
                self.link.unlink()
        shutil.rmtree(self.directory, ignore_errors=True)
        return code

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> SimulatorProcess:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    async def __aenter__(self) -> SimulatorProcess:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await asyncio.to_thread(self.stop)

    # ---- control socket --------------------------------------------------------------
    def control(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send one request, return the reply object ``{"ok": ..., ...}``."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(CONTROL_TIMEOUT_S)
            conn.connect(str(self.control_socket))
            conn.sendall(json.dumps(request).encode() + b"\n")
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = conn.recv(65536)
                if not chunk:
                    raise SimulatorError(f"control socket closed mid-reply to {request}")
                reply += chunk
        decoded: dict[str, Any] = json.loads(reply)
        return decoded

    async def acontrol(self, request: dict[str, Any]) -> dict[str, Any]:
        async with asyncio.timeout(CONTROL_TIMEOUT_S):
            reader, writer = await asyncio.open_unix_connection(str(self.control_socket))
            try:
                writer.write(json.dumps(request).encode() + b"\n")
                await writer.drain()
                line = await reader.readline()
            finally:
                writer.close()
                await writer.wait_closed()
        if not line:
            raise SimulatorError(f"control socket closed without replying to {request}")
        decoded: dict[str, Any] = json.loads(line)
        return decoded

    @staticmethod
    def _result(request: dict[str, Any], reply: dict[str, Any]) -> dict[str, Any]:
        if not reply.get("ok"):
            raise SimulatorError(f"control request {request} refused: {reply.get('error')}")
        result: dict[str, Any] = reply["result"]
        return result

    def inject(self, fault: str, **params: Any) -> dict[str, Any]:
        request = {"op": "inject", "fault": fault, **params}
        return self._result(request, self.control(request))

    async def ainject(self, fault: str, **params: Any) -> dict[str, Any]:
        request = {"op": "inject", "fault": fault, **params}
        return self._result(request, await self.acontrol(request))

    def clear(self) -> dict[str, Any]:
        return self._result({"op": "clear"}, self.control({"op": "clear"}))

    async def aclear(self) -> dict[str, Any]:
        return self._result({"op": "clear"}, await self.acontrol({"op": "clear"}))

    def state(self) -> dict[str, Any]:
        return self._result({"op": "state"}, self.control({"op": "state"}))

    async def astate(self) -> dict[str, Any]:
        return self._result({"op": "state"}, await self.acontrol({"op": "state"}))

    def pulse_count(self) -> int:
        result = self._result({"op": "pulse_count"}, self.control({"op": "pulse_count"}))
        count: int = result["pulse_count"]
        return count

    # ---- pulse log -------------------------------------------------------------------
    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Records of the pulse log (all, or those whose ``event`` is ``kind``)."""
        return read_events(self.pulse_log, kind)

    def pulses(self) -> list[dict[str, Any]]:
        return self.events("pulse")

    def wait_for_event(self, kind: str, count: int = 1, timeout_s: float = 10.0,
                       where: Callable[[dict[str, Any]], bool] | None = None,
                       ) -> list[dict[str, Any]]:
        """Poll the pulse log until ``count`` records of ``kind`` (matching ``where``)."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = [e for e in self.events(kind) if where is None or where(e)]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise SimulatorError(f"{len(found)}/{count} {kind!r} events after {timeout_s} s")
            time.sleep(0.02)

    async def await_event(self, kind: str, count: int = 1, timeout_s: float = 10.0,
                          where: Callable[[dict[str, Any]], bool] | None = None,
                          ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while True:
            found = [e for e in self.events(kind) if where is None or where(e)]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise SimulatorError(f"{len(found)}/{count} {kind!r} events after {timeout_s} s")
            await asyncio.sleep(0.02)


def read_events(path: Path, kind: str | None = None) -> list[dict[str, Any]]:
    """Parse a pulse log; a last line cut short by SIGKILL is ignored."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if kind is None or record.get("event") == kind:
            records.append(record)
    return records


def simulator_fixture(scope: str = "function", **defaults: Any) -> Any:
    """A pytest fixture yielding a started ``SimulatorProcess``.

        simulator = simulator_fixture(device="magventure-r30")      # module level

        @pytest.mark.parametrize("simulator", [{"device": "magstim-200"}], indirect=True)
        def test_x(simulator): ...

    ``request.param`` may be a ``SimulatorOptions`` or a dict of option changes.
    """
    import pytest

    def fixture(request: Any) -> Iterator[SimulatorProcess]:
        param = getattr(request, "param", None)
        options = SimulatorOptions().replace(**defaults)
        if isinstance(param, SimulatorOptions):
            options = param
        elif isinstance(param, dict):
            options = options.replace(**param)
        elif param is not None:
            raise TypeError(f"simulator param must be SimulatorOptions or dict, got {param!r}")
        with SimulatorProcess(options=options) as sim:
            yield sim

    return pytest.fixture(scope=scope)(fixture)  # type: ignore[call-overload]
