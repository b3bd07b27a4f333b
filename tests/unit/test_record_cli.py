"""`stimd history` and `stimd verify-record` through the real console-script dispatcher."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from stimd.cli import main
from stimd.record import FILE_NAME, SessionRecord

ROOT = Path(__file__).resolve().parents[2]


class SteppingClock:
    def __init__(self) -> None:
        self.now = datetime(2025, 3, 10, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now


@pytest.fixture
def state(tmp_path: Path) -> Path:
    """Two sessions: one completed, one interrupted with an uncertain train."""
    with SessionRecord.open(tmp_path, clock=SteppingClock()) as rec:
        for patient, crash in (("P-1", False), ("P-2", True)):
            sid = rec.begin_session(
                patient_ref=patient, protocol_name="1hz-rdlpfc", protocol_digest="1" * 64,
                schedule_digest="2" * 64, motor_threshold={"pct_mso": 48, "method": "emg"},
                operator="tech-alice", intensity_pct_mso=53, planned_pulses=20,
                planned_trains=2, device={"model": "magstim-rapid2"},
            )
            rec.train_intent(sid, 0, 0, 10)
            rec.train_result(sid, 0, 25, 10, True)
            rec.train_intent(sid, 1, 5_000_000, 10)
            if crash:
                rec.recover_interrupted()
            else:
                rec.train_result(sid, 1, 5_000_020, 10, True)
                rec.end_session(sid, "completed", 20)
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_history_table(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "history", "--state-dir", str(state))
    assert (code, err) == (0, "")
    header, first, second = out.splitlines()
    assert header.split() == [
        "id", "started", "ended", "outcome", "patient", "protocol", "operator", "%MSO",
        "pulses", "uncertain",
    ]
    assert first.split()[3:] == ["completed", "P-1", "1hz-rdlpfc", "tech-alice", "53", "20/20",
                                 "0"]
    assert second.split()[3:] == ["interrupted", "P-2", "1hz-rdlpfc", "tech-alice", "53",
                                  "10/20", "10"]


def test_history_json_matches_the_record(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "history", "--state-dir", str(state), "--json")
    assert code == 0
    with SessionRecord.open(state, read_only=True) as rec:
        assert json.loads(out) == rec.sessions()


def test_history_csv_has_one_row_per_session(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "history", "--state-dir", str(state), "--csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    summary = [(r["id"], r["outcome"], r["pulses_delivered"], r["pulses_uncertain"]) for r in rows]
    assert summary == [("1", "completed", "20", "0"), ("2", "interrupted", "10", "10")]
    assert json.loads(rows[0]["motor_threshold"]) == {"pct_mso": 48, "method": "emg"}
    assert rows[1]["pulses_reported"] == ""


def test_history_of_one_session(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "history", "--state-dir", str(state), "--session", "2", "--json")
    assert code == 0
    session = json.loads(out)
    assert [t["state"] for t in session["trains"]] == ["delivered", "uncertain"]
    assert session["events"][-1]["kind"] == "session_ended"

    code, out, _ = run(capsys, "history", "--state-dir", str(state), "--session", "2", "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["session_id"], r["train_index"], r["state"]) for r in rows] == [
        ("2", "0", "delivered"), ("2", "1", "uncertain")
    ]

    code, out, _ = run(capsys, "history", "--state-dir", str(state), "--session", "2")
    assert "outcome: interrupted" in out.splitlines()
    assert "trains:" in out and "events:" in out


def test_history_of_an_unknown_session(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "history", "--state-dir", str(state), "--session", "9")
    assert (code, out) == (2, "")
    assert err == "stimd history: session_id=9 is not in the record\n"


def test_history_of_an_empty_record(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    SessionRecord.open(tmp_path).close()
    assert run(capsys, "history", "--state-dir", str(tmp_path)) == (
        0, "no sessions recorded\n", ""
    )


def test_verify_record_intact(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "verify-record", "--state-dir", str(state))
    assert code == 0
    assert out == f"{state / FILE_NAME}: intact, 12 event rows checked\n"


def test_verify_record_names_the_first_broken_row(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conn = sqlite3.connect(state / FILE_NAME, isolation_level=None)
    conn.execute("DROP TRIGGER events_no_update")
    conn.execute("UPDATE events SET ts = '2025-03-10T08:00:00.000000Z' WHERE seq = 3")
    conn.execute(
        "CREATE TRIGGER events_no_update BEFORE UPDATE ON events "
        "BEGIN SELECT RAISE(ABORT, 'session record events are append-only'); END"
    )
    conn.close()
    code, out, _ = run(capsys, "verify-record", "--state-dir", str(state))
    assert code == 1
    assert out == (
        f"{state / FILE_NAME}: first broken event row 3: event row 3 was altered: its content "
        "does not match its hash (2 event rows intact before it)\n"
    )


def test_verify_record_without_a_record(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "verify-record", "--state-dir", str(tmp_path))
    assert (code, out) == (2, "")
    assert err == f"stimd verify-record: no session record at {tmp_path / FILE_NAME}\n"
    assert not (tmp_path / FILE_NAME).exists()


def test_verify_record_of_a_file_that_is_not_a_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / FILE_NAME).write_bytes(b"\x00garbage" * 512)
    code, _, err = run(capsys, "verify-record", "--state-dir", str(tmp_path))
    assert code == 2
    assert "the file is not an SQLite database" in err


def test_the_state_dir_comes_from_the_daemons_config(
    state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    example = (ROOT / "systemd" / "stimd.example.toml").read_text()
    config = tmp_path / "dev01.toml"
    config.write_text(example.replace('"/var/lib/stimd/dev01"', json.dumps(str(state))))
    code, out, _ = run(capsys, "verify-record", "--config", str(config))
    assert (code, out) == (0, f"{state / FILE_NAME}: intact, 12 event rows checked\n")


def test_an_invalid_config_is_unusable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[storage]\nstate_dir = "/x"\nstate_dri = "/y"\n')
    code, out, err = run(capsys, "history", "--config", str(config))
    assert (code, out) == (2, "")
    assert err.startswith(f"stimd history: {config}: invalid configuration:")
    assert "storage.state_dri: unknown key" in err


def test_a_location_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["history"])
    assert caught.value.code == 2
    assert "one of the arguments --state-dir --config is required" in capsys.readouterr().err
