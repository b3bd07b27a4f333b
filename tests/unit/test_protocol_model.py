"""The protocol file format: every malformed input is rejected with a reason naming its key."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest

from protocols.model import (
    ProtocolError,
    ProtocolSpec,
    RtmsParams,
    SingleParams,
    TbsParams,
    load_protocol_file,
    parse_protocol,
)

RTMS: dict[str, Any] = {
    "protocol": {
        "name": "test-10hz",
        "description": "a test protocol",
        "reference": "none",
        "kind": "rtms",
        "intensity_pct_mt": 110,
    },
    "rtms": {
        "frequency_hz": 10,
        "pulses_per_train": 40,
        "trains": 3,
        "inter_train_interval_s": 26,
    },
}
TBS: dict[str, Any] = {
    "protocol": {**RTMS["protocol"], "name": "test-tbs", "kind": "tbs"},
    "tbs": {
        "pulses_per_burst": 3,
        "intra_burst_hz": 50,
        "burst_hz": 5,
        "bursts_per_train": 10,
        "trains": 2,
        "inter_train_interval_s": 8,
    },
}
SINGLE: dict[str, Any] = {
    "protocol": {**RTMS["protocol"], "name": "test-single", "kind": "single"},
    "single": {"pulses": 10, "interval_s": 5},
}


def with_value(base: dict[str, Any], table: str, key: str, value: object) -> dict[str, Any]:
    data = copy.deepcopy(base)
    data[table][key] = value
    return data


def without(base: dict[str, Any], table: str, key: str) -> dict[str, Any]:
    data = copy.deepcopy(base)
    del data[table][key]
    return data


def problems_of(data: object) -> list[str]:
    with pytest.raises(ProtocolError) as info:
        parse_protocol(data, source="test")  # type: ignore[arg-type]
    return info.value.problems


def test_a_well_formed_rtms_protocol_parses_to_its_values() -> None:
    spec = parse_protocol(RTMS, source="test")
    assert spec.name == "test-10hz"
    assert spec.kind == "rtms"
    assert spec.intensity_pct_mt == 110
    assert spec.rtms == RtmsParams(10, 40, 3, 26)
    assert spec.tbs is None and spec.single is None


def test_tbs_and_single_protocols_parse_to_their_parameters() -> None:
    assert parse_protocol(TBS, source="t").tbs == TbsParams(3, 50, 5, 10, 2, 8)
    assert parse_protocol(SINGLE, source="t").single == SingleParams(10, 5)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (-1, "rtms.frequency_hz: must be > 0, got -1"),
        (0, "rtms.frequency_hz: must be > 0, got 0"),
        (-0.5, "rtms.frequency_hz: must be > 0, got -0.5"),
        (math.nan, "rtms.frequency_hz: must be finite, got nan"),
        (math.inf, "rtms.frequency_hz: must be finite, got inf"),
        (-math.inf, "rtms.frequency_hz: must be finite, got -inf"),
        ("10", "rtms.frequency_hz: must be a number, got string '10'"),
        (True, "rtms.frequency_hz: must be a number, got boolean true"),
        ([10], "rtms.frequency_hz: must be a number, got array"),
        ({"hz": 10}, "rtms.frequency_hz: must be a number, got table"),
        (None, "rtms.frequency_hz: must be a number, got NoneType"),
    ],
)
def test_absurd_frequencies_are_rejected_with_the_exact_reason(value: object, reason: str) -> None:
    assert problems_of(with_value(RTMS, "rtms", "frequency_hz", value)) == [reason]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (0, "rtms.trains: must be >= 1, got 0"),
        (-3, "rtms.trains: must be >= 1, got -3"),
        (2.0, "rtms.trains: must be an integer, got float 2.0"),
        (2.5, "rtms.trains: must be an integer, got float 2.5"),
        (False, "rtms.trains: must be an integer, got boolean false"),
        ("75", "rtms.trains: must be an integer, got string '75'"),
    ],
)
def test_absurd_counts_are_rejected_with_the_exact_reason(value: object, reason: str) -> None:
    assert problems_of(with_value(RTMS, "rtms", "trains", value)) == [reason]


def test_floats_are_accepted_where_numbers_are_expected_and_ints_too() -> None:
    spec = parse_protocol(with_value(RTMS, "rtms", "frequency_hz", 10.5), source="t")
    assert spec.rtms is not None and spec.rtms.frequency_hz == 10.5
    spec = parse_protocol(with_value(RTMS, "protocol", "intensity_pct_mt", 112.5), source="t")
    assert spec.intensity_pct_mt == 112.5


@pytest.mark.parametrize(
    ("table", "key", "value", "reason"),
    [
        ("protocol", "intensity_pct_mt", -120, "protocol.intensity_pct_mt: must be > 0, got -120"),
        ("protocol", "intensity_pct_mt", math.nan,
         "protocol.intensity_pct_mt: must be finite, got nan"),
        ("protocol", "kind", "deep", "protocol.kind: must be one of rtms, tbs, single, got 'deep'"),
        ("protocol", "description", "  ", "protocol.description: must not be empty"),
        ("protocol", "reference", 7, "protocol.reference: must be a string, got int 7"),
        ("protocol", "name", "FDA Protocol",
         "protocol.name: must be 1-64 characters of lowercase letters, digits, '.', '_' or '-', "
         "starting with a letter or digit, got 'FDA Protocol'"),
        ("protocol", "name", "a" * 65,
         "protocol.name: must be 1-64 characters of lowercase letters, digits, '.', '_' or '-', "
         f"starting with a letter or digit, got {'a' * 65!r}"),
        ("rtms", "inter_train_interval_s", 0, "rtms.inter_train_interval_s: must be > 0, got 0"),
        ("rtms", "pulses_per_train", 10**30, None),
    ],
)
def test_header_and_parameter_values(table: str, key: str, value: object,
                                     reason: str | None) -> None:
    data = with_value(RTMS, table, key, value)
    if reason is None:  # huge but well-formed: limits are validation's job, not the parser's
        assert parse_protocol(data, source="t").rtms is not None
    else:
        assert problems_of(data) == [reason]


def test_unknown_keys_and_tables_are_errors_that_list_what_is_allowed() -> None:
    data = with_value(RTMS, "rtms", "colour", "blue")
    data["extra"] = {}
    assert problems_of(data) == [
        "extra: unknown table (allowed: protocol and one of rtms, tbs, single)",
        "rtms.colour: unknown key (allowed: frequency_hz, inter_train_interval_s, "
        "pulses_per_train, trains)",
    ]


def test_a_table_of_another_kind_is_an_error() -> None:
    data = copy.deepcopy(RTMS)
    data["tbs"] = TBS["tbs"]
    assert problems_of(data) == ["tbs: table does not belong to kind 'rtms'"]


def test_missing_keys_and_tables_are_each_named() -> None:
    assert problems_of(without(RTMS, "rtms", "frequency_hz")) == ["rtms.frequency_hz: missing"]
    assert problems_of({"protocol": RTMS["protocol"]}) == [
        "rtms: missing table (kind = 'rtms' needs it)"
    ]
    assert problems_of({"rtms": RTMS["rtms"]}) == ["protocol: missing table"]
    assert problems_of([1, 2]) == ["protocol: must be a table of tables, got array"]
    assert problems_of({"protocol": "x"}) == ["protocol: must be a table, got string 'x'"]


def test_every_problem_is_reported_not_just_the_first() -> None:
    data = with_value(RTMS, "rtms", "frequency_hz", -1)
    data["rtms"]["trains"] = 0
    data["protocol"]["intensity_pct_mt"] = math.inf
    assert problems_of(data) == [
        "protocol.intensity_pct_mt: must be finite, got inf",
        "rtms.frequency_hz: must be > 0, got -1",
        "rtms.trains: must be >= 1, got 0",
    ]


def test_the_inter_train_interval_is_required_only_for_more_than_one_train() -> None:
    assert problems_of(without(RTMS, "rtms", "inter_train_interval_s")) == [
        "rtms.inter_train_interval_s: missing (required when trains > 1)"
    ]
    one_train = with_value(without(RTMS, "rtms", "inter_train_interval_s"), "rtms", "trains", 1)
    spec = parse_protocol(one_train, source="t")
    assert spec.rtms is not None and spec.rtms.inter_train_interval_s is None


def test_tbs_bursts_must_fit_inside_their_period_and_have_two_pulses() -> None:
    overlapping = with_value(TBS, "tbs", "burst_hz", 30)
    assert problems_of(overlapping) == [
        "tbs.burst_hz: a burst of 3 pulses at 50 Hz lasts 40000 µs, which does not end "
        "before the next burst starts 33334 µs later (burst_hz 30)"
    ]
    assert problems_of(with_value(TBS, "tbs", "pulses_per_burst", 1)) == [
        "tbs.pulses_per_burst: must be >= 2 for theta burst (use kind = \"rtms\" for evenly "
        "spaced pulses), got 1"
    ]


def test_the_error_message_names_the_source_and_every_problem() -> None:
    with pytest.raises(ProtocolError, match=r"^inline: rtms.trains: must be >= 1, got 0$"):
        parse_protocol(with_value(RTMS, "rtms", "trains", 0), source="inline")
    assert issubclass(ProtocolError, ValueError)


def test_a_spec_built_in_code_is_held_to_the_same_contract() -> None:
    with pytest.raises(ProtocolError, match=r"rtms.frequency_hz: must be finite, got nan"):
        ProtocolSpec(name="x", kind="rtms", intensity_pct_mt=100, description="d",
                     reference="r", params=RtmsParams(math.nan, 1, 1, None))


def test_to_tables_round_trips() -> None:
    for data in (RTMS, TBS, SINGLE):
        spec = parse_protocol(data, source="t")
        assert parse_protocol(spec.to_tables(), source="again") == spec
        assert spec.to_tables() == data


def test_protocol_files_load_and_bad_files_are_protocol_errors(tmp_path: Path) -> None:
    good = tmp_path / "p.toml"
    good.write_text(
        '[protocol]\nname = "p"\ndescription = "d"\nreference = "r"\nkind = "single"\n'
        "intensity_pct_mt = 100\n[single]\npulses = 3\ninterval_s = 4.5\n"
    )
    assert load_protocol_file(good).single == SingleParams(3, 4.5)

    with pytest.raises(ProtocolError) as info:
        load_protocol_file(tmp_path / "missing.toml")
    assert info.value.problems == ["file: not found"]

    broken = tmp_path / "broken.toml"
    broken.write_text("[protocol\nname = ")
    with pytest.raises(ProtocolError) as info:
        load_protocol_file(broken)
    assert info.value.problems[0].startswith("file: not valid TOML (")

    nan_file = tmp_path / "nan.toml"
    nan_file.write_text(good.read_text().replace("interval_s = 4.5", "interval_s = nan"))
    with pytest.raises(ProtocolError) as info:
        load_protocol_file(nan_file)
    assert info.value.problems == ["single.interval_s: must be finite, got nan"]
    assert str(nan_file) in str(info.value)
