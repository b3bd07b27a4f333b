"""Coil types the simulator can plug in, with their thermal parameters.

No vendor publishes a thermal model of its coils, so these are lumped first-order
parameters chosen to reproduce the behaviour clinics report, and calibrated against
two checks (``tests/simulator/test_thermal.py``): the FDA 10 Hz protocol at 60 % MSO
completes on a cooled clinical coil, and a long high-intensity protocol trips an
uncooled coil. See ``docs/simulator.md`` for the reasoning behind each number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

CoilVendor = Literal["magstim", "magventure"]

# Coil temperature above which a unit disarms and refuses to arm (Magstim, 40 °C;
# IEC 60601-1 allows 41 °C for applied parts, so the units keep a margin).
COIL_TRIP_C = 40.0
AMBIENT_C = 22.0


@dataclass(frozen=True, slots=True)
class CoilProfile:
    """One coil type: identity on the wire and its thermal constants."""

    name: str
    vendor: CoilVendor
    display_name: str
    cooled: bool
    heat_fraction: float            # share of the pulse energy dissipated in the winding
    heat_capacity_j_per_k: float    # effective heat capacity of winding + potting
    cooling_time_constant_s: float  # e-folding time of cooling towards ambient
    type_code: int                  # MagVenture status COIL byte (never 0xFF)


COILS: dict[str, CoilProfile] = {
    coil.name: coil
    for coil in (
        CoilProfile("d70-figure8", "magstim", "Magstim D70² figure-of-eight (uncooled)",
                    cooled=False, heat_fraction=0.10, heat_capacity_j_per_k=800.0,
                    cooling_time_constant_s=1800.0, type_code=0),
        CoilProfile("d70-air-film", "magstim", "Magstim D70 Air Film (air-cooled)",
                    cooled=True, heat_fraction=0.10, heat_capacity_j_per_k=600.0,
                    cooling_time_constant_s=240.0, type_code=0),
        CoilProfile("r90-circular", "magstim", "Magstim 90 mm circular (uncooled)",
                    cooled=False, heat_fraction=0.10, heat_capacity_j_per_k=1000.0,
                    cooling_time_constant_s=2100.0, type_code=0),
        CoilProfile("mcf-b65", "magventure", "MagVenture MCF-B65 butterfly (uncooled)",
                    cooled=False, heat_fraction=0.10, heat_capacity_j_per_k=800.0,
                    cooling_time_constant_s=1800.0, type_code=60),
        CoilProfile("cool-b65", "magventure", "MagVenture Cool-B65 (liquid-cooled)",
                    cooled=True, heat_fraction=0.10, heat_capacity_j_per_k=600.0,
                    cooling_time_constant_s=240.0, type_code=72),
    )
}

DEFAULT_COIL: dict[str, str] = {
    "magstim-200": "d70-figure8",
    "magstim-bistim": "d70-figure8",
    "magstim-rapid2": "d70-air-film",
    "magstim-superrapid2": "d70-air-film",
    "magstim-superrapid2-plus1": "d70-air-film",
    "magventure-r30": "cool-b65",
    "magventure-x100": "cool-b65",
}


def coil_for(device: str, coil_name: str | None) -> CoilProfile:
    """The coil plugged into ``device``: ``coil_name`` or the device's default.

    A coil of the other vendor does not fit the connector, so it is rejected.
    """
    name = coil_name if coil_name is not None else DEFAULT_COIL[device]
    try:
        coil = COILS[name]
    except KeyError:
        raise ValueError(f"unknown coil {name!r}; known: {', '.join(sorted(COILS))}") from None
    if not device.startswith(coil.vendor + "-"):
        fitting = sorted(c.name for c in COILS.values() if device.startswith(c.vendor + "-"))
        raise ValueError(
            f"coil {name!r} is a {coil.vendor} coil and does not fit {device}; "
            f"fitting coils: {', '.join(fitting)}"
        )
    return coil
