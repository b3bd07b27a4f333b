"""Fleet: N simulators and N daemons on one broker, watched by one dashboard.

Per daemon, from /proc: CPU (% of one core) and peak resident memory, first idle (all
daemons connected, nothing loaded) and then running (every daemon delivering a session
at once). The dashboard subscribes to ``stimd/+/state``; the state-update latency is
from an operator publishing a command to the dashboard receiving the ``state`` that
shows its effect (``load`` → LOADED, ``unload`` → IDLE), sent to every daemon at once
for a few rounds, so it includes the daemon's work and the broker's fan-out under the
fleet's load.

Targets: idle CPU ≤ 1 % of a core and RSS ≤ 80 MB per daemon.

    python -m bench.fleet --n 10           # --n 50 for the large fleet
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Sequence
from typing import Any

from bench.cli import bounded, run_main
from bench.clients import Received, command, connected, console, heartbeats
from bench.procstat import measure_usage, pid_with_argument, summarise
from bench.results import Target, distribution_ms, emit
from bench.session import HEARTBEAT_PERIOD_S, motor_threshold, planned_schedule, rtms_protocol
from bench.stack import DASHBOARD, OPERATOR, BenchStack
from stimd.commands import Verb
from stimd.mqtt.operator_client import OperatorClient
from stimd.mqtt.topics import ROOT

NAME = "fleet"
#: The smallest run that exercises everything (the test suite's smoke run).
SMOKE_ARGV = ["--n", "2", "--idle-seconds", "1", "--running-seconds", "1", "--rounds", "1"]
TARGET_IDLE_CPU_PCT = 1.0
TARGET_RSS_MB = 80.0
SETTLE_S = 3.0  # after the last daemon came online: its start-up work is not "idle"
STATE_TIMEOUT_S = 60.0
STATE_FILTER = f"{ROOT}/+/state"
RUNNING_PROTOCOL = rtms_protocol(
    "bench-fleet", frequency_hz=10, pulses_per_train=5, trains=200, inter_train_interval_s=1,
    description="fleet benchmark: trains of 5 pulses at 10 Hz for as long as it measures")


async def command_to_state(operators: dict[str, OperatorClient],
                           states: asyncio.Queue[Received], verb: Verb, expected: str,
                           **fields: Any) -> list[int]:
    """Send ``verb`` to every device at once; ns from each send to its ``expected`` state."""
    sent: dict[str, int] = {}
    latency: dict[str, int] = {}
    async with asyncio.TaskGroup() as group:
        for device_id, operator in operators.items():
            sent[device_id] = time.monotonic_ns()
            group.create_task(command(operator, verb, **fields))
        async with asyncio.timeout(STATE_TIMEOUT_S):
            while len(latency) < len(operators):
                received = await states.get()
                device_id = received.device_id
                if (device_id in sent and device_id not in latency
                        and received.received_ns > sent[device_id]
                        and received.payload.get("state") == expected):
                    latency[device_id] = received.received_ns - sent[device_id]
    return list(latency.values())


async def measure(count: int, idle_s: float, running_s: float, rounds: int) -> dict[str, Any]:
    planned_schedule(RUNNING_PROTOCOL)  # refuse early what the daemons would refuse
    with BenchStack(count) as stack:
        await stack.start_daemons()
        pids = [rig.daemon.pid for rig in stack.rigs]
        broker_pid = pid_with_argument(str(stack.broker.conf_file))
        async with contextlib.AsyncExitStack() as clients:
            operators = {
                rig.device_id: await clients.enter_async_context(
                    console(stack.broker, OPERATOR, rig.device_id))
                for rig in stack.rigs}
            dashboard = await clients.enter_async_context(connected(stack.broker, DASHBOARD))
            states = dashboard.watch(STATE_FILTER)
            await dashboard.client.subscribe(STATE_FILTER, qos=1)
            await asyncio.sleep(SETTLE_S)
            *idle, broker_idle = await measure_usage([*pids, broker_pid], idle_s)
            latencies: list[int] = []
            for round_ in range(rounds):
                latencies += await command_to_state(
                    operators, states, Verb.LOAD, "LOADED", protocol=RUNNING_PROTOCOL,
                    motor_threshold=motor_threshold(), patient_ref=f"bench-fleet-{round_}")
                latencies += await command_to_state(operators, states, Verb.UNLOAD, "IDLE")
            await command_to_state(
                operators, states, Verb.LOAD, "LOADED", protocol=RUNNING_PROTOCOL,
                motor_threshold=motor_threshold(), patient_ref="bench-fleet-running")
            # arming takes the device ~1 s: not part of a state update's latency
            await command_to_state(operators, states, Verb.START, "RUNNING")
            async with asyncio.TaskGroup() as group:
                beating = [group.create_task(heartbeats(operator, HEARTBEAT_PERIOD_S))
                           for operator in operators.values()]
                try:
                    running = await measure_usage(pids, running_s)
                finally:
                    for task in beating:
                        task.cancel()
            for operator in operators.values():
                await command(operator, Verb.STOP)
    idle_summary = summarise(idle)
    running_summary = summarise(running)
    rss_max = max(idle_summary["rss_mb_max"], running_summary["rss_mb_max"])
    return {
        "benchmark": NAME,
        "daemons": count,
        "idle_s": idle_s,
        "running_s": running_s,
        "idle": idle_summary,
        "running": running_summary,
        "broker_idle": {"cpu_pct": broker_idle.cpu_pct, "rss_mb": broker_idle.rss_mb},
        "state_latency_ms": distribution_ms(latencies),
        "targets": [
            Target("idle CPU ≤ 1 % of a core per daemon", idle_summary["cpu_pct_max"],
                   TARGET_IDLE_CPU_PCT, "%").to_json(),
            Target("RSS ≤ 80 MB per daemon", rss_max, TARGET_RSS_MB, "MB").to_json(),
        ],
    }


def describe(result: dict[str, Any]) -> str:
    idle, running = result["idle"], result["running"]
    latency = result["state_latency_ms"]
    return (f"{result['daemons']} daemons: idle CPU mean {idle['cpu_pct_mean']} % max "
            f"{idle['cpu_pct_max']} %, running CPU mean {running['cpu_pct_mean']} % max "
            f"{running['cpu_pct_max']} %, RSS max {max(idle['rss_mb_max'], running['rss_mb_max'])}"
            f" MB; command → dashboard state p50 {latency['p50']} ms, p99 {latency['p99']} ms")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=bounded(int, 1, 100), default=10,
                        help="daemons (default 10; 50 opt-in)")
    parser.add_argument("--idle-seconds", type=bounded(float, 1.0, 600.0), default=20.0,
                        help="idle measuring window (default 20)")
    parser.add_argument("--running-seconds", type=bounded(float, 1.0, 600.0), default=20.0,
                        help="running measuring window (default 20)")
    parser.add_argument("--rounds", type=bounded(int, 1, 100), default=3,
                        help="load/unload rounds for the state latency (default 3)")
    return parser


async def run(args: argparse.Namespace) -> dict[str, Any]:
    result = await measure(args.n, args.idle_seconds, args.running_seconds, args.rounds)
    emit(result, describe(result))
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_main(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
