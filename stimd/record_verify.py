"""Checking a session record: the hash chain, then that the tables agree with the chain.

The chain proves the events were not edited, removed or reordered after the fact; the
replay proves the ``sessions`` and ``trains`` rows people read (history, export) say what
the events say. Either failure is reported with the first event row at fault, so that an
auditor knows from where on the record cannot be trusted.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from stimd.record_chain import (
    GENESIS_HASH,
    CanonicalFormError,
    canonical_content,
    canonical_json,
    link_hash,
)
from stimd.record_schema import (
    APPEND_ONLY_TRIGGERS,
    END_OUTCOMES,
    EV_SESSION_ENDED,
    EV_SESSION_STARTED,
    EV_TRAIN_INTENT,
    EV_TRAIN_RESULT,
    EV_TRAIN_UNCERTAIN,
    JSON_COLUMNS,
    RUNNING,
    SESSION_FIXED_COLUMNS,
    TRAIN_DELIVERED,
    TRAIN_FAILED,
    TRAIN_INTENT,
    TRAIN_UNCERTAIN,
)


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """Outcome of ``SessionRecord.verify``.

    ``rows_checked`` counts event rows whose link was found intact; ``first_broken_row``
    is the ``seq`` of the first event row at fault (for a table disagreement, the event
    the table contradicts), or ``None`` when the fault is not tied to one event row.
    """

    ok: bool
    rows_checked: int
    first_broken_row: int | None
    reason: str | None


class _Broken(Exception):
    def __init__(self, row: int | None, reason: str) -> None:
        super().__init__(reason)
        self.row = row
        self.reason = reason


@dataclass
class _Replay:
    """Sessions and trains as the events say they are, with the event that said it last."""

    sessions: dict[int, dict[str, Any]] = field(default_factory=dict)
    trains: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    source: dict[tuple[int, int | None], int] = field(default_factory=dict)


def verify_connection(conn: sqlite3.Connection) -> VerifyResult:
    """Verify an open record (the caller holds whatever lock serialises the connection)."""
    quick = [str(row[0]) for row in conn.execute("PRAGMA quick_check")]
    if quick != ["ok"]:
        return VerifyResult(False, 0, None, f"SQLite quick_check failed: {'; '.join(quick)}")
    present = {
        str(row[0])
        for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
    }
    missing = [name for name in APPEND_ONLY_TRIGGERS if name not in present]
    if missing:
        return VerifyResult(
            False, 0, None, f"append-only triggers were removed: {', '.join(missing)}"
        )
    replay = _Replay()
    checked = 0
    previous = GENESIS_HASH
    try:
        for row in _rows(
            conn,
            "SELECT seq, ts, session_id, kind, data, prev_hash, hash FROM events ORDER BY seq",
        ):
            _check_link(row, checked + 1, previous)
            try:
                _apply(replay, row)
            except (KeyError, TypeError) as exc:
                raise _Broken(
                    row["seq"], f"event row {row['seq']} ({row['kind']}) lacks field {exc}"
                ) from exc
            previous = row["hash"]
            checked += 1
        _compare_tables(conn, replay)
    except _Broken as broken:
        return VerifyResult(False, checked, broken.row, broken.reason)
    return VerifyResult(True, checked, None, None)


def _rows(conn: sqlite3.Connection, sql: str) -> list[sqlite3.Row]:
    cursor = conn.cursor()
    cursor.row_factory = sqlite3.Row
    rows: list[sqlite3.Row] = cursor.execute(sql).fetchall()
    return rows


def _check_link(row: sqlite3.Row, expected_seq: int, expected_prev: str) -> None:
    seq = row["seq"]
    if seq != expected_seq:
        raise _Broken(seq, f"event row {seq} follows row {expected_seq - 1}: rows are missing")
    if row["prev_hash"] != expected_prev:
        raise _Broken(seq, f"event row {seq} does not link to row {seq - 1}'s hash")
    try:
        if canonical_json(json.loads(row["data"])) != row["data"]:
            raise _Broken(seq, f"event row {seq} data is not in canonical form")
        content = canonical_content(
            seq=seq, ts=row["ts"], session_id=row["session_id"], kind=row["kind"],
            data_json=row["data"],
        )
        computed = link_hash(row["prev_hash"], content)
    except (ValueError, TypeError, CanonicalFormError) as exc:
        raise _Broken(seq, f"event row {seq} cannot be read: {exc}") from exc
    if computed != row["hash"]:
        raise _Broken(seq, f"event row {seq} was altered: its content does not match its hash")


def _apply(replay: _Replay, row: sqlite3.Row) -> None:
    seq, kind, sid = row["seq"], row["kind"], row["session_id"]
    data: dict[str, Any] = json.loads(row["data"])
    if kind == EV_SESSION_STARTED:
        if sid in replay.sessions:
            raise _Broken(seq, f"event row {seq} starts session {sid} a second time")
        replay.sessions[sid] = {
            **{column: data[column] for column in SESSION_FIXED_COLUMNS},
            "started_at": row["ts"], "ended_at": None, "outcome": RUNNING,
            "pulses_delivered": 0, "pulses_uncertain": 0, "pulses_reported": None,
            "end_reason": None,
        }
        replay.source[(sid, None)] = seq
        return
    if kind not in (EV_TRAIN_INTENT, EV_TRAIN_RESULT, EV_TRAIN_UNCERTAIN, EV_SESSION_ENDED):
        return
    session = replay.sessions.get(sid)
    if session is None or session["outcome"] != RUNNING:
        raise _Broken(seq, f"event row {seq} ({kind}) names session {sid}, which is not open")
    if kind == EV_SESSION_ENDED:
        if data["outcome"] not in END_OUTCOMES:
            raise _Broken(seq, f"event row {seq} ends session {sid} as {data['outcome']!r}")
        session.update(
            ended_at=row["ts"], outcome=data["outcome"], end_reason=data["reason"],
            pulses_delivered=data["pulses_delivered"], pulses_uncertain=data["pulses_uncertain"],
            pulses_reported=data["pulses_reported"],
        )
        replay.source[(sid, None)] = seq
        return
    index = data["train_index"]
    key = (sid, index)
    train = replay.trains.get(key)
    if kind == EV_TRAIN_INTENT:
        if train is not None:
            raise _Broken(seq, f"event row {seq} repeats the intent of train {index}")
        replay.trains[key] = {
            "planned_onset_us": data["planned_onset_us"], "pulses_planned": data["pulses"],
            "intent_at": row["ts"], "state": TRAIN_INTENT, "actual_onset_us": None,
            "pulses_delivered": None, "result_at": None,
        }
    elif train is None or train["state"] != TRAIN_INTENT:
        raise _Broken(seq, f"event row {seq} ({kind}) for train {index} has no open intent")
    elif kind == EV_TRAIN_RESULT:
        train.update(
            state=TRAIN_DELIVERED if data["ok"] else TRAIN_FAILED,
            actual_onset_us=data["actual_onset_us"], pulses_delivered=data["pulses_delivered"],
            result_at=row["ts"],
        )
        session["pulses_delivered"] += data["pulses_delivered"]
        replay.source[(sid, None)] = seq
    else:
        train["state"] = TRAIN_UNCERTAIN
    replay.source[key] = seq


def _compare_tables(conn: sqlite3.Connection, replay: _Replay) -> None:
    rows = {row["id"]: row for row in _rows(conn, "SELECT * FROM sessions ORDER BY id")}
    for sid in sorted(set(rows) | set(replay.sessions)):
        seq = replay.source.get((sid, None))
        if sid not in replay.sessions:
            raise _Broken(None, f"sessions row {sid} has no session_started event")
        if sid not in rows:
            raise _Broken(seq, f"session {sid} of event row {seq} is missing from sessions")
        expected = replay.sessions[sid]
        for column, value in expected.items():
            stored = rows[sid][column]
            if column in JSON_COLUMNS:
                stored = json.loads(stored)
            if stored != value:
                raise _Broken(
                    seq,
                    f"sessions row {sid} {column} is {stored!r} but the events say {value!r}",
                )
    trains = {
        (row["session_id"], row["train_index"]): row
        for row in _rows(conn, "SELECT * FROM trains ORDER BY session_id, train_index")
    }
    for key in sorted(set(trains) | set(replay.trains)):
        sid, index = key
        seq = replay.source.get(key)
        if key not in replay.trains:
            raise _Broken(None, f"trains row {index} of session {sid} has no train_intent event")
        if key not in trains:
            raise _Broken(seq, f"train {index} of session {sid} is missing from trains")
        for column, value in replay.trains[key].items():
            if trains[key][column] != value:
                raise _Broken(
                    seq,
                    f"trains row {index} of session {sid} {column} is "
                    f"{trains[key][column]!r} but the events say {value!r}",
                )
