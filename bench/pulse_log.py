"""Reading the simulator's ground-truth log as it grows.

The simulator flushes one JSON line per event, so a reader may see a last line that is
still being written: it is left for the next read rather than parsed half.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

POLL_S = 0.005


class PulseLogTail:
    """Incremental reader of one pulse log; ``records`` holds everything read so far."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: list[dict[str, Any]] = []
        self._offset = 0
        self._partial = b""

    def read_new(self) -> list[dict[str, Any]]:
        """Records appended since the last call."""
        try:
            with self.path.open("rb") as log:
                log.seek(self._offset)
                chunk = log.read()
        except FileNotFoundError:
            return []
        self._offset += len(chunk)
        data = self._partial + chunk
        *lines, self._partial = data.split(b"\n")
        fresh = [json.loads(line) for line in lines if line.strip()]
        self.records.extend(fresh)
        return fresh

    def mark(self) -> int:
        """Read what is there now; the index from which later records will be found."""
        self.read_new()
        return len(self.records)

    async def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout_s: float,
                       what: str, *, start: int = 0) -> dict[str, Any]:
        """The first record from index ``start`` on (read or new) matching ``predicate``."""
        deadline = time.monotonic() + timeout_s
        checked = start
        while True:
            self.read_new()
            for record in self.records[checked:]:
                if predicate(record):
                    return record
            checked = len(self.records)
            if time.monotonic() > deadline:
                raise TimeoutError(f"simulator log {self.path}: no {what} within {timeout_s} s")
            await asyncio.sleep(POLL_S)
