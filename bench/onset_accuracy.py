"""Train onset accuracy: does each train start when the schedule says?

A session of many short trains (10 Hz, 5 pulses, 1 s between trains) runs to the end.
For every train the actual onset is its first pulse in the simulator's pulse log; the
planned onset is the schedule's (from the same validator the daemon uses) relative to
the first train's actual onset, so the constant cost of getting a train out (status
read, write-ahead record, the fire command's bytes) cancels and what remains is how
much that cost varies, plus whatever accumulates from train to train (reported as the
drift: the least-squares slope of the error over the train index). The daemon's own
``train_started`` events say when it called fire; comparing them splits each error into
"before the fire call" (waking up, interlock reads, the durable intent) and "from the
fire call to the pulse" (waiting for the serial line, the fire command's bytes).

Target: p99 error ≤ 2 ms beyond the fire command's own line time.

    python -m bench.onset_accuracy --trains 100
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from bench.cli import bounded, run_main
from bench.clients import connected, console
from bench.floor import FIRE_COMMAND, line_time_ns
from bench.pulse_log import PulseLogTail
from bench.results import Target, distribution_ms, emit
from bench.session import event_queue, planned_schedule, rtms_protocol, run_session
from bench.stack import OPERATOR, BenchStack
from stimd.mqtt.topics import DeviceTopics

NAME = "onset_accuracy"
#: The smallest run that exercises everything (the test suite's smoke run).
SMOKE_ARGV = ["--trains", "3"]
TARGET_MARGIN_MS = 2.0
SESSION_MARGIN_S = 60.0  # arming, and the slack a loaded machine may add to a session


def protocol(trains: int) -> dict[str, Any]:
    return rtms_protocol(
        "bench-onsets", frequency_hz=10, pulses_per_train=5, trains=trains,
        inter_train_interval_s=1,
        description=f"onset accuracy benchmark: {trains} trains of 5 pulses at 10 Hz")


def slope(values: list[int]) -> float:
    """Least-squares slope of ``values`` over their index (0 for fewer than two)."""
    count = len(values)
    if count < 2:
        return 0.0
    mean_x = (count - 1) / 2
    mean_y = sum(values) / count
    covariance = sum((x - mean_x) * (y - mean_y) for x, y in enumerate(values))
    variance = sum((x - mean_x) ** 2 for x in range(count))
    return covariance / variance


def first_pulses(records: list[dict[str, Any]]) -> list[int]:
    """Monotonic ns of the first pulse of every train, in order."""
    return sorted(r["mono_ns"] for r in records
                  if r["event"] == "pulse" and r.get("mode") == "train" and r["pulse"] == 0)


async def measure(trains: int) -> dict[str, Any]:
    chosen = protocol(trains)
    schedule = planned_schedule(chosen)
    planned_us = [t.onset_us for t in schedule.trains]
    with BenchStack(1) as stack:
        await stack.start_daemons()
        rig = stack.rigs[0]
        topics = DeviceTopics(rig.device_id)
        tail = PulseLogTail(rig.simulator.pulse_log)
        async with (
            console(stack.broker, OPERATOR, rig.device_id) as operator,
            connected(stack.broker, OPERATOR, (topics.event("#"),)) as watcher,
        ):
            events = event_queue(watcher, rig.device_id)
            start = tail.mark()
            outcome = await run_session(
                operator, events, protocol=chosen,
                patient_ref="bench-onsets", timeout_s=schedule.duration_s + SESSION_MARGIN_S)
        tail.read_new()
    if not outcome.completed:
        raise RuntimeError(f"the session did not complete: {outcome.end.payload}")
    actual_ns = first_pulses(tail.records[start:])
    if len(actual_ns) != trains:
        raise RuntimeError(f"the pulse log shows {len(actual_ns)} trains, planned {trains}")
    fire_calls_us = {e.payload["payload"]["train"]: e.payload["payload"]["actual_onset_us"]
                     for e in outcome.of_type("train_started")}
    errors: list[int] = []
    before_fire: list[int] = []
    after_fire: list[int] = []
    for index in range(1, trains):
        planned_ns = actual_ns[0] + (planned_us[index] - planned_us[0]) * 1000
        errors.append(actual_ns[index] - planned_ns)
        call_ns = (fire_calls_us[index] - fire_calls_us[0]) * 1000
        before_fire.append(call_ns - (planned_us[index] - planned_us[0]) * 1000)
        after_fire.append(actual_ns[index] - actual_ns[0] - call_ns)
    error = distribution_ms(errors)
    fire_line_ms = line_time_ns(len(FIRE_COMMAND)) / 1e6
    return {
        "benchmark": NAME,
        "trains": trains,
        "protocol": chosen["rtms"],
        "error_ms": error,
        "jitter_ms": round(float(error["p99"]) - float(error["p50"]), 3),
        "drift_ms_per_train": round(slope(errors) / 1e6, 3),
        "error_parts_ms": {
            "planned_to_fire_call": distribution_ms(before_fire),
            "fire_call_to_first_pulse": distribution_ms(after_fire),
        },
        "fire_command_line_time_ms": round(fire_line_ms, 3),
        "targets": [Target("p99 error within 2 ms beyond the fire command's line time",
                           float(error["p99"]), round(fire_line_ms + TARGET_MARGIN_MS, 3),
                           "ms").to_json()],
    }


def describe(result: dict[str, Any]) -> str:
    error = result["error_ms"]
    parts = result["error_parts_ms"]
    return (f"{result['trains']} trains: onset error p50 {error['p50']} ms, p99 {error['p99']} ms, "
            f"max {error['max']} ms, jitter {result['jitter_ms']} ms, drift "
            f"{result['drift_ms_per_train']} ms per train (fire command "
            f"{result['fire_command_line_time_ms']} ms on the line); p99 before the fire call "
            f"{parts['planned_to_fire_call']['p99']} ms, after it "
            f"{parts['fire_call_to_first_pulse']['p99']} ms")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.onset_accuracy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trains", type=bounded(int, 2, 600), default=100,
                        help="trains in the session (default 100, about 140 s)")
    return parser


async def run(args: argparse.Namespace) -> dict[str, Any]:
    result = await measure(args.trains)
    emit(result, describe(result))
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_main(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
