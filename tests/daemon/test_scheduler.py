"""Train timing: fires never early, the plan's spacing kept fire to fire, the device's
minimums kept from the end bound, pauses never compress."""

from __future__ import annotations

import asyncio
import time

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from protocols.capabilities import device_profile
from protocols.schedule import PulseSchedule, TrainSpec
from stimd.scheduler import (
    FiredTrain,
    earliest_fire_ns,
    recovery_gap,
    remaining_us,
    shifted_anchor_ns,
    train_end_bound_ns,
    wait_until,
    wait_until_exactly,
)

RAPID = device_profile("magstim-rapid2", 240)
R30 = device_profile("magventure-r30")


def train(index: int, onset_us: int, *, pulses: int = 10, interval_us: int = 100_000,
          pct: int = 50) -> TrainSpec:
    return TrainSpec(index=index, onset_us=onset_us, pulses=pulses,
                     pulse_interval_us=interval_us, burst_pulses=1, bursts=pulses,
                     burst_interval_us=interval_us, intensity_pct_mso=pct)


def test_device_minimum_between_trains() -> None:
    gap = recovery_gap(train(0, 0, pct=10), RAPID)
    assert (gap.gap_us, gap.source) == (500_000, "device")


def test_rapid_energy_model_sets_the_wait_after_a_heavy_train() -> None:
    # Magstim reference check value: 100 %, 20 Hz, 100 pulses → minimum wait 19 s
    gap = recovery_gap(train(0, 0, pulses=100, interval_us=50_000, pct=100), RAPID)
    assert gap.source == "energy_model"
    assert abs(gap.gap_us - 19_000_000) <= 1


def test_single_pulses_respect_the_recharge_at_their_power() -> None:
    gap = recovery_gap(train(0, 0, pulses=1, pct=100), RAPID)
    assert gap.source == "single_pulse_rate"
    assert gap.gap_us == round(RAPID.min_single_pulse_interval_at(100) * 1e6)


def test_first_train_starts_at_its_planned_onset() -> None:
    assert earliest_fire_ns(train(0, 0), 7_000, None, R30) == 7_000


def test_the_plan_spacing_counts_from_the_previous_fire_not_its_end_bound() -> None:
    # the end bound is 50 ms late (the confirming reading); the plan's spacing is not
    a, b = train(0, 0), train(1, 5_900_000)
    start = 10**12
    end_bound = start + a.duration_us * 1000 + 50_000_000
    onset = earliest_fire_ns(b, start, FiredTrain(a, start, end_bound), RAPID)
    assert onset == start + 5_900_000_000


def test_a_late_train_pushes_the_next_one_back_instead_of_compressing() -> None:
    a, b = train(0, 0), train(1, 5_900_000)
    start = 1_000_000_000
    late_fire = start + 20_000_000_000           # train 0 fired 20 s late (a pause)
    late_end = late_fire + a.duration_us * 1000
    onset = earliest_fire_ns(b, start, FiredTrain(a, late_fire, late_end), R30)
    assert onset == late_fire + 5_900_000_000


def test_at_the_device_limit_the_end_bound_governs() -> None:
    """Plan gap (last pulse → first pulse) equal to the energy model's wait: the wait is
    counted from the conservative end bound, so the end bound's slack delays the train."""
    a = train(0, 0, pulses=100, interval_us=50_000, pct=100)
    wait_us = recovery_gap(a, RAPID).gap_us
    b = train(1, a.end_us + wait_us, pulses=100, interval_us=50_000, pct=100)
    start = 10**12
    slack = 45_000_000                           # the confirming reading came 45 ms late
    end_bound = start + a.end_us * 1000 + slack
    onset = earliest_fire_ns(b, start, FiredTrain(a, start, end_bound), RAPID)
    assert onset == end_bound + wait_us * 1000
    assert onset == start + b.onset_us * 1000 + slack


