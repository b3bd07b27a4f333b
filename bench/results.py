"""Summaries of measured samples, and the two lines every benchmark prints.

A benchmark's result is one JSON object (``benchmark``, its configuration, the measured
distributions in milliseconds, the floor where there is one, and ``targets``: each with
the limit, the measured value and whether it was met). It is printed as one JSON line
for machines and one sentence for people; ``bench.__main__`` collects the JSON objects
into ``docs/performance.md``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


def percentile(values: Sequence[float], fraction: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); no samples is an error."""
    if not values:
        raise ValueError("percentile of no samples")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction={fraction} outside 0..1")
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low = math.floor(position)
    high = math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def distribution_ms(samples_ns: Sequence[int]) -> dict[str, float | int]:
    """count, p50, p99, max (and min) of nanosecond samples, in milliseconds."""
    values = [s / 1e6 for s in samples_ns]
    return {
        "count": len(values),
        "min": round(min(values), 3),
        "p50": round(percentile(values, 0.50), 3),
        "p99": round(percentile(values, 0.99), 3),
        "max": round(max(values), 3),
    }


@dataclass(frozen=True, slots=True)
class Target:
    """One target of the issue: ``measured`` must be at most ``limit`` (same unit)."""

    name: str
    measured: float
    limit: float
    unit: str

    @property
    def met(self) -> bool:
        return self.measured <= self.limit

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "measured": round(self.measured, 3), "limit": self.limit,
                "unit": self.unit, "met": self.met}


def emit(result: dict[str, Any], sentence: str) -> None:
    """Print the JSON summary line, then the readable line."""
    print(json.dumps(result, sort_keys=True), flush=True)
    verdicts = ", ".join(
        f"{t['name']} {'met' if t['met'] else 'MISSED'}" for t in result.get("targets", []))
    print(f"{result['benchmark']}: {sentence}" + (f" [{verdicts}]" if verdicts else ""),
          flush=True)
