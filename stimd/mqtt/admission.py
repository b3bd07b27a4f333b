"""Fair, bounded command queues with a stop lane that never waits behind other work.

Two lanes: ``stop`` commands go to their own lane, served by their own worker, so a stop
is executed while a slow command is still running and never sits behind queued work.
Within a lane operators are served round-robin, each with a bounded queue and (for the
ordinary lane) a token bucket, so one operator's flood neither grows memory nor starves
another operator.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Generic, TypeVar


class Lane(Enum):
    STOP = "stop"
    ORDINARY = "ordinary"


class TokenBucket:
    """``rate`` tokens per second up to ``burst``; a command spends one."""

    def __init__(self, rate_per_s: float, burst: int, now: float) -> None:
        if not rate_per_s > 0:
            raise ValueError(f"rate_per_s={rate_per_s} must be positive")
        if burst < 1:
            raise ValueError(f"burst={burst} must be at least 1")
        self._rate = rate_per_s
        self._burst = float(burst)
        self._tokens = float(burst)
        self._stamp = now

    def take(self, now: float) -> bool:
        elapsed = max(0.0, now - self._stamp)
        self._stamp = now
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a command was not queued."""

    reason: str


class FairQueue(Generic[T]):
    """Per-operator FIFO queues served round-robin; ``get`` waits for the next item."""

    def __init__(self, depth_per_operator: int) -> None:
        if depth_per_operator < 1:
            raise ValueError(f"depth_per_operator={depth_per_operator} must be at least 1")
        self._depth = depth_per_operator
        self._queues: OrderedDict[str, deque[T]] = OrderedDict()
        self._ready = asyncio.Event()

    def put(self, operator: str, item: T) -> Refusal | None:
        queue = self._queues.get(operator)
        if queue is None:
            queue = self._queues[operator] = deque()
        if len(queue) >= self._depth:
            return Refusal(
                f"operator {operator!r} already has {len(queue)} commands waiting "
                f"(queue_depth {self._depth})"
            )
        queue.append(item)
        self._ready.set()
        return None

    async def get(self) -> T:
        while not self._queues:
            self._ready.clear()
            await self._ready.wait()
        item = self.pop()
        assert item is not None
        return item

    def pop(self) -> T | None:
        """The next item in the rotation, or None when nothing waits."""
        if not self._queues:
            return None
        operator, queue = self._queues.popitem(last=False)
        item = queue.popleft()
        if queue:
            self._queues[operator] = queue  # back of the rotation
        return item

    def remove_if(self, predicate: Callable[[T], bool]) -> list[T]:
        """Remove and return the waiting items ``predicate`` selects; the rest keep order."""
        removed: list[T] = []
        for operator in list(self._queues):
            queue = self._queues[operator]
            kept = deque(item for item in queue if not predicate(item))
            removed += [item for item in queue if predicate(item)]
            if kept:
                self._queues[operator] = kept
            else:
                del self._queues[operator]
        return removed

    def drain(self) -> list[T]:
        """Remove and return everything waiting."""
        items = [item for queue in self._queues.values() for item in queue]
        self._queues.clear()
        return items

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues.values())


class PriorityOutbox(Generic[T]):
    """Two fair queues drained first-before-second, e.g. results before refusals.

    Results are bounded by the command queues that produced them; refusals are produced
    at the rate messages arrive and are the ones dropped when a flood outruns the broker.
    """

    def __init__(self, depth_per_operator: int) -> None:
        self.first: FairQueue[T] = FairQueue(depth_per_operator)
        self.second: FairQueue[T] = FairQueue(depth_per_operator)
        self._ready = asyncio.Event()

    def put(self, operator: str, item: T, *, first: bool) -> Refusal | None:
        refusal = (self.first if first else self.second).put(operator, item)
        if refusal is None:
            self._ready.set()
        return refusal

    async def get(self) -> T:
        while True:
            item = self.first.pop()
            if item is None:
                item = self.second.pop()
            if item is not None:
                return item
            self._ready.clear()
            await self._ready.wait()

    def drain(self) -> list[T]:
        return self.first.drain() + self.second.drain()
