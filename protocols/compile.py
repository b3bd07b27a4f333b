"""``ValidatedPlan`` → ``PulseSchedule``: the exact trains the daemon fires and records.

The digest is the SHA-256 of the schedule's canonical form, so a session record can
prove which prescription ran. Canonical form (``docs/protocols.md``): the UTF-8 bytes of
compact JSON (``separators=(",", ":")``, keys sorted, ASCII only) of::

    {"format": "stimd.schedule/1", "protocol_name": ..., "kind": ..., "device_model": ...,
     "intensity_pct_mso": int, "total_pulses": int, "duration_us": int,
     "trains": [[index, onset_us, pulses, pulse_interval_us, burst_pulses, bursts,
                 burst_interval_us, intensity_pct_mso], ...]}

Every number is an integer, so the form has exactly one spelling.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import TYPE_CHECKING

from protocols.model import ProtocolSpec
from protocols.schedule import PulseSchedule, TrainSpec
from protocols.timing import protocol_timing

if TYPE_CHECKING:
    from protocols.validation import ValidatedPlan

CANONICAL_FORMAT = "stimd.schedule/1"


def canonical_form(schedule: PulseSchedule) -> bytes:
    """The bytes the digest is taken over (``schedule.digest`` itself excluded)."""
    body = {
        "format": CANONICAL_FORMAT,
        "protocol_name": schedule.protocol_name,
        "kind": schedule.kind,
        "device_model": schedule.device_model,
        "intensity_pct_mso": schedule.intensity_pct_mso,
        "total_pulses": schedule.total_pulses,
        "duration_us": schedule.duration_us,
        "trains": [
            [t.index, t.onset_us, t.pulses, t.pulse_interval_us, t.burst_pulses, t.bursts,
             t.burst_interval_us, t.intensity_pct_mso]
            for t in schedule.trains
        ],
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def schedule_digest(schedule: PulseSchedule) -> str:
    """Hex SHA-256 of the canonical form; equals ``schedule.digest`` for an intact schedule."""
    return hashlib.sha256(canonical_form(schedule)).hexdigest()


def build_schedule(
    protocol: ProtocolSpec, intensity_pct_mso: int, device_model: str
) -> PulseSchedule:
    """Lay out the trains. The validator's step; everyone else uses ``compile_plan``.

    Onsets follow the ITI definition: the next train starts ``inter_train_interval_s``
    after the last pulse of the previous one, all in µs rounded as ``protocols.timing``
    documents.
    """
    timing = protocol_timing(protocol)
    trains = tuple(
        TrainSpec(
            index=index,
            onset_us=onset,
            pulses=timing.pulses_per_train,
            pulse_interval_us=timing.pulse_interval_us,
            burst_pulses=timing.burst_pulses,
            bursts=timing.bursts,
            burst_interval_us=timing.burst_interval_us,
            intensity_pct_mso=intensity_pct_mso,
        )
        for index, onset in enumerate(timing.train_onsets_us())
    )
    unsigned = PulseSchedule(
        protocol_name=protocol.name,
        kind=protocol.kind,
        device_model=device_model,
        intensity_pct_mso=intensity_pct_mso,
        trains=trains,
        total_pulses=timing.total_pulses,
        duration_us=timing.session_duration_us,
        digest="",
    )
    return replace(unsigned, digest=schedule_digest(unsigned))

def compile_plan(plan: ValidatedPlan) -> PulseSchedule:
    """The schedule of a validated plan (identical to ``plan.schedule``)."""
    return build_schedule(plan.protocol, plan.intensity_pct_mso, plan.device_model)
