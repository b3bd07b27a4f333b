"""Crash consistency: SIGKILL the daemon at random moments of a session, restart, compare.

After every kill the unit disarms itself (keep-alive expiry), the restarted daemon closes
the session as interrupted and never resumes it, and the record agrees with the pulse
log: it never under-counts delivered trains (the intent is durable before the fire
command leaves) and at most the one train in flight is marked uncertain.

The normal suite runs a few kills; ``make soak`` runs hundreds and prints the tally.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .judge import PLANNED_PULSES, TRAIN_PULSES, load_fields
from .results import write_result
from .stack import STIMD, Operator, Stack, operator_client, running_stack

pytestmark = pytest.mark.e2e

#: From the start reply to the end of the fault protocol's last train is about 4.7 s
#: (onsets 0, 1.9, 3.8 s, 0.9 s each); kills are spread past it so some land after
#: completion too.
KILL_WINDOW_S = 5.5


@dataclass
class Tally:
    """What the kills hit, and every inconsistency found (there must be none)."""

    seed: int
    kills: int = 0
    moments: Counter[str] = field(default_factory=Counter)
    uncertain_trains: Counter[int] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed, "kills": self.kills, "moments": dict(self.moments),
            "uncertain_trains": {str(k): v for k, v in sorted(self.uncertain_trains.items())},
            "outcomes": dict(self.outcomes), "problems": self.problems,
            "consistent": not self.problems, "finished_at": time.time(),
        }


def session_detail(stack: Stack, session_id: int) -> dict[str, Any]:
    result = subprocess.run(
        [str(STIMD), "history", "--state-dir", str(stack.state_dir), "--json",
         "--session", str(session_id)],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert result.returncode == 0, result.stderr
    detail: dict[str, Any] = json.loads(result.stdout)
    return detail


async def one_kill(stack: Stack, op: Operator, rng: random.Random, tally: Tally,
                   iteration: int) -> None:
    fired_before = stack.pulse_count()
    fields = load_fields()
    fields["patient_ref"] = f"CRASH-{tally.seed}-{iteration}"  # the daily budget is per patient
    loaded = await op.command("load", **fields)
    assert loaded["ok"], loaded
    started = await op.command("start")
    assert started["ok"], started
    session_id = started["result"]["session_id"]
    await asyncio.sleep(rng.uniform(0.0, KILL_WINDOW_S))
    await asyncio.to_thread(stack.daemon.kill)
    tally.kills += 1
    fired = await stack.settled_pulse_count() - fired_before
    armed = (await stack.sim.astate())["armed"]
    mark = len(op.seen)
    stack.daemon.start()
    await op.wait_online(start=mark)

    detail = session_detail(stack, session_id)
    trains = detail["trains"]
    uncertain = [t for t in trains if t["state"] == "uncertain"]
    delivered = sum(t["pulses_delivered"] or 0 for t in trains
                    if t["state"] in ("delivered", "failed"))
    uncertain_pulses = sum(t["pulses_planned"] for t in uncertain)
    tally.outcomes[detail["outcome"]] += 1
    tally.uncertain_trains[len(uncertain)] += 1
    moment = ("after completion" if detail["outcome"] == "completed"
              else "in a train" if uncertain else "between trains")
    tally.moments[moment] += 1

    where = f"kill {iteration} (session {session_id}, {moment})"
    if armed:
        tally.problems.append(f"{where}: the unit is still armed after the keep-alive")
    if fired > PLANNED_PULSES:
        tally.problems.append(f"{where}: {fired} pulses fired, plan {PLANNED_PULSES}")
    if delivered > fired:
        tally.problems.append(f"{where}: record says {delivered} delivered, {fired} fired")
    if fired > delivered + uncertain_pulses:
        tally.problems.append(
            f"{where}: record under-counts: {fired} fired, {delivered} delivered + "
            f"{uncertain_pulses} uncertain"
        )
    if len(uncertain) > 1 or uncertain_pulses > TRAIN_PULSES:
        tally.problems.append(f"{where}: {len(uncertain)} uncertain trains")
    if detail["outcome"] not in ("interrupted", "completed"):
        tally.problems.append(f"{where}: outcome {detail['outcome']!r}")
    state = await op.command("resync")
    if state["result"]["state"] not in ("IDLE",):
        tally.problems.append(f"{where}: restarted daemon is {state['result']['state']}")
    resumed = await op.command("resume")
    if resumed["ok"]:
        tally.problems.append(f"{where}: the restarted daemon resumed the session")
    if stack.pulse_count() - fired_before != fired:
        tally.problems.append(f"{where}: pulses after the restart")


async def kill_repeatedly(workdir: Path, kills: int, seed: int, name: str) -> Tally:
    rng = random.Random(seed)
    tally = Tally(seed=seed)
    async with running_stack(workdir) as stack, operator_client(stack.broker) as op:
        await op.wait_online()
        for iteration in range(kills):
            await one_kill(stack, op, rng, tally, iteration)
        code, output = stack.verify_record()
        if code != 0:
            tally.problems.append(f"verify-record exit {code}: {output.strip()[-300:]}")
    write_result(f"crash-{name}", tally.as_json())
    return tally


async def test_sigkill_at_random_moments_keeps_the_record_consistent(tmp_path: Path) -> None:
    tally = await kill_repeatedly(tmp_path / "stack", kills=3, seed=20261130, name="suite")
    assert not tally.problems, tally.problems
    assert tally.kills == 3


@pytest.mark.soak
@pytest.mark.timeout(7200)
async def test_soak_hundreds_of_sigkills(tmp_path: Path) -> None:
    seed = random.SystemRandom().randrange(2**32)
    tally = await kill_repeatedly(tmp_path / "stack", kills=300, seed=seed, name="soak")
    print(f"\ncrash-consistency tally: {json.dumps(tally.as_json(), indent=2)}")
    assert not tally.problems, tally.problems
