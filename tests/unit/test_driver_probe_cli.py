"""``stimd probe`` as a technician runs it: a subprocess, real simulator, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tty
from pathlib import Path

from simulator.testing import SimulatorProcess


def probe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stimd.cli", "probe", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )


def test_probe_json_reports_identity_capabilities_status_and_temperature() -> None:
    with SimulatorProcess(device="magstim-rapid2", mains=240) as sim:
        result = probe("--driver", "magstim-rapid2", "--port", str(sim.link),
                       "--mains", "240", "--json")
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["identity"]["model"] == "magstim-rapid2"
        assert report["identity"]["firmware"] == "9.0.0"
        assert report["capabilities"]["mains_voltage"] == 240
        assert report["status"]["armed"] is False
        assert isinstance(report["coil_temperature_c"], float)
        # disconnected cleanly: remote control released, never armed
        causes = [(e["event"], e.get("cause")) for e in sim.events()]
        assert ("remote_off", "command") in causes
        assert not sim.events("armed")


def test_probe_text_for_a_magventure_shows_its_serial_number() -> None:
    with SimulatorProcess(device="magventure-x100") as sim:
        result = probe("--driver", "magventure-x100", "--port", str(sim.link))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("MagVenture MagPro X100 on ")
    assert "serial number 149130" in result.stdout
    assert "coil temperature: " in result.stdout


def test_probe_exits_1_when_nothing_answers() -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        started = time.monotonic()
        result = probe("--driver", "magstim-200", "--port", os.ttyname(slave))
        elapsed = time.monotonic() - started
    finally:
        os.close(master)
        os.close(slave)
    assert result.returncode == 1
    assert "DEVICE_TIMEOUT" in result.stderr
    assert elapsed < 10  # interpreter start plus the driver's ~0.5 s reply bound


def test_probe_exits_1_for_a_port_that_does_not_exist(tmp_path: Path) -> None:
    result = probe("--driver", "magventure-r30", "--port", str(tmp_path / "ttyNONE"))
    assert result.returncode == 1
    assert "LINK_LOST: cannot open" in result.stderr


def test_probe_exits_2_for_unusable_arguments() -> None:
    unknown = probe("--driver", "magstim-9000", "--port", "/dev/null")
    assert unknown.returncode == 2
    assert "no driver named 'magstim-9000'" in unknown.stderr
    no_mains = probe("--driver", "magstim-rapid2", "--port", "/dev/null")
    assert no_mains.returncode == 2
    assert "mains_voltage=None" in no_mains.stderr
