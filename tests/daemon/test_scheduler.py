"""Train timing: onsets never early, gaps never below any source, pauses never compress."""

from __future__ import annotations

import asyncio
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.capabilities import device_profile
from protocols.schedule import PulseSchedule, TrainSpec
from stimd.scheduler import (
    earliest_onset_ns,
    remaining_us,
    required_gap,
    shifted_anchor_ns,
    train_end_bound_ns,
    wait_until,
)

RAPID = device_profile("magstim-rapid2", 240)
R30 = device_profile("magventure-r30")


def train(index: int, onset_us: int, *, pulses: int = 10, interval_us: int = 100_000,
          pct: int = 50) -> TrainSpec:
    return TrainSpec(index=index, onset_us=onset_us, pulses=pulses,
                     pulse_interval_us=interval_us, burst_pulses=1, bursts=pulses,
                     burst_interval_us=interval_us, intensity_pct_mso=pct)


def test_plan_gap_wins_when_largest() -> None:
    a, b = train(0, 0), train(1, 5_900_000)       # a ends at 0.9 s, b at 5.9 s: 5 s gap
    gap = required_gap(a, b, RAPID)
    assert (gap.gap_us, gap.source) == (5_000_000, "plan")


def test_device_minimum_applies_when_plan_is_tighter() -> None:
    a, b = train(0, 0), train(1, 1_000_000)      # plan gap 0.1 s, Rapid needs 0.5 s
    gap = required_gap(a, b, RAPID)
    assert (gap.gap_us, gap.source) == (500_000, "device")


def test_rapid_energy_model_sets_the_wait_after_a_heavy_train() -> None:
    # Magstim reference check value: 100 %, 20 Hz, 100 pulses → minimum wait 19 s
    a = train(0, 0, pulses=100, interval_us=50_000, pct=100)
    b = train(1, a.end_us + 1_000_000, pct=100)
    gap = required_gap(a, b, RAPID)
    assert gap.source == "energy_model"
    assert abs(gap.gap_us - 19_000_000) <= 1


def test_single_pulses_respect_the_single_pulse_rate() -> None:
    a, b = train(0, 0, pulses=1), train(1, 200_000, pulses=1)
    gap = required_gap(a, b, RAPID)
    assert (gap.gap_us, gap.source) == (1_000_000, "single_pulse_rate")


def test_first_train_starts_at_its_planned_onset() -> None:
    assert earliest_onset_ns(train(0, 0), 7_000, None, None, R30) == 7_000


def test_a_late_train_pushes_the_next_one_back_instead_of_compressing() -> None:
    a, b = train(0, 0), train(1, 5_900_000)
    start = 1_000_000_000
    late_end = start + 20_000_000_000            # train 0 ended 20 s late (a pause)
    onset = earliest_onset_ns(b, start, a, late_end, R30)
    assert onset == late_end + 5_000_000_000


@settings(max_examples=200, deadline=None)
@given(
    pulses=st.integers(1, 200),
    interval_us=st.integers(10_000, 1_000_000),
    pct=st.integers(1, 100),
    plan_gap_us=st.integers(0, 30_000_000),
    lateness_us=st.integers(-2_000_000, 60_000_000),
)
def test_property_onset_respects_every_source(
    pulses: int, interval_us: int, pct: int, plan_gap_us: int, lateness_us: int
) -> None:
    a = train(0, 0, pulses=pulses, interval_us=interval_us, pct=pct)
    b = train(1, a.end_us + plan_gap_us, pulses=pulses, interval_us=interval_us, pct=pct)
    start = 10**12
    prev_end = start + (a.end_us + lateness_us) * 1000
    onset = earliest_onset_ns(b, start, a, prev_end, RAPID)
    gap_ns = onset - prev_end
    assert onset >= start + b.onset_us * 1000                       # never early
    assert gap_ns >= plan_gap_us * 1000                              # plan
    assert gap_ns >= RAPID.min_inter_train_gap_s * 1e9 - 1000        # device
    if pulses > 1:
        assert RAPID.energy_model is not None
        wait = RAPID.energy_model.min_wait_s(pct, a.frequency_hz, pulses)
        assert gap_ns >= wait * 1e9 - 1000                           # energy model


def run_schedule(
    trains: list[TrainSpec], start_ns: int, reply_delays_ns: list[int],
    late_by_ns: list[int],
) -> list[tuple[int, int]]:
    """Drive the scheduler as the runner does: (onset, end bound) of every train, when
    train i is started ``late_by_ns[i]`` after its earliest onset and the device's
    reply to its fire command comes ``reply_delays_ns[i]`` after that."""
    anchor, previous, previous_end = start_ns, None, None
    timeline: list[tuple[int, int]] = []
    for index, spec in enumerate(trains):
        onset = earliest_onset_ns(spec, anchor, previous, previous_end, RAPID)
        onset += late_by_ns[index]
        anchor = shifted_anchor_ns(anchor, spec, onset)
        previous_end = train_end_bound_ns(onset + reply_delays_ns[index], spec, None)
        previous = spec
        timeline.append((onset, previous_end))
    return timeline


