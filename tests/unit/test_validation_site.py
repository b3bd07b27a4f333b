"""Site limits: conservative defaults, every field validated, exceptions constrained."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from protocols.model import ProtocolError
from protocols.site import ApprovedException, SiteLimits, load_site, site_problems


def problems(**fields: Any) -> list[str]:
    with pytest.raises(ValidationError) as info:
        SiteLimits.model_validate(fields)
    return site_problems(info.value)


def test_defaults_are_conservative() -> None:
    site = SiteLimits()
    assert site.max_pct_mso == 90
    assert site.max_pct_mt == 120
    assert site.tbs_max_pct_mt == 120
    assert site.max_pulses_per_session == 3000
    assert site.max_pulses_per_patient_per_day == 3000
    assert site.max_mt_age_days == 7
    assert site.accepted_mt_methods == ("emg",)
    assert site.approved_exceptions == ()


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("max_pct_mso", 0, "site.max_pct_mso: Input should be greater than or equal to 1, got 0"),
        ("max_pct_mso", 101,
         "site.max_pct_mso: Input should be less than or equal to 100, got 101"),
        ("max_pct_mso", 90.0, "site.max_pct_mso: Input should be a valid integer, got 90.0"),
        ("max_pct_mt", math.nan, "site.max_pct_mt: Input should be a finite number, got nan"),
        ("max_pct_mt", -1, "site.max_pct_mt: Input should be greater than 0, got -1"),
        ("max_pct_mt", 0, "site.max_pct_mt: Input should be greater than 0, got 0"),
        ("tbs_max_pct_mt", math.inf,
         "site.tbs_max_pct_mt: Input should be a finite number, got inf"),
        ("max_pulses_per_session", True,
         "site.max_pulses_per_session: Input should be a valid integer, got True"),
        ("max_pulses_per_patient_per_day", 10**9,
         "site.max_pulses_per_patient_per_day: Input should be less than or equal to 100000, "
         "got 1000000000"),
        ("max_mt_age_days", "7", "site.max_mt_age_days: Input should be a valid number, got '7'"),
        ("max_mt_age_days", 0, "site.max_mt_age_days: Input should be greater than 0, got 0"),
        ("accepted_mt_methods", [],
         "site.accepted_mt_methods: must name at least one method (emg, visual), got []"),
        ("accepted_mt_methods", ["emg", "emg"],
         "site.accepted_mt_methods: lists a method twice, got ['emg', 'emg']"),
        ("accepted_mt_methods", ["eeg"],
         "site.accepted_mt_methods.0: Input should be 'emg' or 'visual', got 'eeg'"),
        ("colour", "blue", "site.colour: Extra inputs are not permitted, got 'blue'"),
    ],
)
def test_absurd_site_values_name_the_field(field: str, value: object, reason: str) -> None:
    assert problems(**{field: value}) == [reason]


def test_a_session_cap_above_the_daily_cap_is_inconsistent() -> None:
    assert problems(max_pulses_per_session=5000) == [
        "site: max_pulses_per_session (5000) exceeds max_pulses_per_patient_per_day (3000)"
    ]


def test_exceptions_name_a_library_protocol_and_an_overridable_rule() -> None:
    ok = ApprovedException(protocol="deep-tms-18hz-h1", rule="safety-table.train-pulses",
                           reference="Levkovitz 2015", approved_by="clinical lead")
    assert SiteLimits(approved_exceptions=(ok,)).approved_exceptions == (ok,)
    found = problems(approved_exceptions=[
        {"protocol": "mine", "rule": "device.frequency", "reference": ""}
    ])
    assert found[0].startswith("site.approved_exceptions.0.protocol: 'mine' is not a library")
    assert found[1].startswith(
        "site.approved_exceptions.0.rule: 'device.frequency' cannot be overridden"
    )
    assert found[2] == ("site.approved_exceptions.0.reference: String should have at least "
                        "1 character, got ''")
    assert problems(approved_exceptions=[
        {"protocol": "itbs-600", "rule": "tbs.intensity", "reference": "x"}
    ])[0].startswith("site.approved_exceptions.0.rule: 'tbs.intensity' cannot be overridden")


def test_site_limits_are_immutable() -> None:
    with pytest.raises(ValidationError):
        SiteLimits().max_pct_mso = 100  # type: ignore[misc]


def test_load_site_reads_top_level_keys_or_a_site_table(tmp_path: Path) -> None:
    flat = tmp_path / "flat.toml"
    flat.write_text('max_pct_mso = 80\naccepted_mt_methods = ["emg", "visual"]\n')
    assert load_site(flat) == SiteLimits(max_pct_mso=80, accepted_mt_methods=("emg", "visual"))
    nested = tmp_path / "nested.toml"
    nested.write_text(
        "[site]\nmax_pct_mso = 80\n[[site.approved_exceptions]]\n"
        'protocol = "deep-tms-18hz-h1"\nrule = "safety-table.train-pulses"\n'
        'reference = "Levkovitz 2015"\n'
    )
    site = load_site(nested)
    assert site.max_pct_mso == 80
    assert site.approved_exceptions[0].protocol == "deep-tms-18hz-h1"


def test_load_site_reports_bad_files_as_protocol_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("max_pct_mso = -3\n")
    with pytest.raises(ProtocolError) as info:
        load_site(bad)
    assert info.value.problems == [
        "site.max_pct_mso: Input should be greater than or equal to 1, got -3"
    ]
    with pytest.raises(ProtocolError) as info:
        load_site(tmp_path / "none.toml")
    assert info.value.problems == ["file: not found"]
    broken = tmp_path / "broken.toml"
    broken.write_text("max_pct_mso = = 1")
    with pytest.raises(ProtocolError, match="not valid TOML"):
        load_site(broken)
