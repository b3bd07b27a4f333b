"""How each benchmark module runs from the command line: cleanly, even when interrupted.

SIGTERM and Ctrl-C cancel the benchmark's main task, so every ``with``/``async with``
around a process unwinds and stops it before the interpreter exits.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")
EXIT_INTERRUPTED = 130


def bounded(kind: Callable[[str], T], low: T, high: T) -> Callable[[str], T]:
    """An argparse ``type`` accepting ``low <= value <= high`` (NaN never is)."""

    def parse(text: str) -> T:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {kind.__name__}") from None
        if not low <= value <= high:  # type: ignore[operator]
            raise argparse.ArgumentTypeError(f"{text} is outside {low}..{high}")
        return value

    return parse


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
    """Run ``main``; its result when that is an exit status, else 0 (it completed); 130
    when interrupted (everything cleaned up)."""
    try:
        result = asyncio.run(_cancellable(main))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted: every process of the stack was stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    return result if isinstance(result, int) else 0
