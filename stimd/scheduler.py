"""Train timing: when the next train may start, on the monotonic clock.

The device times the pulses inside a train; the daemon only decides train onsets. The
rule is ``onset = max(planned onset, end of the previous train + required gap)``, so a
late train or a pause shifts everything after it and the schedule is never compressed
to catch up: the gap between trains is never below what the plan, the device's own
minimum and the Rapid energy model allow.
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

    ``previous_end_ns`` is the observed end of the previous train (when the device said
    it finished, never earlier than its actual onset plus its nominal duration).
    """
    planned = session_start_ns + train.onset_us * NS_PER_US
    if previous is None or previous_end_ns is None:
        return planned
    gap = required_gap(previous, train, device)
    return max(planned, previous_end_ns + gap.gap_us * NS_PER_US)


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
