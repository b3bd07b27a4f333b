"""Random command sequences and faults against the simulator; the invariants must hold.

- no pulse without a validated plan and an arm: every pulse follows an ``armed`` in the
  simulator's log with no ``disarmed`` between, after a successful ``start``, at the
  plan's intensity;
- never more pulses than planned;
- FAULT is only left through ``reset`` (FAULT → CONNECTING, after a reset command).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.conftest import (
    OPERATOR,
    SHORT_PROTOCOL,
    daemon_config,
    eventually,
    motor_threshold,
)
from drivers.registry import create_driver
from simulator.testing import SimulatorProcess
from stimd.commands import COMMAND_MODELS, Event, Verb
from stimd.controller import SessionController
from stimd.record import SessionRecord

Action = tuple[str, Any]

ACTIONS = st.one_of(
    st.sampled_from([
        ("command", Verb.LOAD), ("command", Verb.UNLOAD), ("command", Verb.ARM),
        ("command", Verb.START), ("command", Verb.START), ("command", Verb.PAUSE),
        ("command", Verb.RESUME), ("command", Verb.RESUME), ("command", Verb.STOP),
        ("command", Verb.RESET), ("command", Verb.HEARTBEAT),
        ("fault", "device_error"), ("fault", "coil_removed"), ("clear", None),
    ]),
    st.tuples(st.just("wait"), st.sampled_from([0.2, 0.6, 1.2, 2.0])),
)
# most sequences begin with a load so that they reach the states where pulses can flow
SEQUENCES = st.tuples(
    st.sampled_from([[("command", Verb.LOAD)], [("command", Verb.LOAD), ("command", Verb.START)],
                     []]),
    st.lists(ACTIONS, min_size=1, max_size=7),
).map(lambda parts: [*parts[0], *parts[1]])


async def scenario(sim: SimulatorProcess, state_dir: Path, actions: list[Action]) -> None:
    config = daemon_config(sim.link, state_dir)
    record = SessionRecord.open(state_dir)
    controller = SessionController(
        config=config, record=record,
        driver_factory=lambda: create_driver("magstim-rapid2", str(sim.link), mains_voltage=240),
    )
    events: list[Event] = []
    controller.add_listener(events.append)
    ids = itertools.count()
    log_start = len(sim.events())
    started_plans = 0
    serve = asyncio.create_task(controller.serve())
    try:
        await eventually(lambda: controller.state.value == "IDLE", 30.0)
        for kind, arg in actions:
            if kind == "command":
                fields: dict[str, Any] = {"id": f"c{next(ids)}"}
                if arg is Verb.LOAD:
                    fields |= {"protocol": SHORT_PROTOCOL, "motor_threshold": motor_threshold(),
                               "patient_ref": "patient-0001"}
                if arg is Verb.RESET:
                    fields["reason"] = "test reset"
                command = COMMAND_MODELS[arg].model_validate(fields)
                outcome = await controller.execute(OPERATOR, command, arg)
                if arg is Verb.START and outcome.ok:
                    started_plans += 1
            elif kind == "fault":
                await sim.ainject(arg) if arg != "device_error" else await sim.ainject(
                    arg, code="E01")
            elif kind == "clear":
                await sim.aclear()
            else:
                await asyncio.sleep(arg)
        stop = COMMAND_MODELS[Verb.STOP].model_validate({"id": "final-stop"})
        assert (await controller.execute(OPERATOR, stop, Verb.STOP)).ok
        assert not (await sim.astate())["armed"]
    finally:
        await controller.shutdown("example finished")
        serve.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serve
        record.close()
        await sim.aclear()

    log = sim.events()[log_start:]
    pulses = [e for e in log if e["event"] == "pulse"]
    # never more pulses than planned (each started session plans 30)
    assert len(pulses) <= 30 * started_plans
    # no pulse without a validated plan and an arm
    armed = False
    for entry in log:
        if entry["event"] == "armed":
            armed = True
        elif entry["event"] in ("disarmed", "remote_lost"):
            armed = False
        elif entry["event"] == "pulse":
            assert armed, entry
            assert entry["pct_mso"] == 50
    # FAULT is left only through reset
    states = [e.payload["state"] for e in events if e.type == "state_changed"]
    resets = sum(1 for e in events if e.type == "command" and e.payload["verb"] == "reset"
                 and e.payload["ok"])
    leaving_fault = [(a, b) for a, b in itertools.pairwise(states) if a == "FAULT" != b]
    assert all(b == "CONNECTING" for _, b in leaving_fault), leaving_fault
    assert len(leaving_fault) <= sum(
        1 for e in events if e.type == "command" and e.payload["verb"] == "reset")
    assert resets <= len(leaving_fault)


def test_random_command_sequences_keep_the_invariants() -> None:
    with SimulatorProcess(device="magstim-rapid2", mains=240) as sim, \
            tempfile.TemporaryDirectory(prefix="stimd-stateful-") as tmp:
        examples = itertools.count()

        # few, short examples: each runs in real time against the simulator
        @settings(max_examples=6, deadline=None, derandomize=True,
                  suppress_health_check=[HealthCheck.too_slow])
        @given(actions=SEQUENCES)
        def check(actions: list[Action]) -> None:
            asyncio.run(scenario(sim, Path(tmp) / f"example-{next(examples)}", actions))

        check()
