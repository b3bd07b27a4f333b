"""``stimd history`` and ``stimd verify-record``: reading the session record, never writing it.

Both open the record read-only, so they are safe to run beside a running daemon (as the
``stimd`` user, which owns the owner-only record file). Exit codes follow ``stimd.cli``:
0 success / intact, 1 the record is broken, 2 unusable input (no record, bad config,
unknown session).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

from stimd.record import RecordError, SessionNotFound, SessionRecord

EXIT_OK = 0
EXIT_BROKEN = 1
EXIT_UNUSABLE = 2

_SESSION_COLUMNS = (
    "id", "patient_ref", "protocol_name", "protocol_digest", "schedule_digest",
    "motor_threshold", "operator", "intensity_pct_mso", "planned_pulses", "planned_trains",
    "device", "started_at", "ended_at", "outcome", "pulses_delivered", "pulses_uncertain",
    "pulses_reported", "end_reason",
)
_TRAIN_COLUMNS = (
    "session_id", "train_index", "planned_onset_us", "pulses_planned", "intent_at", "state",
    "actual_onset_us", "pulses_delivered", "result_at",
)


class _Unusable(Exception):
    """Input the command cannot work with; the message is printed as is."""


def _add_location(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--state-dir", type=Path, help="the daemon's state directory")
    where.add_argument(
        "--config", type=Path, help="the daemon's TOML config; its [storage] state_dir is used"
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    history = subparsers.add_parser(
        "history", help="export the session record",
        description="List sessions (or one session with its trains and events).",
    )
    _add_location(history)
    form = history.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="JSON instead of a table")
    form.add_argument("--csv", action="store_true", help="CSV instead of a table")
    history.add_argument("--session", type=int, metavar="ID", help="one session in full")
    history.set_defaults(func=run_history)

    verify = subparsers.add_parser(
        "verify-record", help="check the session record's hash chain and tables",
        description="Exit 0 when intact, 1 when broken (the first broken row is named), "
        "2 when the record cannot be read.",
    )
    _add_location(verify)
    verify.set_defaults(func=run_verify)


def _state_dir(args: argparse.Namespace) -> Path:
    if args.state_dir is not None:
        return Path(args.state_dir)
    from stimd.config import ConfigError, load_config

    try:
        return Path(load_config(Path(args.config)).storage.state_dir)
    except ConfigError as exc:
        raise _Unusable(str(exc)) from None


def _open(args: argparse.Namespace) -> SessionRecord:
    try:
        return SessionRecord.open(_state_dir(args), read_only=True)
    except RecordError as exc:
        raise _Unusable(str(exc)) from None


def _fail(command: str, message: str) -> int:
    print(f"stimd {command}: {message}", file=sys.stderr)
    return EXIT_UNUSABLE


def run_history(args: argparse.Namespace) -> int:
    try:
        with _open(args) as record:
            if args.session is not None:
                data: Any = record.session(args.session)
            else:
                data = record.sessions()
    except (_Unusable, SessionNotFound) as exc:
        return _fail("history", str(exc))
    except RecordError as exc:
        return _fail("history", f"cannot read the record: {exc}")
    if args.json:
        text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    elif args.csv:
        text = _trains_csv(data) if args.session is not None else _sessions_csv(data)
    elif args.session is not None:
        text = _session_text(data)
    else:
        text = _sessions_text(data)
    sys.stdout.write(text)
    return EXIT_OK


def run_verify(args: argparse.Namespace) -> int:
    try:
        with _open(args) as record:
            result = record.verify()
            path = record.path
    except _Unusable as exc:
        return _fail("verify-record", str(exc))
    except RecordError as exc:
        return _fail("verify-record", f"cannot read the record: {exc}")
    if result.ok:
        print(f"{path}: intact, {result.rows_checked} event rows checked")
        return EXIT_OK
    where = (
        f"first broken event row {result.first_broken_row}"
        if result.first_broken_row is not None else "broken"
    )
    print(f"{path}: {where}: {result.reason} ({result.rows_checked} event rows intact before it)")
    return EXIT_BROKEN


def _csv_value(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return "" if value is None else value


def _csv(columns: tuple[str, ...], rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_value(row.get(column)) for column in columns])
    return buffer.getvalue()


def _sessions_csv(sessions: list[dict[str, Any]]) -> str:
    return _csv(_SESSION_COLUMNS, sessions)


def _trains_csv(session: dict[str, Any]) -> str:
    return _csv(
        _TRAIN_COLUMNS, [{"session_id": session["id"], **t} for t in session["trains"]]
    )


def _table(headers: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    cells = [headers, *(tuple("-" if v is None else str(v) for v in row) for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        + "\n"
        for row in cells
    )


def _sessions_text(sessions: list[dict[str, Any]]) -> str:
    if not sessions:
        return "no sessions recorded\n"
    return _table(
        ("id", "started", "ended", "outcome", "patient", "protocol", "operator", "%MSO",
         "pulses", "uncertain"),
        [
            (s["id"], s["started_at"], s["ended_at"], s["outcome"], s["patient_ref"],
             s["protocol_name"], s["operator"], s["intensity_pct_mso"],
             f"{s['pulses_delivered']}/{s['planned_pulses']}", s["pulses_uncertain"])
            for s in sessions
        ],
    )


def _session_text(session: dict[str, Any]) -> str:
    lines = [
        f"{column}: {_csv_value(session[column]) if session[column] is not None else '-'}"
        for column in _SESSION_COLUMNS
    ]
    trains = _table(
        ("train", "planned_onset_us", "pulses", "state", "actual_onset_us", "delivered",
         "intent_at"),
        [
            (t["train_index"], t["planned_onset_us"], t["pulses_planned"], t["state"],
             t["actual_onset_us"], t["pulses_delivered"], t["intent_at"])
            for t in session["trains"]
        ],
    )
    events = _table(
        ("seq", "ts", "kind", "data"),
        [(e["seq"], e["ts"], e["kind"], _csv_value(e["data"])) for e in session["events"]],
    )
    return "\n".join(lines) + "\n\ntrains:\n" + trains + "\nevents:\n" + events
