"""Start-up: from starting ``stimd run`` to READY, and to ``status`` online on MQTT.

The simulator stays up; each trial starts a fresh daemon process against it and stops
it again (SIGTERM, orderly). READY is the ``READY=1`` the daemon sends to the
``NOTIFY_SOCKET`` this benchmark provides, exactly as systemd would receive it (after
the device handshake); online is the dashboard receiving the daemon's retained
``status`` with ``online: true`` and the new boot id. Times run from just before the
process is spawned, so they include the interpreter's start and every import.

Target: ≤ 1.5 s with the simulator.

    python -m bench.startup --trials 10
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import Any

from bench.cli import bounded, run_main
from bench.clients import Received, connected
from bench.results import Target, distribution_ms, emit
from bench.stack import DAEMON_READY_TIMEOUT_S, DASHBOARD, BenchStack
from stimd.mqtt.topics import DeviceTopics

NAME = "startup"
#: The smallest run that exercises everything (the test suite's smoke run).
SMOKE_ARGV = ["--trials", "1"]
TARGET_S = 1.5


async def next_boot_online(statuses: asyncio.Queue[Received], started_ns: int,
                           seen_boots: set[str]) -> Received:
    """The first ``online: true`` status of a boot not seen before, after ``started_ns``."""
    async with asyncio.timeout(DAEMON_READY_TIMEOUT_S):
        while True:
            received = await statuses.get()
            status = received.payload
            if (isinstance(status, dict) and status.get("online") is True
                    and status.get("boot_id") not in seen_boots
                    and received.received_ns > started_ns):
                seen_boots.add(status["boot_id"])
                return received


async def measure(trials: int) -> dict[str, Any]:
    to_ready: list[int] = []
    to_online: list[int] = []
    with BenchStack(1) as stack:
        rig = stack.rigs[0]
        topic = DeviceTopics(rig.device_id).status
        async with connected(stack.broker, DASHBOARD) as dashboard:
            statuses = dashboard.watch(topic)
            await dashboard.client.subscribe(topic, qos=1)
            seen_boots: set[str] = set()
            for _ in range(trials):
                daemon = rig.daemon
                started_ns = daemon.start()
                try:
                    ready_ns = await daemon.wait_ready()
                    online = await next_boot_online(statuses, started_ns, seen_boots)
                    to_ready.append(ready_ns - started_ns)
                    to_online.append(online.received_ns - started_ns)
                finally:
                    await asyncio.to_thread(daemon.stop)
    ready = distribution_ms(to_ready)
    online_ms = distribution_ms(to_online)
    return {
        "benchmark": NAME,
        "trials": trials,
        "to_ready_ms": ready,
        "to_status_online_ms": online_ms,
        "targets": [
            Target("start → READY ≤ 1.5 s (max)", float(ready["max"]) / 1000, TARGET_S,
                   "s").to_json(),
            Target("start → status online ≤ 1.5 s (max)", float(online_ms["max"]) / 1000,
                   TARGET_S, "s").to_json(),
        ],
    }


def describe(result: dict[str, Any]) -> str:
    ready, online = result["to_ready_ms"], result["to_status_online_ms"]
    return (f"{result['trials']} starts: READY p50 {ready['p50']} ms, max {ready['max']} ms; "
            f"status online p50 {online['p50']} ms, max {online['max']} ms")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=bounded(int, 1, 1000), default=10,
                        help="daemon starts (default 10)")
    return parser


async def run(args: argparse.Namespace) -> dict[str, Any]:
    result = await measure(args.trials)
    emit(result, describe(result))
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_main(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
