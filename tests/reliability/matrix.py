"""The fault table (``faults.toml``) as typed rows, read by the tests and by the report.

Loading is strict like every other input here: an unknown key, a missing key or a
wrong type is an error naming the row and the key, so a typo in the table cannot
silently weaken a test.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TABLE = Path(__file__).with_name("faults.toml")

SCENARIOS = frozenset({
    "sim_fault", "broker_restart", "daemon_sigkill", "heartbeat_lost",
    "state_dir_at_start", "state_dir_mid_session", "wall_clock_jump",
})
STATES = frozenset({
    "IDLE", "LOADED", "ARMED", "RUNNING", "PAUSED", "COMPLETED", "ABORTED", "FAULT", "EXITED",
})
_TEXT_KEYS = ("id", "title", "scenario", "injection", "detection", "outcome_state",
              "record_outcome", "disarmed_by")
_LIST_KEYS = ("causes", "events")
_TABLE_KEYS = ("inject", "detect_log")
_OPTIONAL = {"clear_after_s"}


class FaultTableError(ValueError):
    """The fault table is malformed; the message names the row and the key."""


@dataclass(frozen=True, slots=True)
class FaultRow:
    id: str
    title: str
    scenario: str
    inject: dict[str, Any]
    injection: str
    detection: str
    detect_log: dict[str, Any]
    budget_s: float
    outcome_state: str
    causes: tuple[str, ...]
    events: tuple[str, ...]
    record_outcome: str
    disarmed_by: str
    clear_after_s: float | None = None

    @property
    def detect_event(self) -> str | None:
        event = self.detect_log.get("event")
        return event if isinstance(event, str) else None

    @property
    def detect_fields(self) -> dict[str, Any]:
        return {k: v for k, v in self.detect_log.items() if k != "event"}


def _row(index: int, raw: Any) -> FaultRow:
    where = f"faults.toml fault #{index + 1}"
    if not isinstance(raw, dict):
        raise FaultTableError(f"{where}: must be a table, got {type(raw).__name__}")
    known = {*_TEXT_KEYS, *_LIST_KEYS, *_TABLE_KEYS, "budget_s", *_OPTIONAL}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise FaultTableError(f"{where}: unknown key(s) {unknown}")
    missing = sorted(known - _OPTIONAL - set(raw))
    if missing:
        raise FaultTableError(f"{where}: missing key(s) {missing}")
    for key in _TEXT_KEYS:
        if not isinstance(raw[key], str) or not raw[key]:
            raise FaultTableError(f"{where}: {key} must be a non-empty string, got {raw[key]!r}")
    for key in _LIST_KEYS:
        value = raw[key]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise FaultTableError(f"{where}: {key} must be a list of strings, got {value!r}")
    for key in _TABLE_KEYS:
        if not isinstance(raw[key], dict):
            raise FaultTableError(f"{where}: {key} must be a table, got {raw[key]!r}")
    budget = raw["budget_s"]
    if isinstance(budget, bool) or not isinstance(budget, int | float) or budget < 0:
        raise FaultTableError(f"{where}: budget_s must be a number >= 0, got {budget!r}")
    clear_after = raw.get("clear_after_s")
    if clear_after is not None and (
        isinstance(clear_after, bool) or not isinstance(clear_after, int | float)
        or clear_after <= 0
    ):
        raise FaultTableError(f"{where}: clear_after_s must be a number > 0, got {clear_after!r}")
    if raw["scenario"] not in SCENARIOS:
        raise FaultTableError(
            f"{where}: scenario {raw['scenario']!r} unknown; known: {sorted(SCENARIOS)}"
        )
    if raw["outcome_state"] not in STATES:
        raise FaultTableError(
            f"{where}: outcome_state {raw['outcome_state']!r} unknown; known: {sorted(STATES)}"
        )
    if (raw["outcome_state"] == "FAULT") != bool(raw["causes"]):
        raise FaultTableError(f"{where}: causes must be given exactly when outcome_state is FAULT")
    return FaultRow(
        id=raw["id"], title=raw["title"], scenario=raw["scenario"], inject=dict(raw["inject"]),
        injection=raw["injection"], detection=raw["detection"],
        detect_log=dict(raw["detect_log"]), budget_s=float(budget),
        outcome_state=raw["outcome_state"], causes=tuple(raw["causes"]),
        events=tuple(raw["events"]), record_outcome=raw["record_outcome"],
        disarmed_by=raw["disarmed_by"],
        clear_after_s=None if clear_after is None else float(clear_after),
    )


def load_faults(path: Path = TABLE) -> list[FaultRow]:
    """Every row of the fault table, in table order; ids must be unique."""
    with path.open("rb") as handle:
        data = tomllib.load(handle)
    unknown = sorted(set(data) - {"fault"})
    if unknown:
        raise FaultTableError(f"{path.name}: unknown top-level key(s) {unknown}")
    rows = [_row(i, raw) for i, raw in enumerate(data.get("fault", []))]
    ids = [row.id for row in rows]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise FaultTableError(f"{path.name}: duplicate fault id(s) {duplicates}")
    return rows


def fault(fault_id: str) -> FaultRow:
    for row in load_faults():
        if row.id == fault_id:
            return row
    raise KeyError(f"no fault {fault_id!r} in {TABLE.name}")
