"""The session state machine of DESIGN.md as data: states, legal edges, verbs per state.

Kept apart from the controller so the rules can be read (and tested) in one place; the
controller is the only caller of ``check_transition`` and the only object that changes state.
"""

from __future__ import annotations

from enum import StrEnum

from stimd.commands import Verb


class SessionState(StrEnum):
    CONNECTING = "CONNECTING"
    IDLE = "IDLE"
    LOADED = "LOADED"
    ARMED = "ARMED"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    COMPLETED = "COMPLETED"
    ABORTED = "ABORTED"
    FAULT = "FAULT"


S = SessionState

#: Every legal edge except ``any → FAULT``, which is always legal (the latch).
TRANSITIONS: dict[SessionState, frozenset[SessionState]] = {
    S.CONNECTING: frozenset({S.IDLE}),
    S.IDLE: frozenset({S.LOADED}),
    # stop or unload in LOADED keeps the device disarmed; reload replaces the plan
    S.LOADED: frozenset({S.IDLE, S.LOADED, S.ARMED}),
    # stop from ARMED disarms and keeps the plan; the session has not begun yet
    S.ARMED: frozenset({S.LOADED, S.IDLE, S.RUNNING}),
    S.RUNNING: frozenset({S.PAUSED, S.COMPLETED, S.ABORTED}),
    S.PAUSED: frozenset({S.RUNNING, S.ABORTED}),
    S.COMPLETED: frozenset({S.LOADED, S.IDLE}),
    S.ABORTED: frozenset({S.LOADED, S.IDLE}),
    S.FAULT: frozenset({S.CONNECTING}),
}

#: Verbs accepted in every state: they never move the device towards firing.
ALWAYS_ALLOWED: frozenset[Verb] = frozenset({Verb.STOP, Verb.HEARTBEAT, Verb.RESYNC})

#: The state-changing verbs each state accepts (besides ``ALWAYS_ALLOWED``).
VERBS_BY_STATE: dict[SessionState, frozenset[Verb]] = {
    S.CONNECTING: frozenset(),
    S.IDLE: frozenset({Verb.LOAD}),
    S.LOADED: frozenset({Verb.LOAD, Verb.UNLOAD, Verb.ARM, Verb.START}),
    S.ARMED: frozenset({Verb.UNLOAD, Verb.START}),
    S.RUNNING: frozenset({Verb.PAUSE}),
    S.PAUSED: frozenset({Verb.RESUME}),
    S.COMPLETED: frozenset({Verb.LOAD, Verb.UNLOAD}),
    S.ABORTED: frozenset({Verb.LOAD, Verb.UNLOAD}),
    S.FAULT: frozenset({Verb.RESET}),
}

#: States in which the device may be armed by us: a coil problem here is an anomaly.
ACTIVE_STATES: frozenset[SessionState] = frozenset({S.ARMED, S.RUNNING, S.PAUSED})


class IllegalTransition(RuntimeError):
    """A bug: the controller tried an edge the state machine does not have."""


def check_transition(current: SessionState, target: SessionState) -> None:
    """Raise ``IllegalTransition`` unless ``current → target`` is an edge (FAULT always is)."""
    if target is SessionState.FAULT:
        return
    if target not in TRANSITIONS[current]:
        raise IllegalTransition(f"no transition {current} → {target}")


def verb_allowed(state: SessionState, verb: Verb) -> bool:
    return verb in ALWAYS_ALLOWED or verb in VERBS_BY_STATE[state]


def allowed_verbs(state: SessionState) -> list[str]:
    """Sorted verb names accepted in ``state``, for WRONG_STATE messages."""
    return sorted(v.value for v in ALWAYS_ALLOWED | VERBS_BY_STATE[state])
