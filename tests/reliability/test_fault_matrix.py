"""The fault matrix, end to end: each row of ``faults.toml`` broken on purpose.

For every fault, injected into a running session (real mosquitto, ``stimd run``,
``stimd-sim`` on a pty), the test records how it was detected and how long that took,
then asserts what the table expects: the device is disarmed (simulator state and pulse
log), no pulse left the coil beyond the plan, the record agrees with the pulse log,
``state``/``evt`` say what happened, and the daemon still answers (after SIGKILL: comes
back and refuses to resume by itself). Results go to the results directory first and
are asserted after, so ``docs/reliability.md`` reports failing runs too.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .judge import (
    PLANNED_PULSES,
    TRAIN_PULSES,
    Plan,
    judge_pulses,
    judge_record,
    load_fields,
)
from .matrix import FaultRow, load_faults
from .results import write_result
from .stack import Operator, Stack, log_time, operator_client, running_stack

pytestmark = pytest.mark.e2e

ROWS = [row for row in load_faults() if row.scenario != "wall_clock_jump"]
#: The fault lands here: train 0 delivered and recorded, train 1 half way.
MID_TRAIN_1 = TRAIN_PULSES + TRAIN_PULSES // 2


@dataclass
class Observation:
    """What one fault run saw; becomes ``fault-<id>.json``."""

    row: FaultRow
    data: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def check(self, ok: bool, problem: str) -> None:
        if not ok:
            self.problems.append(problem)

    def finish(self) -> None:
        self.data.update({
            "id": self.row.id, "title": self.row.title, "problems": self.problems,
            "passed": not self.problems, "finished_at": time.time(),
        })
        write_result(f"fault-{self.row.id}", self.data)
        assert not self.problems, f"{self.row.id}: " + "; ".join(self.problems)


async def start_session(op: Operator) -> Plan:
    """Load the fault protocol and start it; returns the plan the daemon compiled."""
    loaded = await op.command("load", **load_fields())
    assert loaded["ok"], loaded
    summary = loaded["result"]
    started = await op.command("start")
    assert started["ok"], started
    assert summary["total_pulses"] == PLANNED_PULSES
    return Plan(pulses=PLANNED_PULSES, train_pulses=TRAIN_PULSES,
                intensity_pct_mso=int(summary["intensity_pct_mso"]))


def detection(stack: Stack, row: FaultRow, since_wall: float,
              since_mono_ns: int) -> tuple[float | None, str]:
    """Seconds from injection to the detection record the table names, and what it was."""
    event = row.detect_event
    if event is None:
        return None, "none"
    fields = row.detect_fields
    if event.startswith("sim:"):
        kind = event.removeprefix("sim:")
        for sim_record in stack.sim.events(kind):
            if sim_record["mono_ns"] >= since_mono_ns and all(
                sim_record.get(k) == v for k, v in fields.items()
            ):
                seconds = (sim_record["mono_ns"] - since_mono_ns) / 1e9
                return seconds, f"simulator {kind} {fields}"
        return None, f"simulator {kind} not seen"
    log_record = stack.daemon.first_log(event, since_wall=since_wall - 0.05, **fields)
    if log_record is None:
        return None, f"daemon log {event!r} {fields} not seen"
    stamp = log_time(log_record)
    assert stamp is not None
    cause = log_record.get("cause")
    suffix = f" ({cause})" if cause else ""
    return max(0.0, stamp - since_wall), f"daemon log {event!r}{suffix}"


async def judge_common(obs: Observation, stack: Stack, op: Operator, plan: Plan, *,
                       in_flight: int = TRAIN_PULSES, after_restart: bool = False) -> None:
    """Device disarmed, nothing beyond plan, record consistent, state and evt truthful.

    ``after_restart``: the daemon was restarted, so it must be IDLE with no fault of its
    own; the fault cause was checked before the restart.
    """
    row = obs.row
    expected_state = "IDLE" if after_restart else row.outcome_state
    fired = await stack.settled_pulse_count()
    sim_state = await stack.sim.astate()
    obs.data["device_armed_after"] = sim_state["armed"]
    obs.check(not sim_state["armed"], "the simulator is still armed")
    pulse_data, pulse_problems = judge_pulses(stack.sim.pulses(), plan)
    obs.data.update(pulse_data)
    obs.problems.extend(pulse_problems)
    obs.check(fired == pulse_data["pulses_fired"], "pulses arrived after settling")

    resync = await op.command("resync")
    obs.data["answers_commands"] = bool(resync["ok"])
    obs.check(resync["ok"], f"resync refused: {resync}")
    snapshot = resync.get("result") or {}
    obs.data["outcome_state"] = snapshot.get("state")
    obs.check(snapshot.get("state") == expected_state,
              f"state {snapshot.get('state')}, expected {expected_state}")
    fault = snapshot.get("fault")
    if not after_restart:
        obs.data["fault_cause"] = fault.get("cause") if fault else None
    if row.causes and not after_restart:
        obs.check(fault is not None and fault.get("cause") in row.causes,
                  f"fault cause {obs.data['fault_cause']!r}, expected one of {row.causes}")
    device = snapshot.get("device") or {}
    obs.data["state_device_armed"] = device.get("armed")
    obs.check(device.get("armed") is not True,
              f"state says the device is armed ({device}) but the simulator says "
              f"armed={sim_state['armed']}")
    seen = sorted({s.topic.rsplit("/", 1)[-1] for s in op.events()})
    obs.data["events_seen"] = seen
    missing = sorted(set(row.events) - set(seen))
    obs.check(not missing, f"events not published: {missing}")
    if "fault" in row.events and obs.data.get("fault_cause"):
        fault_events = [s.payload for s in op.events("fault")]
        cause = obs.data["fault_cause"]
        obs.check(any(e["payload"]["cause"] == cause for e in fault_events),
                  f"evt/fault does not carry the cause {cause!r}")
    await judge_the_record(obs, stack, fired, in_flight=in_flight)


async def judge_the_record(obs: Observation, stack: Stack, fired: int, *,
                           in_flight: int) -> None:
    sessions, (code, output) = await stack.record_and_verdict()
    record_data, record_problems = judge_record(sessions, fired, in_flight_pulses=in_flight)
    obs.data.update(record_data)
    obs.problems.extend(record_problems)
    outcomes = [s["outcome"] for s in sessions]
    obs.check(outcomes == [obs.row.record_outcome],
              f"record outcomes {outcomes}, expected [{obs.row.record_outcome!r}]")
    obs.data["record_verified"] = code == 0
    obs.check(code == 0, f"stimd verify-record exit {code}: {output.strip()[-300:]}")


def record_detection(obs: Observation, stack: Stack, since_wall: float,
                     since_mono_ns: int) -> None:
    seconds, what = detection(stack, obs.row, since_wall, since_mono_ns)
    obs.data["detection_s"] = None if seconds is None else round(seconds, 3)
    obs.data["detected_by"] = what
    obs.check(seconds is not None, f"detection not seen: {what}")
    if seconds is not None:
        obs.check(seconds <= obs.row.budget_s,
                  f"detected after {seconds:.2f} s, above the {obs.row.budget_s} s bound")


# ---------------------------------------------------------------------------- scenarios

async def sim_fault(row: FaultRow, workdir: Path) -> Observation:
    obs = Observation(row)
    async with running_stack(workdir) as stack, operator_client(stack.broker) as op:
        await op.wait_online()
        plan = await start_session(op)
        await stack.wait_pulses(MID_TRAIN_1)
        params = {k: v for k, v in row.inject.items() if k != "fault"}
        since_wall, since_mono = time.time(), time.monotonic_ns()
        await stack.sim.ainject(row.inject["fault"], **params)
        if row.clear_after_s is not None:
            await asyncio.sleep(row.clear_after_s)
            await stack.sim.aclear()
        await op.wait_state(row.outcome_state)
        record_detection(obs, stack, since_wall, since_mono)
        await judge_common(obs, stack, op, plan)
        resumed = await op.command("resume")
        obs.check(not resumed["ok"] and resumed["error"]["code"] == "FAULT",
                  f"resume in FAULT was not refused with FAULT: {resumed}")
        # leaving FAULT takes an explicit reset and a fresh handshake with a healthy unit
        await stack.sim.aclear()
        reset = await op.command("reset", reason=f"reliability test: {row.id} cleared")
        obs.data["reset_ok"] = bool(reset["ok"])
        obs.check(reset["ok"] and reset["state"] == "IDLE", f"reset after clear: {reset}")
    obs.finish()
    return obs


async def broker_restart(row: FaultRow, workdir: Path) -> Observation:
    obs = Observation(row)
    async with running_stack(workdir) as stack:
        async with operator_client(stack.broker) as op:
            await op.wait_online()
            plan = await start_session(op)
            await stack.wait_pulses(MID_TRAIN_1)
            since_wall, since_mono = time.time(), time.monotonic_ns()
            await asyncio.to_thread(stack.broker.kill)
        await asyncio.sleep(float(row.inject["down_s"]))
        await asyncio.to_thread(stack.broker.start)
        async with operator_client(stack.broker, client_id="rel-after") as op:
            await op.wait_online()
            await op.wait_state(row.outcome_state)
            record_detection(obs, stack, since_wall, since_mono)
            await judge_common(obs, stack, op, plan)
    obs.finish()
    return obs


async def daemon_sigkill(row: FaultRow, workdir: Path) -> Observation:
    obs = Observation(row)
    async with running_stack(workdir) as stack, operator_client(stack.broker) as op:
        await op.wait_online()
        plan = await start_session(op)
        await stack.wait_pulses(MID_TRAIN_1)
        since_wall, since_mono = time.time(), time.monotonic_ns()
        await asyncio.to_thread(stack.daemon.kill)
        fired = await stack.settled_pulse_count()
        record_detection(obs, stack, since_wall, since_mono)
        mark = len(op.seen)
        stack.daemon.start()
        await op.wait_online(start=mark)
        await judge_common(obs, stack, op, plan)
        obs.data["outcome_state"] = "IDLE (after restart)"
        resumed = await op.command("resume")
        obs.data["resume_refused"] = not resumed["ok"]
        obs.check(not resumed["ok"] and resumed["error"]["code"] == "WRONG_STATE",
                  f"resume after restart was not refused: {resumed}")
        started = await op.command("start")
        obs.check(not started["ok"], f"start without a plan after restart: {started}")
        interrupted = stack.daemon.first_log("session closed as interrupted (never resumed)")
        obs.check(interrupted is not None, "the restart did not log the interrupted session")
        obs.check(stack.pulse_count() == fired, "pulses after the restart")
    obs.finish()
    return obs


async def heartbeat_lost(row: FaultRow, workdir: Path) -> Observation:
    obs = Observation(row)
    async with running_stack(workdir, heartbeat_timeout_s=2.0) as stack, \
            operator_client(stack.broker) as op:
        await op.wait_online()
        silent = asyncio.Event()
        last_beat = [time.time()]

        async def beat() -> None:
            while not silent.is_set():
                await op.publish("heartbeat", {"id": op.next_id("hb")})
                last_beat[0] = time.time()
                with contextlib.suppress(TimeoutError):  # 0.2 s: ten beats per timeout
                    await asyncio.wait_for(silent.wait(), 0.2)

        async with asyncio.TaskGroup() as tg:
            tg.create_task(beat(), name="operator-heartbeat")
            try:
                plan = await start_session(op)
                # silent from mid-train 0: heartbeat_timeout_s (2 s) runs out during train 1,
                # so the pause lands before train 2 (the last one)
                await stack.wait_pulses(TRAIN_PULSES // 2)
            finally:
                silent.set()
        since_wall, since_mono = last_beat[0], time.monotonic_ns()
        await op.wait_state(row.outcome_state)
        record_detection(obs, stack, since_wall, since_mono)
        await judge_common(obs, stack, op, plan)
        interlocks = [s.payload["payload"] for s in op.events("interlock")]
        obs.check(any(i["name"] == "operator_present" for i in interlocks),
                  f"no operator_present interlock event: {interlocks}")
    obs.finish()
    return obs


def _mount_namespace_available() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         'd=$(mktemp -d) && mount --bind "$d" "$d" && mount -o remount,ro,bind "$d" '
         '&& ! touch "$d/x" 2>/dev/null; r=$?; umount "$d" 2>/dev/null; rmdir "$d"; exit $r'],
        capture_output=True, timeout=10, check=False,
    )
    return probe.returncode == 0


def read_only_wrapper(directory: Path) -> list[str]:
    """Run the daemon in a private mount namespace where ``directory`` is read-only."""
    script = 'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
            str(directory)]


async def state_dir_at_start(row: FaultRow, workdir: Path) -> Observation:
    obs = Observation(row)
    how = row.inject["how"]
    if how == "read_only" and not await asyncio.to_thread(_mount_namespace_available):
        pytest.skip("needs a private mount namespace (root, unshare) for a read-only mount")
    async with running_stack(workdir, start_daemon=False) as stack, \
            operator_client(stack.broker) as op:
        stack.state_dir.mkdir(parents=True, exist_ok=True)
        since_wall = time.time()
        if how == "read_only":
            stack.daemon.start(wrapper=read_only_wrapper(stack.state_dir))
        else:
            # every regular-file write at offset >= 1 byte fails with EFBIG, as on a full disk
            stack.daemon.start(wrapper=["prlimit", "--fsize=1", "--"])
        code = await asyncio.to_thread(stack.daemon.wait_exit, row.budget_s)
        obs.data["detection_s"] = round(time.time() - since_wall, 3)
        obs.data["detected_by"] = f"stimd run exit status {code}"
        obs.data["outcome_state"] = "EXITED"
        obs.data["exit_code"] = code
        obs.check(code == 1, f"stimd run exited {code}, expected 1")
        message = [line for line in stack.daemon.log_text().splitlines()
                   if line.startswith("stimd run:")]
        obs.data["message"] = message[-1] if message else None
        obs.check(bool(message), "no 'stimd run:' message naming the problem")
        fired = stack.pulse_count()
        obs.data.update({"pulses_fired": fired, "pulses_planned": 0,
                         "pulses_beyond_plan": fired,
                         "device_armed_after": (await stack.sim.astate())["armed"]})
        obs.check(fired == 0 and not stack.sim.events("armed"), "the device was armed or fired")
        obs.check(not [s for s in op.seen if isinstance(s.payload, dict)
                       and s.payload.get("online") is True],
                  "a daemon without a record announced itself online")
        obs.data.update({"record_consistent": True, "record_delivered": 0,
                         "record_uncertain": 0, "answers_commands": False})
    obs.finish()
    return obs


async def state_dir_mid_session(row: FaultRow, workdir: Path) -> Observation:
    obs = Observation(row)
    async with running_stack(workdir) as stack, operator_client(stack.broker) as op:
        await op.wait_online()
        plan = await start_session(op)
        await stack.wait_pulses(MID_TRAIN_1)
        since_wall, since_mono = time.time(), time.monotonic_ns()
        resource.prlimit(stack.daemon.pid, resource.RLIMIT_FSIZE, (1, 1))
        await op.wait_state(row.outcome_state)
        record_detection(obs, stack, since_wall, since_mono)
        fired = await stack.settled_pulse_count()
        resync = await op.command("resync")
        snapshot = resync.get("result") or {}
        fault = snapshot.get("fault") or {}
        obs.data["fault_cause"] = fault.get("cause")
        obs.data["state_before_restart"] = snapshot.get("state")
        obs.check(resync["ok"] and snapshot.get("state") == row.outcome_state,
                  f"resync before the restart: {resync}")
        obs.check(fault.get("cause") in row.causes,
                  f"fault cause {fault.get('cause')!r}, expected one of {row.causes}")
        # the record cannot be written now: judge it after a restart recovered it
        mark = len(op.seen)
        await asyncio.to_thread(stack.daemon.stop)
        stack.daemon.start()
        await op.wait_online(start=mark)
        await judge_common(obs, stack, op, plan, after_restart=True)
        obs.data["outcome_state"] = f"{row.outcome_state}, IDLE after restart"
        obs.check(stack.pulse_count() == fired, "pulses after the restart")
    obs.finish()
    return obs


SCENARIOS: dict[str, Callable[[FaultRow, Path], Awaitable[Observation]]] = {
    "sim_fault": sim_fault,
    "broker_restart": broker_restart,
    "daemon_sigkill": daemon_sigkill,
    "heartbeat_lost": heartbeat_lost,
    "state_dir_at_start": state_dir_at_start,
    "state_dir_mid_session": state_dir_mid_session,
}


def test_every_scenario_of_the_table_has_an_implementation() -> None:
    assert {row.scenario for row in ROWS} <= set(SCENARIOS)


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
async def test_fault(row: FaultRow, tmp_path: Path) -> None:
    await SCENARIOS[row.scenario](row, tmp_path / "stack")
