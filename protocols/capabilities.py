"""What a stimulator can physically do: the device limit source for validation.

Built-in profiles describe the supported models from the vendors' published figures
(see ``docs/devices.md``); drivers later confirm or refine them from the real unit.
The Rapid energy model is Magstim's, as implemented by MagPy and MAGIC:
``rapid_joules_per_pulse.csv`` and ``rapid_max_frequency_hz.csv`` in ``protocols/data``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from importlib import resources
from typing import Literal

Vendor = Literal["magstim", "magventure"]
MainsVoltage = Literal[115, 240]


class RapidType(StrEnum):
    """Column family of the Rapid frequency table."""

    RAPID2 = "type0"
    SUPER_RAPID2 = "type1"
    SUPER_RAPID2_PLUS1 = "type2"


MAGSTIM_MODELS = (
    "magstim-200",
    "magstim-bistim",
    "magstim-rapid2",
    "magstim-superrapid2",
    "magstim-superrapid2-plus1",
)
MAGVENTURE_MODELS = ("magventure-r30", "magventure-x100")
DEVICE_MODELS = MAGSTIM_MODELS + MAGVENTURE_MODELS

_RAPID_TYPES = {
    "magstim-rapid2": RapidType.RAPID2,
    "magstim-superrapid2": RapidType.SUPER_RAPID2,
    "magstim-superrapid2-plus1": RapidType.SUPER_RAPID2_PLUS1,
}
RAPID_MODELS: tuple[str, ...] = tuple(_RAPID_TYPES)  # the models whose limits need mains volts

# Rapid energy model constants (Magstim, via MagPy/MAGIC): the HV supply delivers
# 1050 J/s continuously and a train may draw at most 63 000 J.
RAPID_CONTINUOUS_JOULES_PER_S = 1050.0
RAPID_TRAIN_ENERGY_J = 63000.0
RAPID_MIN_WAIT_S = 0.5
RAPID_MAX_ON_TIME_S = 60.0


class UnknownDeviceError(ValueError):
    """A device model name that has no profile."""


@cache
def _joules_table() -> tuple[float, ...]:
    text = resources.files("protocols").joinpath("data/rapid_joules_per_pulse.csv").read_text()
    rows = list(csv.DictReader(text.splitlines()))
    table = tuple(float(r["joules"]) for r in rows)
    if len(table) != 101:
        raise RuntimeError("rapid_joules_per_pulse.csv must have rows 0..100")
    return table


@cache
def _frequency_table() -> dict[str, tuple[int, ...]]:
    text = resources.files("protocols").joinpath("data/rapid_max_frequency_hz.csv").read_text()
    rows = list(csv.DictReader(text.splitlines()))
    if len(rows) != 101:
        raise RuntimeError("rapid_max_frequency_hz.csv must have rows 0..100")
    columns = {
        (240, RapidType.RAPID2): "240V_rapid(type0)",
        (240, RapidType.SUPER_RAPID2): "240V_superRapid(type1)",
        (240, RapidType.SUPER_RAPID2_PLUS1): "240V_superRapidPlus1(type2)",
        (115, RapidType.RAPID2): "115V_type0",
        (115, RapidType.SUPER_RAPID2): "115V_type1",
        (115, RapidType.SUPER_RAPID2_PLUS1): "115V_type2",
    }
    return {
        f"{volts}:{rtype.value}": tuple(int(r[col]) for r in rows)
        for (volts, rtype), col in columns.items()
    }


def rapid_joules_per_pulse(pct_mso: int) -> float:
    """Energy of one Rapid pulse at ``pct_mso`` (0..100), from Magstim's table."""
    if not 0 <= pct_mso <= 100:
        raise ValueError(f"power {pct_mso} %MSO outside the Rapid energy table 0..100")
    return _joules_table()[pct_mso]


@dataclass(frozen=True, slots=True)
class RapidEnergyModel:
    """Magstim Rapid duty-cycle limits for one model and mains voltage."""

    rapid_type: RapidType
    mains_voltage: MainsVoltage

    def max_frequency_hz(self, pct_mso: int) -> float:
        """Highest train frequency the unit allows at this power."""
        if not 0 <= pct_mso <= 100:
            raise ValueError(f"power {pct_mso} %MSO outside the Rapid frequency table 0..100")
        return float(_frequency_table()[f"{self.mains_voltage}:{self.rapid_type.value}"][pct_mso])

    @staticmethod
    def max_on_time_s(pct_mso: int, frequency_hz: float) -> float:
        """Longest train at this power and rate: 63000 / (f·J), capped at 60 s."""
        joules = rapid_joules_per_pulse(pct_mso)
        if joules <= 0:
            return RAPID_MAX_ON_TIME_S
        return min(RAPID_MAX_ON_TIME_S, RAPID_TRAIN_ENERGY_J / (frequency_hz * joules))

    @staticmethod
    def min_wait_s(pct_mso: int, frequency_hz: float, pulses: int) -> float:
        """Shortest gap after a train: max(0.5, N·(f·J − 1050) / (1050·f))."""
        joules = rapid_joules_per_pulse(pct_mso)
        draw = pulses * (frequency_hz * joules - RAPID_CONTINUOUS_JOULES_PER_S)
        return max(RAPID_MIN_WAIT_S, draw / (RAPID_CONTINUOUS_JOULES_PER_S * frequency_hz))

    @staticmethod
    def max_continuous_frequency_hz(pct_mso: int) -> float:
        """Rate the supply sustains indefinitely: 1050 / J."""
        joules = rapid_joules_per_pulse(pct_mso)
        return float("inf") if joules <= 0 else RAPID_CONTINUOUS_JOULES_PER_S / joules


