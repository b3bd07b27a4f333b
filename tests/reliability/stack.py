"""The whole stack for breaking things on purpose: mosquitto, ``stimd run``, ``stimd-sim``.

Each part is a real process talking the real way (MQTT on loopback, bytes on a pty), so a
fault injected into one of them reaches the daemon exactly as it would at a clinic. The
simulator's pulse log is the ground truth every test judges by; the daemon's own word
(its replies, events, record) is what is being judged.

The daemon's output goes through a pipe to a reader thread that writes it to a file: the
daemon itself never writes a regular file other than its record, so a file-size limit put
on it (``prlimit``) fails only the record, as a full disk would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import aiomqtt
from e2e.broker import DAEMON_OPERATORS, connect, make_broker

from simulator.testing import SimulatorProcess
from stimd.mqtt.private_broker import PrivateBroker

DEVICE_ID = "dev01"
OPERATOR = "tech-alice"
OTHER_OPERATOR = "tech-bob"
STIMD = Path(sys.executable).with_name("stimd")

#: Seconds to wait for the daemon to come online: a cold Python start plus the Rapid
#: handshake at 9600 baud, on a loaded 2-core box next to other test runs.
ONLINE_TIMEOUT_S = 30.0
#: Bound on any single command round trip (arming takes ~1 s plus recharge).
COMMAND_TIMEOUT_S = 20.0


def daemon_toml(
    *, port: Path, state_dir: Path, broker: PrivateBroker | None,
    heartbeat_timeout_s: float = 60.0, mqtt_extra: dict[str, Any] | None = None,
    site: dict[str, Any] | None = None,
) -> str:
    """The daemon's configuration file for this stack (TOML text)."""
    lines = [
        "[device]",
        f'id = "{DEVICE_ID}"',
        'driver = "magstim-rapid2"',
        f"port = {json.dumps(str(port))}",
        "mains_voltage = 240",
        "",
        "[operators]",
        f"names = {json.dumps(list(DAEMON_OPERATORS))}",
        f"heartbeat_timeout_s = {heartbeat_timeout_s!r}",
        "",
        "[storage]",
        f"state_dir = {json.dumps(str(state_dir))}",
        "",
        "[supervisor]",
        # the poll interval bounds how fast a status anomaly is seen; 0.1 s keeps tests short
        "status_poll_interval_s = 0.1",
    ]
    if site:
        lines += ["", "[site]", *(f"{k} = {json.dumps(v)}" for k, v in site.items())]
    if broker is not None:
        mqtt: dict[str, Any] = {
            "host": broker.host, "port": broker.port, "username": DEVICE_ID,
            "password_file": str(broker.password_file(DEVICE_ID)),
            "reconnect_min_s": 0.2, "reconnect_max_s": 1.0, "state_interval_s": 0.2,
            **(mqtt_extra or {}),
        }
        lines += ["", "[mqtt]", *(f"{k} = {json.dumps(v)}" for k, v in mqtt.items())]
    return "\n".join(lines) + "\n"


def parse_log_line(line: str) -> dict[str, Any] | None:
    """One JSON log line of the daemon (a journald ``<N>`` prefix is tolerated)."""
    text = line.strip()
    if text.startswith("<") and ">" in text[:4]:
        text = text[text.index(">") + 1:]
    if not text.startswith("{"):
        return None
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


def log_time(record: dict[str, Any]) -> float | None:
    """The wall-clock time (Unix seconds) of a daemon log record."""
    stamp = record.get("timestamp")
    if not isinstance(stamp, str):
        return None
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(UTC).timestamp()


