"""The shipped unit file and example config: required keys, hardening, and consistency."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stimd.config import load_config
from stimd.daemon import STOP_BUDGET_S

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "stimd@.service"
EXAMPLE = ROOT / "systemd" / "stimd.example.toml"


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """systemd's INI dialect: repeated keys accumulate, '#' and ';' start comments."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, f"line {number} is not key=value in a section"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def seconds(span: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|min)?", span)
    assert match, f"unsupported time span {span!r}"
    factor = {"ms": 0.001, "s": 1.0, "min": 60.0, None: 1.0}[match.group(2)]
    return float(match.group(1)) * factor


@pytest.fixture(scope="module")
def service() -> dict[str, list[str]]:
    return parse_unit(UNIT.read_text())["Service"]


def one(service: dict[str, list[str]], key: str) -> str:
    values = service.get(key)
    assert values is not None, f"{key} missing"
    return values[-1]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("Type", "notify"),
        ("NotifyAccess", "main"),
        ("ExecStart", "/usr/bin/stimd run --config /etc/stimd/%i.toml"),
        ("Restart", "on-failure"),
        ("User", "stimd"),
        ("SupplementaryGroups", "dialout"),
        ("StateDirectory", "stimd/%i"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "no"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("CapabilityBoundingSet", ""),
        ("KillSignal", "SIGTERM"),
    ],
)
def test_required_settings(service: dict[str, list[str]], key: str, value: str) -> None:
    assert one(service, key) == value


def test_only_serial_devices_and_the_needed_address_families(
    service: dict[str, list[str]],
) -> None:
    assert one(service, "DevicePolicy") == "closed"
    assert "char-ttyUSB rw" in service["DeviceAllow"]
    assert set(one(service, "RestrictAddressFamilies").split()) == {
        "AF_UNIX", "AF_INET", "AF_INET6"
    }
    assert "@system-service" in service["SystemCallFilter"]


def test_the_watchdog_is_on_and_the_stop_timeout_covers_the_shutdown_budget(
    service: dict[str, list[str]],
) -> None:
    assert 0 < seconds(one(service, "WatchdogSec")) <= 30
    # The daemon's own budget plus time for the interpreter to exit, before SIGKILL.
    assert seconds(one(service, "TimeoutStopSec")) >= STOP_BUDGET_S + 2


def test_the_example_config_is_valid_and_matches_the_unit(
    service: dict[str, list[str]],
) -> None:
    config = load_config(EXAMPLE)
    device = config.device.id
    state_directory = one(service, "StateDirectory").replace("%i", device)
    assert config.storage.state_dir == Path("/var/lib") / state_directory
    assert config.operators.names


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    stimd = str(Path(sys.executable).parent / "stimd")
    if not Path(stimd).exists():
        pytest.skip("the stimd console script is not installed")
    # verify checks that ExecStart exists: point it at this checkout's script.
    instance = tmp_path / "stimd@dev01.service"
    instance.write_text(UNIT.read_text().replace("/usr/bin/stimd", stimd))
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(instance)],
        check=False, capture_output=True, text=True, timeout=60,
    )
    about_unit = [line for line in proc.stderr.splitlines() if instance.name in line]
    assert proc.returncode == 0, proc.stderr
    assert about_unit == []