@dataclass(frozen=True, slots=True)
class DeviceCapabilities:
    """The device limit source. Frequencies in Hz, intensities in integer %MSO."""

    model: str                         # registry name, e.g. "magstim-rapid2"
    vendor: Vendor
    display_name: str
    max_output_pct_mso: int            # 100; Magstim's enhanced power mode is never used
    max_frequency_hz: float            # absolute ceiling of the train rate at any power
    supports_trains: bool              # False: single pulses only (200², BiStim²)
    supports_bursts: bool              # native theta-burst over the serial link
    max_burst_pulses: int              # pulses per burst when supports_bursts, else 1
    max_pulses_per_train: int
    min_single_pulse_interval_s: float  # single-pulse mode rate limit
    min_inter_train_gap_s: float       # the unit's own minimum between trains
    mains_voltage: MainsVoltage | None
    energy_model: RapidEnergyModel | None   # Rapid family only
    # Power-dependent recharge after a single pulse: (highest %MSO of the band, seconds),
    # ascending. The 200² needs 2 s up to 49 %, 3 s up to 79 %, 4 s above (Magstim,
    # via MagPy/MAGIC); empty where the flat single-pulse limit already covers it.
    single_pulse_recharge_s: tuple[tuple[int, float], ...] = ()

    def min_single_pulse_interval_at(self, pct_mso: int) -> float:
        """The shortest interval between single pulses at this power."""
        for highest_pct, seconds in self.single_pulse_recharge_s:
            if pct_mso <= highest_pct:
                return max(self.min_single_pulse_interval_s, seconds)
        return self.min_single_pulse_interval_s

    def max_frequency_at(self, pct_mso: int) -> float:
        """The frequency-dependent ceiling at this power (the Rapid table where it applies)."""
        if self.energy_model is None:
            return self.max_frequency_hz
        return min(self.max_frequency_hz, self.energy_model.max_frequency_hz(pct_mso))


def device_profile(model: str, mains_voltage: int | None = None) -> DeviceCapabilities:
    """The built-in profile of ``model``; Rapids need the mains voltage (240 or 115)."""
    if model in _RAPID_TYPES:
        if mains_voltage not in (240, 115):
            raise ValueError(
                f"{model} needs mains_voltage 240 or 115 (its limits depend on it), "
                f"got {mains_voltage!r}"
            )
        volts: MainsVoltage = 240 if mains_voltage == 240 else 115
        rtype = _RAPID_TYPES[model]
        energy = RapidEnergyModel(rtype, volts)
        names = {
            RapidType.RAPID2: "Magstim Rapid²",
            RapidType.SUPER_RAPID2: "Magstim Super Rapid²",
            RapidType.SUPER_RAPID2_PLUS1: "Magstim Super Rapid² Plus¹",
        }
        return DeviceCapabilities(
            model=model,
            vendor="magstim",
            display_name=names[rtype],
            max_output_pct_mso=100,
            max_frequency_hz=float(max(energy.max_frequency_hz(p) for p in range(101))),
            supports_trains=True,
            supports_bursts=False,
            max_burst_pulses=1,
            max_pulses_per_train=6000,
            min_single_pulse_interval_s=1.0,
            min_inter_train_gap_s=RAPID_MIN_WAIT_S,
            mains_voltage=volts,
            energy_model=energy,
        )
    if mains_voltage is not None and mains_voltage not in (240, 115):
        raise ValueError(f"mains_voltage must be 240 or 115, got {mains_voltage!r}")
    volts_opt: MainsVoltage | None = (
        None if mains_voltage is None else (240 if mains_voltage == 240 else 115)
    )
    if model == "magstim-200":
        return DeviceCapabilities(
            model=model, vendor="magstim", display_name="Magstim 200²",
            max_output_pct_mso=100, max_frequency_hz=0.5, supports_trains=False,
            supports_bursts=False, max_burst_pulses=1, max_pulses_per_train=1,
            min_single_pulse_interval_s=2.0, min_inter_train_gap_s=2.0,
            mains_voltage=volts_opt, energy_model=None,
            single_pulse_recharge_s=((49, 2.0), (79, 3.0), (100, 4.0)),
        )
    if model == "magstim-bistim":
        return DeviceCapabilities(
            model=model, vendor="magstim", display_name="Magstim BiStim²",
            max_output_pct_mso=100, max_frequency_hz=0.25, supports_trains=False,
            supports_bursts=False, max_burst_pulses=1, max_pulses_per_train=1,
            min_single_pulse_interval_s=4.0, min_inter_train_gap_s=4.0,
            mains_voltage=volts_opt, energy_model=None,
        )
    if model == "magventure-r30":
        return DeviceCapabilities(
            model=model, vendor="magventure", display_name="MagVenture MagPro R30",
            max_output_pct_mso=100, max_frequency_hz=30.0, supports_trains=True,
            supports_bursts=True, max_burst_pulses=5, max_pulses_per_train=1000,
            min_single_pulse_interval_s=0.0, min_inter_train_gap_s=0.1,
            mains_voltage=volts_opt, energy_model=None,
        )
    if model == "magventure-x100":
        return DeviceCapabilities(
            model=model, vendor="magventure", display_name="MagVenture MagPro X100",
            max_output_pct_mso=100, max_frequency_hz=100.0, supports_trains=True,
            supports_bursts=True, max_burst_pulses=5, max_pulses_per_train=1000,
            min_single_pulse_interval_s=0.0, min_inter_train_gap_s=0.1,
            mains_voltage=volts_opt, energy_model=None,
        )
    raise UnknownDeviceError(
        f"unknown device model {model!r}; known: {', '.join(DEVICE_MODELS)}"
    )
