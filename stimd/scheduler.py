"""Train timing: when the next train may start, on the monotonic clock.

The device times the pulses inside a train; the daemon only decides train onsets. The
rule is ``onset = max(planned onset, end of the previous train + required gap)``:

- the *planned onset* comes from the compiled schedule, anchored at the session start.
  Onsets are never derived from one another, so the time it takes to notice that a
  train ended, or to read the device before the next one, does not add up from train to
  train (no drift);
- the *required gap* is the safety minimum, counted from the latest moment the previous
  train can have ended (``train_end_bound_ns``: the fire command's reply plus the
  train's duration, or the device's own report when it ran longer), so the gap between
  trains is never below what the plan, the device's own minimum and the Rapid energy
  model allow;
- a train that starts later than planned (a pause, a cooling wait, a safety minimum
  that won) moves the anchor by its lateness (``shifted_anchor_ns``): everything after
  it shifts and the schedule is never compressed to catch up.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass

from protocols.capabilities import DeviceCapabilities
from protocols.schedule import PulseSchedule, TrainSpec

NS_PER_US = 1_000
US_PER_S = 1_000_000


@dataclass(frozen=True, slots=True)
class GapRequirement:
    """The minimum end-to-onset gap before a train, and which source set it."""

    gap_us: int
    source: str          # "plan" | "device" | "energy_model" | "single_pulse_rate"


def required_gap(prev: TrainSpec, nxt: TrainSpec, device: DeviceCapabilities) -> GapRequirement:
    """Minimum time from the last pulse of ``prev`` to the first pulse of ``nxt``.

    The maximum over independent sources (habit 4): the compiled plan, the unit's own
    minimum between trains, the Rapid minimum wait after this train's energy, and the
    single-pulse rate limit when trains are single pulses.
    """
    candidates: list[GapRequirement] = [
        GapRequirement(max(0, nxt.onset_us - prev.end_us), "plan"),
        GapRequirement(_us_ceil(device.min_inter_train_gap_s), "device"),
    ]
    if prev.pulses == 1:
        candidates.append(
            GapRequirement(_us_ceil(device.min_single_pulse_interval_s), "single_pulse_rate")
        )
    elif device.energy_model is not None and prev.burst_pulses == 1:
        wait_s = device.energy_model.min_wait_s(
            prev.intensity_pct_mso, prev.frequency_hz, prev.pulses
        )
        candidates.append(GapRequirement(_us_ceil(wait_s), "energy_model"))
    # max() keeps the first of equal gaps, so "plan" wins ties and reads naturally
    return max(candidates, key=lambda c: c.gap_us)


def earliest_onset_ns(
    train: TrainSpec,
    session_start_ns: int,
    previous: TrainSpec | None,
    previous_end_ns: int | None,
    device: DeviceCapabilities,
) -> int:
    """Monotonic time (ns) at which ``train`` may start.

    ``session_start_ns`` is the schedule's anchor (moved by late trains, see
    ``shifted_anchor_ns``); ``previous_end_ns`` is ``train_end_bound_ns`` of the previous
    train: never earlier than its true end.
    """
    planned = session_start_ns + train.onset_us * NS_PER_US
    if previous is None or previous_end_ns is None:
        return planned
    gap = required_gap(previous, train, device)
    return max(planned, previous_end_ns + gap.gap_us * NS_PER_US)


def train_end_bound_ns(replied_ns: int, train: TrainSpec, reported_end_ns: int | None) -> int:
    """The latest moment a fired train can have ended (its last pulse), for the gap rule.

    The unit has the train before its reply to the fire command arrives (``replied_ns``)
    and times the pulses itself, so the last pulse is at most ``duration`` after that
    reply. ``reported_end_ns`` is when the device said it finished, when it was still
    running past that bound; the later of the two wins, so the bound is never earlier
    than the truth.
    """
    bound = replied_ns + train.duration_us * NS_PER_US
    return bound if reported_end_ns is None else max(bound, reported_end_ns)


def shifted_anchor_ns(session_start_ns: int, train: TrainSpec, onset_ns: int) -> int:
    """The schedule's anchor after ``train`` starts at ``onset_ns``.

    A train later than planned shifts every later train by its lateness (pauses, cooling
    waits, a safety minimum that won); an on-time train leaves the anchor where it is.
    Never moves the anchor earlier: the schedule is never compressed.
    """
    planned = session_start_ns + train.onset_us * NS_PER_US
    return session_start_ns + max(0, onset_ns - planned)


def remaining_us(schedule: PulseSchedule, next_index: int) -> int:
    """Planned time left from the onset of train ``next_index`` to the end of the session."""
    if next_index >= len(schedule.trains):
        return 0
    return schedule.trains[-1].end_us - schedule.trains[next_index].onset_us


def pulses_before(schedule: PulseSchedule, index: int) -> int:
    """Planned pulses in the trains before ``index``."""
    return sum(t.pulses for t in schedule.trains[:index])


def monotonic_ns() -> int:
    return time.monotonic_ns()


async def wait_until(deadline_ns: int, wake: asyncio.Event) -> bool:
    """Sleep until ``deadline_ns`` on the monotonic clock or until ``wake`` is set.

    Returns True when the deadline was reached, False when woken early. Never returns
    before the deadline unless woken, so a train cannot start early.
    """
    while True:
        remaining = deadline_ns - time.monotonic_ns()
        if remaining <= 0:
            return True
        if wake.is_set():
            return False
        try:
            await asyncio.wait_for(wake.wait(), timeout=remaining / 1e9)
        except TimeoutError:
            continue
        return False


def _us_ceil(seconds: float) -> int:
    return math.ceil(seconds * US_PER_S)
