"""Session record: lifecycle, write-ahead, crash recovery, the daily count, input checks."""

from __future__ import annotations

import asyncio
import json
import math
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stimd.record import (
    FILE_NAME,
    PulseCountMismatch,
    RecordError,
    RecordRejected,
    SessionNotFound,
    SessionRecord,
)

T0 = datetime(2025, 3, 10, 9, 0, tzinfo=UTC)


class SteppingClock:
    """A wall clock the test moves; each reading advances a millisecond so rows differ."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now


def session_fields(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "patient_ref": "P-0042",
        "protocol_name": "10hz-dlpfc",
        "protocol_digest": "a" * 64,
        "schedule_digest": "b" * 64,
        "motor_threshold": {"pct_mso": 45, "method": "emg", "measured_at": T0},
        "operator": "tech-alice",
        "intensity_pct_mso": 54,
        "planned_pulses": 120,
        "planned_trains": 3,
        "device": {"model": "rapid2", "serial": "R2-001"},
    }
    fields.update(overrides)
    return fields


@pytest.fixture
def clock() -> SteppingClock:
    return SteppingClock()


@pytest.fixture
def record(tmp_path: Path, clock: SteppingClock) -> Iterator[SessionRecord]:
    rec = SessionRecord.open(tmp_path / "state", clock=clock)
    yield rec
    rec.close()


def other_connection(rec: SessionRecord) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{rec.path}?mode=ro", uri=True)


def test_open_creates_an_owner_only_wal_database(tmp_path: Path) -> None:
    state = tmp_path / "a" / "b"
    with SessionRecord.open(state) as rec:
        assert rec.path == state / FILE_NAME
        assert (rec.path.stat().st_mode & 0o777) == 0o600
        conn = other_connection(rec)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.close()
        own = rec._conn
        assert own.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert own.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert rec.verify().ok


def test_a_full_session_is_recorded_and_verifies(record: SessionRecord) -> None:
    sid = record.begin_session(**session_fields())
    for index in range(3):
        record.train_intent(sid, index, index * 10_000_000, 40)
        record.train_result(sid, index, index * 10_000_000 + 150, 40, True)
    record.event("state", {"from": "RUNNING", "to": "COMPLETED"}, sid)
    record.end_session(sid, "completed", 120)

    row = record.session(sid)
    assert row["outcome"] == "completed"
    assert row["pulses_delivered"] == 120
    assert row["pulses_reported"] == 120
    assert row["pulses_uncertain"] == 0
    assert row["motor_threshold"] == {
        "pct_mso": 45, "method": "emg", "measured_at": T0.isoformat()
    }
    assert row["started_at"] < row["ended_at"]
    assert [t["state"] for t in row["trains"]] == ["delivered"] * 3
    assert [t["actual_onset_us"] for t in row["trains"]] == [150, 10_000_150, 20_000_150]
    kinds = [e["kind"] for e in row["events"]]
    assert kinds[0] == "session_started"
    assert kinds[-2:] == ["state", "session_ended"]
    assert record.sessions() == [{k: v for k, v in row.items() if k not in ("trains", "events")}]
    result = record.verify()
    assert result.ok, result.reason
    assert result.rows_checked == 1 + 6 + 1 + 1


def test_train_intent_is_committed_before_it_returns(record: SessionRecord) -> None:
    sid = record.begin_session(**session_fields())
    record.train_intent(sid, 0, 0, 40)
    conn = other_connection(record)
    state = conn.execute(
        "SELECT state FROM trains WHERE session_id = ? AND train_index = 0", (sid,)
    ).fetchone()
    conn.close()
    assert state == ("intent",)


def test_killed_writer_leaves_an_uncertain_train_that_recovery_closes(tmp_path: Path) -> None:
    """A process killed right after the write-ahead row: the row survived, nothing resumes."""
    state = tmp_path / "state"
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from stimd.record import SessionRecord
        rec = SessionRecord.open(Path({str(state)!r}))
        sid = rec.begin_session(**{session_fields(motor_threshold={"pct_mso": 45})!r})
        rec.train_intent(sid, 0, 0, 40)
        rec.train_result(sid, 0, 90, 40, True)
        rec.train_intent(sid, 1, 10_000_000, 40)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, timeout=60
    )
    assert proc.returncode == -9, proc.stderr.decode()

    with SessionRecord.open(state) as rec:
        assert rec.sessions()[0]["outcome"] == "running"
        interrupted = rec.recover_interrupted()
        assert len(interrupted) == 1
        closed = interrupted[0]
        assert (closed.session_id, closed.pulses_delivered, closed.pulses_uncertain) == (1, 40, 40)
        assert closed.uncertain_trains == (1,)
        row = rec.session(1)
        assert row["outcome"] == "interrupted"
        assert "daemon stopped" in row["end_reason"]
        assert [t["state"] for t in row["trains"]] == ["delivered", "uncertain"]
        assert rec.recover_interrupted() == []
        assert rec.verify().ok


def test_ending_with_a_train_in_flight_marks_it_uncertain(record: SessionRecord) -> None:
    sid = record.begin_session(**session_fields())
    record.train_intent(sid, 0, 0, 40)
    record.train_result(sid, 0, 10, 40, True)
    record.train_intent(sid, 1, 10_000_000, 40)
    record.end_session(sid, "fault", 40, reason="driver: DeviceTimeout while firing")
    row = record.session(sid)
    assert (row["outcome"], row["pulses_delivered"], row["pulses_uncertain"]) == ("fault", 40, 40)
    assert row["end_reason"] == "driver: DeviceTimeout while firing"
    assert row["trains"][1]["state"] == "uncertain"
    assert record.verify().ok


def test_end_reasons_are_free_text_but_bounded(record: SessionRecord) -> None:
    sid = record.begin_session(**session_fields())
    with pytest.raises(RecordRejected) as caught:
        record.end_session(sid, "fault", 0, reason="x" * 10_001)
    assert str(caught.value) == "reason has 10001 characters, above the maximum 10000"
    with pytest.raises(RecordRejected) as caught:
        record.end_session(sid, "fault", 0, reason=42)  # type: ignore[arg-type]
    assert str(caught.value) == "reason must be a string, got int 42"
    record.end_session(sid, "fault", 0, reason="DeviceFault:\n  coil overheated")
    assert record.session(sid)["end_reason"] == "DeviceFault:\n  coil overheated"


def test_a_failed_train_counts_what_the_device_reported(record: SessionRecord) -> None:
    sid = record.begin_session(**session_fields())
    record.train_intent(sid, 0, 0, 40)
    record.train_result(sid, 0, 10, 17, False)
    record.end_session(sid, "fault", 17, reason="pulse count read-back 17 != 40")
    row = record.session(sid)
    assert row["trains"][0]["state"] == "failed"
    assert row["pulses_delivered"] == 17


def test_a_disagreeing_end_count_is_recorded_then_raised(record: SessionRecord) -> None:
    sid = record.begin_session(**session_fields())
    record.train_intent(sid, 0, 0, 40)
    record.train_result(sid, 0, 10, 40, True)
    with pytest.raises(PulseCountMismatch) as caught:
        record.end_session(sid, "aborted", 39)
    assert str(caught.value) == (
        f"session {sid} ended with pulses_delivered=39 from the caller but its train "
        "results add up to 40; both are recorded"
    )
    row = record.session(sid)
    assert (row["outcome"], row["pulses_delivered"], row["pulses_reported"]) == (
        "aborted", 40, 39
    )
    assert record.verify().ok


async def test_calls_work_from_worker_threads(record: SessionRecord) -> None:
    sid = await asyncio.to_thread(lambda: record.begin_session(**session_fields()))
    await asyncio.to_thread(record.train_intent, sid, 0, 0, 40)
    await asyncio.to_thread(record.train_result, sid, 0, 5, 40, True)
    await asyncio.to_thread(record.end_session, sid, "completed", 40)
    assert (await asyncio.to_thread(record.verify)).ok


# --------------------------------------------------------------- order of calls


def test_only_one_session_runs_at_a_time(record: SessionRecord) -> None:
    sid = record.begin_session(**session_fields())
    with pytest.raises(RecordRejected, match=rf"^session {sid} is still running; end it"):
        record.begin_session(**session_fields())


@pytest.mark.parametrize(
    ("call", "reason"),
    [
        (lambda r, s: r.train_intent(s, 3, 0, 40),
         "train_index=3 is beyond the session's planned_trains=3 (indices start at 0)"),
        (lambda r, s: r.train_intent(s, 0, 0, 121),
         "pulses=121 for train 0 would bring session 1 to 121 pulses, above its "
         "planned_pulses=120"),
        (lambda r, s: r.train_result(s, 0, 0, 40, True),
         "train 0 of session 1 has no intent; a result needs an open intent"),
        (lambda r, s: r.end_session(s, "done", 0),
         "outcome='done' is not one of completed, aborted, fault, interrupted"),
        (lambda r, s: r.train_intent(99, 0, 0, 40), "session_id=99 is not in the record"),
    ],
)
def test_calls_out_of_order_are_rejected(
    record: SessionRecord, call: Callable[[SessionRecord, int], None], reason: str
) -> None:
    sid = record.begin_session(**session_fields())
    with pytest.raises(RecordRejected) as caught:
        call(record, sid)
    assert str(caught.value) == reason
    assert record.verify().ok


def test_a_second_intent_needs_the_first_result(record: SessionRecord) -> None:
    sid = record.begin_session(**session_fields())
    record.train_intent(sid, 0, 0, 40)
    with pytest.raises(RecordRejected, match=r"^train 0 of session 1 already has an intent"):
        record.train_intent(sid, 1, 10_000_000, 40)
    with pytest.raises(RecordRejected, match=r"^train 0 of session 1 already has an intent"):
        record.train_intent(sid, 0, 0, 40)
    record.train_result(sid, 0, 3, 40, True)
    with pytest.raises(RecordRejected, match=r"state 'delivered'; a result needs an open"):
        record.train_result(sid, 0, 3, 40, True)


def test_an_ended_session_takes_no_more_writes(record: SessionRecord) -> None:
    sid = record.begin_session(**session_fields())
    record.end_session(sid, "aborted", 0, reason="stop by tech-alice")
    with pytest.raises(RecordRejected, match=r"^session 1 is not running: it ended as 'aborted'"):
        record.train_intent(sid, 0, 0, 40)
    with pytest.raises(RecordRejected, match=r"^session 1 is not running"):
        record.end_session(sid, "aborted", 0)


def test_session_lookup_of_an_unknown_id(record: SessionRecord) -> None:
    with pytest.raises(SessionNotFound, match=r"^session_id=7 is not in the record$"):
        record.session(7)


# ----------------------------------------------------------- absurd input (habit 5)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"intensity_pct_mso": -5}, "intensity_pct_mso=-5 is below the minimum 1"),
        ({"intensity_pct_mso": 101}, "intensity_pct_mso=101 is above the maximum 100"),
        ({"intensity_pct_mso": math.nan}, "intensity_pct_mso must be an integer, got float nan"),
        ({"intensity_pct_mso": True}, "intensity_pct_mso must be an integer, got bool True"),
        ({"intensity_pct_mso": "54"}, "intensity_pct_mso must be an integer, got str '54'"),
        ({"planned_pulses": 0}, "planned_pulses=0 is below the minimum 1"),
        ({"planned_trains": 121}, "planned_trains=121 is above the maximum 120"),
        ({"planned_pulses": 10**30, "planned_trains": -1},
         "planned_trains=-1 is below the minimum 1"),
        ({"patient_ref": "Jane Doe"},
         "patient_ref='Jane Doe' does not match [A-Za-z0-9._:-]{1,64}"),
        ({"patient_ref": ""}, "patient_ref='' does not match [A-Za-z0-9._:-]{1,64}"),
        ({"operator": None}, "operator must be a string, got NoneType None"),
        ({"protocol_name": " "}, "protocol_name=' ' must be 1-200 printable characters, not blank"),
        ({"protocol_digest": "abc"},
         "protocol_digest='abc' does not match [A-Za-z0-9:+/=_-]{8,160}"),
        ({"motor_threshold": {}}, "motor_threshold must be a non-empty JSON object, got {}"),
        ({"motor_threshold": {"pct_mso": math.inf}},
         "motor_threshold is not representable in the record: "
         "pct_mso is inf: NaN and infinity have no JSON form"),
        ({"device": {"opened": object}},
         "device is not representable in the record: type value <class 'object'> is not JSON"),
        ({"motor_threshold": {"measured_at": datetime(2025, 1, 1)}},
         "motor_threshold is not representable in the record: "
         "datetime 2025-01-01T00:00:00 has no UTC offset"),
    ],
)
def test_begin_session_rejects_absurd_values(
    record: SessionRecord, overrides: dict[str, Any], reason: str
) -> None:
    with pytest.raises(RecordRejected) as caught:
        record.begin_session(**session_fields(**overrides))
    assert str(caught.value) == reason
    assert record.sessions() == []


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ((-1, 0, 40), "train_index=-1 is below the minimum 0"),
        ((0, -1, 40), "planned_onset_us=-1 is below the minimum 0"),
        ((0, 0.5, 40), "planned_onset_us must be an integer, got float 0.5"),
        ((0, 0, 0), "pulses=0 is below the minimum 1"),
        ((0, 0, math.nan), "pulses must be an integer, got float nan"),
    ],
)
def test_train_intent_rejects_absurd_values(
    record: SessionRecord, args: tuple[Any, ...], reason: str
) -> None:
    sid = record.begin_session(**session_fields())
    with pytest.raises(RecordRejected) as caught:
        record.train_intent(sid, *args)
    assert str(caught.value) == reason


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ((0, 0, -1, True), "pulses_delivered=-1 is below the minimum 0"),
        ((0, -7, 40, True), "actual_onset_us=-7 is below the minimum 0"),
        ((0, 0, 40, 1), "ok must be a bool, got int 1"),
    ],
)
def test_train_result_rejects_absurd_values(
    record: SessionRecord, args: tuple[Any, ...], reason: str
) -> None:
    sid = record.begin_session(**session_fields())
    record.train_intent(sid, 0, 0, 40)
    with pytest.raises(RecordRejected) as caught:
        record.train_result(sid, *args)
    assert str(caught.value) == reason


@pytest.mark.parametrize(
    ("kind", "data", "reason"),
    [
        ("train_result", {}, "kind='train_result' is written by the record itself; reserved: "
         "session_ended, session_started, train_intent, train_result, train_uncertain"),
        ("Trip!", {}, "kind='Trip!' does not match [a-z][a-z0-9_.]{0,63}"),
        ("trip", {"t": [1.0, -math.inf]}, "event 'trip' data is not representable: "
         "t[1] is -inf: NaN and infinity have no JSON form"),
        ("trip", [1], "data must be a JSON object, got list"),
    ],
)
def test_event_rejects_reserved_kinds_and_non_json(
    record: SessionRecord, kind: str, data: Any, reason: str
) -> None:
    with pytest.raises(RecordRejected) as caught:
        record.event(kind, data)
    assert str(caught.value) == reason
    assert record.verify().rows_checked == 0


def test_events_keep_session_free_entries_and_enums(record: SessionRecord) -> None:
    record.event("reset", {"operator": "tech-bob", "reason": "coil replaced"})
    record.event("command", {"verb": "arm", "at": T0, "ids": (1, 2)})
    result = record.verify()
    assert (result.ok, result.rows_checked) == (True, 2)


# ------------------------------------------------------------------ daily count


def test_pulses_today_counts_by_calendar_day_in_the_callers_zone(
    tmp_path: Path,
) -> None:
    clock = SteppingClock(datetime(2025, 3, 10, 22, 30, tzinfo=UTC))
    with SessionRecord.open(tmp_path, clock=clock) as rec:
        sid = rec.begin_session(**session_fields())
        rec.train_intent(sid, 0, 0, 40)           # 22:30 UTC on the 10th
        rec.train_result(sid, 0, 5, 38, False)
        clock.now = datetime(2025, 3, 11, 0, 30, tzinfo=UTC)
        rec.train_intent(sid, 1, 0, 40)           # 00:30 UTC on the 11th
        rec.train_result(sid, 1, 5, 40, True)
        clock.now = datetime(2025, 3, 11, 1, 0, tzinfo=UTC)
        rec.train_intent(sid, 2, 0, 40)           # uncertain: counted as planned
        rec.end_session(sid, "interrupted", 78)

        other = rec.begin_session(**session_fields(patient_ref="P-0099"))
        rec.train_intent(other, 0, 0, 40)

        utc_day_11 = datetime(2025, 3, 11, 12, 0, tzinfo=UTC)
        assert rec.pulses_today("P-0042", now=utc_day_11) == 80
        assert rec.pulses_today("P-0042", now=datetime(2025, 3, 10, 23, 59, tzinfo=UTC)) == 38
        # UTC-3: all three trains fall on the 10th local time.
        minus3 = timezone(timedelta(hours=-3))
        assert rec.pulses_today("P-0042", now=datetime(2025, 3, 10, 23, 0, tzinfo=minus3)) == 118
        assert rec.pulses_today("P-0042", now=datetime(2025, 3, 12, 9, 0, tzinfo=UTC)) == 0
        assert rec.pulses_today("P-0099", now=utc_day_11) == 40
        assert rec.pulses_today("P-0100", now=utc_day_11) == 0


@pytest.mark.parametrize(
    ("patient", "now", "reason"),
    [
        ("P-1", datetime(2025, 3, 10), "now=datetime.datetime(2025, 3, 10, 0, 0) must be a "
         "datetime with a time zone"),
        ("P-1", "today", "now='today' must be a datetime with a time zone"),
        ("Jane Doe", T0, "patient_ref='Jane Doe' does not match [A-Za-z0-9._:-]{1,64}"),
    ],
)
def test_pulses_today_rejects_absurd_input(
    record: SessionRecord, patient: Any, now: Any, reason: str
) -> None:
    with pytest.raises(RecordRejected) as caught:
        record.pulses_today(patient, now=now)
    assert str(caught.value) == reason


# ------------------------------------------------------------ append-only schema


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("UPDATE events SET kind = 'x'", "session record events are append-only"),
        ("DELETE FROM events", "session record events are append-only"),
        ("DELETE FROM sessions", "sessions are never deleted from the record"),
        ("UPDATE sessions SET patient_ref = 'P-1'", "a session's start columns never change"),
        ("UPDATE trains SET pulses_planned = 1", "a train's intent columns never change"),
        ("DELETE FROM trains", "trains are never deleted from the record"),
    ],
)
def test_triggers_refuse_edits(record: SessionRecord, sql: str, message: str) -> None:
    sid = record.begin_session(**session_fields())
    record.train_intent(sid, 0, 0, 40)
    conn = sqlite3.connect(record.path)
    with pytest.raises(sqlite3.IntegrityError, match=f"^{message}$"):
        conn.execute(sql)
    conn.close()


# ---------------------------------------------------------------- property test

train_step = st.tuples(
    st.integers(min_value=1, max_value=50),   # planned pulses
    st.integers(min_value=0, max_value=60),   # delivered
    st.booleans(),                            # ok
    st.booleans(),                            # result written (False: left in flight)
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    steps=st.lists(train_step, min_size=0, max_size=6),
    outcome=st.sampled_from(["completed", "aborted", "fault", "interrupted"]),
    crash=st.booleans(),
)
def test_counts_and_chain_hold_for_any_train_history(
    tmp_path_factory: pytest.TempPathFactory,
    steps: list[tuple[int, int, bool, bool]],
    outcome: str,
    crash: bool,
) -> None:
    state = tmp_path_factory.mktemp("prop")
    planned = sum(p for p, *_ in steps) or 1
    delivered = uncertain = 0
    with SessionRecord.open(state, clock=SteppingClock()) as rec:
        sid = rec.begin_session(
            **session_fields(planned_pulses=planned, planned_trains=max(len(steps), 1))
        )
        for index, (pulses, got, ok, has_result) in enumerate(steps):
            rec.train_intent(sid, index, index * 1000, pulses)
            if not has_result:
                uncertain += pulses
                break
            rec.train_result(sid, index, index * 1000 + 1, got, ok)
            delivered += got
        if crash:
            rec.recover_interrupted()
        else:
            rec.end_session(sid, outcome, delivered)
        row = rec.session(sid)
        assert row["pulses_delivered"] == delivered
        assert row["pulses_uncertain"] == uncertain
        assert row["outcome"] == ("interrupted" if crash else outcome)
        assert rec.pulses_today("P-0042", now=T0) == delivered + uncertain
        result = rec.verify()
        assert result.ok, result.reason
        exported = json.loads(json.dumps(rec.sessions()))
        assert exported[0]["id"] == sid


def test_closing_is_idempotent_and_final(tmp_path: Path) -> None:
    rec = SessionRecord.open(tmp_path)
    rec.close()
    rec.close()
    with pytest.raises(RecordError, match="the record is closed"):
        rec.event("x", {})
    assert os.path.exists(tmp_path / FILE_NAME)
