"""The state machine's rules, read from its tables (DESIGN.md "Session states")."""

from __future__ import annotations

from itertools import pairwise

import pytest

from stimd.commands import Verb
from stimd.states import (
    TRANSITIONS,
    IllegalTransition,
    SessionState,
    allowed_verbs,
    check_transition,
    verb_allowed,
)

S = SessionState


def test_state_names_are_the_design_strings() -> None:
    assert [s.value for s in S] == [
        "CONNECTING", "IDLE", "LOADED", "ARMED", "RUNNING", "PAUSED", "COMPLETED", "ABORTED",
        "FAULT",
    ]


@pytest.mark.parametrize("state", list(S))
def test_fault_is_reachable_from_every_state(state: SessionState) -> None:
    check_transition(state, S.FAULT)


@pytest.mark.parametrize("target", [s for s in S if s is not S.CONNECTING])
def test_fault_is_left_only_through_connecting(target: SessionState) -> None:
    if target is S.FAULT:
        check_transition(S.FAULT, S.FAULT)   # a second latch is a no-op edge
        return
    with pytest.raises(IllegalTransition, match=f"FAULT → {target.value}"):
        check_transition(S.FAULT, target)


def test_the_design_path_is_legal() -> None:
    path = [S.CONNECTING, S.IDLE, S.LOADED, S.ARMED, S.RUNNING, S.PAUSED, S.RUNNING,
            S.COMPLETED, S.LOADED, S.ARMED, S.RUNNING, S.ABORTED, S.IDLE]
    for current, target in pairwise(path):
        check_transition(current, target)


@pytest.mark.parametrize(
    ("current", "target"),
    [(S.IDLE, S.ARMED), (S.IDLE, S.RUNNING), (S.LOADED, S.RUNNING), (S.PAUSED, S.COMPLETED),
     (S.COMPLETED, S.RUNNING), (S.ABORTED, S.ARMED), (S.CONNECTING, S.LOADED)],
)
def test_no_shortcut_towards_firing(current: SessionState, target: SessionState) -> None:
    with pytest.raises(IllegalTransition):
        check_transition(current, target)


def test_every_state_has_an_entry_in_the_table() -> None:
    assert set(TRANSITIONS) == set(S)


@pytest.mark.parametrize("state", list(S))
def test_stop_heartbeat_resync_are_accepted_everywhere(state: SessionState) -> None:
    for verb in (Verb.STOP, Verb.HEARTBEAT, Verb.RESYNC):
        assert verb_allowed(state, verb)


def test_reset_only_in_fault() -> None:
    assert [s for s in S if verb_allowed(s, Verb.RESET)] == [S.FAULT]


def test_start_only_from_loaded_or_armed() -> None:
    assert {s for s in S if verb_allowed(s, Verb.START)} == {S.LOADED, S.ARMED}


def test_allowed_verbs_lists_names_for_messages() -> None:
    assert allowed_verbs(S.PAUSED) == ["heartbeat", "resume", "resync", "stop"]
