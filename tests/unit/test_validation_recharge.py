"""The 200²'s power-dependent recharge limits single-pulse protocols (Magstim, via MagPy)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from protocols.capabilities import device_profile
from protocols.model import ProtocolSpec, parse_protocol
from protocols.motor_threshold import MotorThreshold
from protocols.site import SiteLimits
from protocols.validation import validate

NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
M200 = device_profile("magstim-200")
SITE = SiteLimits()


def single(interval_s: float, pct_mt: float = 100) -> ProtocolSpec:
    return parse_protocol(
        {"protocol": {"name": "t", "description": "d", "reference": "r", "kind": "single",
                      "intensity_pct_mt": pct_mt},
         "single": {"pulses": 10, "interval_s": interval_s}},
        source="test",
    )


def mt(pct_mso: int) -> MotorThreshold:
    return MotorThreshold(pct_mso=pct_mso, method="emg", measured_at=NOW - timedelta(days=1))


@pytest.mark.parametrize(
    ("pct_mso", "needed_s"), [(1, 2.0), (49, 2.0), (50, 3.0), (79, 3.0), (80, 4.0), (100, 4.0)]
)
def test_recharge_bands_follow_the_power(pct_mso: int, needed_s: float) -> None:
    assert M200.min_single_pulse_interval_at(pct_mso) == needed_s


@pytest.mark.parametrize(("mt_pct", "interval_s", "accepted"), [
    (40, 2.0, True),    # 40 %MSO: 2 s band
    (60, 2.0, False),   # 60 %MSO needs 3 s
    (60, 3.0, True),
    (85, 3.0, False),   # 85 %MSO needs 4 s
])
def test_single_pulses_faster_than_the_recharge_are_rejected_with_the_reason(
    mt_pct: int, interval_s: float, accepted: bool
) -> None:
    result = validate(single(interval_s), mt(mt_pct), M200, SITE, now=NOW)
    check = next(c for c in result.checks if c.code == "device.single-pulse-interval")
    assert check.ok is accepted
    if not accepted:
        assert f"at {mt_pct} %MSO" in check.message
        assert f"{interval_s:g} s" in check.message
