"""Injectable faults: what can go wrong with a unit, its coil, or its cable.

A fault request is validated like any other safety-relevant input: unknown faults
and unknown or out-of-range parameters are rejected with a reason naming the key,
the value and the limit, never clamped.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

FAULTS: dict[str, dict[str, tuple[type, float, float]]] = {
    # name: {param: (type, min, max)}
    "coil_overtemp": {"celsius": (float, 40.1, 99.9)},
    "coil_removed": {},
    "device_error": {"code": (str, 3, 3)},
    "garble": {"rate": (float, 0.0, 1.0), "seed": (int, 0, 2**32 - 1)},
    "drop": {"rate": (float, 0.0, 1.0), "seed": (int, 0, 2**32 - 1)},
    "delay": {"seconds": (float, 0.0, 30.0)},
    "stuck": {},
    "unplug": {},
    "coil_temperature": {"celsius": (float, 0.0, 99.9)},
}
DEFAULTS: dict[str, dict[str, Any]] = {
    "coil_overtemp": {"celsius": 45.0},
    "device_error": {"code": "E01"},
    "garble": {"rate": 1.0},
    "drop": {"rate": 1.0},
}


class FaultRequestError(ValueError):
    """A fault request that names an unknown fault or carries a bad parameter."""


def validate_fault(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Return the parameters of fault ``name`` with defaults applied, or raise."""
    if name not in FAULTS:
        raise FaultRequestError(f"unknown fault {name!r}; known: {', '.join(sorted(FAULTS))}")
    spec = FAULTS[name]
    unknown = sorted(set(params) - set(spec))
    if unknown:
        raise FaultRequestError(
            f"fault {name!r} takes {sorted(spec) or 'no parameters'}, got unknown {unknown}"
        )
    merged = {**DEFAULTS.get(name, {}), **params}
    missing = sorted(set(spec) - set(merged) - {"seed"})
    if missing:
        raise FaultRequestError(f"fault {name!r} needs parameter(s) {missing}")
    for key, value in merged.items():
        kind, low, high = spec[key]
        if kind is str:
            if not isinstance(value, str) or not value.isascii() or not value.isprintable():
                raise FaultRequestError(f"{name}.{key} must be printable ASCII, got {value!r}")
            if not low <= len(value) <= high:
                raise FaultRequestError(
                    f"{name}.{key} must be {int(low)} characters, got {value!r}"
                )
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise FaultRequestError(f"{name}.{key} must be a number, got {value!r}")
        if kind is int and not isinstance(value, int):
            raise FaultRequestError(f"{name}.{key} must be an integer, got {value!r}")
        if not math.isfinite(value) or not low <= value <= high:
            raise FaultRequestError(f"{name}.{key}={value!r} outside {low}..{high}")
        merged[key] = kind(value)
    return merged


@dataclass
class LinkFaults:
    """Faults that act on the bytes the unit sends (see ``link.PtyLink``)."""

    garble_rate: float = 0.0
    drop_rate: float = 0.0
    delay_s: float = 0.0
    stuck: bool = False
    rng: random.Random = field(default_factory=random.Random)

    def clear(self) -> None:
        self.garble_rate = self.drop_rate = self.delay_s = 0.0
        self.stuck = False

    def as_dict(self) -> dict[str, Any]:
        return {"garble_rate": self.garble_rate, "drop_rate": self.drop_rate,
                "delay_s": self.delay_s, "stuck": self.stuck}
