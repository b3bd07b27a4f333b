"""``stimd protocols`` and ``stimd validate``: output, JSON shape and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from protocols.library import library_names
from stimd.cli import main

LIBRARY = Path(__file__).parents[2] / "protocols/library"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_protocols_lists_the_library(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "protocols")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "KIND", "PULSES", "DURATION", "REFERENCE"]
    assert len(lines) == 1 + len(library_names())
    fda = next(line for line in lines if line.startswith("fda-10hz-ldlpfc "))
    assert "rtms" in fda and " 3000 " in fda and "36 min 56.5 s" in fda
    assert "O'Reardon et al. 2007" in fda


def test_validate_accepts_and_prints_every_check_and_the_plan(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run(capsys, "validate", "fda-10hz-ldlpfc", "--mt", "50",
                         "--device", "magstim-rapid2", "--mains", "240")
    assert code == 0, out + err
    assert "ok    safety-table.train-pulses" in out
    assert "[Rossi 2009 Table 3]" in out
    assert "ACCEPTED: 3000 pulses in 75 trains, 36 min 56.5 s, 60 %MSO" in out
    assert "digest " in out
    assert err == ""


def test_validate_rejects_with_exit_1_and_names_each_failure(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "validate", "itbs-600", "--mt", "50",
                       "--device", "magstim-rapid2", "--mains", "240")
    assert code == 1
    assert "FAIL  device.bursts" in out
    assert "FAIL  device.frequency" in out
    assert "pulse rate: 50 Hz exceeds the maximum 25 Hz" in out
    assert out.rstrip().endswith("REJECTED: 2 checks failed")


def test_validate_json_has_the_issue_shape(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "validate", "10hz-19min", "--mt", "50", "--mt-method", "emg",
                       "--mt-measured-at", "2020-01-01T00:00:00+00:00",
                       "--device", "magventure-x100", "--json")
    doc = json.loads(out)
    assert code == 1 and doc["accepted"] is False and doc["plan"] is None
    assert set(doc) == {"accepted", "checks", "plan"}
    age = next(c for c in doc["checks"] if c["code"] == "mt.age")
    assert age["ok"] is False and age["limit"] == 7
    for entry in doc["checks"]:
        assert {"code", "ok", "message", "source", "value", "limit"} <= set(entry)

    code, out, _ = run(capsys, "validate", "10hz-19min", "--mt", "50",
                       "--device", "magventure-x100", "--json")
    doc = json.loads(out)
    assert code == 0
    assert set(doc["plan"]) == {"total_pulses", "duration_s", "intensity_pct_mso", "digest"}
    assert doc["plan"]["total_pulses"] == 3000 and doc["plan"]["duration_s"] == 1106.5
    assert len(doc["plan"]["digest"]) == 64


def test_a_rapid_without_mains_uses_the_stricter_115_v_limits(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run(capsys, "validate", "demo-10hz-short", "--mt", "50",
                         "--device", "magstim-rapid2")
    assert code == 0
    assert "using the stricter 115 V limits" in err
    assert "Magstim Rapid², 115 V" in out


def test_site_file_and_protocol_file_paths(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    site = tmp_path / "site.toml"
    site.write_text(
        "[site]\n[[site.approved_exceptions]]\nprotocol = \"deep-tms-18hz-h1\"\n"
        "rule = \"safety-table.train-pulses\"\nreference = \"Levkovitz 2015 H1 coil\"\n"
        "approved_by = \"Dr. Example\"\n"
    )
    code, out, _ = run(capsys, "validate", str(LIBRARY / "deep-tms-18hz-h1.toml"), "--mt", "50",
                       "--device", "magventure-x100", "--site", str(site))
    assert code == 0
    assert "WARN  safety-table.train-pulses" in out
    assert "approved by Dr. Example" in out


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["nope", "--mt", "50", "--device", "magventure-x100"], "'nope' is not a library protocol"),
        (["./missing.toml", "--mt", "50", "--device", "magventure-x100"], "file: not found"),
        (["itbs-600", "--mt", "fifty", "--device", "magventure-x100"],
         "--mt: must be an integer %MSO 1-100, got 'fifty'"),
        (["itbs-600", "--mt", "150", "--device", "magventure-x100"],
         "motor_threshold.pct_mso: must be between 1 and 100 %MSO, got 150"),
        (["itbs-600", "--mt", "50", "--device", "magventure-x100", "--mt-method", "guess"],
         "motor_threshold.method: must be one of emg, visual, got 'guess'"),
        (["itbs-600", "--mt", "50", "--device", "magventure-x100", "--mt-measured-at", "monday"],
         "--mt-measured-at: must be an ISO 8601 date-time, got 'monday'"),
        (["itbs-600", "--mt", "50", "--device", "magventure-x100", "--mt-measured-at",
          "2025-01-01T10:00"], "must carry a UTC offset"),
        (["itbs-600", "--mt", "50", "--device", "magstim-9000"], "unknown device model"),
        (["itbs-600", "--mt", "50", "--device", "magstim-rapid2", "--mains", "230"],
         "--mains: must be 240 or 115, got '230'"),
        (["itbs-600", "--mt", "50", "--device", "magventure-x100", "--site", "/nonexistent.toml"],
         "file: not found"),
    ],
)
def test_unusable_input_exits_2_with_a_clear_message(
    capsys: pytest.CaptureFixture[str], argv: list[str], reason: str
) -> None:
    code, out, err = run(capsys, "validate", *argv)
    assert code == 2
    assert out == ""
    assert reason in err
    assert "Traceback" not in err


def test_malformed_toml_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[protocol\n")
    code, _, err = run(capsys, "validate", str(bad), "--mt", "50", "--device", "magventure-x100")
    assert code == 2
    assert "not valid TOML" in err


def test_the_console_script_runs() -> None:
    script = Path(sys.executable).parent / "stimd"
    done = subprocess.run(
        [str(script), "validate", "demo-10hz-short", "--mt", "50", "--device",
         "magventure-x100", "--json"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["plan"]["total_pulses"] == 50
