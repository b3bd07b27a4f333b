"""Keep-alive under load: does the daemon keep the device under control on a busy machine?

A Magstim unit disarms and drops remote control when no valid command reaches it for
about 1 s while armed; the daemon's driver renews it (any command renews, a ``Q@`` is
sent when nothing else was). While two CPU-bound processes saturate the machine, a
session runs to its end; the simulator logs every command it receives with its arrival
time. Measured over the armed period: the largest gap between received commands (what
the device counts) and between explicit keep-alive commands, and every disarm that was
not the session's own end (keep-alive expiry, a daemon trip, anything).

Target: max gap ≤ 600 ms (the device gives up at ~1 s), zero spurious disarms.

    python -m bench.keepalive_load --seconds 60
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from itertools import pairwise
from typing import Any

from bench.cli import bounded, run_main
from bench.clients import connected, console
from bench.pulse_log import PulseLogTail
from bench.results import Target, emit
from bench.session import event_queue, planned_schedule, rtms_protocol, run_session
from bench.stack import OPERATOR, BenchStack, cpu_burners
from stimd.mqtt.topics import DeviceTopics

NAME = "keepalive_load"
#: The smallest run that exercises everything (the test suite's smoke run).
SMOKE_ARGV = ["--seconds", "3"]
BURNERS = 2
TARGET_MAX_GAP_MS = 600.0
TRAIN_PERIOD_S = 1.4  # 5 pulses at 10 Hz (0.4 s) and 1 s between trains


def protocol(trains: int) -> dict[str, Any]:
    return rtms_protocol(
        "bench-keepalive", frequency_hz=10, pulses_per_train=5, trains=trains,
        inter_train_interval_s=1,
        description=f"keep-alive benchmark: {trains} trains of 5 pulses at 10 Hz")


def largest_gap_ns(times_ns: Sequence[int]) -> int:
    return max((b - a for a, b in pairwise(times_ns)), default=0)


def analyse(records: list[dict[str, Any]], completed: bool) -> dict[str, Any]:
    """Gaps and disarms over the armed period of the session's pulse-log records."""
    armed = [r["mono_ns"] for r in records if r["event"] == "armed"]
    disarms = [r for r in records if r["event"] == "disarmed"]
    if not armed or not disarms:
        raise RuntimeError("the pulse log shows no armed period")
    begin, end = armed[0], disarms[-1]["mono_ns"]
    received = [r["mono_ns"] for r in records
                if r["event"] == "command" and begin <= r["mono_ns"] <= end]
    keepalives = [r["mono_ns"] for r in records
                  if r["event"] == "keepalive" and begin <= r["mono_ns"] <= end]
    # the session's own end disarms once; every other disarm is spurious
    spurious = len(disarms) - (1 if completed else 0)
    return {
        "armed_s": round((end - begin) / 1e9, 3),
        "commands_received": len(received),
        "max_gap_between_commands_ms": round(largest_gap_ns([begin, *received]) / 1e6, 3),
        "max_gap_between_keepalive_commands_ms": round(
            largest_gap_ns([begin, *keepalives]) / 1e6, 3),
        "keepalive_commands": len(keepalives),
        "spurious_disarms": spurious,
        "disarm_causes": [r.get("cause") for r in disarms],
        "remote_lost": sum(1 for r in records if r["event"] == "remote_lost"),
    }


async def measure(seconds: float) -> dict[str, Any]:
    trains = max(2, math.ceil(seconds / TRAIN_PERIOD_S))
    chosen = protocol(trains)
    schedule = planned_schedule(chosen)
    with BenchStack(1, log_commands=True) as stack:
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
            with cpu_burners(BURNERS):
                outcome = await run_session(
                    operator, events, protocol=chosen,
                    patient_ref="bench-keepalive",
                    # the load slows every step; a drifting schedule must still finish
                    timeout_s=2 * schedule.duration_s + 60)
        tail.read_new()
    found = analyse(tail.records[start:], outcome.completed)
    return {
        "benchmark": NAME,
        "burners": BURNERS,
        "trains": trains,
        "session_end": outcome.end.payload.get("type"),
        "session_end_detail": outcome.end.payload.get("payload"),
        **found,
        "targets": [
            Target("max gap between commands ≤ 600 ms",
                   found["max_gap_between_commands_ms"], TARGET_MAX_GAP_MS, "ms").to_json(),
            Target("no spurious disarm", found["spurious_disarms"], 0, "disarms").to_json(),
        ],
    }


def describe(result: dict[str, Any]) -> str:
    return (f"{result['armed_s']} s armed with {result['burners']} CPU burners: max gap "
            f"between commands {result['max_gap_between_commands_ms']} ms (between "
            f"explicit keep-alives {result['max_gap_between_keepalive_commands_ms']} ms), "
            f"{result['spurious_disarms']} spurious disarms, session ended with "
            f"{result['session_end']}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.keepalive_load", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=bounded(float, 1.0, 3600.0), default=60.0,
                        help="planned session length under load (default 60)")
    return parser


async def run(args: argparse.Namespace) -> dict[str, Any]:
    result = await measure(args.seconds)
    emit(result, describe(result))
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_main(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
