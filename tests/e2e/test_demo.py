"""``stimd demo``: the README's first command runs a session and leaves nothing behind."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

STIMD = Path(sys.executable).with_name("stimd")


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that name ``text`` (the demo's own directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(cmdline)
    return found


def test_demo_runs_a_session_to_completion_and_cleans_up() -> None:
    demo = subprocess.Popen(
        [str(STIMD), "demo"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        out, _ = demo.communicate(timeout=100)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert demo.returncode == 0, out
    workdir = re.search(r"demo: working in (\S+)", out)
    assert workdir is not None, out
    assert not Path(workdir.group(1)).exists()
    assert "load: ok (state LOADED)" in out
    assert "COMPLETED" in out
    assert re.search(r"completed\s+DEMO-0001\s+demo-10hz-short\s+tech-demo\s+55\s+50/50", out)
    assert _processes_mentioning(workdir.group(1)) == []
