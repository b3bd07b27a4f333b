"""The simulator's ground truth: one JSON line per pulse and per state change.

Tests and benchmarks judge the daemon by this file rather than by the daemon's own
word, so every line is written and flushed before the simulator moves on: the file
stays complete even when the simulator is killed with SIGKILL. In-process observers
(tests that run the simulator inside their own event loop) read the same records
from ``records``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

Subscriber = Callable[[dict[str, Any]], None]

# Event kinds written to the log. "command" and "keepalive" carry the monotonic time at
# which the device had received the complete command (after line-rate emulation).
EVENT_KINDS = frozenset({
    "start", "pulse", "armed", "ready", "disarmed", "remote_on", "remote_lost",
    "remote_off", "fault", "fault_cleared", "train_started", "train_completed",
    "train_aborted", "keepalive", "command", "refused", "unplugged", "plugged", "stop",
})


class EventLog:
    """Append-only JSON-lines log, flushed per line; also kept in memory."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.records: list[dict[str, Any]] = []
        self._subscribers: list[Subscriber] = []
        self._file: IO[str] | None = (
            path.open("a", encoding="utf-8", buffering=1) if path is not None else None
        )

    def emit(self, event: str, *, mono_ns: int | None = None, **fields: Any) -> dict[str, Any]:
        """Record ``event``; ``mono_ns`` defaults to now (``time.monotonic_ns``)."""
        if event not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {event!r}; known: {sorted(EVENT_KINDS)}")
        record: dict[str, Any] = {
            "event": event,
            "mono_ns": time.monotonic_ns() if mono_ns is None else mono_ns,
            "wall": time.time(),
            **fields,
        }
        self.records.append(record)
        if self._file is not None:
            self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
            self._file.flush()
        for subscriber in self._subscribers:
            subscriber(record)
        return record

    def subscribe(self, subscriber: Subscriber) -> None:
        """Call ``subscriber`` with every record after it is durable (dialects that
        report state changes on the wire, e.g. MagVenture, listen here)."""
        self._subscribers.append(subscriber)

    def count(self, event: str) -> int:
        return sum(1 for r in self.records if r["event"] == event)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
