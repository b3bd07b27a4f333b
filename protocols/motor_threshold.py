"""The patient's motor threshold: the unit every prescription is scaled by."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from protocols.model import ProtocolError

MtMethod = Literal["emg", "visual"]
MT_METHODS: tuple[MtMethod, ...] = ("emg", "visual")


@dataclass(frozen=True, slots=True)
class MotorThreshold:
    """Resting motor threshold in integer %MSO, measured on this stimulator and coil.

    The method matters: visual-twitch thresholds run ~11 % above EMG ones (Westin
    2014), and the date matters because thresholds drift over a treatment course.
    """

    pct_mso: int
    method: MtMethod
    measured_at: datetime

    def __post_init__(self) -> None:
        problems: list[str] = []
        if isinstance(self.pct_mso, bool) or not isinstance(self.pct_mso, int):
            problems.append(
                f"motor_threshold.pct_mso: must be an integer %MSO, got {self.pct_mso!r}"
            )
        elif not 1 <= self.pct_mso <= 100:
            problems.append(
                f"motor_threshold.pct_mso: must be between 1 and 100 %MSO, got {self.pct_mso}"
            )
        if self.method not in MT_METHODS:
            problems.append(
                f"motor_threshold.method: must be one of {', '.join(MT_METHODS)}, "
                f"got {self.method!r}"
            )
        measured: object = self.measured_at  # callers may pass anything at runtime
        if not isinstance(measured, datetime):
            problems.append(f"motor_threshold.measured_at: must be a datetime, got {measured!r}")
        elif measured.utcoffset() is None:
            problems.append(
                f"motor_threshold.measured_at: must carry a UTC offset, got "
                f"{measured.isoformat()}"
            )
        if problems:
            raise ProtocolError(problems)