def run_schedule(
    trains: list[TrainSpec], start_ns: int, reply_delays_ns: list[int],
    late_by_ns: list[int],
) -> list[tuple[int, int]]:
    """Drive the scheduler as the runner does: (fire, end bound) of every train, when
    train i is fired ``late_by_ns[i]`` after its earliest fire and the device's reply
    to its fire command comes ``reply_delays_ns[i]`` after that."""
    anchor, previous = start_ns, None
    timeline: list[tuple[int, int]] = []
    for index, spec in enumerate(trains):
        onset = earliest_fire_ns(spec, anchor, previous, RAPID)
        onset += late_by_ns[index]
        anchor = shifted_anchor_ns(anchor, spec, onset)
        end_bound = train_end_bound_ns(onset + reply_delays_ns[index], spec, None)
        previous = FiredTrain(spec, onset, end_bound)
        timeline.append((onset, end_bound))
    return timeline


@settings(max_examples=100, deadline=None)
@given(
    pulses=st.integers(2, 50),
    interval_us=st.sampled_from([50_000, 100_000, 200_000, 1_000_000]),
    iti_us=st.integers(1_000_000, 30_000_000),
    count=st.integers(2, 40),
    reply_us=st.integers(0, 60_000),
)
def test_property_no_drift_when_every_train_is_on_time(
    pulses: int, interval_us: int, iti_us: int, count: int, reply_us: int
) -> None:
    """Fires are the planned ones when every fire leaves on time, however late the end
    bound is (the reply and confirming reading): nothing adds up from train to train."""
    first = train(0, 0, pulses=pulses, interval_us=interval_us, pct=30)
    trains = [train(i, i * (first.duration_us + iti_us), pulses=pulses,
                    interval_us=interval_us, pct=30) for i in range(count)]
    # the plan's gap clears the device's minimum by more than the end bound's slack
    assume(all(iti_us > recovery_gap(t, RAPID).gap_us + reply_us for t in trains))
    start = 10**12
    timeline = run_schedule(trains, start, [reply_us * 1000] * count, [0] * count)
    assert [fire for fire, _ in timeline] == [start + t.onset_us * 1000 for t in trains]


@settings(max_examples=200, deadline=None)
@given(
    data=st.data(),
    pulses=st.integers(1, 100),
    interval_us=st.integers(20_000, 1_000_000),
    iti_us=st.integers(0, 20_000_000),
    count=st.integers(2, 12),
)
def test_property_late_trains_shift_and_gaps_never_shrink(
    data: st.DataObject, pulses: int, interval_us: int, iti_us: int, count: int
) -> None:
    """Whatever makes trains late (pauses, cooling, a slow reply), no train fires before
    its planned onset, the plan's spacing holds fire to fire (also right after a late
    train), the device's minimum holds from the end bound, and a late train shifts the
    rest."""
    pct = data.draw(st.integers(1, 100))
    first = train(0, 0, pulses=pulses, interval_us=interval_us, pct=pct)
    trains = [train(i, i * (first.duration_us + iti_us), pulses=pulses,
                    interval_us=interval_us, pct=pct) for i in range(count)]
    late = data.draw(st.lists(st.integers(0, 60_000_000_000), min_size=count, max_size=count))
    replies = data.draw(st.lists(st.integers(0, 50_000_000), min_size=count, max_size=count))
    start = 10**12
    timeline = run_schedule(trains, start, replies, late)
    lateness = 0
    for index, (fire, _) in enumerate(timeline):
        planned = start + trains[index].onset_us * 1000
        assert fire >= planned + lateness                   # never early, never compressed
        lateness = fire - planned
        if index:
            prev_fire, prev_end = timeline[index - 1]
            spacing = trains[index].onset_us - trains[index - 1].onset_us
            assert fire - prev_fire >= spacing * 1000       # the plan, fire to fire
            needed = recovery_gap(trains[index - 1], RAPID)
            assert fire - prev_end >= needed.gap_us * 1000  # the device, from the end bound


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


async def test_wait_until_exactly_never_returns_before_the_deadline() -> None:
    wake = asyncio.Event()
    deadline = time.monotonic_ns() + 5_000_000
    assert await wait_until_exactly(deadline, wake) is True
    assert time.monotonic_ns() >= deadline


async def test_wait_until_exactly_returns_early_when_woken() -> None:
    wake = asyncio.Event()
    wake.set()
    assert await wait_until_exactly(time.monotonic_ns() + 60_000_000_000, wake) is False
