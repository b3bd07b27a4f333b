"""Real daemons for the end-to-end tests: ``stimd run`` against ``stimd-sim`` on a pty.

The daemon is started exactly as the demo starts it (same configuration writer, same
process handling); the simulator through ``SimulatorProcess`` so its pulse log — the
ground truth — can be read. Operators talk to the daemon with ``OperatorClient``, the
client stimctl uses.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from e2e.broker import DAEMON_OPERATORS
from simulator.testing import SimulatorProcess
from stimd.commands import Reply, Verb
from stimd.demo import ChildProcess, daemon_toml, tool
from stimd.mqtt.operator_client import OperatorClient
from stimd.mqtt.private_broker import PrivateBroker

#: A cold start plus the Rapid handshake at 9600 baud, on a loaded 2-core machine.
ONLINE_TIMEOUT_S = 40.0
#: Arming includes the capacitor recharge; commands get this long to be answered.
REPLY_TIMEOUT_S = 20.0
MT = {"pct_mso": 55, "method": "emg"}

#: 3 trains of 5 pulses at 10 Hz, 1.5 s apart: a real, quick session (about 4 s).
SHORT_PROTOCOL = {
    "protocol": {
        "name": "e2e-short", "description": "end-to-end test protocol, not a treatment",
        "reference": "stimd tests", "kind": "rtms", "intensity_pct_mt": 100,
    },
    "rtms": {
        "frequency_hz": 10, "pulses_per_train": 5, "trains": 3,
        "inter_train_interval_s": 1.5,
    },
}
SHORT_PROTOCOL_PULSES = 15


@dataclass
class Daemon:
    device_id: str
    sim: SimulatorProcess
    process: ChildProcess
    state_dir: Path

    def pulses(self) -> list[dict[str, Any]]:
        return self.sim.pulses()


@contextlib.asynccontextmanager
async def running_daemon(
    broker: PrivateBroker,
    workdir: Path,
    device_id: str = "dev01",
    *,
    heartbeat_timeout_s: float = 30.0,
    mqtt: dict[str, Any] | None = None,
) -> AsyncIterator[Daemon]:
    """Simulator + daemon for ``device_id``, online before the body; both stopped after."""
    root = workdir / device_id
    root.mkdir(parents=True)
    async with SimulatorProcess(device="magstim-rapid2", mains=240) as sim:
        config = root / "stimd.toml"
        config.write_text(daemon_toml(
            device_id=device_id, driver="magstim-rapid2", port=sim.link,
            state_dir=root / "state", broker=broker, operators=DAEMON_OPERATORS,
            heartbeat_timeout_s=heartbeat_timeout_s,
            mqtt={"reconnect_min_s": 0.2, "reconnect_max_s": 1.0, "state_interval_s": 0.2,
                  **(mqtt or {})},
        ))
        process = ChildProcess(f"stimd run {device_id}", [
            tool("stimd"), "run", "--config", str(config), "--log-format", "json",
        ], root / "daemon.log")
        process.start()
        try:
            daemon = Daemon(device_id, sim, process, root / "state")
            await wait_online(broker, daemon)
            yield daemon
        finally:
            await asyncio.to_thread(process.stop)


async def wait_online(broker: PrivateBroker, daemon: Daemon) -> None:
    async with operator(broker, daemon.device_id, "tech-bob") as watcher:
        await watcher.watch(watcher.topics.status)
        async with asyncio.timeout(ONLINE_TIMEOUT_S):
            while True:
                assert daemon.process.running, daemon.process.log_tail(40)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        _, status = await watcher.next_update()
                        if status.get("online") and status.get("lifecycle") == "ready":
                            return


@contextlib.asynccontextmanager
async def operator(
    broker: PrivateBroker, device_id: str = "dev01", user: str = "tech-alice"
) -> AsyncIterator[OperatorClient]:
    async with OperatorClient(
        broker.client_config(user), device_id, reply_timeout_s=REPLY_TIMEOUT_S
    ) as client:
        yield client


def load_fields(protocol: Any = None, **mt: Any) -> dict[str, Any]:
    return {
        "protocol": SHORT_PROTOCOL if protocol is None else protocol,
        "motor_threshold": {**MT, "measured_at": datetime.now(UTC).isoformat(), **mt},
        "patient_ref": "P-E2E-1",
    }


async def states_until(
    client: OperatorClient, wanted: Sequence[str], within_s: float = 60.0,
    events: list[tuple[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Every state snapshot seen until one is in ``wanted`` (watch the state topic first);
    event messages seen meanwhile are appended to ``events``."""
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(within_s):
        while True:
            topic, value = await client.next_update()
            if events is not None and "/evt/" in topic:
                events.append((topic, value))
            if topic == client.topics.state and isinstance(value, dict):
                seen.append(value)
                if value.get("state") in wanted:
                    return seen


async def ok(client: OperatorClient, verb: Verb, fields: dict[str, Any] | None = None) -> Reply:
    reply = await client.request(verb, fields)
    assert reply.ok, f"{verb.value} refused: {reply.error}"
    return reply
