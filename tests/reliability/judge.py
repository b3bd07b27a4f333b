"""Judging the daemon by the simulator's pulse log, never by its own word.

``judge_pulses`` compares what left the coil with the plan; ``judge_record`` compares
the session record (``stimd history --json``) with what left the coil. Both return plain
dicts for the results files, plus a list of problems; the tests assert the list is
empty after writing the results, so a failing run is still reported.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

#: A plan the fault tests load: 3 trains of 10 pulses at 10 Hz, 1 s apart, 90 % MT.
#: Short (about 5 s with arming) so the matrix stays fast; long enough that a fault can
#: land in the middle of train 1 with train 0 already delivered and recorded.
TRAIN_PULSES = 10
TRAINS = 3
FAULT_PROTOCOL: dict[str, Any] = {
    "protocol": {"name": "reliability-3x10", "description": "reliability suite",
                 "reference": "tests/reliability", "kind": "rtms", "intensity_pct_mt": 90},
    "rtms": {"frequency_hz": 10, "pulses_per_train": TRAIN_PULSES, "trains": TRAINS,
             "inter_train_interval_s": 1},
}
MT_PCT_MSO = 50
PLANNED_PULSES = TRAIN_PULSES * TRAINS
PATIENT_REF = "REL-PATIENT-7f3a"


def motor_threshold() -> dict[str, Any]:
    return {"pct_mso": MT_PCT_MSO, "method": "emg",
            "measured_at": datetime.now(UTC).isoformat()}


def load_fields(protocol: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"protocol": protocol or FAULT_PROTOCOL, "motor_threshold": motor_threshold(),
            "patient_ref": PATIENT_REF}


@dataclass(frozen=True, slots=True)
class Plan:
    pulses: int
    train_pulses: int
    intensity_pct_mso: int


def judge_pulses(pulses: list[dict[str, Any]], plan: Plan) -> tuple[dict[str, Any], list[str]]:
    """What the pulse log says left the coil, against the plan."""
    problems: list[str] = []
    per_train = Counter(int(p["train"]) for p in pulses)
    beyond = max(0, len(pulses) - plan.pulses)
    if beyond:
        problems.append(f"{beyond} pulse(s) beyond the plan of {plan.pulses}")
    overlong = {t: n for t, n in per_train.items() if n > plan.train_pulses}
    if overlong:
        problems.append(f"trains longer than planned {plan.train_pulses}: {overlong}")
    hotter = sorted({p["pct_mso"] for p in pulses if p["pct_mso"] > plan.intensity_pct_mso})
    if hotter:
        problems.append(f"pulses above the planned {plan.intensity_pct_mso} %MSO: {hotter}")
    return {
        "pulses_fired": len(pulses), "pulses_planned": plan.pulses,
        "pulses_beyond_plan": beyond, "trains_touched": len(per_train),
    }, problems


def judge_record(sessions: list[dict[str, Any]], fired: int,
                 *, in_flight_pulses: int) -> tuple[dict[str, Any], list[str]]:
    """The record against the pulse log: never under-counts, at most one train uncertain.

    ``delivered <= fired <= delivered + uncertain``: everything the record calls
    delivered really fired (the device's count), and everything that fired is either
    delivered or marked uncertain; the uncertain part is at most one train.
    """
    delivered = sum(int(s["pulses_delivered"]) for s in sessions)
    uncertain = sum(int(s.get("pulses_uncertain") or 0) for s in sessions)
    problems: list[str] = []
    if delivered > fired:
        problems.append(f"record claims {delivered} delivered, pulse log has {fired}")
    if fired > delivered + uncertain:
        problems.append(
            f"record under-counts: {fired} fired, record has {delivered} delivered + "
            f"{uncertain} uncertain"
        )
    if uncertain > in_flight_pulses:
        problems.append(f"{uncertain} uncertain pulses, more than one train ({in_flight_pulses})")
    return {
        "record_delivered": delivered, "record_uncertain": uncertain,
        "record_outcomes": [s.get("outcome") for s in sessions],
        "record_consistent": not problems,
    }, problems
