"""Wall-clock jumps: the schedule runs on the monotonic clock, so they change nothing.

The system clock cannot be changed safely on a shared test machine, and the daemon has
no hook to offset its wall clock, so this is shown in-process: the real session
controller drives the real simulator over its pty while ``time.time`` and the
controller's wall clock jump three hours forward and then back mid-session. The
simulator's pulse log (its own process, untouched clock) is the judge. A static check
pins that the scheduler reads no wall clock at all.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import itertools
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import stimd.scheduler
from drivers.registry import create_driver
from simulator.testing import SimulatorProcess
from stimd.commands import COMMAND_MODELS, Verb
from stimd.config import parse_config
from stimd.controller import SessionController
from stimd.record import SessionRecord

from .judge import PLANNED_PULSES, TRAIN_PULSES, TRAINS, Plan, judge_pulses, load_fields
from .matrix import fault
from .results import write_result

ROW = fault("wall_clock_jump")
JUMP = timedelta(seconds=float(ROW.inject["jump_s"]))
#: Slack on a train onset beyond its planned offset from train 0. Generous for a loaded
#: 2-core box (the daemon's own tests see tens of ms); a scheduler that followed the
#: wall clock would be off by the jump, three hours.
ONSET_SLACK_S = 1.5


def test_the_scheduler_reads_only_the_monotonic_clock() -> None:
    tree = ast.parse(Path(stimd.scheduler.__file__).read_text(encoding="utf-8"))
    clock_reads = {
        f"{node.value.id}.{node.attr}" for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
        and node.value.id in {"time", "datetime", "date", "loop"}
    }
    assert clock_reads <= {"time.monotonic_ns", "time.monotonic"}, clock_reads
    assert clock_reads, "the scheduler reads no clock at all: the check is looking wrong"


class JumpingClock:
    """``time.time`` and a ``datetime`` clock that share one jump offset."""

    def __init__(self) -> None:
        self.offset = timedelta(0)
        self._real_time = time.time

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def time(self) -> float:
        return self._real_time() + self.offset.total_seconds()


@contextlib.contextmanager
def jumping_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[JumpingClock]:
    clock = JumpingClock()
    monkeypatch.setattr(time, "time", clock.time)
    yield clock


async def test_wall_clock_jumps_do_not_move_the_trains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    problems: list[str] = []
    data: dict[str, Any] = {"id": ROW.id, "title": ROW.title}
    with jumping_time(monkeypatch) as clock:
        async with SimulatorProcess(device="magstim-rapid2", mains=240) as sim:
            state_dir = tmp_path / "state"
            config = parse_config({
                "device": {"id": "dev01", "driver": "magstim-rapid2", "port": str(sim.link),
                           "mains_voltage": 240},
                "operators": {"names": ["tech-alice"], "heartbeat_timeout_s": 60.0},
                "storage": {"state_dir": str(state_dir)},
                "supervisor": {"status_poll_interval_s": 0.1},
            }, source="test")
            with SessionRecord.open(state_dir) as record:
                controller = SessionController(
                    config=config, record=record, clock=clock.now,
                    driver_factory=lambda: create_driver(
                        "magstim-rapid2", str(sim.link), mains_voltage=240),
                )
                async with asyncio.TaskGroup() as tg:
                    serving = tg.create_task(controller.serve(), name="wall-clock-serve")
                    try:
                        await _session_with_jumps(controller, sim, clock, data, problems)
                    finally:
                        await controller.shutdown("test finished")
                        serving.cancel()
                sessions = record.sessions()
            pulses = sim.pulses()
    _judge(pulses, sessions, data, problems)
    data.update({"problems": problems, "passed": not problems, "finished_at": time.time()})
    write_result(f"fault-{ROW.id}", data)
    assert not problems, problems


async def _until_state(controller: SessionController, states: set[str],
                       within_s: float = 20.0) -> None:
    changed = asyncio.Event()
    controller.add_listener(lambda _event: changed.set())
    async with asyncio.timeout(within_s):
        while controller.state.value not in states:
            changed.clear()
            await changed.wait()


async def _command(controller: SessionController, verb: Verb, **fields: Any) -> Any:
    command = COMMAND_MODELS[verb].model_validate({"id": f"wc-{verb.value}", **fields})
    return await controller.execute("tech-alice", command, verb)


async def _session_with_jumps(controller: SessionController, sim: SimulatorProcess,
                              clock: JumpingClock, data: dict[str, Any],
                              problems: list[str]) -> None:
    await _until_state(controller, {"IDLE"})
    fields = load_fields()
    fields["motor_threshold"] = {**fields["motor_threshold"],
                                 "measured_at": datetime.now(UTC) - timedelta(days=1)}
    loaded = await _command(controller, Verb.LOAD, **fields)
    assert loaded.ok, loaded
    data["intensity_pct_mso"] = loaded.result["intensity_pct_mso"]
    started = await _command(controller, Verb.START)
    assert started.ok, started
    await sim.await_event("pulse", TRAIN_PULSES)
    clock.offset = JUMP            # three hours forward
    await sim.await_event("pulse", 2 * TRAIN_PULSES)
    clock.offset = -JUMP           # and three hours back
    await _until_state(controller, {"COMPLETED", "FAULT", "PAUSED", "ABORTED"})
    clock.offset = timedelta(0)
    data["outcome_state"] = controller.state.value
    if controller.state.value != ROW.outcome_state:
        problems.append(f"state {controller.state.value}, expected {ROW.outcome_state}: "
                        f"{controller.snapshot().get('paused_reason')}")


def _judge(pulses: list[dict[str, Any]], sessions: list[dict[str, Any]],
           data: dict[str, Any], problems: list[str]) -> None:
    plan = Plan(PLANNED_PULSES, TRAIN_PULSES, int(data.get("intensity_pct_mso", 0)))
    pulse_data, pulse_problems = judge_pulses(pulses, plan)
    data.update(pulse_data)
    problems.extend(pulse_problems)
    if len(pulses) != PLANNED_PULSES:
        problems.append(f"{len(pulses)} pulses fired, the plan has {PLANNED_PULSES}")
    firsts = sorted(p["mono_ns"] for p in pulses if p["pulse"] == 0)
    gaps = [round((b - a) / 1e9, 3) for a, b in itertools.pairwise(firsts)]
    data["train_onset_gaps_s"] = gaps
    # onset to onset: the train's last pulse 0.9 s after its first at 10 Hz, then the 1 s
    # inter-train interval; at least that, and never hours off
    planned_gap_s = (TRAIN_PULSES - 1) / 10 + 1.0
    for gap in gaps:
        if not planned_gap_s - 0.05 <= gap <= planned_gap_s + ONSET_SLACK_S:
            problems.append(f"train onset gap {gap} s, planned {planned_gap_s} s")
    if len(firsts) != TRAINS:
        problems.append(f"{len(firsts)} trains started, planned {TRAINS}")
    delivered = sum(int(s["pulses_delivered"]) for s in sessions)
    data.update({
        "record_delivered": delivered,
        "record_uncertain": sum(int(s.get("pulses_uncertain") or 0) for s in sessions),
        "record_outcomes": [s["outcome"] for s in sessions],
        "record_consistent": delivered == len(pulses),
        "detection_s": None, "detected_by": "nothing to detect (monotonic schedule)",
        "pulses_beyond_plan": max(0, len(pulses) - PLANNED_PULSES),
    })
    if [s["outcome"] for s in sessions] != [ROW.record_outcome]:
        problems.append(f"record outcomes {[s['outcome'] for s in sessions]}")
    if delivered != len(pulses):
        problems.append(f"record says {delivered} delivered, pulse log has {len(pulses)}")
