"""The durable session record: what was planned, what was about to fire, what fired.

This is the evidence a clinic keeps about each treatment, and the daemon's memory across
a crash. Every write is one SQLite transaction in WAL mode with ``synchronous=FULL``, so
it is on disk (fsync) when the call returns: the daemon writes a train's intent before the
fire command leaves, so after a crash the record can say which train may have fired.

Each call appends one or more rows to the hash-chained ``events`` table in the same
transaction as the ``sessions``/``trains`` rows it changes; ``verify`` replays the events
and checks the tables agree. The API is synchronous and thread-safe (one lock around one
connection) so the daemon may call it directly or through ``asyncio.to_thread``.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any, Self

from stimd.record_chain import (
    GENESIS_HASH,
    CanonicalFormError,
    canonical_content,
    canonical_json,
    format_timestamp,
    link_hash,
)
from stimd.record_schema import (
    DDL,
    END_OUTCOMES,
    EV_SESSION_ENDED,
    EV_SESSION_STARTED,
    EV_TRAIN_INTENT,
    EV_TRAIN_RESULT,
    EV_TRAIN_UNCERTAIN,
    FILE_NAME,
    JSON_COLUMNS,
    RESERVED_KINDS,
    RUNNING,
    SCHEMA_VERSION,
    SESSION_FIXED_COLUMNS,
    TRAIN_DELIVERED,
    TRAIN_FAILED,
    TRAIN_INTENT,
    TRAIN_UNCERTAIN,
)
from stimd.record_verify import VerifyResult, verify_connection

__all__ = [
    "FILE_NAME",
    "InterruptedSession",
    "PulseCountMismatch",
    "RecordError",
    "RecordRejected",
    "SessionNotFound",
    "SessionRecord",
    "VerifyResult",
]

# How long a write waits for another connection's lock before it is reported: long
# enough for a concurrent `stimd history` read, short enough that the daemon trips
# promptly instead of stalling before a train.
_BUSY_TIMEOUT_MS = 2000

_PATIENT_REF = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_OPERATOR = re.compile(r"[A-Za-z0-9._@:-]{1,64}")
_DIGEST = re.compile(r"[A-Za-z0-9:+/=_-]{8,160}")
_EVENT_KIND = re.compile(r"[a-z][a-z0-9_.]{0,63}")
_MAX_TEXT = 200
_MAX_REASON = 10_000


class RecordError(Exception):
    """The record cannot be written or read: read-only, disk full, corrupt, locked, …

    The daemon starts no stimulation when this is raised and stops a running one.
    """


class RecordRejected(RecordError):
    """The call was refused before anything was written: an invalid value or a call that
    does not fit the session's state (the message names the key, the value and the rule)."""


class SessionNotFound(RecordRejected):
    """No session with that id is in the record."""


class PulseCountMismatch(RecordError):
    """``end_session`` was told a pulse count other than the trains' results add up to.

    Raised after the session has been closed (both counts are in the record), so that
    the caller latches the disagreement instead of it passing unnoticed.
    """


@dataclass(frozen=True, slots=True)
class InterruptedSession:
    """A session found running at open and closed as interrupted (never resumed)."""

    session_id: int
    protocol_name: str
    operator: str
    started_at: str
    pulses_delivered: int
    pulses_uncertain: int
    uncertain_trains: tuple[int, ...]


def _now_utc() -> datetime:
    return datetime.now(UTC)


def _sqlite_reason(exc: sqlite3.Error) -> str:
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    reasons = {
        sqlite3.SQLITE_FULL: "the disk is full (or the record reached its size limit)",
        sqlite3.SQLITE_READONLY: "the record is read-only (read-only directory, file or disk)",
        sqlite3.SQLITE_CANTOPEN: "the database file cannot be opened or created "
        "(missing or read-only directory?)",
        sqlite3.SQLITE_BUSY: "another process holds the record's write lock",
        sqlite3.SQLITE_LOCKED: "another process holds the record's write lock",
        sqlite3.SQLITE_IOERR: "the disk reported an I/O error",
        sqlite3.SQLITE_CORRUPT: "the record file is corrupt",
        sqlite3.SQLITE_NOTADB: "the file is not an SQLite database",
    }
    known = reasons.get(primary) if primary is not None else None
    return f"{known} [{exc}]" if known else f"SQLite error: {exc}"


