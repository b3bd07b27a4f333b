"""Stop latency: an operator publishes ``stop`` while a train runs; how soon is it disarmed?

Latency is from the moment this process starts sending ``stop`` (with stimctl's
client) to the moment the simulator has received the last byte of the disarm command
(its pulse log, same monotonic clock). One stack serves every trial: load, start, wait
until the daemon reports the train started, wait a random 0.05-0.65 s (longer than the
daemon's 0.5 s status poll, so stops land at every phase of the serial traffic), stop.
The protocol's trains last three minutes, so a train is always running when the stop
arrives; each trial uses its own bench patient reference so the daily pulse budget
never interferes.

The floor, measured during the same trains: a bare publish → delivery on the same
broker plus the disarm command's bytes at 9600 baud. Each stop is also classified with
the simulator's command log: was the serial line busy with another exchange (a status
poll, a keep-alive) when the stop arrived? The driver sends one command at a time and
waits for its reply, so the disarm queues behind such an exchange.

    python -m bench.stop_latency --trials 200
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from bench.cli import bounded, run_main
from bench.clients import command, connected, console
from bench.floor import DISARM_COMMAND, FLOOR_SUBSCRIPTION, MqttFloor, line_time_ns
from bench.pulse_log import PulseLogTail
from bench.results import Target, distribution_ms, emit
from bench.serial_traffic import in_the_way
from bench.session import motor_threshold
from bench.stack import FLOOR_DEVICE, OPERATOR, BenchStack
from stimd.commands import Verb
from stimd.mqtt.topics import DeviceTopics

NAME = "stop_latency"
#: The smallest run that exercises everything (the test suite's smoke run).
SMOKE_ARGV = ["--trials", "3"]
#: 1 Hz, 4 trains of 180 pulses: every stop lands inside a three-minute train.
PROTOCOL = "1hz-rdlpfc"
DELAY_RANGE_S = (0.05, 0.65)
FLOOR_PROBES_PER_TRIAL = 3
TARGET_EXCESS_P99_MS = 5.0
EVENT_TIMEOUT_S = 15.0


def disarm_after(sent_ns: int) -> Callable[[dict[str, Any]], bool]:
    """Matches the simulator's record of a complete disarm command received after ``sent_ns``."""
    def matches(record: dict[str, Any]) -> bool:
        return (record["event"] == "command" and record.get("command") == "EA"
                and record["mono_ns"] >= sent_ns)
    return matches


async def measure(trials: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    latencies: list[int] = []
    blocked_by: list[list[str]] = []
    mqtt_floor: list[int] = []
    mid_train = 0
    disarm_line_ns = line_time_ns(len(DISARM_COMMAND))
    with BenchStack(1, log_commands=True) as stack:
        await stack.start_daemons()
        rig = stack.rigs[0]
        topics = DeviceTopics(rig.device_id)
        tail = PulseLogTail(rig.simulator.pulse_log)
        async with (
            console(stack.broker, OPERATOR, rig.device_id) as operator,
            connected(stack.broker, OPERATOR, (topics.event("train_started"),)) as watcher,
            connected(stack.broker, FLOOR_DEVICE, (FLOOR_SUBSCRIPTION,)) as floor_end,
        ):
            train_started = watcher.watch(topics.event("train_started"))
            floor = MqttFloor(watcher, floor_end)
            loop = asyncio.get_running_loop()
            for trial in range(trials):
                await command(operator, Verb.LOAD, protocol=PROTOCOL,
                              motor_threshold=motor_threshold(),
                              patient_ref=f"bench-stop-{trial:04d}")
                while not train_started.empty():
                    train_started.get_nowait()
                await command(operator, Verb.START)
                async with asyncio.timeout(EVENT_TIMEOUT_S):
                    await train_started.get()
                stop_at = loop.time() + rng.uniform(*DELAY_RANGE_S)
                for _ in range(FLOOR_PROBES_PER_TRIAL):
                    mqtt_floor.append(await floor.sample())
                await asyncio.sleep(max(0.0, stop_at - loop.time()))
                start = tail.mark()
                sent_ns = time.monotonic_ns()
                reply = await operator.request(Verb.STOP)
                if not reply.ok or not (reply.result or {}).get("disarmed"):
                    raise RuntimeError(f"trial {trial}: stop not confirmed: {reply}")
                disarm = await tail.wait_for(disarm_after(sent_ns), EVENT_TIMEOUT_S,
                                             "disarm command after the stop", start=start)
                latencies.append(disarm["mono_ns"] - sent_ns)
                disarm_started_ns = disarm["mono_ns"] - disarm_line_ns
                blocked_by.append(in_the_way(tail.records[max(0, start - 10):], sent_ns,
                                             disarm_started_ns))
                tail.read_new()
                if any(r["event"] == "train_aborted" for r in tail.records[start:]):
                    mid_train += 1
    floor_ns = [sample + disarm_line_ns for sample in mqtt_floor]
    latency = distribution_ms(latencies)
    floor_ms = distribution_ms(floor_ns)
    excess_p99 = float(latency["p99"]) - float(floor_ms["p99"])
    idle = [x for x, b in zip(latencies, blocked_by, strict=True) if not b]
    busy = [x for x, b in zip(latencies, blocked_by, strict=True) if b]
    return {
        "benchmark": NAME,
        "trials": trials,
        "stopped_mid_train": mid_train,
        "protocol": PROTOCOL,
        "latency_ms": latency,
        "floor_ms": floor_ms,
        "floor_parts_ms": {
            "mqtt_publish_to_delivery": distribution_ms(mqtt_floor),
            "disarm_line_time": round(disarm_line_ns / 1e6, 3),
        },
        "ratio_to_floor": {
            "p50": round(float(latency["p50"]) / float(floor_ms["p50"]), 2),
            "p99": round(float(latency["p99"]) / float(floor_ms["p99"]), 2),
        },
        "excess_over_floor_ms": {
            "p50": round(float(latency["p50"]) - float(floor_ms["p50"]), 3),
            "p99": round(excess_p99, 3),
        },
        "serial_line_at_stop": {
            "idle": len(idle),
            "busy": len(busy),
            "latency_ms_line_idle": distribution_ms(idle) if idle else None,
            "latency_ms_line_busy": distribution_ms(busy) if busy else None,
            "exchanges_in_the_way": dict(Counter(c for b in blocked_by for c in b)),
        },
        "targets": [Target("p99 within 5 ms of the floor", excess_p99,
                           TARGET_EXCESS_P99_MS, "ms").to_json()],
    }


def describe(result: dict[str, Any]) -> str:
    latency, floor = result["latency_ms"], result["floor_ms"]
    return (f"{result['trials']} stops ({result['stopped_mid_train']} mid-train): "
            f"p50 {latency['p50']} ms, p99 {latency['p99']} ms, max {latency['max']} ms; "
            f"floor p50 {floor['p50']} ms, p99 {floor['p99']} ms; "
            f"p99 {result['excess_over_floor_ms']['p99']:+.3f} ms over the floor; "
            f"{result['serial_line_at_stop']['busy']} stops waited for another serial exchange")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.stop_latency", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=bounded(int, 1, 100_000), default=200,
                        help="stops to time (default 200)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the random stop delays")
    return parser


async def run(args: argparse.Namespace) -> dict[str, Any]:
    result = await measure(args.trials, args.seed)
    emit(result, describe(result))
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_main(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
