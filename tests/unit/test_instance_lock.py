"""One daemon per device, across processes, and no stale lock after a SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stimd.instance_lock import InstanceLock, InstanceLockedError


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the lock for dev01 until it is killed."""
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from stimd.instance_lock import InstanceLock
        lock = InstanceLock(Path({str(tmp_path)!r}), "dev01")
        print("held", flush=True)
        sys.stdin.read()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "held\n"
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.close()
    proc.stdout.close()


def test_a_second_process_for_the_same_device_is_refused(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    with pytest.raises(InstanceLockedError) as caught:
        InstanceLock(tmp_path, "dev01")
    assert str(caught.value) == (
        f"another stimd already runs device 'dev01' (pid {holder.pid}); "
        f"lock {tmp_path / 'dev01.lock'} is held"
    )


def test_another_device_is_independent(tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    with InstanceLock(tmp_path, "dev02") as lock:
        assert lock.held


def test_the_lock_is_free_again_after_its_holder_is_killed(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=30)
    with InstanceLock(tmp_path, "dev01") as lock:
        assert lock.held
        assert (tmp_path / "dev01.lock").read_text() == f"{os.getpid()}\n"
    assert not lock.held


def test_release_lets_the_next_instance_in(tmp_path: Path) -> None:
    first = InstanceLock(tmp_path, "dev01")
    with pytest.raises(InstanceLockedError):
        InstanceLock(tmp_path, "dev01")
    first.release()
    first.release()
    InstanceLock(tmp_path, "dev01").release()


@pytest.mark.parametrize("device_id", ["", "../etc", "dev 01", "a" * 65, None, ".hidden"])
def test_device_ids_that_are_not_file_names_are_rejected(tmp_path: Path, device_id: Any) -> None:
    with pytest.raises(ValueError) as caught:
        InstanceLock(tmp_path, device_id)
    assert str(caught.value) == (
        f"device_id={device_id!r} does not match [A-Za-z0-9][A-Za-z0-9._-]{{0,63}}"
    )
