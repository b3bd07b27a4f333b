"""The report and the fault table: one source, no drift."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from .matrix import FaultTableError, load_faults
from .report import DOC, EXPECTED_BEGIN, EXPECTED_END, expected_table, render


def test_committed_document_shows_the_table_the_tests_assert() -> None:
    text = DOC.read_text(encoding="utf-8")
    begin, end = text.index(EXPECTED_BEGIN), text.index(EXPECTED_END) + len(EXPECTED_END)
    assert text[begin:end] == "\n".join(expected_table(load_faults())), (
        "docs/reliability.md is stale: run `.venv/bin/python -m tests.reliability.report`"
    )


def test_report_renders_without_results_and_says_so(tmp_path: Path) -> None:
    text = render({}, source=tmp_path)
    assert "not run" in text
    assert "\n".join(expected_table(load_faults())) in text


def test_report_shows_a_failing_run_as_failing(tmp_path: Path) -> None:
    row = load_faults()[0]
    text = render({f"fault-{row.id}": {"passed": False, "problems": ["3 pulses beyond plan"],
                                       "pulses_fired": 33, "pulses_planned": 30,
                                       "pulses_beyond_plan": 3}}, source=tmp_path)
    assert "**FAIL**" in text
    assert f"`fault-{row.id}`: 3 pulses beyond plan" in text


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "faults.toml"
    path.write_text(body, encoding="utf-8")
    return path


MINIMAL = """
[[fault]]
id = "x"
title = "t"
scenario = "sim_fault"
inject = {}
injection = "i"
detection = "d"
detect_log = {}
budget_s = 1.0
outcome_state = "FAULT"
causes = ["link_lost"]
events = []
record_outcome = "fault"
disarmed_by = "unit"
"""


def test_the_minimal_table_loads(tmp_path: Path) -> None:
    assert [row.id for row in load_faults(_write(tmp_path, MINIMAL))] == ["x"]


@pytest.mark.parametrize(("change", "reason"), [
    ('budget_s = 1.0', "budget_s must be a number >= 0, got -1"),
    ('scenario = "sim_fault"', "scenario 'teleport' unknown"),
    ('outcome_state = "FAULT"', "outcome_state 'MAYBE' unknown"),
    ('causes = ["link_lost"]', "causes must be given exactly when outcome_state is FAULT"),
    ('events = []', "events must be a list of strings, got 'fault'"),
    ('title = "t"', "unknown key(s) ['titel']"),
])
def test_a_malformed_table_is_refused_naming_the_key(
    tmp_path: Path, change: str, reason: str
) -> None:
    replacement = {
        'budget_s = 1.0': 'budget_s = -1',
        'scenario = "sim_fault"': 'scenario = "teleport"',
        'outcome_state = "FAULT"': 'outcome_state = "MAYBE"',
        'causes = ["link_lost"]': 'causes = []',
        'events = []': 'events = "fault"',
        'title = "t"': 'title = "t"\ntitel = "typo"',
    }[change]
    with pytest.raises(FaultTableError) as refused:
        load_faults(_write(tmp_path, MINIMAL.replace(change, replacement)))
    assert reason in str(refused.value)


def test_duplicate_ids_are_refused(tmp_path: Path) -> None:
    with pytest.raises(FaultTableError, match=r"duplicate fault id\(s\) \['x'\]"):
        load_faults(_write(tmp_path, MINIMAL + MINIMAL))


def test_the_shipped_table_is_valid_toml_with_every_fault_of_the_issue() -> None:
    with (Path(__file__).with_name("faults.toml")).open("rb") as handle:
        tomllib.load(handle)
    ids = {row.id for row in load_faults()}
    assert ids >= {
        "serial_unplug", "garbled_replies", "checksum_burst", "device_silent",
        "coil_overtemp", "coil_removed", "device_error_bit", "broker_restart",
        "daemon_sigkill", "heartbeat_lost", "state_dir_read_only_at_start",
        "state_dir_full_at_start", "state_dir_full_mid_session", "wall_clock_jump",
    }
