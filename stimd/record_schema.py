"""The session record's SQLite schema and the vocabulary its tables and events share.

``sessions`` and ``trains`` are views kept for querying; the append-only, hash-chained
``events`` table is the evidence they must agree with (``record_verify`` replays it).
Triggers make the evidence append-only and freeze every column of the other tables that
is not legitimately updated later, so that an accidental ``UPDATE`` fails loudly.
"""

from __future__ import annotations

from typing import Final

SCHEMA_VERSION: Final = 1
FILE_NAME: Final = "record.sqlite3"

# Session outcomes; "running" only while a session is open.
RUNNING: Final = "running"
END_OUTCOMES: Final = ("completed", "aborted", "fault", "interrupted")

# Train states: intent written before the fire command; a result closes it; a train
# whose intent has no result when its session ends becomes "uncertain".
TRAIN_INTENT: Final = "intent"
TRAIN_DELIVERED: Final = "delivered"
TRAIN_FAILED: Final = "failed"
TRAIN_UNCERTAIN: Final = "uncertain"

# Event kinds the record writes itself and replays; callers of ``event()`` may not use them.
EV_SESSION_STARTED: Final = "session_started"
EV_TRAIN_INTENT: Final = "train_intent"
EV_TRAIN_RESULT: Final = "train_result"
EV_TRAIN_UNCERTAIN: Final = "train_uncertain"
EV_SESSION_ENDED: Final = "session_ended"
RESERVED_KINDS: Final = frozenset(
    {EV_SESSION_STARTED, EV_TRAIN_INTENT, EV_TRAIN_RESULT, EV_TRAIN_UNCERTAIN, EV_SESSION_ENDED}
)

# Columns of a session fixed at its start, in the order of the session_started event data.
SESSION_FIXED_COLUMNS: Final = (
    "patient_ref",
    "protocol_name",
    "protocol_digest",
    "schedule_digest",
    "motor_threshold",
    "operator",
    "intensity_pct_mso",
    "planned_pulses",
    "planned_trains",
    "device",
)
JSON_COLUMNS: Final = frozenset({"motor_threshold", "device"})

APPEND_ONLY_TRIGGERS: Final = (
    "events_no_update",
    "events_no_delete",
    "sessions_no_delete",
    "sessions_fixed_columns",
    "trains_no_delete",
    "trains_fixed_columns",
)

DDL: Final = f"""
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

CREATE TABLE sessions (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    patient_ref       TEXT    NOT NULL,
    protocol_name     TEXT    NOT NULL,
    protocol_digest   TEXT    NOT NULL,
    schedule_digest   TEXT    NOT NULL,
    motor_threshold   TEXT    NOT NULL,
    operator          TEXT    NOT NULL,
    intensity_pct_mso INTEGER NOT NULL,
    planned_pulses    INTEGER NOT NULL,
    planned_trains    INTEGER NOT NULL,
    device            TEXT    NOT NULL,
    started_at        TEXT    NOT NULL,
    ended_at          TEXT,
    outcome           TEXT    NOT NULL CHECK (outcome IN
                          ('{RUNNING}', {", ".join(f"'{o}'" for o in END_OUTCOMES)})),
    pulses_delivered  INTEGER NOT NULL DEFAULT 0 CHECK (pulses_delivered >= 0),
    pulses_uncertain  INTEGER NOT NULL DEFAULT 0 CHECK (pulses_uncertain >= 0),
    pulses_reported   INTEGER,
    end_reason        TEXT
) STRICT;
CREATE INDEX sessions_patient ON sessions (patient_ref);

CREATE TABLE trains (
    session_id       INTEGER NOT NULL REFERENCES sessions (id),
    train_index      INTEGER NOT NULL CHECK (train_index >= 0),
    planned_onset_us INTEGER NOT NULL,
    pulses_planned   INTEGER NOT NULL CHECK (pulses_planned >= 1),
    intent_at        TEXT    NOT NULL,
    state            TEXT    NOT NULL CHECK (state IN
                         ('{TRAIN_INTENT}', '{TRAIN_DELIVERED}', '{TRAIN_FAILED}',
                          '{TRAIN_UNCERTAIN}')),
    actual_onset_us  INTEGER,
    pulses_delivered INTEGER CHECK (pulses_delivered >= 0),
    result_at        TEXT,
    PRIMARY KEY (session_id, train_index)
) STRICT;
CREATE INDEX trains_intent_at ON trains (intent_at);

CREATE TABLE events (
    seq        INTEGER PRIMARY KEY,
    ts         TEXT    NOT NULL,
    session_id INTEGER REFERENCES sessions (id),
    kind       TEXT    NOT NULL,
    data       TEXT    NOT NULL,
    prev_hash  TEXT    NOT NULL,
    hash       TEXT    NOT NULL
) STRICT;

CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'session record events are append-only'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'session record events are append-only'); END;
CREATE TRIGGER sessions_no_delete BEFORE DELETE ON sessions
BEGIN SELECT RAISE(ABORT, 'sessions are never deleted from the record'); END;
CREATE TRIGGER sessions_fixed_columns BEFORE UPDATE OF
    id, {", ".join(SESSION_FIXED_COLUMNS)}, started_at ON sessions
BEGIN SELECT RAISE(ABORT, 'a session''s start columns never change'); END;
CREATE TRIGGER trains_no_delete BEFORE DELETE ON trains
BEGIN SELECT RAISE(ABORT, 'trains are never deleted from the record'); END;
CREATE TRIGGER trains_fixed_columns BEFORE UPDATE OF
    session_id, train_index, planned_onset_us, pulses_planned, intent_at ON trains
BEGIN SELECT RAISE(ABORT, 'a train''s intent columns never change'); END;

PRAGMA user_version = {SCHEMA_VERSION};
"""
