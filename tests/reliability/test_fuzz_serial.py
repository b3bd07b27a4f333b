"""Fuzzing the device side of the serial line into the Magstim driver.

A man in the middle on real pseudo-terminals: the driver opens a pty of ours, we pass
its bytes to the simulator's pty and pass the simulator's replies back after
Hypothesis-chosen damage — bytes flipped, dropped, duplicated, inserted, the line cut
short. Invariants: the driver only ever raises its own ``DriverError`` kinds (never an
arbitrary exception), every call returns within its bounds, and it never sends an arm or
fire command it was not asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import tty
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.errors import DriverError
from drivers.registry import create_driver
from simulator.testing import SimulatorProcess

from .results import write_result

#: Examples in the normal suite, and in ``make soak``.
EXAMPLES, SOAK_EXAMPLES = 25, 600
#: Bound on one example: a handshake, three status reads and a disarm, each exchange
#: bounded by the driver's ~0.5 s reply timeout, on a loaded box.
EXAMPLE_BOUND_S = 20.0
ARM, FIRE = b"EB", b"EH"
TALLY: Counter[str] = Counter()

damage = st.lists(
    st.one_of(
        st.just(("keep",)), st.just(("drop",)), st.just(("dup",)),
        st.tuples(st.just("flip"), st.integers(1, 255)),
        st.tuples(st.just("insert"), st.binary(min_size=1, max_size=4)),
    ),
    max_size=60,
)


@dataclass
class Damage:
    """Applies one operation per byte from the device until the plan runs out."""

    plan: list[tuple[Any, ...]]
    cut_after: int | None
    skip: int = 0          # bytes passed clean first, so damage also lands after the handshake
    passed: int = 0

    def apply(self, data: bytes) -> bytes:
        out = bytearray()
        for byte in data:
            if self.cut_after is not None and self.passed >= self.cut_after:
                return bytes(out)
            index = self.passed - self.skip
            self.passed += 1
            op = self.plan[index] if 0 <= index < len(self.plan) else ("keep",)
            if op[0] == "keep":
                out.append(byte)
            elif op[0] == "dup":
                out += bytes([byte, byte])
            elif op[0] == "flip":
                out.append(byte ^ op[1])
            elif op[0] == "insert":
                out += op[1] + bytes([byte])
        return bytes(out)


@dataclass
class Middle:
    """Our pty (the driver's side) wired to the simulator's pty through ``damage``."""

    host_master: int
    host_slave: int
    device: int
    damage: Damage
    sent: bytearray = field(default_factory=bytearray)

    @property
    def port(self) -> str:
        return os.ttyname(self.host_slave)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.add_reader(self.host_master, self._from_host)
        loop.add_reader(self.device, self._from_device)

    def stop(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.remove_reader(self.host_master)
        loop.remove_reader(self.device)
        for fd in (self.host_master, self.host_slave, self.device):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _from_host(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            data = os.read(self.host_master, 4096)
            self.sent += data
            os.write(self.device, data)

    def _from_device(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            data = self.damage.apply(os.read(self.device, 4096))
            if data:
                os.write(self.host_master, data)


@contextlib.asynccontextmanager
async def middle(sim: SimulatorProcess, damage_plan: Damage) -> AsyncIterator[Middle]:
    host_master, host_slave = os.openpty()
    tty.setraw(host_slave)
    os.set_blocking(host_master, False)
    device = os.open(str(sim.link), os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    tty.setraw(device)
    wire = Middle(host_master, host_slave, device, damage_plan)
    loop = asyncio.get_running_loop()
    wire.start(loop)
    try:
        yield wire
    finally:
        wire.stop(loop)


@pytest.fixture
async def simulator() -> AsyncIterator[SimulatorProcess]:
    async with SimulatorProcess(device="magstim-rapid2", mains=240, line_rate=False) as sim:
        yield sim


def damage_test(examples: int) -> Any:
    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(plan=damage, cut_after=st.none() | st.integers(0, 120), skip=st.integers(0, 60))
    async def test(simulator: SimulatorProcess, plan: list[tuple[Any, ...]],
                   cut_after: int | None, skip: int) -> None:
        async with middle(simulator, Damage(plan, cut_after, skip)) as wire:
            driver = create_driver("magstim-rapid2", wire.port, mains_voltage=240)
            outcome = "ok"
            try:
                async with asyncio.timeout(EXAMPLE_BOUND_S):
                    try:
                        await driver.connect()
                        for _ in range(3):
                            await driver.read_status()
                        await driver.disarm()
                    except DriverError as exc:
                        outcome = type(exc).__name__
                    finally:
                        with contextlib.suppress(DriverError):
                            await driver.close()
            except TimeoutError:
                pytest.fail(f"the driver hung past {EXAMPLE_BOUND_S} s")
        TALLY[outcome] += 1
        assert ARM not in wire.sent and FIRE not in wire.sent, (
            f"the driver sent an arm or fire command it was not asked for: {bytes(wire.sent)!r}"
        )

    return test


test_damaged_replies_only_ever_raise_driver_errors = damage_test(EXAMPLES)
test_soak_damaged_replies = pytest.mark.soak(pytest.mark.timeout(3600)(damage_test(SOAK_EXAMPLES)))


@pytest.fixture(autouse=True)
def report_volume(request: pytest.FixtureRequest) -> Any:
    """Each property test's volume and verdict, in its own results file (xdist-safe)."""
    TALLY.clear()
    failed_before = request.session.testsfailed
    yield
    if TALLY:
        write_result(f"fuzz-{request.node.name.removeprefix('test_')}", {
            "examples": sum(TALLY.values()), "outcomes": dict(sorted(TALLY.items())),
            "passed": request.session.testsfailed == failed_before, "finished_at": time.time(),
        })


def test_the_middle_passes_clean_bytes_unchanged() -> None:
    """A control for the fuzz: with no damage the bytes arrive as sent."""
    assert Damage([], None).apply(b"Q@\x3e") == b"Q@\x3e"
    assert Damage([("drop",), ("flip", 1)], 2).apply(b"abc") == b"c"
