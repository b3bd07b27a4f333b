"""Each benchmark runs end to end in a tiny configuration, so none of them can rot.

Each runs as ``python -m bench.<name>`` from the source tree, exactly as a person runs it,
against the real stack (private mosquitto, ``stimd run``, ``stimd-sim`` with line-rate
emulation). Only the shape and the internal consistency of the JSON summary are
asserted, never a time: benchmarks print, CI does not gate on them.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
#: A smoke run takes seconds; the bound only keeps a hung run from eating the suite's
#: 120 s per-test timeout without a useful message.
RUN_TIMEOUT_S = 100.0
TARGET_KEYS = {"name", "measured", "limit", "unit", "met"}

pytestmark = pytest.mark.e2e


def run_benchmark(*argv: str) -> tuple[dict[str, Any], str]:
    """Run a benchmark module; its JSON summary and its readable line."""
    process = subprocess.Popen(
        [sys.executable, "-m", *argv], cwd=REPO, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = process.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)  # it stops every process it started
        stdout, stderr = process.communicate(timeout=30)
        pytest.fail(f"{argv} still running after {RUN_TIMEOUT_S} s:\n{stderr[-3000:]}")
    assert process.returncode == 0, f"{argv} exited {process.returncode}:\n{stderr[-3000:]}"
    lines = stdout.splitlines()
    assert len(lines) == 2, f"expected a JSON line and a readable line, got {lines}"
    return json.loads(lines[0]), lines[1]


def check_common(result: dict[str, Any], sentence: str, name: str) -> None:
    assert result["benchmark"] == name
    assert sentence.startswith(f"{name}: ")
    assert result["targets"], "every benchmark states its targets"
    for target in result["targets"]:
        assert set(target) == TARGET_KEYS
        assert isinstance(target["met"], bool)
        assert target["met"] == (target["measured"] <= target["limit"])
        assert ("met" if target["met"] else "MISSED") in sentence


def check_distribution(summary: dict[str, Any], count: int) -> None:
    assert set(summary) == {"count", "min", "p50", "p99", "max"}
    assert summary["count"] == count
    assert summary["min"] <= summary["p50"] <= summary["p99"] <= summary["max"]


def test_stop_latency() -> None:
    result, sentence = run_benchmark("bench.stop_latency", "--trials", "3")
    check_common(result, sentence, "stop_latency")
    assert result["trials"] == 3
    assert result["stopped_mid_train"] == 3, "every stop must land inside a running train"
    check_distribution(result["latency_ms"], 3)
    check_distribution(result["floor_ms"], 9)
    assert result["floor_parts_ms"]["disarm_line_time"] == 3.125  # 3 bytes at 9600 8N1
    line = result["serial_line_at_stop"]
    assert line["idle"] + line["busy"] == 3
    assert set(result["excess_over_floor_ms"]) == {"p50", "p99"}
    assert set(result["ratio_to_floor"]) == {"p50", "p99"}


def test_onset_accuracy() -> None:
    result, sentence = run_benchmark("bench.onset_accuracy", "--trains", "3")
    check_common(result, sentence, "onset_accuracy")
    assert result["trains"] == 3
    check_distribution(result["error_ms"], 2)  # errors are relative to the first train
    for part in result["error_parts_ms"].values():
        check_distribution(part, 2)
    assert result["jitter_ms"] == pytest.approx(
        result["error_ms"]["p99"] - result["error_ms"]["p50"], abs=0.002)
    assert result["fire_command_line_time_ms"] == 3.125
    # two errors: the slope through two points is their difference
    errors = result["error_ms"]
    assert abs(result["drift_ms_per_train"]) == pytest.approx(
        errors["max"] - errors["min"], abs=0.002)


def test_keepalive_under_load() -> None:
    result, sentence = run_benchmark("bench.keepalive_load", "--seconds", "3")
    check_common(result, sentence, "keepalive_load")
    assert result["burners"] == 2
    assert result["trains"] == 3
    assert result["commands_received"] > 0
    assert result["max_gap_between_commands_ms"] > 0
    assert result["session_end"] in {"session_completed", "session_aborted", "session_paused",
                                     "fault"}
    if result["session_end"] == "session_completed":
        assert result["disarm_causes"][-1] == "command", "the session's end disarms it"
        assert result["spurious_disarms"] == len(result["disarm_causes"]) - 1


def test_fleet() -> None:
    result, sentence = run_benchmark("bench.fleet", "--n", "2", "--idle-seconds", "1",
                                     "--running-seconds", "1", "--rounds", "1")
    check_common(result, sentence, "fleet")
    assert result["daemons"] == 2
    for phase in ("idle", "running"):
        assert set(result[phase]) == {"cpu_pct_mean", "cpu_pct_max", "rss_mb_mean",
                                      "rss_mb_max"}
        assert 0 < result[phase]["rss_mb_mean"] <= result[phase]["rss_mb_max"]
    check_distribution(result["state_latency_ms"], 4)  # 2 daemons × (load + unload)


def test_startup_and_the_report(tmp_path: Path) -> None:
    output = tmp_path / "performance.md"
    process = subprocess.run(
        [sys.executable, "-m", "bench", "--only", "startup", "--smoke", "--output", str(output)],
        cwd=REPO, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False)
    assert process.returncode == 0, process.stderr[-3000:]
    result = json.loads(process.stdout.splitlines()[0])
    check_common(result, process.stdout.splitlines()[1], "startup")
    check_distribution(result["to_ready_ms"], 1)
    check_distribution(result["to_status_online_ms"], 1)
    text = output.read_text()
    for heading in ("## Machine", "## Summary", "## startup"):
        assert heading in text
    for key in ("cpu", "cores", "kernel", "python", "mosquitto", "date"):
        assert f"| {key} |" in text
    assert json.dumps(result["to_ready_ms"]["p50"]) in text


def children_of(pid: int) -> dict[int, bytes]:
    """Live direct children of ``pid`` with their command lines."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
            found[int(entry.name)] = cmdline
    return found


def alive(pid: int, cmdline: bytes) -> bool:
    try:
        return (Path(f"/proc/{pid}/cmdline").read_bytes() == cmdline
                and "Z" not in Path(f"/proc/{pid}/stat").read_text().split(")")[-1][:3])
    except OSError:
        return False


def test_sigterm_stops_every_process_it_started() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.stop_latency", "--trials", "1000"], cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        children: dict[int, bytes] = {}
        # broker, simulator and daemon all running: the middle of a benchmark
        while not any(b"stimd.cli" in c for c in children.values()):
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "the stack did not come up"
            time.sleep(0.2)
            children = children_of(process.pid)
        assert any(b"mosquitto" in c for c in children.values())
        assert any(b"simulator.cli" in c for c in children.values())
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, stderr[-3000:]
    assert "every process of the stack was stopped" in stderr
    left = [c for pid, c in children.items() if alive(pid, c)]
    assert not left, f"still running after the benchmark ended: {left}"
