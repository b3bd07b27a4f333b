"""Train timing: when the next fire command may leave, on the monotonic clock.

The device times the pulses inside a train from its fire command, so a train's
duration is the device's and fixed; the daemon only decides when each fire command
leaves. Two kinds of minimum govern that moment, each measured from what bounds it:

- the *plan's spacing* is onset to onset (the schedule stores onsets): it is enforced
  between fire commands measured at the same point of the path for both trains
  (``fired_ns``: the monotonic time just before the fire command is handed to the
  driver), ``next fire ≥ previous fire + (planned onset_k − planned onset_{k−1})``, and
  from the schedule's anchor, ``next fire ≥ anchor + planned onset_k``. Because both
  ends of the interval are the same kind of instant, nothing the daemon does between
  trains adds up from train to train: on-time trains have zero drift;
- the *device's recovery minimums* (the unit's own minimum between trains, the Rapid
  energy model's wait after a train, the single-pulse recharge at the train's power)
  are counted from the latest moment the previous train can have ended
  (``train_end_bound_ns``). They are normally far below the plan's gap; where the plan
  runs at the device's limit this bound's slack makes the next train late, which is the
  safe direction;
- a train that starts later than planned (a pause, a cooling wait, a device minimum
  that won) moves the anchor by its lateness (``shifted_anchor_ns``): everything after
  it shifts and the schedule is never compressed to catch up.

docs/daemon.md ("Train timing") gives the argument and the jitter that remains.
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
    """The device's minimum from the end of one train to the next fire command, and
    which source set it."""

    gap_us: int
    source: str          # "device" | "energy_model" | "single_pulse_rate"


@dataclass(frozen=True, slots=True)
class FiredTrain:
    """What the scheduler needs of the train fired last."""

    spec: TrainSpec
    fired_ns: int        # the fire command's measurement point (see the module doc)
    end_bound_ns: int    # ``train_end_bound_ns``: never earlier than its true end


def recovery_gap(prev: TrainSpec, device: DeviceCapabilities) -> GapRequirement:
    """The device's minimum from the last pulse of ``prev`` to the next train.

    The maximum over independent sources (habit 4): the unit's own minimum between
    trains, the single-pulse recharge at ``prev``'s power when it was a single pulse, and
    the Rapid minimum wait after ``prev``'s energy otherwise.
    """
    candidates: list[GapRequirement] = [
        GapRequirement(_us_ceil(device.min_inter_train_gap_s), "device"),
    ]
    if prev.pulses == 1:
        recharge_s = device.min_single_pulse_interval_at(prev.intensity_pct_mso)
        candidates.append(GapRequirement(_us_ceil(recharge_s), "single_pulse_rate"))
    elif device.energy_model is not None and prev.burst_pulses == 1:
        wait_s = device.energy_model.min_wait_s(
            prev.intensity_pct_mso, prev.frequency_hz, prev.pulses
        )
        candidates.append(GapRequirement(_us_ceil(wait_s), "energy_model"))
    # max() keeps the first of equal gaps: the unit's own minimum wins ties
    return max(candidates, key=lambda c: c.gap_us)


def planned_spacing_ns(prev: TrainSpec, nxt: TrainSpec) -> int:
    """The plan's onset-to-onset spacing from ``prev`` to ``nxt``."""
    return (nxt.onset_us - prev.onset_us) * NS_PER_US


def earliest_fire_ns(
    train: TrainSpec,
    anchor_ns: int,
    previous: FiredTrain | None,
    device: DeviceCapabilities,
) -> int:
    """Monotonic time (ns) at which the fire command of ``train`` may leave.

    ``anchor_ns`` is the schedule's anchor (moved by late trains, ``shifted_anchor_ns``).
    The latest of: the planned onset from the anchor; the previous fire plus the plan's
    onset spacing (same measurement point for both); the previous train's end bound plus
    the device's recovery minimum.
    """
    planned = anchor_ns + train.onset_us * NS_PER_US
    if previous is None:
        return planned
    return max(
        planned,
        previous.fired_ns + planned_spacing_ns(previous.spec, train),
        previous.end_bound_ns + recovery_gap(previous.spec, device).gap_us * NS_PER_US,
    )


def train_end_bound_ns(replied_ns: int, train: TrainSpec, reported_end_ns: int | None) -> int:
    """The latest moment a fired train can have ended (its last pulse), for the device's
    recovery minimums.

    The unit times the pulses itself, from (at the earliest) its reply to the fire
    command (``replied_ns``): the train cannot have ended before ``duration`` after
    that. ``reported_end_ns`` is when a reading of the device (its arrival) said the
    train had finished: a unit may acknowledge the fire command before its first pulse,
    so the reply alone does not bound the end. The later of the two wins, so the bound
    is never earlier than the truth.
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


#: ``wait_until_exactly`` sleeps until this long before its deadline and spins the rest:
#: an event-loop timer wakes up late by up to a millisecond or more on a busy host, and a
#: fire command that leaves late pushes every later train back (the plan's spacing is
#: kept from the actual fire), so the lateness would add up from train to train.
FINAL_SPIN_NS = 1_500_000


async def wait_until_exactly(deadline_ns: int, wake: asyncio.Event) -> bool:
    """``wait_until``, then hold the event loop for the last ``FINAL_SPIN_NS`` so that
    the caller resumes within microseconds of ``deadline_ns`` (for a fire command).

    The spin blocks other tasks for at most ``FINAL_SPIN_NS``: a stop arriving then is
    handled right after the fire command, as one arriving just after it would be.
    """
    if not await wait_until(deadline_ns - FINAL_SPIN_NS, wake):
        return False
    while time.monotonic_ns() < deadline_ns:
        pass
    return True


def _us_ceil(seconds: float) -> int:
    return math.ceil(seconds * US_PER_S)