class DaemonProcess:
    """``stimd run`` as a child process; output captured to ``log_path`` via a pipe."""

    def __init__(self, config_path: Path, log_path: Path) -> None:
        self.config_path = config_path
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self.starts = 0

    def command(self) -> list[str]:
        return [str(STIMD), "run", "--config", str(self.config_path), "--log-format", "json"]

    def start(self, *, wrapper: list[str] | None = None) -> None:
        """Start the daemon; ``wrapper`` prefixes the command (a mount namespace, a limit)
        and must exec it, so that ``pid`` is the daemon's."""
        if self.running:
            raise RuntimeError("daemon already running")
        self.join_reader()
        self.process = subprocess.Popen(
            [*(wrapper or []), *self.command()], stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        self.starts += 1
        pipe = self.process.stdout
        assert pipe is not None
        self._reader = threading.Thread(
            target=_copy_lines, args=(pipe, self.log_path, self.starts), daemon=True,
            name=f"stimd-log-{self.starts}",
        )
        self._reader.start()

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("daemon not started")
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: the daemon vanishes mid-whatever, as in a crash or an OOM kill."""
        if self.running:
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self.join_reader()

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM and wait (the daemon's own stop budget is 10 s); SIGKILL after that."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        self.join_reader()
        return process.returncode

    def wait_exit(self, timeout_s: float) -> int:
        assert self.process is not None
        code = self.process.wait(timeout=timeout_s)
        self.join_reader()
        return code

    def join_reader(self) -> None:
        if self._reader is not None:
            self._reader.join(timeout=10)
            self._reader = None
        if self.process is not None and self.process.stdout is not None \
                and self.process.poll() is not None:
            self.process.stdout.close()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_records(self) -> list[dict[str, Any]]:
        return [r for line in self.log_text().splitlines() if (r := parse_log_line(line))]

    def first_log(self, event: str, since_wall: float = 0.0,
                  **fields: Any) -> dict[str, Any] | None:
        """The first log record ``event`` (with ``fields``) at or after ``since_wall``."""
        for record in self.log_records():
            if record.get("event") != event:
                continue
            if any(record.get(k) != v for k, v in fields.items()):
                continue
            stamp = log_time(record)
            if stamp is not None and stamp >= since_wall:
                return record
        return None


def _copy_lines(pipe: IO[bytes], path: Path, start: int) -> None:
    with path.open("ab") as out:
        out.write(f"--- stimd start {start} ---\n".encode())
        out.flush()
        for line in iter(pipe.readline, b""):
            out.write(line)
            out.flush()


@dataclass
class Seen:
    """One message the operator's client received, with the test's clocks at arrival."""

    topic: str
    payload: Any
    mono: float
    wall: float


@dataclass
class Operator:
    """An operator's MQTT client: sends commands, collects replies, events and state."""

    user: str
    client: aiomqtt.Client
    seen: list[Seen] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    _ids: int = 0

    async def read(self) -> None:
        try:
            async for message in self.client.messages:
                payload = message.payload
                try:
                    decoded = json.loads(payload) if isinstance(payload, bytes) else None
                except (json.JSONDecodeError, UnicodeDecodeError):
                    decoded = payload
                self.seen.append(Seen(message.topic.value, decoded, time.monotonic(),
                                      time.time()))
                self.changed.set()
        except aiomqtt.MqttError:
            return  # the broker went away (a staged outage); the test reconnects

    def next_id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}-{self._ids}-{time.monotonic_ns() % 10**9}"

    async def wait_for(self, predicate: Callable[[Seen], bool],
                       within_s: float = COMMAND_TIMEOUT_S, start: int = 0) -> Seen:
        """The first message from index ``start`` on that satisfies ``predicate``."""
        async with asyncio.timeout(within_s):
            index = start
            while True:
                while index < len(self.seen):
                    if predicate(self.seen[index]):
                        return self.seen[index]
                    index += 1
                self.changed.clear()
                await self.changed.wait()

    async def publish(self, verb: str, payload: dict[str, Any] | bytes,
                      user: str | None = None) -> None:
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        await self.client.publish(
            f"stimd/{DEVICE_ID}/cmd/{user or self.user}/{verb}", raw, qos=1
        )

    async def command(self, verb: str, within_s: float = COMMAND_TIMEOUT_S,
                      **fields: Any) -> dict[str, Any]:
        """Send one command and return its reply."""
        command_id = self.next_id(verb)
        mark = len(self.seen)
        await self.publish(verb, {"id": command_id, **fields})
        topic = f"stimd/{DEVICE_ID}/reply/{self.user}/{command_id}"
        reply = await self.wait_for(lambda s: s.topic == topic, within_s, start=mark)
        assert isinstance(reply.payload, dict)
        return reply.payload

    def events(self, kind: str | None = None) -> list[Seen]:
        prefix = f"stimd/{DEVICE_ID}/evt/"
        return [s for s in self.seen if s.topic.startswith(prefix)
                and (kind is None or s.topic == prefix + kind)]

    async def wait_state(self, *states: str, within_s: float = COMMAND_TIMEOUT_S,
                         start: int = 0) -> Seen:
        topic = f"stimd/{DEVICE_ID}/state"
        return await self.wait_for(
            lambda s: s.topic == topic and isinstance(s.payload, dict)
            and s.payload.get("state") in states, within_s, start,
        )

    async def wait_online(self, within_s: float = ONLINE_TIMEOUT_S, start: int = 0) -> Seen:
        topic = f"stimd/{DEVICE_ID}/status"
        return await self.wait_for(
            lambda s: s.topic == topic and isinstance(s.payload, dict)
            and s.payload.get("online") is True and s.payload.get("lifecycle") == "ready",
            within_s, start,
        )


