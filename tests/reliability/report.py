"""Render ``docs/reliability.md`` from the fault table and the latest test results.

    .venv/bin/pytest tests/reliability            # writes the results
    .venv/bin/python -m tests.reliability.report  # renders docs/reliability.md

The expectations come from ``faults.toml`` (the table the tests assert), the measured
columns from the results directory (see ``results.py``). Nothing in the document is
typed by hand, so it cannot drift from what the tests check; ``test_report.py`` fails
when the committed document's expectation table differs from the fault table.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .matrix import FaultRow, load_faults
from .results import REPO_ROOT, read_results, results_dir

DOC = REPO_ROOT / "docs" / "reliability.md"
EXPECTED_BEGIN = "<!-- expected outcomes: generated from tests/reliability/faults.toml -->"
EXPECTED_END = "<!-- end of expected outcomes -->"


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "**NO**"
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "—"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def expected_table(rows: Sequence[FaultRow]) -> list[str]:
    """The expectations of the fault table: what every test asserts, per fault."""
    body = [
        (row.title, row.injection, row.detection, row.budget_s, row.outcome_state,
         list(row.causes), list(row.events), row.record_outcome, row.disarmed_by)
        for row in rows
    ]
    return [EXPECTED_BEGIN, *_table(
        ("fault", "injection", "expected detection", "bound on detection (s)",
         "outcome state", "accepted fault causes", "events published", "record outcome",
         "device disarmed by"), body), EXPECTED_END]


def _measured_row(row: FaultRow, result: dict[str, Any] | None) -> list[Any]:
    if result is None:
        return [row.title, "not run", "—", "—", "—", "—", "—", "—"]
    outcome = result.get("outcome_state")
    if result.get("fault_cause"):
        outcome = f"{outcome} ({result['fault_cause']})"
    fired = result.get("pulses_fired")
    planned = result.get("pulses_planned")
    record = "—"
    if "record_consistent" in result:
        record = (f"{_cell(result['record_consistent'])}: {result.get('record_delivered')} "
                  f"delivered + {result.get('record_uncertain')} uncertain")
    detection = result.get("detection_s")
    detected = f"{_cell(detection)} s" if detection is not None else "—"
    return [
        row.title, "pass" if result.get("passed") else "**FAIL**",
        f"{detected} ({result.get('detected_by', '—')})", outcome,
        f"{fired} / {planned}", result.get("pulses_beyond_plan"), record,
        result.get("device_armed_after") is False or result.get("device_armed_after") is None,
    ]


def measured_table(rows: Sequence[FaultRow], results: dict[str, dict[str, Any]]) -> list[str]:
    body = [_measured_row(row, results.get(f"fault-{row.id}")) for row in rows]
    return _table(
        ("fault", "result", "detection time (detected by)", "outcome", "pulses fired / planned",
         "pulses beyond plan", "record consistent with pulse log", "device disarmed"), body)


def _problems(results: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    for name, result in sorted(results.items()):
        for problem in result.get("problems") or []:
            lines.append(f"- `{name}`: {problem}")
    return lines


def crash_section(results: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["## Crash consistency", ""]
    lines += [
        "The daemon is SIGKILLed at a random moment of a session (seeded), restarted, and the "
        "record (`stimd history --json --session N`) is compared with the simulator's pulse "
        "log: the record never under-counts (`delivered <= fired <= delivered + uncertain`), "
        "at most the one train in flight is uncertain, the unit is disarmed by its own "
        "keep-alive, and the restarted daemon is IDLE and refuses `resume`.", "",
    ]
    found = False
    for name, label in (("crash-suite", "normal suite"), ("crash-soak", "soak (`make soak`)")):
        tally = results.get(name)
        if tally is None:
            lines.append(f"- {label}: not run")
            continue
        found = True
        lines.append(
            f"- {label}: {tally['kills']} kills (seed {tally['seed']}), "
            f"consistent: {_cell(tally['consistent'])}; moments hit: "
            + ", ".join(f"{k} {v}" for k, v in sorted(tally["moments"].items()))
            + "; uncertain trains per kill: "
            + ", ".join(f"{k}: {v}" for k, v in tally["uncertain_trains"].items())
            + "; record outcomes: "
            + ", ".join(f"{k} {v}" for k, v in sorted(tally["outcomes"].items()))
        )
    if not found:
        lines.append("")
    return [*lines, ""]


def fuzz_section(results: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["## Fuzzing", "",
             "Hypothesis-generated input against every entry point. Invariants: never a "
             "crash, never a pulse or an arm (simulator pulse log), every command answered "
             "with a structured reply, memory bounded (daemon RSS before/after).", ""]
    rows = []
    for name, result in sorted(results.items()):
        if not name.startswith("fuzz-"):
            continue
        if "messages" in result:
            volume = f"{result['messages']} MQTT messages"
            detail = ", ".join(f"{k} {v}" for k, v in sorted(result["reply_codes"].items()))
            detail += (f"; pulses {result['pulses']}, arms {result['armed']}; RSS "
                       f"{result['rss_before_kb']} → {result['rss_after_kb']} kB")
        elif "total" in result:
            volume = f"{result['total']} inputs"
            detail = ", ".join(f"{k} {v}" for k, v in result["examples"].items())
        else:
            volume = f"{result.get('examples', '—')} examples"
            detail = ", ".join(f"{k} {v}" for k, v in sorted(
                (result.get("outcomes") or {}).items()))
        rows.append((name.removeprefix("fuzz-"), volume,
                     "pass" if result.get("passed") else "**FAIL**", detail))
    if not rows:
        return [*lines, "Not run.", ""]
    return [*lines, *_table(("target", "volume", "result", "outcomes"), rows), ""]


def security_section(results: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["## Security", "",
             "The broker ACL matrix is proven in `tests/e2e/test_broker_acl.py` (real "
             "mosquitto, every role against every topic class); these checks add the daemon "
             "side.", ""]
    rows = [
        (name.removeprefix("security-"), "pass" if r.get("passed") else "**FAIL**",
         r.get("summary", "—"))
        for name, r in sorted(results.items()) if name.startswith("security-")
    ]
    if not rows:
        return [*lines, "Not run.", ""]
    return [*lines, *_table(("check", "result", "what was measured"), rows), ""]


#: How the suite is built and what it does not cover: part of the generator because it
#: describes the tests themselves, not a run.
SCOPE = [
    "## Scope and limits of the suite",
    "",
    "- Ground truth is the simulator's pulse log (flushed per pulse, survives SIGKILL); "
    "the record is read with `stimd history --json` and checked with `stimd verify-record`.",
    "- Faults are injected through the simulator's control socket, by killing processes, "
    "by a private mount namespace (read-only state directory, needs root) and by "
    "RLIMIT_FSIZE (disk full). A read-only remount *mid-session* is not staged separately; "
    "the daemon sees the same failed record write as on a full disk.",
    "- The wall-clock jump is shown in-process (the system clock is not changed on a shared "
    "machine): the real controller and simulator run while `time.time` and the controller's "
    "wall clock jump ±3 h; a static check pins that `stimd/scheduler.py` reads only "
    "`time.monotonic*`. Wall time still matters where it should: motor-threshold age and "
    "the per-day pulse budget.",
    "- A stop racing a start is exercised in-process (`test_stop_races.py`): the window "
    "between a start's interlock reading and its arm command is too narrow to hit through "
    "the broker.",
    "- Under a command flood, refusals beyond the bounded reply queue are dropped by design "
    "(memory stays bounded; repeating the id returns the answer); executed commands are "
    "always answered.",
    "- Protocol fuzzing runs the daemon's whole load path (parser, then every limit "
    "source). An absurdly long inter-train interval is accepted: a longer rest is never "
    "less safe, and no limit source caps the session's length.",
    "",
]


def render(results: dict[str, dict[str, Any]], *, source: Path) -> str:
    rows = load_faults()
    stamps = [float(r["finished_at"]) for r in results.values()
              if isinstance(r.get("finished_at"), int | float)]
    when = (datetime.fromtimestamp(max(stamps), UTC).strftime("%Y-%m-%d %H:%M UTC")
            if stamps else "never")
    lines = [
        "# Reliability and security",
        "",
        "<!-- GENERATED by `python -m tests.reliability.report` from "
        "tests/reliability/faults.toml and the results of the last test run. "
        "Do not edit by hand. -->",
        "",
        "Everything here breaks something on purpose against the real stack (mosquitto, "
        "`stimd run`, `stimd-sim` on a pty) and judges the daemon by the simulator's pulse "
        "log, never by its own word.",
        "",
        f"Latest results: {when} (from `{_display(source)}`).",
        "",
        "## How to rerun",
        "",
        "```sh",
        ".venv/bin/pytest tests/reliability                  # the normal suite (~3 min)",
        "make soak                                           # + hundreds of SIGKILLs, "
        "bigger fuzz runs (STIMD_SOAK=1 for the fuzz volume)",
        ".venv/bin/python -m tests.reliability.report        # rewrite this file",
        "```",
        "",
        "Results are written to `$STIMD_RELIABILITY_RESULTS` or `.pytest_cache/reliability/`.",
        "",
        "## Fault matrix: measured",
        "",
        "Detection time is from the injection to the daemon's (or, after SIGKILL, the "
        "unit's) first record of it; the bound in the next table is a generous safety bound "
        "asserted by the tests, not a performance figure.",
        "",
        *measured_table(rows, results),
        "",
        "## Fault matrix: expected (the table the tests assert)",
        "",
        *expected_table(rows),
        "",
        *crash_section(results),
        *fuzz_section(results),
        *security_section(results),
    ]
    lines += SCOPE
    problems = _problems(results)
    if problems:
        lines += ["## Problems in the last run", "", *problems, ""]
    return "\n".join(lines).rstrip() + "\n"


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.reliability.report", description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=Path, default=None,
                        help="results directory (default: $STIMD_RELIABILITY_RESULTS or "
                        ".pytest_cache/reliability)")
    parser.add_argument("--output", type=Path, default=DOC, help="where to write the markdown")
    args = parser.parse_args(argv)
    source = args.results or results_dir()
    text = render(read_results(source), source=source)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
