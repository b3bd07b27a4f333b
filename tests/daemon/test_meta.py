"""The retained ``meta`` payload: simulated or not, decided from facts, never guessed."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.conftest import Rig, daemon_config
from stimd.daemon import (
    PortFacts,
    device_meta,
    port_facts,
    pty_slave_majors,
    simulated_verdict,
)

PTY_MAJORS = frozenset({136})


def facts(**changes: object) -> PortFacts:
    base: dict[str, object] = {"port": "/dev/x", "url_scheme": None, "resolved": "/dev/x",
                               "exists": True, "char_major": None}
    return PortFacts(**{**base, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize(("given", "verdict"), [
    (facts(char_major=136), (True, "port is a pseudo-terminal")),
    (facts(char_major=188), (False, "port is a character device (major 188), not a "
                                    "pseudo-terminal")),
    (facts(char_major=4), (False, "port is a character device (major 4), not a "
                                  "pseudo-terminal")),
    (facts(url_scheme="socket", resolved=None, exists=False),
     (None, "network serial server: unknown")),
    (facts(url_scheme="rfc2217", resolved=None, exists=False),
     (None, "network serial server: unknown")),
    (facts(url_scheme="loop", resolved=None, exists=False),
     (None, "serial URL loop://: unknown")),
    (facts(exists=False), (None, "port not found: unknown")),
    (facts(char_major=None), (None, "port is not a character device: unknown")),
])
def test_simulated_verdict(given: PortFacts, verdict: tuple[bool | None, str]) -> None:
    assert simulated_verdict(given, PTY_MAJORS) == verdict


@pytest.fixture
def pty_slave() -> Iterator[str]:
    master, slave = os.openpty()
    try:
        yield os.ttyname(slave)
    finally:
        os.close(master)
        os.close(slave)


def test_a_pty_behind_a_symlink_is_simulated(pty_slave: str, tmp_path: Path) -> None:
    link = tmp_path / "tty"
    link.symlink_to(pty_slave)
    found = port_facts(str(link))
    assert found.resolved == pty_slave and found.exists
    assert simulated_verdict(found, pty_slave_majors()) == (True, "port is a pseudo-terminal")


def test_other_character_devices_are_not_simulated() -> None:
    found = port_facts("/dev/null")        # char 1:3: a real device node, not a pty
    assert found.char_major == 1
    assert simulated_verdict(found, pty_slave_majors())[0] is False


def test_urls_files_and_missing_paths_are_unknown(tmp_path: Path) -> None:
    assert port_facts("socket://192.0.2.1:4001").url_scheme == "socket"
    assert port_facts("RFC2217://host:2217").url_scheme == "rfc2217"
    regular = tmp_path / "file"
    regular.write_text("")
    assert simulated_verdict(port_facts(str(regular)), PTY_MAJORS)[0] is None
    missing = port_facts(str(tmp_path / "nothing"))
    assert not missing.exists
    assert simulated_verdict(missing, PTY_MAJORS) == (None, "port not found: unknown")


def test_pty_slave_majors_come_from_proc_devices(tmp_path: Path) -> None:
    devices = tmp_path / "devices"
    devices.write_text("Character devices:\n  4 tty\n128 ptm\n136 pts\n137 pts\n\n"
                       "Block devices:\n136 pts\n  7 loop\n")
    assert pty_slave_majors(devices) == frozenset({136, 137})
    # unreadable: the Unix98 range of the kernel's device list
    assert pty_slave_majors(tmp_path / "absent") == frozenset(range(136, 144))


async def test_meta_of_a_daemon_on_the_simulator(rig: Rig, tmp_path: Path) -> None:
    config = daemon_config(rig.sim.link, tmp_path / "unused")
    meta = device_meta(config, rig.controller)
    assert meta["simulated"] is True
    assert meta["simulated_basis"] == "port is a pseudo-terminal"
    assert meta["port"] == str(rig.sim.link)
    assert meta["port_resolved"].startswith("/dev/pts/")   # the simulator serves a pty
    assert meta["schema_version"] == 1
    assert (meta["model"], meta["dialect"]) == ("magstim-rapid2", "magstim")
    assert meta["firmware"]
    caps = meta["capabilities"]
    assert caps["max_output_pct_mso"] == 100 and caps["mains_voltage"] == 240
    assert caps["energy_model"] == {"rapid_type": "type0", "mains_voltage": 240}
    assert meta["site"]["max_pulses_per_patient_per_day"] == (
        config.site.max_pulses_per_patient_per_day)
