"""One daemon per device: an exclusive ``flock`` on a lock file in the state directory.

Two daemons on one serial port would interleave commands to a device a person sits
under, and two writers would fork the session record. The kernel releases a ``flock``
when its holder dies, even by SIGKILL, so a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
import re
from pathlib import Path
from types import TracebackType
from typing import Self

_DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class InstanceLockedError(RuntimeError):
    """Another stimd already runs this device."""


class InstanceLock:
    """Held from construction until ``release()`` (or the end of a ``with`` block).

    Constructing it is acquiring it, so a daemon cannot forget to take the lock.
    """

    def __init__(self, state_dir: Path, device_id: str) -> None:
        if not isinstance(device_id, str) or not _DEVICE_ID.fullmatch(device_id):
            raise ValueError(f"device_id={device_id!r} does not match {_DEVICE_ID.pattern}")
        self.device_id = device_id
        self.path = Path(state_dir) / f"{device_id}.lock"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise InstanceLockedError(
                f"another stimd already runs device {device_id!r} (pid {holder}); "
                f"lock {self.path} is held"
            ) from None
        except OSError:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Give up the lock (idempotent). The file stays: removing it would race a waiter."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()