@contextlib.asynccontextmanager
async def operator_client(broker: PrivateBroker, user: str = OPERATOR,
                          client_id: str | None = None) -> AsyncIterator[Operator]:
    """A connected operator subscribed to its replies and the device's public topics."""
    async with connect(broker, user, client_id=client_id or f"rel-{user}") as client:
        base = f"stimd/{DEVICE_ID}"
        for topic in (f"{base}/reply/{user}/#", f"{base}/status", f"{base}/state",
                      f"{base}/evt/#"):
            await client.subscribe(topic, qos=1)
        operator = Operator(user, client)
        reader = asyncio.create_task(operator.read(), name=f"operator-{user}")
        try:
            yield operator
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


@dataclass
class Stack:
    """Broker + simulator + daemon, created in ``workdir``."""

    workdir: Path
    broker: PrivateBroker
    sim: SimulatorProcess
    daemon: DaemonProcess
    state_dir: Path

    def pulse_count(self) -> int:
        """Pulses in the simulator's log: what really left the coil."""
        return len(self.sim.pulses())

    async def wait_pulses(self, count: int, within_s: float = COMMAND_TIMEOUT_S) -> None:
        """Wait until the pulse log holds ``count`` pulses."""
        await self.sim.await_event("pulse", count, timeout_s=within_s)

    async def settled_pulse_count(self, quiet_s: float = 1.2,
                                  within_s: float = 20.0) -> int:
        """The pulse count once no pulse arrived for ``quiet_s``.

        1.2 s is above the Magstim keep-alive (1 s, checked by the simulator every 10 ms):
        a unit the daemon can no longer reach has disarmed itself by then, so nothing more
        can fire.
        """
        deadline = time.monotonic() + within_s
        last = self.pulse_count()
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            now = self.pulse_count()
            if now != last:
                last, quiet_since = now, time.monotonic()
            elif time.monotonic() - quiet_since >= quiet_s:
                return now
        raise AssertionError(f"pulses still arriving after {within_s} s ({last} so far)")

    def history(self) -> list[dict[str, Any]]:
        """``stimd history --json``: the record as a clinic would read it."""
        result = subprocess.run(
            [str(STIMD), "history", "--state-dir", str(self.state_dir), "--json"],
            capture_output=True, text=True, timeout=30, check=False,
        )
        assert result.returncode == 0, f"stimd history failed: {result.stderr}"
        sessions: list[dict[str, Any]] = json.loads(result.stdout)
        return sessions

    async def record_and_verdict(self) -> tuple[list[dict[str, Any]], tuple[int, str]]:
        """``history`` and ``verify-record`` side by side (two CLI processes at once)."""
        sessions, verdict = await asyncio.gather(
            asyncio.to_thread(self.history), asyncio.to_thread(self.verify_record)
        )
        return sessions, verdict

    def verify_record(self) -> tuple[int, str]:
        """``stimd verify-record``: exit code and output."""
        result = subprocess.run(
            [str(STIMD), "verify-record", "--state-dir", str(self.state_dir)],
            capture_output=True, text=True, timeout=30, check=False,
        )
        return result.returncode, result.stdout + result.stderr


def write_config(stack_dir: Path, text: str) -> Path:
    path = stack_dir / "stimd.toml"
    path.write_text(text, encoding="utf-8")
    return path


@contextlib.contextmanager
def _workdir(path: Path) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    finally:
        # the state directory may have been made read-only by a test; it is ours to remove
        with contextlib.suppress(OSError):
            for child in path.rglob("*"):
                if child.is_dir():
                    os.chmod(child, 0o700)
        shutil.rmtree(path, ignore_errors=True)


@contextlib.asynccontextmanager
async def running_stack(
    workdir: Path, *, start_daemon: bool = True, heartbeat_timeout_s: float = 60.0,
    mqtt_extra: dict[str, Any] | None = None, site: dict[str, Any] | None = None,
) -> AsyncIterator[Stack]:
    """Start broker, simulator and (unless told not to) the daemon; stop all at the end."""
    with _workdir(workdir) as root, make_broker(root / "broker") as broker:
        async with SimulatorProcess(device="magstim-rapid2", mains=240) as sim:
            state_dir = root / "state"
            config = write_config(root, daemon_toml(
                port=sim.link, state_dir=state_dir, broker=broker,
                heartbeat_timeout_s=heartbeat_timeout_s, mqtt_extra=mqtt_extra, site=site,
            ))
            daemon = DaemonProcess(config, root / "daemon.log")
            stack = Stack(root, broker, sim, daemon, state_dir)
            if start_daemon:
                daemon.start()
            try:
                yield stack
            finally:
                await asyncio.to_thread(daemon.stop)