@settings(max_examples=100, deadline=None)
@given(
    pulses=st.integers(2, 50),
    interval_us=st.sampled_from([50_000, 100_000, 200_000, 1_000_000]),
    iti_us=st.integers(1_000_000, 30_000_000),
    count=st.integers(2, 40),
)
def test_property_no_drift_when_every_train_is_on_time(
    pulses: int, interval_us: int, iti_us: int, count: int
) -> None:
    """Onsets are the planned ones when every train ends when planned: nothing the daemon
    does between trains adds up from one train to the next."""
    first = train(0, 0, pulses=pulses, interval_us=interval_us, pct=30)
    trains = [train(i, i * (first.duration_us + iti_us), pulses=pulses,
                    interval_us=interval_us, pct=30) for i in range(count)]
    if any(required_gap(a, b, RAPID).source != "plan" for a, b in zip(trains, trains[1:])):
        return   # the device's own minimum is longer than the plan's gap: not this case
    start = 10**12
    timeline = run_schedule(trains, start, [0] * count, [0] * count)
    assert [onset for onset, _ in timeline] == [start + t.onset_us * 1000 for t in trains]


@settings(max_examples=200, deadline=None)
@given(
    data=st.data(),
    pulses=st.integers(1, 100),
    interval_us=st.integers(20_000, 1_000_000),
    pct=st.integers(1, 100),
    iti_us=st.integers(0, 20_000_000),
    count=st.integers(2, 12),
)
def test_property_late_trains_shift_and_gaps_never_shrink(
    data: st.DataObject, pulses: int, interval_us: int, pct: int, iti_us: int, count: int
) -> None:
    """Whatever makes trains late (pauses, cooling, a slow reply), no train starts before
    its planned onset, no gap is below any source, and a late train shifts the rest."""
    first = train(0, 0, pulses=pulses, interval_us=interval_us, pct=pct)
    trains = [train(i, i * (first.duration_us + iti_us), pulses=pulses,
                    interval_us=interval_us, pct=pct) for i in range(count)]
    late = data.draw(st.lists(st.integers(0, 60_000_000_000), min_size=count, max_size=count))
    replies = data.draw(st.lists(st.integers(0, 50_000_000), min_size=count, max_size=count))
    start = 10**12
    timeline = run_schedule(trains, start, replies, late)
    lateness = 0
    for index, (onset, _) in enumerate(timeline):
        planned = start + trains[index].onset_us * 1000
        assert onset >= planned + lateness                  # never early, never compressed
        lateness = onset - planned
        if index:
            gap_ns = onset - timeline[index - 1][1]
            needed = required_gap(trains[index - 1], trains[index], RAPID)
            assert gap_ns >= needed.gap_us * 1000           # every source, from the true end


def test_the_end_bound_takes_the_device_word_when_it_ran_long() -> None:
    spec = train(0, 0, pulses=5, interval_us=100_000)        # 0.4 s first to last pulse
    assert train_end_bound_ns(1_000, spec, None) == 1_000 + 400_000_000
    assert train_end_bound_ns(1_000, spec, 900_000_000) == 900_000_000
    assert train_end_bound_ns(1_000, spec, 5) == 1_000 + 400_000_000


def test_an_on_time_train_leaves_the_anchor_and_a_late_one_moves_it() -> None:
    spec = train(3, 2_000_000)
    assert shifted_anchor_ns(10**9, spec, 10**9 + 2_000_000_000) == 10**9
    assert shifted_anchor_ns(10**9, spec, 10**9 + 2_000_000_500) == 10**9 + 500
    assert shifted_anchor_ns(10**9, spec, 10**9) == 10**9      # early: never compressed


def test_remaining_time_from_the_plan() -> None:
    trains = (train(0, 0), train(1, 2_000_000), train(2, 4_000_000))
    schedule = PulseSchedule("x", "rtms", "magventure-r30", 50, trains, 30, 4_900_000, "d" * 64)
    assert remaining_us(schedule, 0) == 4_900_000
    assert remaining_us(schedule, 2) == 900_000
    assert remaining_us(schedule, 3) == 0


async def test_wait_until_never_returns_before_the_deadline() -> None:
    wake = asyncio.Event()
    deadline = time.monotonic_ns() + 30_000_000
    assert await wait_until(deadline, wake) is True
    assert time.monotonic_ns() >= deadline


async def test_wait_until_returns_early_only_when_woken() -> None:
    wake = asyncio.Event()
    asyncio.get_running_loop().call_later(0.01, wake.set)
    assert await wait_until(time.monotonic_ns() + 60_000_000_000, wake) is False
