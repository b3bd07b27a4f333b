"""Keep a stop from being overtaken by arming commands sent before it.

Stops reach the daemon over their own broker connection so that a flood of other
commands can never hold them back. The price is ordering: the broker delivers the two
connections independently, so a ``start`` sent just before a ``stop`` may still be
travelling on the main connection when the stop has already been executed, and would
then arm the device after the stop.

The main connection receives every stop too (its subscription covers the whole ``cmd``
subtree), in the broker's order. That copy is the fence: once it has arrived, everything
the broker handled before the stop has arrived as well. Until then, arming commands that
come in on the main connection were sent before the stop and are refused, exactly as a
stop refuses the arming commands still waiting in the daemon's queue.

A copy can be lost (the broker drops messages for a client whose queue is full), so an
open fence also closes by itself after ``hold_s``: the daemon's bound on a command's age.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import structlog

log = structlog.get_logger("stimd.mqtt")

#: (operator, command id) of one stop.
StopKey = tuple[str, str]


@dataclass(slots=True)
class _Copies:
    pending: int  # copies seen on the stop connection minus copies seen on the main one
    holds: bool  # one of the stop connection's copies was accepted for execution
    deadline: float  # monotonic seconds; the entry is forgotten after it


class StopFence:
    """Pairs each stop's two copies; open while an executed stop's main copy is missing."""

    def __init__(self, hold_s: float, capacity: int) -> None:
        if not hold_s > 0:
            raise ValueError(f"hold_s={hold_s} must be positive")
        if capacity < 1:
            raise ValueError(f"capacity={capacity} must be at least 1")
        self._hold_s = hold_s
        self._capacity = capacity
        self._copies: OrderedDict[StopKey, _Copies] = OrderedDict()

    def stop_lane_copy(self, key: StopKey, now: float, *, executes: bool) -> None:
        """The stop connection delivered ``key``; ``executes``: it was queued to run."""
        self._count(key, +1, now, executes=executes)

    def main_copy(self, key: StopKey, now: float) -> None:
        """The main connection delivered ``key``: it has caught up with that stop."""
        self._count(key, -1, now, executes=False)

    def holder(self, now: float) -> StopKey | None:
        """The oldest executed stop whose main copy has not arrived yet, if any."""
        self._expire(now)
        for key, copies in self._copies.items():
            if copies.pending > 0 and copies.holds:
                return key
        return None

    def clear(self) -> None:
        """A new broker session: nothing sent before it can still arrive."""
        self._copies.clear()

    def __len__(self) -> int:
        return len(self._copies)

    def _count(self, key: StopKey, step: int, now: float, *, executes: bool) -> None:
        self._expire(now)
        copies = self._copies.get(key)
        if copies is None:
            copies = self._copies[key] = _Copies(0, False, now + self._hold_s)
        copies.pending += step
        copies.holds = copies.holds or executes
        if copies.pending == 0:
            del self._copies[key]
        elif len(self._copies) > self._capacity:
            self._forget(next(iter(self._copies)), "too many unpaired stop copies")

    def _expire(self, now: float) -> None:
        # entries are created in time order and keep their first deadline
        while self._copies:
            key, copies = next(iter(self._copies.items()))
            if copies.deadline > now:
                return
            self._forget(key, "its copy on the main connection did not arrive in time")

    def _forget(self, key: StopKey, why: str) -> None:
        copies = self._copies.pop(key)
        if copies.pending > 0 and copies.holds:
            log.warning("mqtt_stop_fence_released", user=key[0], id=key[1], reason=why)
