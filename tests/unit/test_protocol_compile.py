"""Compilation: onsets, totals, rounding and the digest of the canonical form."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from fractions import Fraction
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from protocols.compile import build_schedule, canonical_form, schedule_digest
from protocols.exact import fmt_duration_us
from protocols.library import load_library_protocol
from protocols.model import parse_protocol
from protocols.timing import protocol_timing


def test_golden_total_of_the_fda_protocol() -> None:
    schedule = build_schedule(load_library_protocol("fda-10hz-ldlpfc"), 60, "magstim-rapid2")
    assert schedule.total_pulses == 3000
    assert schedule.duration_us == (75 * 3.9 + 74 * 26) * 1_000_000 == 2_216_500_000
    assert fmt_duration_us(schedule.duration_us) == "36 min 56.5 s"


def test_golden_total_of_the_11_second_variant() -> None:
    schedule = build_schedule(load_library_protocol("10hz-19min"), 60, "magstim-rapid2")
    assert schedule.total_pulses == 3000
    assert fmt_duration_us(schedule.duration_us) == "18 min 26.5 s"


def test_onsets_follow_the_iti_from_last_pulse_to_first_pulse() -> None:
    schedule = build_schedule(load_library_protocol("fda-10hz-ldlpfc"), 60, "magstim-rapid2")
    first, second = schedule.trains[:2]
    assert first.onset_us == 0
    assert first.end_us == 3_900_000
    assert second.onset_us - first.end_us == 26_000_000
    assert [t.index for t in schedule.trains] == list(range(75))
    assert schedule.trains[-1].end_us == schedule.duration_us


def test_tbs_trains_are_bursts() -> None:
    schedule = build_schedule(load_library_protocol("itbs-600"), 60, "magventure-x100")
    train = schedule.trains[0]
    assert (train.pulses, train.burst_pulses, train.bursts) == (30, 3, 10)
    assert (train.pulse_interval_us, train.burst_interval_us) == (20_000, 200_000)
    assert train.duration_us == 1_840_000
    assert schedule.trains[1].onset_us == 1_840_000 + 8_000_000
    # THREE-D reports 3 min 9 s for 20 trains of 2 s with 8 s gaps
    assert fmt_duration_us(schedule.duration_us) == "3 min 8.8 s"


def test_single_pulses_are_one_train_each() -> None:
    spec = parse_protocol(
        {"protocol": {"name": "s", "description": "d", "reference": "r", "kind": "single",
                      "intensity_pct_mt": 100},
         "single": {"pulses": 4, "interval_s": 5}},
        source="t",
    )
    schedule = build_schedule(spec, 50, "magstim-200")
    assert [t.onset_us for t in schedule.trains] == [0, 5_000_000, 10_000_000, 15_000_000]
    assert all(t.pulses == 1 and t.duration_us == 0 for t in schedule.trains)
    assert schedule.duration_us == 15_000_000


def test_the_digest_is_sha256_of_the_documented_canonical_form() -> None:
    schedule = build_schedule(load_library_protocol("demo-10hz-short"), 50, "magstim-rapid2")
    body: dict[str, Any] = json.loads(canonical_form(schedule))
    assert body["format"] == "stimd.schedule/1"
    assert body["trains"][1] == [1, 5_900_000, 10, 100_000, 1, 10, 100_000, 50]
    assert schedule.digest == hashlib.sha256(canonical_form(schedule)).hexdigest()
    assert schedule_digest(schedule) == schedule.digest
    assert canonical_form(replace(schedule, digest="x")) == canonical_form(schedule)


def test_any_change_to_the_prescription_changes_the_digest() -> None:
    spec = load_library_protocol("demo-10hz-short")
    base = build_schedule(spec, 50, "magstim-rapid2").digest
    assert build_schedule(spec, 51, "magstim-rapid2").digest != base
    assert build_schedule(spec, 50, "magventure-x100").digest != base
    assert build_schedule(spec, 50, "magstim-rapid2").digest == base


rates = st.one_of(
    st.integers(1, 100).map(float),
    st.decimals("0.1", "100", places=3).map(float),
    st.fractions(1, 100, max_denominator=997).map(float),
)


@given(rate=rates, pulses=st.integers(1, 60), trains=st.integers(1, 5),
       iti=st.decimals("0.001", "60", places=3).map(float))
def test_rounding_to_microseconds_never_shortens_an_interval(
    rate: float, pulses: int, trains: int, iti: float
) -> None:
    spec = parse_protocol(
        {"protocol": {"name": "r", "description": "d", "reference": "r", "kind": "rtms",
                      "intensity_pct_mt": 100},
         "rtms": {"frequency_hz": rate, "pulses_per_train": pulses, "trains": trains,
                  "inter_train_interval_s": iti}},
        source="t",
    )
    schedule = build_schedule(spec, 50, "magventure-x100")
    written_period = Fraction(1_000_000) / Fraction(repr(rate))
    written_iti = Fraction(repr(iti)) * 1_000_000
    for train in schedule.trains:
        assert train.pulse_interval_us >= written_period
        assert train.pulse_interval_us - written_period < 1
    for before, after in zip(schedule.trains, schedule.trains[1:], strict=False):
        assert after.onset_us - before.end_us >= written_iti
    assert schedule.total_pulses == pulses * trains == sum(t.pulses for t in schedule.trains)
    assert schedule.duration_us == protocol_timing(spec).session_duration_us
