"""The record refuses loudly when it cannot write: read-only, full, locked, foreign files.

Read-only and full file systems are real here: a read-only bind mount and a tiny tmpfs
when the tests run as root (mount needs it), a read-only mode bit otherwise (root ignores
mode bits, so that variant cannot be used as root). ``PRAGMA max_page_count`` gives a
"full" record everywhere.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from stimd.record import FILE_NAME, RecordError, SessionRecord

IS_ROOT = os.geteuid() == 0


def _run(*args: str) -> bool:
    return subprocess.run(args, check=False, capture_output=True, timeout=30).returncode == 0


@contextmanager
def read_only(directory: Path) -> Iterator[None]:
    """Make ``directory`` (and, as root, everything in it) unwritable for the duration."""
    if not IS_ROOT:
        directory.chmod(0o555)
        try:
            yield
        finally:
            directory.chmod(0o755)
        return
    if not _run("mount", "--bind", str(directory), str(directory)):
        pytest.skip("running as root without permission to mount")
    try:
        if not _run("mount", "-o", "remount,bind,ro", str(directory)):
            pytest.skip("cannot remount a bind mount read-only here")
        yield
    finally:
        _run("umount", str(directory))


@contextmanager
def tiny_filesystem(directory: Path, size: str) -> Iterator[None]:
    if not IS_ROOT or not _run("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                               str(directory)):
        pytest.skip("a tiny tmpfs needs root and mount permission")
    try:
        yield
    finally:
        _run("umount", str(directory))


def begin(rec: SessionRecord) -> int:
    return rec.begin_session(
        patient_ref="P-1", protocol_name="1hz", protocol_digest="e" * 64,
        schedule_digest="f" * 64, motor_threshold={"pct_mso": 50}, operator="tech-alice",
        intensity_pct_mso=50, planned_pulses=1000, planned_trains=100, device={"model": "x"},
    )


def test_a_read_only_directory_refuses_a_new_record(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    with read_only(state), pytest.raises(RecordError) as caught:
        SessionRecord.open(state)
    message = str(caught.value)
    assert message.startswith(f"cannot create the session record {state / FILE_NAME}: ")
    assert ("Read-only file system" in message) or ("Permission denied" in message)


def test_an_existing_record_on_a_read_only_directory_refuses_to_open(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with SessionRecord.open(state) as rec:
        begin(rec)
    with read_only(state), pytest.raises(RecordError) as caught:
        SessionRecord.open(state)
    message = str(caught.value)
    assert str(state / FILE_NAME) in message
    assert ("read-only" in message) or ("cannot be opened or created" in message)


def test_a_full_file_system_fails_the_write_and_keeps_the_chain(tmp_path: Path) -> None:
    state = tmp_path / "small"
    state.mkdir()
    with tiny_filesystem(state, "160k"), SessionRecord.open(state) as rec:
        sid = begin(rec)
        written = 1
        with pytest.raises(RecordError) as caught:
            for index in range(1000):
                rec.event("note", {"i": index, "pad": "x" * 3000}, sid)
                written += 1
        assert str(caught.value).startswith("cannot record event 'note': the disk is full")
        with pytest.raises(RecordError, match="the disk is full"):
            rec.train_intent(sid, 0, 0, 10)
        assert rec.session(sid)["trains"] == []
        result = rec.verify()
        assert (result.ok, result.rows_checked) == (True, written)


def test_a_record_at_its_size_limit_fails_the_write_and_keeps_the_chain(
    tmp_path: Path,
) -> None:
    with SessionRecord.open(tmp_path) as rec:
        sid = begin(rec)
        pages = rec._conn.execute("PRAGMA page_count").fetchone()[0]
        rec._conn.execute(f"PRAGMA max_page_count = {pages}")
        with pytest.raises(RecordError) as caught:
            for index in range(200):
                rec.train_intent(sid, index, index, 1)
                rec.train_result(sid, index, index, 1, True)
        assert "the disk is full (or the record reached its size limit)" in str(caught.value)
        result = rec.verify()
        assert result.ok, result.reason


def test_a_write_lock_held_elsewhere_is_reported(tmp_path: Path) -> None:
    with SessionRecord.open(tmp_path) as rec:
        other = sqlite3.connect(rec.path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(RecordError) as caught:
                rec.event("note", {})
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert str(caught.value).startswith(
            "cannot record event 'note': another process holds the record's write lock"
        )
        rec.event("note", {})
        assert rec.verify().rows_checked == 1


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    (tmp_path / FILE_NAME).write_bytes(b"not sqlite at all " * 100)
    with pytest.raises(RecordError, match="the file is not an SQLite database"):
        SessionRecord.open(tmp_path)


def test_a_database_that_is_not_a_record(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / FILE_NAME)
    conn.execute("CREATE TABLE patients (name TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(RecordError) as caught:
        SessionRecord.open(tmp_path)
    assert str(caught.value) == f"{tmp_path / FILE_NAME} is an SQLite file but not a record"


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    SessionRecord.open(tmp_path).close()
    conn = sqlite3.connect(tmp_path / FILE_NAME)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(RecordError) as caught:
        SessionRecord.open(tmp_path)
    assert str(caught.value) == (
        f"{tmp_path / FILE_NAME} has record schema version 99; this stimd reads version 1"
    )


def test_read_only_opening_needs_a_record_and_never_writes(tmp_path: Path) -> None:
    with pytest.raises(RecordError, match=f"^no session record at {tmp_path / FILE_NAME}$"):
        SessionRecord.open(tmp_path, read_only=True)
    assert not (tmp_path / FILE_NAME).exists()
    with SessionRecord.open(tmp_path) as writer:
        sid = begin(writer)
        with SessionRecord.open(tmp_path, read_only=True) as reader:
            assert reader.sessions()[0]["id"] == sid
            assert reader.verify().ok
            with pytest.raises(
                RecordError,
                match=r"^cannot record event 'x': the record was opened read-only$",
            ):
                reader.event("x", {})
