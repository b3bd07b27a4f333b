"""How each benchmark module runs from the command line: cleanly, even when interrupted.

SIGTERM and Ctrl-C cancel the benchmark's main task, so every ``with``/``async with``
around a process unwinds and stops it before the interpreter exits.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")
EXIT_INTERRUPTED = 130


async def _cancellable(main: Callable[[], Awaitable[T]]) -> T:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await main()
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def run_main(main: Callable[[], Awaitable[Any]]) -> int:
    """Run one benchmark; 0 when it completed, 130 when interrupted (all cleaned up)."""
    try:
        asyncio.run(_cancellable(main))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted: every process of the stack was stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0
