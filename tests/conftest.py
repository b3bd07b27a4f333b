"""Suite-wide fixtures: the opt-in soak flag and the leaked-task guard."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak", action="store_true", help="run long soak tests")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--soak"):
        return
    skip = pytest.mark.skip(reason="soak test: opt in with --soak (make soak)")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves asyncio tasks running behind it (habit 8)."""
    before = asyncio.all_tasks()
    yield
    await asyncio.sleep(0)
    leaked = {
        t for t in asyncio.all_tasks() - before
        if t is not asyncio.current_task() and not t.done()
    }
    if leaked:
        for task in leaked:
            task.cancel()
        pytest.fail(f"test leaked {len(leaked)} task(s): {[t.get_name() for t in leaked]}")
