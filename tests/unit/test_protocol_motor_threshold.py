"""The motor threshold refuses to exist with a bad value."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from protocols.model import ProtocolError
from protocols.motor_threshold import MotorThreshold

WHEN = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


def test_a_valid_threshold_keeps_its_values() -> None:
    mt = MotorThreshold(pct_mso=55, method="emg", measured_at=WHEN)
    assert (mt.pct_mso, mt.method, mt.measured_at) == (55, "emg", WHEN)
    local = datetime(2025, 3, 1, 10, 0, tzinfo=timezone(timedelta(hours=1)))
    assert MotorThreshold(1, "visual", local).measured_at == WHEN


@pytest.mark.parametrize(
    ("pct", "reason"),
    [
        (0, "motor_threshold.pct_mso: must be between 1 and 100 %MSO, got 0"),
        (-5, "motor_threshold.pct_mso: must be between 1 and 100 %MSO, got -5"),
        (101, "motor_threshold.pct_mso: must be between 1 and 100 %MSO, got 101"),
        (10**9, "motor_threshold.pct_mso: must be between 1 and 100 %MSO, got 1000000000"),
        (50.0, "motor_threshold.pct_mso: must be an integer %MSO, got 50.0"),
        (float("nan"), "motor_threshold.pct_mso: must be an integer %MSO, got nan"),
        (True, "motor_threshold.pct_mso: must be an integer %MSO, got True"),
        ("50", "motor_threshold.pct_mso: must be an integer %MSO, got '50'"),
    ],
)
def test_absurd_thresholds_are_rejected_with_the_exact_reason(pct: object, reason: str) -> None:
    with pytest.raises(ProtocolError) as info:
        MotorThreshold(pct_mso=pct, method="emg", measured_at=WHEN)  # type: ignore[arg-type]
    assert info.value.problems == [reason]


def test_method_and_date_are_checked_and_all_problems_reported() -> None:
    with pytest.raises(ProtocolError) as info:
        MotorThreshold(pct_mso=0, method="guess", measured_at=datetime(2025, 3, 1))  # type: ignore[arg-type]
    assert info.value.problems == [
        "motor_threshold.pct_mso: must be between 1 and 100 %MSO, got 0",
        "motor_threshold.method: must be one of emg, visual, got 'guess'",
        "motor_threshold.measured_at: must carry a UTC offset, got 2025-03-01T00:00:00",
    ]
    with pytest.raises(ProtocolError, match="measured_at: must be a datetime, got '2025-03-01'"):
        MotorThreshold(pct_mso=50, method="emg", measured_at="2025-03-01")  # type: ignore[arg-type]
