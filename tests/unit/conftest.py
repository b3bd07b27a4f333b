"""Fixtures shared by the unit tests of the serial layer."""

from __future__ import annotations

import contextlib
import os
import tty
from collections.abc import Iterator

import pytest


@pytest.fixture
def pty_pair() -> Iterator[tuple[int, str]]:
    """A raw pty: the test drives the master fd, the code under test opens the slave path."""
    master, slave = os.openpty()
    tty.setraw(slave)
    yield master, os.ttyname(slave)
    for fd in (master, slave):
        with contextlib.suppress(OSError):
            os.close(fd)
