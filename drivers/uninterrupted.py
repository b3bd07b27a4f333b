"""Run an operation that must not stop half-way to its end, even when its caller is cancelled.

Two driver operations are like that: writing a command (a fragment left on the line
would be joined to the next command by the device) and disarming (a disarm abandoned
before its command went out leaves the unit armed, and kept armed by the keep-alive).
The operation itself must be bounded by its own timeouts; the caller's cancellation is
re-raised once it has finished, so cancellation still propagates as asyncio expects.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


async def finish_even_if_cancelled(operation: Coroutine[Any, Any, T], what: str) -> T:
    """Await ``operation`` to its end; if the caller was cancelled meanwhile, raise
    ``CancelledError`` afterwards (an error of the operation is then only logged, since
    the caller is no longer there to handle it)."""
    task = asyncio.create_task(operation, name=what)
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        if not task.cancelled() and task.exception() is not None:
            log.warning("%s (its caller was cancelled) failed: %r", what, task.exception())
        raise asyncio.CancelledError
    return task.result()
