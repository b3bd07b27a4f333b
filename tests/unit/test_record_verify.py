"""verify(): the hash chain's documented form, and that tampering is found where it is."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from stimd.record import SessionRecord
from stimd.record_chain import canonical_content, link_hash

T0 = datetime(2025, 3, 10, 9, 0, tzinfo=UTC)


class SteppingClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now


@pytest.fixture
def record(tmp_path: Path) -> Iterator[SessionRecord]:
    """A record with one completed session of two trains, and one event after it."""
    rec = SessionRecord.open(tmp_path, clock=SteppingClock())
    sid = rec.begin_session(
        patient_ref="P-7", protocol_name="itbs", protocol_digest="c" * 64,
        schedule_digest="d" * 64, motor_threshold={"pct_mso": 50}, operator="tech-bob",
        intensity_pct_mso=40, planned_pulses=60, planned_trains=2, device={"model": "x100"},
    )
    for index in range(2):
        rec.train_intent(sid, index, index * 10_000_000, 30)
        rec.train_result(sid, index, index * 10_000_000 + 40, 30, True)
    rec.end_session(sid, "completed", 60)
    rec.event("state", {"to": "IDLE"})
    yield rec
    rec.close()


def tamper(path: Path, *statements: str) -> None:
    """Edit the file as someone with write access would: lift the triggers, edit, restore."""
    conn = sqlite3.connect(path, isolation_level=None)
    triggers = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'").fetchall()
    for name, _ in triggers:
        conn.execute(f"DROP TRIGGER {name}")
    for statement in statements:
        conn.execute(statement)
    for _, sql in triggers:
        conn.execute(sql)
    conn.close()


def test_an_intact_record_verifies(record: SessionRecord) -> None:
    result = record.verify()
    assert (result.ok, result.rows_checked, result.first_broken_row, result.reason) == (
        True, 7, None, None
    )


def test_the_hash_follows_the_documented_canonical_form(tmp_path: Path) -> None:
    with SessionRecord.open(tmp_path, clock=lambda: datetime(2025, 1, 2, 3, 4, 5, 6, UTC)) as rec:
        rec.event("reset", {"reason": "coil swap ✓", "operator": "tech-bob", "n": [1, 2.5]})
        conn = sqlite3.connect(rec.path)
        data, prev, stored = conn.execute("SELECT data, prev_hash, hash FROM events").fetchone()
        conn.close()
    expected_content = (
        '{"data":{"n":[1,2.5],"operator":"tech-bob","reason":"coil swap ✓"},'
        '"kind":"reset","seq":1,"session_id":null,"ts":"2025-01-02T03:04:05.000006Z"}'
    ).encode()
    assert data == '{"n":[1,2.5],"operator":"tech-bob","reason":"coil swap ✓"}'
    assert prev == "0" * 64
    assert stored == hashlib.sha256(bytes(32) + expected_content).hexdigest()
    assert link_hash(prev, expected_content) == stored


def test_an_altered_event_is_the_first_broken_row(record: SessionRecord) -> None:
    tamper(record.path, "UPDATE events SET data = '{\"to\":\"ARMED\"}' WHERE seq = 7")
    result = record.verify()
    assert (result.ok, result.rows_checked, result.first_broken_row) == (False, 6, 7)
    assert result.reason == "event row 7 was altered: its content does not match its hash"


def test_an_altered_and_rehashed_event_breaks_the_next_link(record: SessionRecord) -> None:
    conn = sqlite3.connect(record.path)
    ts, sid, prev = conn.execute(
        "SELECT ts, session_id, prev_hash FROM events WHERE seq = 3"
    ).fetchone()
    conn.close()
    forged_data = '{"actual_onset_us":40,"ok":true,"pulses_delivered":3,"train_index":0}'
    content = canonical_content(seq=3, ts=ts, session_id=sid, kind="train_result",
                                data_json=forged_data)
    tamper(
        record.path,
        f"UPDATE events SET data = '{forged_data}', hash = '{link_hash(prev, content)}' "
        "WHERE seq = 3",
    )
    result = record.verify()
    assert (result.ok, result.rows_checked, result.first_broken_row) == (False, 3, 4)
    assert result.reason == "event row 4 does not link to row 3's hash"


def test_a_deleted_event_is_reported_as_missing_rows(record: SessionRecord) -> None:
    tamper(record.path, "DELETE FROM events WHERE seq = 4")
    result = record.verify()
    assert (result.ok, result.rows_checked, result.first_broken_row) == (False, 3, 5)
    assert result.reason == "event row 5 follows row 3: rows are missing"


def test_a_sessions_row_that_disagrees_with_the_events(record: SessionRecord) -> None:
    conn = sqlite3.connect(record.path)
    conn.execute("UPDATE sessions SET pulses_delivered = 30, outcome = 'aborted'")
    conn.commit()
    conn.close()
    result = record.verify()
    assert (result.ok, result.rows_checked, result.first_broken_row) == (False, 7, 6)
    assert result.reason == (
        "sessions row 1 outcome is 'aborted' but the events say 'completed'"
    )


def test_a_train_row_that_disagrees_with_the_events(record: SessionRecord) -> None:
    conn = sqlite3.connect(record.path)
    conn.execute("UPDATE trains SET pulses_delivered = 31 WHERE train_index = 1")
    conn.commit()
    conn.close()
    result = record.verify()
    assert (result.ok, result.first_broken_row) == (False, 5)
    assert result.reason == (
        "trains row 1 of session 1 pulses_delivered is 31 but the events say 30"
    )


def test_a_changed_start_column_is_found_even_without_the_trigger(
    record: SessionRecord,
) -> None:
    tamper(record.path, "UPDATE sessions SET intensity_pct_mso = 80")
    result = record.verify()
    assert result.reason == "sessions row 1 intensity_pct_mso is 80 but the events say 40"
    assert result.first_broken_row == 6


def test_removed_triggers_are_reported(record: SessionRecord) -> None:
    conn = sqlite3.connect(record.path)
    conn.execute("DROP TRIGGER events_no_delete")
    conn.close()
    result = record.verify()
    assert (result.ok, result.first_broken_row) == (False, None)
    assert result.reason == "append-only triggers were removed: events_no_delete"


def test_a_session_row_without_events(record: SessionRecord) -> None:
    tamper(record.path, "DELETE FROM trains", "DELETE FROM events WHERE session_id = 1",
           "DELETE FROM events")
    result = record.verify()
    assert (result.ok, result.rows_checked, result.first_broken_row) == (False, 0, None)
    assert result.reason == "sessions row 1 has no session_started event"
