"""Shared pieces of the driver contract suite (constants, fault log, train choice)."""

from __future__ import annotations

import asyncio
import time

import pytest

from drivers.base import Stimulator
from drivers.errors import DriverError
from protocols.schedule import TrainSpec

RAPIDS = ("magstim-rapid2", "magstim-superrapid2", "magstim-superrapid2-plus1")
MAGSTIMS = ("magstim-200", "magstim-bistim", *RAPIDS)
MAGVENTURES = ("magventure-r30", "magventure-x100")


def mains_for(name: str) -> int | None:
    return 240 if name in RAPIDS else None



class FaultLog:
    """Collects what the driver reports to its fault listener, with arrival times."""

    def __init__(self) -> None:
        self.errors: list[tuple[float, DriverError]] = []

    def __call__(self, error: DriverError) -> None:
        self.errors.append((time.monotonic(), error))

    def of_type(self, kind: type[DriverError]) -> list[DriverError]:
        return [e for _, e in self.errors if isinstance(e, kind)]

    async def wait_for(self, kind: type[DriverError], timeout_s: float) -> float:
        """Seconds until the first ``kind`` was reported; fails after ``timeout_s``."""
        start = time.monotonic()
        while True:
            for at, error in self.errors:
                if isinstance(error, kind):
                    return max(0.0, at - start)
            if time.monotonic() - start > timeout_s:
                reported = [f"{e.code}: {e.reason}" for _, e in self.errors]
                pytest.fail(f"no {kind.__name__} within {timeout_s} s; reported: {reported}")
            await asyncio.sleep(0.02)


def train_for(stimulator: Stimulator, *, pulses: int = 10, power: int = 50) -> TrainSpec:
    """10 pulses at 10 Hz where the unit runs trains; a single pulse on a 200²/BiStim²."""
    if not stimulator.capabilities.supports_trains:
        pulses = 1
    return TrainSpec(
        index=0, onset_us=0, pulses=pulses, pulse_interval_us=100_000, burst_pulses=1,
        bursts=pulses, burst_interval_us=100_000, intensity_pct_mso=power,
    )
