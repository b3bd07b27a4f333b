"""Answer a repeated command id with the first answer, never execute it twice.

One bounded, least-recently-used table per operator: a flood of fresh ids from one
operator evicts only that operator's oldest answers, never another's.
"""

from __future__ import annotations

from collections import OrderedDict
from enum import Enum

from stimd.commands import Reply


class InFlight(Enum):
    """The id was accepted and its command has not been answered yet."""

    MARK = "in-flight"


Remembered = Reply | InFlight


class ReplayCache:
    def __init__(self, size_per_operator: int) -> None:
        if size_per_operator < 1:
            raise ValueError(f"size_per_operator={size_per_operator} must be at least 1")
        self._size = size_per_operator
        self._tables: dict[str, OrderedDict[str, Remembered]] = {}

    def lookup(self, operator: str, command_id: str) -> Remembered | None:
        table = self._tables.get(operator)
        if table is None or command_id not in table:
            return None
        table.move_to_end(command_id)
        return table[command_id]

    def begin(self, operator: str, command_id: str) -> None:
        """Claim the id before the command is queued, so a repeat cannot slip in behind."""
        table = self._tables.setdefault(operator, OrderedDict())
        table[command_id] = InFlight.MARK
        table.move_to_end(command_id)
        self._trim(table)

    def finish(self, operator: str, command_id: str, reply: Reply) -> None:
        table = self._tables.setdefault(operator, OrderedDict())
        table[command_id] = reply
        table.move_to_end(command_id)
        self._trim(table)

    def forget(self, operator: str, command_id: str) -> None:
        """Release an id whose command was dropped unexecuted (e.g. the link went away)."""
        table = self._tables.get(operator)
        if table is not None and table.get(command_id) is InFlight.MARK:
            del table[command_id]

    def __len__(self) -> int:
        return sum(len(t) for t in self._tables.values())

    def _trim(self, table: OrderedDict[str, Remembered]) -> None:
        # Evict answered ids first; in-flight marks are bounded by the queue depth and
        # must survive so a repeat of a queued command is still recognised.
        while len(table) > self._size:
            victim = next((k for k, v in table.items() if v is not InFlight.MARK), None)
            if victim is None:
                break
            del table[victim]
