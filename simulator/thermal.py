"""Coil temperature: a lumped first-order model on an injected clock.

Each pulse deposits ``heat_fraction × E(%MSO)`` joules into the winding, where E is
the stored pulse energy from Magstim's Rapid table (used for every device as the
energy-versus-output curve: stored energy grows with the square of the capacitor
voltage, and so does that table). Between pulses the coil relaxes exponentially
towards ambient. Time is passed in, never read, so a 40-minute protocol can be
checked in milliseconds (``simulate_protocol``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from protocols.capabilities import rapid_joules_per_pulse

from .coils import AMBIENT_C, COIL_TRIP_C, CoilProfile


def pulse_energy_j(pct_mso: int) -> float:
    """Stored energy of one pulse at ``pct_mso`` (above 100 % in enhanced mode: scaled
    with the square of the output, as the capacitor voltage scales with it)."""
    if pct_mso <= 100:
        return rapid_joules_per_pulse(pct_mso)
    return rapid_joules_per_pulse(100) * (pct_mso / 100) ** 2


class CoilThermalModel:
    """Temperature of one coil; ``t_s`` arguments are seconds on any monotonic clock."""

    def __init__(self, coil: CoilProfile, now_s: float, start_c: float = AMBIENT_C) -> None:
        self.coil = coil
        self.ambient_c = AMBIENT_C
        self._t_s = now_s
        self._temp_c = start_c

    def temperature_at(self, t_s: float) -> float:
        """Temperature at ``t_s`` (not before the last update), without changing state."""
        elapsed = max(0.0, t_s - self._t_s)
        decay = math.exp(-elapsed / self.coil.cooling_time_constant_s)
        return self.ambient_c + (self._temp_c - self.ambient_c) * decay

    def advance(self, t_s: float) -> float:
        self._temp_c = self.temperature_at(t_s)
        self._t_s = max(self._t_s, t_s)
        return self._temp_c

    def add_pulse(self, t_s: float, pct_mso: int) -> float:
        """Deposit one pulse's heat at ``t_s``; returns the new temperature."""
        self.advance(t_s)
        heat_j = self.coil.heat_fraction * pulse_energy_j(pct_mso)
        self._temp_c += heat_j / self.coil.heat_capacity_j_per_k
        return self._temp_c

    def set_temperature(self, t_s: float, celsius: float) -> None:
        self._t_s = max(self._t_s, t_s)
        self._temp_c = celsius


@dataclass(frozen=True, slots=True)
class ProtocolThermalResult:
    peak_c: float
    tripped_at_s: float | None    # simulated time of the first pulse above the limit
    pulses_delivered: int
    completed: bool


def simulate_protocol(
    coil: CoilProfile,
    *,
    pct_mso: int,
    trains: int,
    pulses_per_train: int,
    frequency_hz: float,
    train_period_s: float,
    start_c: float = AMBIENT_C,
    limit_c: float = COIL_TRIP_C,
) -> ProtocolThermalResult:
    """Run a train protocol (onset-to-onset ``train_period_s``) on simulated time and
    stop at the first pulse that leaves the coil above ``limit_c``, as the unit would."""
    model = CoilThermalModel(coil, now_s=0.0, start_c=start_c)
    peak = start_c
    delivered = 0
    for train in range(trains):
        for pulse in range(pulses_per_train):
            t = train * train_period_s + pulse / frequency_hz
            temp = model.add_pulse(t, pct_mso)
            delivered += 1
            peak = max(peak, temp)
            if temp > limit_c:
                return ProtocolThermalResult(peak, t, delivered, completed=False)
    return ProtocolThermalResult(peak, None, delivered, completed=True)