def _check_int(key: str, value: object, minimum: int, maximum: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise RecordRejected(f"{key} must be an integer, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise RecordRejected(f"{key}={value} is below the minimum {minimum}")
    if maximum is not None and value > maximum:
        raise RecordRejected(f"{key}={value} is above the maximum {maximum}")
    return value


def _check_text(key: str, value: object, pattern: re.Pattern[str] | None = None) -> str:
    if not isinstance(value, str):
        raise RecordRejected(f"{key} must be a string, got {type(value).__name__} {value!r}")
    if pattern is not None and not pattern.fullmatch(value):
        raise RecordRejected(f"{key}={value!r} does not match {pattern.pattern}")
    if not value.strip() or len(value) > _MAX_TEXT or not value.isprintable():
        raise RecordRejected(
            f"{key}={value!r} must be 1-{_MAX_TEXT} printable characters, not blank"
        )
    return value


def _check_mapping(key: str, value: object) -> str:
    if not isinstance(value, Mapping) or not value:
        raise RecordRejected(f"{key} must be a non-empty JSON object, got {value!r}")
    try:
        return canonical_json(value)
    except CanonicalFormError as exc:
        raise RecordRejected(f"{key} is not representable in the record: {exc}") from exc


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SessionRecord:
    """One device's session record in ``state_dir/record.sqlite3``. Build with ``open``."""

    def __init__(
        self,
        connection: sqlite3.Connection,
        path: Path,
        *,
        clock: Callable[[], datetime],
        read_only: bool,
    ) -> None:
        self._conn = connection
        self._conn.row_factory = sqlite3.Row
        self.path = path
        self._clock = clock
        self._read_only = read_only
        self._lock = threading.RLock()
        self._closed = False

    # ----------------------------------------------------------------- opening

    @classmethod
    def open(
        cls,
        state_dir: Path,
        *,
        read_only: bool = False,
        clock: Callable[[], datetime] | None = None,
    ) -> Self:
        """Open (creating if needed) the record and prove it can be written.

        ``read_only`` is for history and verification: nothing is created or changed,
        and a missing record is an error. ``clock`` must return aware datetimes.
        """
        path = Path(state_dir) / FILE_NAME
        connection = cls._read_only_connection(path) if read_only else cls._connection(path)
        record = cls(connection, path, clock=clock or _now_utc, read_only=read_only)
        try:
            record._check_schema(create=not read_only)
            if not read_only:
                record._probe_write()
                _fsync_directory(path.parent)
        except BaseException:
            record.close()
            raise
        return record

    @staticmethod
    def _connection(path: Path) -> sqlite3.Connection:
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
            if not path.exists():
                # Patient references live here: owner-only from the first byte (SQLite
                # gives its -wal and -shm files the same mode).
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except OSError as exc:
            raise RecordError(f"cannot create the session record {path}: {exc}") from exc
        try:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise RecordError(f"cannot open {path}: {_sqlite_reason(exc)}") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise RecordError(f"{path}: SQLite refused WAL mode (got {mode!r})")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            settings = (
                conn.execute("PRAGMA synchronous").fetchone()[0],
                conn.execute("PRAGMA foreign_keys").fetchone()[0],
            )
            if settings != (2, 1):
                raise RecordError(f"{path}: synchronous/foreign_keys not applied: {settings}")
        except sqlite3.Error as exc:
            conn.close()
            raise RecordError(f"cannot open {path}: {_sqlite_reason(exc)}") from exc
        except RecordError:
            conn.close()
            raise
        return conn

    @staticmethod
    def _read_only_connection(path: Path) -> sqlite3.Connection:
        if not path.is_file():
            raise RecordError(f"no session record at {path}")
        uri = f"file:{urllib.parse.quote(str(path.resolve()))}?mode=ro"
        try:
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        except sqlite3.Error as exc:
            raise RecordError(f"cannot open {path}: {_sqlite_reason(exc)}") from exc
        return conn

    def _check_schema(self, *, create: bool) -> None:
        with self._lock:
            try:
                version = int(self._conn.execute("PRAGMA user_version").fetchone()[0])
                if version == 0 and create:
                    tables = self._conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
                    if tables[0]:
                        raise RecordError(f"{self.path} is an SQLite file but not a record")
                    self._conn.executescript(f"BEGIN IMMEDIATE;\n{DDL}\nCOMMIT;")
                    version = SCHEMA_VERSION
            except sqlite3.Error as exc:
                with suppress(sqlite3.Error):
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                raise RecordError(f"cannot use {self.path}: {_sqlite_reason(exc)}") from exc
        if version != SCHEMA_VERSION:
            raise RecordError(
                f"{self.path} has record schema version {version}; "
                f"this stimd reads version {SCHEMA_VERSION}"
            )

    def _probe_write(self) -> None:
        with self._write("prove the record is writable") as conn:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('last_opened_at', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (self._timestamp(),),
            )

    # -------------------------------------------------------------- plumbing

    def _timestamp(self) -> str:
        try:
            return format_timestamp(self._clock())
        except CanonicalFormError as exc:
            raise RecordError(f"the record's clock is unusable: {exc}") from exc

    @contextmanager
    def _write(self, what: str) -> Iterator[sqlite3.Connection]:
        """One durable transaction; any failure rolls it back and becomes RecordError."""
        if self._read_only:
            raise RecordError(f"cannot {what}: the record was opened read-only")
        with self._lock:
            if self._closed:
                raise RecordError(f"cannot {what}: the record is closed")
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException as exc:
                with suppress(sqlite3.Error):
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise RecordError(f"cannot {what}: {_sqlite_reason(exc)}") from exc
                raise

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._closed:
                raise RecordError("cannot read: the record is closed")
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise RecordError(f"cannot read {self.path}: {_sqlite_reason(exc)}") from exc

    def _append(
        self,
        conn: sqlite3.Connection,
        kind: str,
        data: Mapping[str, Any],
        session_id: int | None,
        ts: str | None = None,
    ) -> str:
        """Append one chained event inside the caller's transaction; returns its timestamp."""
        try:
            data_json = canonical_json(data)
        except CanonicalFormError as exc:
            raise RecordRejected(f"event {kind!r} data is not representable: {exc}") from exc
        head = conn.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev_hash = (head[0] + 1, head[1]) if head else (1, GENESIS_HASH)
        ts = ts or self._timestamp()
        content = canonical_content(
            seq=seq, ts=ts, session_id=session_id, kind=kind, data_json=data_json
        )
        conn.execute(
            "INSERT INTO events (seq, ts, session_id, kind, data, prev_hash, hash) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (seq, ts, session_id, kind, data_json, prev_hash, link_hash(prev_hash, content)),
        )
        return ts

    @staticmethod
    def _session_row(conn: sqlite3.Connection, session_id: object) -> sqlite3.Row:
        sid = _check_int("session_id", session_id, 1)
        row: sqlite3.Row | None = conn.execute(
            "SELECT * FROM sessions WHERE id = ?", (sid,)
        ).fetchone()
        if row is None:
            raise SessionNotFound(f"session_id={sid} is not in the record")
        return row

    def _running_row(self, conn: sqlite3.Connection, session_id: object) -> sqlite3.Row:
        row = self._session_row(conn, session_id)
        if row["outcome"] != RUNNING:
            raise RecordRejected(
                f"session {row['id']} is not running: it ended as {row['outcome']!r}"
            )
        return row

    # ------------------------------------------------------------- sessions

    def recover_interrupted(self) -> list[InterruptedSession]:
        """Close every session left running by a previous daemon as ``interrupted``.

        Trains with an intent and no result become ``uncertain`` (they may have fired);
        the session keeps the count its train results prove. Nothing is resumed.
        """
        closed: list[InterruptedSession] = []
        with self._write("close interrupted sessions") as conn:
            running = conn.execute(
                "SELECT * FROM sessions WHERE outcome = ? ORDER BY id", (RUNNING,)
            ).fetchall()
            for row in running:
                uncertain = self._close(
                    conn, row, "interrupted",
                    "the daemon stopped while the session was running; closed at the next start",
                    pulses_reported=None,
                )
                delivered, uncertain_pulses = self._counts(conn, row["id"])
                closed.append(
                    InterruptedSession(
                        session_id=row["id"], protocol_name=row["protocol_name"],
                        operator=row["operator"], started_at=row["started_at"],
                        pulses_delivered=delivered, pulses_uncertain=uncertain_pulses,
                        uncertain_trains=uncertain,
                    )
                )
        return closed

    def begin_session(
        self,
        *,
        patient_ref: str,
        protocol_name: str,
        protocol_digest: str,
        schedule_digest: str,
        motor_threshold: dict[str, Any],
        operator: str,
        intensity_pct_mso: int,
        planned_pulses: int,
        planned_trains: int,
        device: dict[str, Any],
    ) -> int:
        """Record the start of a session (before the device is armed); returns its id."""
        planned = _check_int("planned_pulses", planned_pulses, 1)
        fixed: dict[str, Any] = {
            "patient_ref": _check_text("patient_ref", patient_ref, _PATIENT_REF),
            "protocol_name": _check_text("protocol_name", protocol_name),
            "protocol_digest": _check_text("protocol_digest", protocol_digest, _DIGEST),
            "schedule_digest": _check_text("schedule_digest", schedule_digest, _DIGEST),
            "motor_threshold": motor_threshold,
            "operator": _check_text("operator", operator, _OPERATOR),
            "intensity_pct_mso": _check_int("intensity_pct_mso", intensity_pct_mso, 1, 100),
            "planned_pulses": planned,
            "planned_trains": _check_int("planned_trains", planned_trains, 1, planned),
            "device": device,
        }
        columns = {
            key: (_check_mapping(key, value) if key in JSON_COLUMNS else value)
            for key, value in fixed.items()
        }
        event_data = {key: json.loads(columns[key]) if key in JSON_COLUMNS else value
                      for key, value in fixed.items()}
        with self._write("begin a session") as conn:
            open_row = conn.execute(
                "SELECT id FROM sessions WHERE outcome = ?", (RUNNING,)
            ).fetchone()
            if open_row is not None:
                raise RecordRejected(
                    f"session {open_row[0]} is still running; end it (or recover it) first"
                )
            ts = self._timestamp()
            names = [*SESSION_FIXED_COLUMNS, "started_at", "outcome"]
            values = [*(columns[name] for name in SESSION_FIXED_COLUMNS), ts, RUNNING]
            cursor = conn.execute(
                f"INSERT INTO sessions ({', '.join(names)}) "
                f"VALUES ({', '.join('?' for _ in names)})",
                values,
            )
            sid = cursor.lastrowid
            if sid is None:
                raise RecordError("SQLite did not assign a session id")
            self._append(conn, EV_SESSION_STARTED, event_data, sid, ts=ts)
        return sid

    def train_intent(
        self, session_id: int, train_index: int, planned_onset_us: int, pulses: int
    ) -> None:
        """WRITE-AHEAD: durable on disk before the fire command for this train leaves.

        Refused if the previous train has no result yet, or if the session's intended
        pulses would exceed what it planned: the record is one more check on the count.
        """
        index = _check_int("train_index", train_index, 0)
        onset = _check_int("planned_onset_us", planned_onset_us, 0)
        count = _check_int("pulses", pulses, 1)
        with self._write(f"record the intent of train {index}") as conn:
            row = self._running_row(conn, session_id)
            if index >= row["planned_trains"]:
                raise RecordRejected(
                    f"train_index={index} is beyond the session's planned_trains="
                    f"{row['planned_trains']} (indices start at 0)"
                )
            existing = conn.execute(
                "SELECT train_index, state FROM trains WHERE session_id = ? "
                "AND (train_index = ? OR state = ?)",
                (row["id"], index, TRAIN_INTENT),
            ).fetchone()
            if existing is not None:
                raise RecordRejected(
                    f"train {existing[0]} of session {row['id']} already has an intent "
                    f"({existing[1]}); one intent per train, each closed by its result"
                )
            intended = conn.execute(
                "SELECT coalesce(sum(pulses_planned), 0) FROM trains WHERE session_id = ?",
                (row["id"],),
            ).fetchone()[0]
            if intended + count > row["planned_pulses"]:
                raise RecordRejected(
                    f"pulses={count} for train {index} would bring session {row['id']} to "
                    f"{intended + count} pulses, above its planned_pulses={row['planned_pulses']}"
                )
            data = {"train_index": index, "planned_onset_us": onset, "pulses": count}
            ts = self._append(conn, EV_TRAIN_INTENT, data, row["id"])
            conn.execute(
                "INSERT INTO trains (session_id, train_index, planned_onset_us, "
                "pulses_planned, intent_at, state) VALUES (?, ?, ?, ?, ?, ?)",
                (row["id"], index, onset, count, ts, TRAIN_INTENT),
            )

    def train_result(
        self,
        session_id: int,
        train_index: int,
        actual_onset_us: int,
        pulses_delivered: int,
        ok: bool,
    ) -> None:
        """Close a train's intent with what the device reports it delivered.

        The count is recorded as reported, even above the train's plan: the record keeps
        the truth and the daemon's read-back check decides what that means.
        """
        index = _check_int("train_index", train_index, 0)
        onset = _check_int("actual_onset_us", actual_onset_us, 0)
        delivered = _check_int("pulses_delivered", pulses_delivered, 0)
        if not isinstance(ok, bool):
            raise RecordRejected(f"ok must be a bool, got {type(ok).__name__} {ok!r}")
        with self._write(f"record the result of train {index}") as conn:
            row = self._running_row(conn, session_id)
            train = conn.execute(
                "SELECT state FROM trains WHERE session_id = ? AND train_index = ?",
                (row["id"], index),
            ).fetchone()
            if train is None or train[0] != TRAIN_INTENT:
                state = "no intent" if train is None else f"state {train[0]!r}"
                raise RecordRejected(
                    f"train {index} of session {row['id']} has {state}; a result needs an "
                    "open intent"
                )
            data = {
                "train_index": index, "actual_onset_us": onset,
                "pulses_delivered": delivered, "ok": ok,
            }
            ts = self._append(conn, EV_TRAIN_RESULT, data, row["id"])
            conn.execute(
                "UPDATE trains SET state = ?, actual_onset_us = ?, pulses_delivered = ?, "
                "result_at = ? WHERE session_id = ? AND train_index = ?",
                (TRAIN_DELIVERED if ok else TRAIN_FAILED, onset, delivered, ts, row["id"], index),
            )
            conn.execute(
                "UPDATE sessions SET pulses_delivered = pulses_delivered + ? WHERE id = ?",
                (delivered, row["id"]),
            )

    def event(self, kind: str, data: dict[str, Any], session_id: int | None = None) -> None:
        """Append any other event (state change, trip and cause, reset and reason, command)."""
        _check_text("kind", kind, _EVENT_KIND)
        if kind in RESERVED_KINDS:
            raise RecordRejected(
                f"kind={kind!r} is written by the record itself; reserved: "
                f"{', '.join(sorted(RESERVED_KINDS))}"
            )
        if not isinstance(data, Mapping):
            raise RecordRejected(f"data must be a JSON object, got {type(data).__name__}")
        with self._write(f"record event {kind!r}") as conn:
            sid = None if session_id is None else self._session_row(conn, session_id)["id"]
            self._append(conn, kind, data, sid)

    def end_session(
        self,
        session_id: int,
        outcome: str,
        pulses_delivered: int,
        reason: str | None = None,
    ) -> None:
        """Close a running session. Trains still waiting for a result become uncertain.

        The session's count is what its train results add up to; ``pulses_delivered`` is
        the caller's own count, kept beside it. If they differ the session is still
        closed, then ``PulseCountMismatch`` is raised.
        """
        if outcome not in END_OUTCOMES:
            raise RecordRejected(f"outcome={outcome!r} is not one of {', '.join(END_OUTCOMES)}")
        reported = _check_int("pulses_delivered", pulses_delivered, 0)
        # Free text (trip messages span lines); only a non-string or a runaway length is
        # refused, since a refused end leaves the session open until the next recovery.
        if reason is not None and not isinstance(reason, str):
            raise RecordRejected(f"reason must be a string, got {type(reason).__name__} {reason!r}")
        if reason is not None and len(reason) > _MAX_REASON:
            raise RecordRejected(
                f"reason has {len(reason)} characters, above the maximum {_MAX_REASON}"
            )
        with self._write(f"end session {session_id}") as conn:
            row = self._running_row(conn, session_id)
            self._close(conn, row, outcome, reason, pulses_reported=reported)
            recorded, _ = self._counts(conn, row["id"])
        if recorded != reported:
            raise PulseCountMismatch(
                f"session {row['id']} ended with pulses_delivered={reported} from the caller "
                f"but its train results add up to {recorded}; both are recorded"
            )

    def _close(
        self,
        conn: sqlite3.Connection,
        row: sqlite3.Row,
        outcome: str,
        reason: str | None,
        *,
        pulses_reported: int | None,
    ) -> tuple[int, ...]:
        sid = row["id"]
        open_trains = [
            int(r[0]) for r in conn.execute(
                "SELECT train_index FROM trains WHERE session_id = ? AND state = ? "
                "ORDER BY train_index", (sid, TRAIN_INTENT),
            )
        ]
        for index in open_trains:
            self._append(conn, EV_TRAIN_UNCERTAIN, {"train_index": index}, sid)
            conn.execute(
                "UPDATE trains SET state = ? WHERE session_id = ? AND train_index = ?",
                (TRAIN_UNCERTAIN, sid, index),
            )
        delivered, uncertain = self._counts(conn, sid)
        data = {
            "outcome": outcome, "reason": reason, "pulses_delivered": delivered,
            "pulses_uncertain": uncertain, "pulses_reported": pulses_reported,
        }
        ts = self._append(conn, EV_SESSION_ENDED, data, sid)
        conn.execute(
            "UPDATE sessions SET ended_at = ?, outcome = ?, end_reason = ?, "
            "pulses_delivered = ?, pulses_uncertain = ?, pulses_reported = ? WHERE id = ?",
            (ts, outcome, reason, delivered, uncertain, pulses_reported, sid),
        )
        return tuple(open_trains)

    @staticmethod
    def _counts(conn: sqlite3.Connection, session_id: int) -> tuple[int, int]:
        """(pulses proven by train results, pulses of trains that may or may not have fired)."""
        delivered, uncertain = conn.execute(
            "SELECT coalesce(sum(CASE WHEN state IN (?, ?) THEN pulses_delivered END), 0), "
            "coalesce(sum(CASE WHEN state IN (?, ?) THEN pulses_planned END), 0) "
            "FROM trains WHERE session_id = ?",
            (TRAIN_DELIVERED, TRAIN_FAILED, TRAIN_INTENT, TRAIN_UNCERTAIN, session_id),
        ).fetchone()
        return int(delivered), int(uncertain)

    # ----------------------------------------------------------------- reads

    def pulses_today(self, patient_ref: str, *, now: datetime) -> int:
        """Pulses this patient received on ``now``'s calendar day, in ``now``'s time zone.

        Counts by train intent time; a train without a result (firing now, or uncertain
        after a crash) counts with its planned pulses, so the budget errs on the safe side.
        """
        _check_text("patient_ref", patient_ref, _PATIENT_REF)
        if not isinstance(now, datetime) or now.tzinfo is None or now.utcoffset() is None:
            raise RecordRejected(f"now={now!r} must be a datetime with a time zone")
        day_start = datetime.combine(now.date(), time(0), tzinfo=now.tzinfo)
        next_day = datetime.combine(now.date() + timedelta(days=1), time(0), tzinfo=now.tzinfo)
        with self._read() as conn:
            total = conn.execute(
                "SELECT coalesce(sum(CASE WHEN t.state IN (?, ?) THEN t.pulses_delivered "
                "ELSE t.pulses_planned END), 0) FROM trains t JOIN sessions s "
                "ON s.id = t.session_id WHERE s.patient_ref = ? "
                "AND t.intent_at >= ? AND t.intent_at < ?",
                (TRAIN_DELIVERED, TRAIN_FAILED, patient_ref,
                 format_timestamp(day_start), format_timestamp(next_day)),
            ).fetchone()[0]
        return int(total)

    @staticmethod
    def _session_dict(row: sqlite3.Row) -> dict[str, Any]:
        return {
            key: json.loads(value) if key in JSON_COLUMNS else value
            for key, value in dict(row).items()
        }

    def sessions(self) -> list[dict[str, Any]]:
        """Every session, oldest first, as plain JSON-ready dicts (history, export)."""
        with self._read() as conn:
            rows = conn.execute("SELECT * FROM sessions ORDER BY id").fetchall()
        return [self._session_dict(row) for row in rows]

    def session(self, session_id: int) -> dict[str, Any]:
        """One session with its ``trains`` rows and its other ``events``."""
        with self._read() as conn:
            row = self._session_row(conn, session_id)
            trains = conn.execute(
                "SELECT train_index, planned_onset_us, pulses_planned, intent_at, state, "
                "actual_onset_us, pulses_delivered, result_at FROM trains "
                "WHERE session_id = ? ORDER BY train_index",
                (row["id"],),
            ).fetchall()
            events = conn.execute(
                "SELECT seq, ts, kind, data FROM events WHERE session_id = ? ORDER BY seq",
                (row["id"],),
            ).fetchall()
        result = self._session_dict(row)
        result["trains"] = [dict(train) for train in trains]
        result["events"] = [
            {"seq": e["seq"], "ts": e["ts"], "kind": e["kind"], "data": json.loads(e["data"])}
            for e in events
        ]
        return result

    def verify(self) -> VerifyResult:
        """Check the hash chain and that sessions and trains agree with it."""
        with self._read() as conn:
            return verify_connection(conn)

    def close(self) -> None:
        """Close the connection (idempotent); SQLite checkpoints the WAL on the way out."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
