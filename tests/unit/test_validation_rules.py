"""Validation: each limit source, the required rejections, exceptions, and the plan's seal."""

from __future__ import annotations

import copy
import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from protocols.capabilities import device_profile
from protocols.checks import Check
from protocols.compile import compile_plan
from protocols.library import library_names, load_library_protocol
from protocols.model import ProtocolSpec, parse_protocol
from protocols.motor_threshold import MotorThreshold
from protocols.site import ApprovedException, SiteLimits
from protocols.validation import ValidatedPlan, ValidationResult, check_daily_budget, validate

NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
MT50 = MotorThreshold(pct_mso=50, method="emg", measured_at=NOW - timedelta(days=1))
RAPID2 = device_profile("magstim-rapid2", 240)
X100 = device_profile("magventure-x100")
SITE = SiteLimits()
H1_EXCEPTION = ApprovedException(
    protocol="deep-tms-18hz-h1", rule="safety-table.train-pulses",
    reference="Levkovitz 2015: H1 coil, 18 Hz 2 s trains at 120 % MT",
    approved_by="site safety committee 2025-01",
)


def rtms(pct_mt: float = 100, **params: Any) -> ProtocolSpec:
    table = {"frequency_hz": 10, "pulses_per_train": 10, "trains": 2,
             "inter_train_interval_s": 10, **params}
    return parse_protocol(
        {"protocol": {"name": "t", "description": "d", "reference": "r", "kind": "rtms",
                      "intensity_pct_mt": pct_mt}, "rtms": table},
        source="test",
    )


def tbs(pct_mt: float = 80, **params: Any) -> ProtocolSpec:
    table = {"pulses_per_burst": 3, "intra_burst_hz": 50, "burst_hz": 5,
             "bursts_per_train": 10, "trains": 2, "inter_train_interval_s": 8, **params}
    return parse_protocol(
        {"protocol": {"name": "t", "description": "d", "reference": "r", "kind": "tbs",
                      "intensity_pct_mt": pct_mt}, "tbs": table},
        source="test",
    )


def run(protocol: ProtocolSpec, mt: MotorThreshold = MT50, device: Any = X100,
        site: SiteLimits = SITE) -> ValidationResult:
    return validate(protocol, mt, device, site, now=NOW)


def check(result: ValidationResult, code: str) -> Check:
    found = [c for c in result.checks if c.code == code]
    assert len(found) == 1, [c.code for c in result.checks]
    return found[0]


def failed(result: ValidationResult) -> list[str]:
    return [c.code for c in result.rejections]


# --- every library protocol on a device that can run it ----------------------------------

CAPABLE = {
    "fda-10hz-ldlpfc": RAPID2,
    "10hz-19min": RAPID2,
    "1hz-rdlpfc": RAPID2,
    "demo-10hz-short": RAPID2,
    "deep-tms-18hz-h1": X100,
    "itbs-600": X100,
    "ctbs-600": X100,
    "saint-itbs-1800": X100,
}


def test_the_capable_device_table_covers_the_whole_library() -> None:
    assert set(CAPABLE) == set(library_names())


@pytest.mark.parametrize("name", sorted(CAPABLE))
def test_every_library_protocol_is_accepted_at_mt_50(name: str) -> None:
    site = SiteLimits(approved_exceptions=(H1_EXCEPTION,))
    result = run(load_library_protocol(name), device=CAPABLE[name], site=site)
    assert result.accepted, [c.message for c in result.rejections]
    assert result.plan is not None
    assert result.plan.schedule == compile_plan(result.plan)
    assert result.plan.intensity_pct_mso == round(50 * load_library_protocol(name)
                                                  .intensity_pct_mt / 100)


# --- the rejections that must happen ---------------------------------------------------------


def test_itbs_on_a_single_psu_rapid2_at_60_pct_mso_is_rejected() -> None:
    result = run(load_library_protocol("itbs-600"), device=RAPID2)
    assert not result.accepted and result.plan is None
    assert failed(result) == ["device.bursts", "device.frequency"]
    assert check(result, "device.frequency").message == (
        "pulse rate: 50 Hz exceeds the maximum 25 Hz (the device's maximum rate at 60 %MSO)"
    )
    assert (check(result, "device.frequency").value, check(result, "device.frequency").limit) \
        == (50, 25)


def test_a_20_hz_2_s_train_at_120_pct_mt_is_rejected_by_the_table() -> None:
    result = run(rtms(120, frequency_hz=20, pulses_per_train=40), device=RAPID2)
    assert failed(result) == ["safety-table.train-pulses"]
    c = check(result, "safety-table.train-pulses")
    assert (c.value, c.limit, c.source) == (40, 20, "Rossi 2009 Table 3")
    assert c.message == (
        "pulses per train (1.95 s at 20 Hz): 40 pulses exceeds the maximum 20 pulses "
        "(Rossi 2009 Table 3 cell 20 Hz / 120 % MT: '1.0 (20)')"
    )


def test_deep_tms_exceeds_the_figure_8_cell_without_a_site_exception() -> None:
    result = run(load_library_protocol("deep-tms-18hz-h1"))
    assert failed(result) == ["safety-table.train-pulses"]


# --- safety tables ---------------------------------------------------------------------------


def test_above_25_hz_and_220_pct_mt_there_is_no_data_and_no_extrapolation() -> None:
    site = SiteLimits(max_pct_mt=220, max_pct_mso=100)
    result = run(rtms(221, frequency_hz=26), mt=MotorThreshold(10, "emg", NOW), site=site)
    assert check(result, "safety-table.frequency").message == (
        "rate 26 Hz is above the highest tabulated 25 Hz: no safety data, never extrapolated"
    )
    assert check(result, "safety-table.intensity").message == (
        "intensity 221 % MT is above the highest tabulated 220 % MT: no safety data, "
        "never extrapolated"
    )
    assert "safety-table.train-pulses" not in [c.code for c in result.checks]


def test_the_next_stricter_cell_is_used_never_an_interpolation() -> None:
    # 112 % MT at 12 Hz → the 20 Hz / 120 % cell (20 pulses), not something in between
    ok = run(rtms(112, frequency_hz=12, pulses_per_train=20))
    too_long = run(rtms(112, frequency_hz=12, pulses_per_train=21))
    assert "safety-table.train-pulses" not in failed(ok)
    assert check(too_long, "safety-table.train-pulses").limit == 20


def test_1_hz_trains_beyond_the_tabulated_1800_s_are_rejected() -> None:
    result = run(rtms(100, frequency_hz=1, pulses_per_train=1801, trains=1), device=X100,
                 site=SiteLimits(max_pulses_per_session=5000,
                                 max_pulses_per_patient_per_day=5000))
    assert failed(result) == ["safety-table.train-pulses", "device.pulses-per-train"]
    assert check(result, "safety-table.train-pulses").limit == 1800


# --- Chen 1997 ---------------------------------------------------------------------------------


def test_chen_requires_5_s_gaps_above_100_pct_mt_at_5_hz_or_more() -> None:
    result = run(rtms(110, inter_train_interval_s=4.9))
    assert failed(result) == ["chen.iti-5s"]
    assert check(result, "chen.iti-5s").message == (
        "inter-train interval: 4.9 s is below the minimum 5 s (above 100 % MT at >= 5 Hz; "
        "prescribed 110 % MT at 10 Hz)"
    )
    assert "chen.iti-5s" not in [c.code for c in run(rtms(100, inter_train_interval_s=2)).checks]


def test_chen_always_rejects_gaps_of_1_s_or_less_above_100_pct_mt() -> None:
    result = run(rtms(110, frequency_hz=1, pulses_per_train=10, inter_train_interval_s=1))
    assert failed(result) == ["chen.iti-1s"]
    result = run(rtms(110, inter_train_interval_s=0.5))
    assert failed(result) == ["chen.iti-1s", "chen.iti-5s"]


# --- TBS rule set ------------------------------------------------------------------------------


def test_tbs_intensity_is_capped_by_the_site_ceiling() -> None:
    result = run(tbs(100), site=SiteLimits(tbs_max_pct_mt=90))
    assert failed(result) == ["tbs.intensity"]
    assert check(result, "tbs.intensity").source == "site tbs_max_pct_mt"


@pytest.mark.parametrize(
    ("params", "code", "limit"),
    [
        ({"pulses_per_burst": 4, "intra_burst_hz": 50, "burst_hz": 4}, "tbs.pulses-per-burst", 3),
        ({"intra_burst_hz": 60}, "tbs.intra-burst-frequency", 50),
        ({"burst_hz": 6}, "tbs.burst-frequency", 5),
        ({"bursts_per_train": 201, "trains": 1}, "tbs.train-duration", 40),
        ({"inter_train_interval_s": 7.9}, "tbs.iti", 8),
    ],
)
def test_tbs_patterns_outside_the_safety_data_are_rejected(
    params: dict[str, Any], code: str, limit: int
) -> None:
    result = run(tbs(80, **params), device=device_profile("magventure-x100"))
    assert code in failed(result)
    assert check(result, code).limit == limit


def test_continuous_tbs_at_100_pct_mt_is_rejected() -> None:
    result = run(tbs(100, bursts_per_train=200, trains=1))
    assert failed(result) == ["tbs.continuous-intensity"]
    assert run(tbs(99, bursts_per_train=200, trains=1)).accepted
    assert "tbs.continuous-intensity" not in [c.code for c in run(tbs(120)).checks]


# --- device --------------------------------------------------------------------------------------


def test_single_pulse_devices_reject_trains() -> None:
    result = run(rtms(100), device=device_profile("magstim-200"))
    assert "device.trains" in failed(result)
    assert check(result, "device.trains").message == (
        "Magstim 200² delivers single pulses only; a rtms protocol needs trains"
    )


def test_single_pulses_respect_the_device_rate() -> None:
    single = parse_protocol(
        {"protocol": {"name": "s", "description": "d", "reference": "r", "kind": "single",
                      "intensity_pct_mt": 120}, "single": {"pulses": 20, "interval_s": 3}},
        source="t",
    )
    assert run(single, device=device_profile("magstim-200")).accepted
    result = run(single, device=device_profile("magstim-bistim"))
    assert failed(result) == ["device.single-pulse-interval"]


def test_output_over_the_device_maximum_is_rejected_not_clamped() -> None:
    site = SiteLimits(max_pct_mso=100, max_pct_mt=130)
    result = run(rtms(130, frequency_hz=1), mt=MotorThreshold(80, "emg", NOW), site=site)
    assert failed(result) == ["device.max-output", "site.max-pct-mso"]
    assert (check(result, "device.max-output").value, check(result, "device.max-output").limit) \
        == (104, 100)


def test_the_rapid_energy_model_limits_on_time_and_rest() -> None:
    # 100 %MSO, 20 Hz, 100 pulses: the reference's check values (12.5 s on-time, 19 s wait)
    site = SiteLimits(max_pct_mso=100, max_pct_mt=220)
    mt = MotorThreshold(50, "emg", NOW)
    long_train = rtms(200, frequency_hz=20, pulses_per_train=260, inter_train_interval_s=60)
    result = run(long_train, mt=mt, device=device_profile("magstim-superrapid2-plus1", 240),
                 site=site)
    on_time = check(result, "device.rapid-on-time")
    assert not on_time.ok and on_time.value == 13 and on_time.limit == 12.5
    short_rest = rtms(200, frequency_hz=20, pulses_per_train=100, inter_train_interval_s=18)
    result = run(short_rest, mt=mt, device=device_profile("magstim-superrapid2-plus1", 240),
                 site=site)
    wait = check(result, "device.rapid-wait")
    assert not wait.ok and wait.value == 17.95 and wait.limit == 19


def test_a_sustainable_rate_has_no_on_time_limit() -> None:
    result = run(load_library_protocol("1hz-rdlpfc"), device=RAPID2)
    assert result.accepted
    assert check(result, "device.rapid-on-time").limit is None


# --- motor threshold and site ------------------------------------------------------------------


def test_motor_threshold_method_age_and_visual_warning() -> None:
    visual = MotorThreshold(50, "visual", NOW - timedelta(days=8))
    result = run(rtms(100), mt=visual)
    assert failed(result) == ["mt.method", "mt.age"]
    warning = check(result, "mt.visual")
    assert warning.ok and warning.severity == "warning"
    assert "~11 % higher than EMG" in warning.message
    accepted = run(rtms(100), mt=MotorThreshold(50, "visual", NOW),
                   site=SiteLimits(accepted_mt_methods=("emg", "visual")))
    assert accepted.accepted
    assert accepted.plan is not None and accepted.plan.warnings == (check(accepted, "mt.visual"),)


def test_a_motor_threshold_from_the_future_is_rejected() -> None:
    result = run(rtms(100), mt=MotorThreshold(50, "emg", NOW + timedelta(hours=1)))
    assert failed(result) == ["mt.age"]
    assert "is in the future" in check(result, "mt.age").message


def test_intensity_rounds_half_up_and_zero_output_is_rejected() -> None:
    assert run(rtms(101), mt=MotorThreshold(50, "emg", NOW)).plan.intensity_pct_mso == 51  # type: ignore[union-attr]
    result = run(rtms(10), mt=MotorThreshold(4, "emg", NOW))
    assert failed(result) == ["intensity.min"]
    assert check(result, "intensity.min").message == (
        "MT 4 %MSO × 10 % MT = 0.4 → 0 %MSO, which delivers nothing"
    )


def test_site_limits_reject_over_the_site_ceilings() -> None:
    result = run(rtms(120, frequency_hz=1), mt=MotorThreshold(80, "emg", NOW),
                 site=SiteLimits(max_pct_mt=110))
    assert failed(result) == ["site.max-pct-mso", "site.max-pct-mt"]
    assert check(result, "site.max-pct-mso").message == (
        "output: 96 %MSO exceeds the maximum 90 %MSO (the site's output ceiling)"
    )
    big = run(rtms(100, frequency_hz=1, pulses_per_train=1000, trains=4))
    assert failed(big) == ["site.pulses-per-session"]


def test_every_failed_check_is_reported() -> None:
    result = run(rtms(221, frequency_hz=30, inter_train_interval_s=0.4),
                 mt=MotorThreshold(90, "visual", NOW - timedelta(days=30)), device=RAPID2)
    assert failed(result) == [
        "mt.method", "mt.age", "safety-table.frequency", "safety-table.intensity",
        "chen.iti-1s", "chen.iti-5s", "device.max-output", "device.inter-train-gap",
        "site.max-pct-mso", "site.max-pct-mt",
    ]


def test_validation_needs_an_aware_clock() -> None:
    with pytest.raises(ValueError, match="now must carry a UTC offset"):
        validate(rtms(), MT50, X100, SITE, now=datetime(2025, 1, 1))


# --- site exceptions ---------------------------------------------------------------------------


def test_an_approved_exception_is_applied_shown_and_carried_into_the_plan() -> None:
    site = SiteLimits(approved_exceptions=(H1_EXCEPTION,))
    result = run(load_library_protocol("deep-tms-18hz-h1"), site=site)
    assert result.accepted and result.plan is not None
    overridden = check(result, "safety-table.train-pulses")
    assert overridden.ok and overridden.severity == "warning"
    assert "ALLOWED by site exception for deep-tms-18hz-h1" in overridden.message
    assert "Levkovitz 2015" in overridden.message
    assert "site safety committee 2025-01" in check(result, "site.exception").message
    assert result.plan.exceptions == (H1_EXCEPTION,)
    assert check(result, "site.exception") in result.plan.warnings


def test_an_exception_does_not_cover_a_modified_copy_of_the_protocol() -> None:
    tables = load_library_protocol("deep-tms-18hz-h1").to_tables()
    tables["rtms"]["pulses_per_train"] = 40
    modified = parse_protocol(copy.deepcopy(tables), source="inline")
    result = run(modified, site=SiteLimits(approved_exceptions=(H1_EXCEPTION,)))
    assert failed(result) == ["safety-table.train-pulses"]
    assert check(result, "site.exception").message.startswith("NOT applied")


def test_an_exception_never_overrides_another_rule() -> None:
    site = SiteLimits(approved_exceptions=(H1_EXCEPTION,), max_pct_mso=50)
    result = run(load_library_protocol("deep-tms-18hz-h1"), site=site)
    assert failed(result) == ["site.max-pct-mso"]


# --- the plan's seal, JSON, determinism and the daily budget ------------------------------------


def test_only_the_validator_can_make_a_plan() -> None:
    plan = run(load_library_protocol("demo-10hz-short")).plan
    assert plan is not None
    fields = {f.name: getattr(plan, f.name) for f in dataclasses.fields(plan)}
    with pytest.raises(TypeError, match=r"only be made by protocols\.validation\.validate"):
        ValidatedPlan(**fields)
    with pytest.raises(TypeError, match=r"only be made by protocols\.validation\.validate"):
        dataclasses.replace(plan, intensity_pct_mso=100)
    assert run(load_library_protocol("demo-10hz-short")).plan == plan


def test_to_json_has_the_documented_shape() -> None:
    result = run(load_library_protocol("fda-10hz-ldlpfc"), device=RAPID2)
    doc = result.to_json()
    assert set(doc) == {"accepted", "checks", "plan"}
    assert doc["plan"] == {
        "total_pulses": 3000, "duration_s": 2216.5, "intensity_pct_mso": 60,
        "digest": result.plan.schedule.digest,  # type: ignore[union-attr]
    }
    assert isinstance(doc["checks"], list)
    for entry in doc["checks"]:
        assert {"code", "ok", "message", "source", "value", "limit"} <= set(entry)
    rejected = run(load_library_protocol("itbs-600"), device=RAPID2).to_json()
    assert rejected["plan"] is None and rejected["accepted"] is False


def test_validation_is_deterministic() -> None:
    protocol = load_library_protocol("fda-10hz-ldlpfc")
    first, second = run(protocol, device=RAPID2), run(protocol, device=RAPID2)
    assert first == second
    assert first.plan is not None and second.plan is not None
    assert first.plan.schedule.digest == second.plan.schedule.digest


def test_daily_budget() -> None:
    ok = check_daily_budget(1800, 1200, SITE)
    assert ok.ok and ok.code == "site.pulses-per-day" and (ok.value, ok.limit) == (3000, 3000)
    over = check_daily_budget(1800, 1201, SITE)
    assert not over.ok
    assert over.message == (
        "pulses today (1800 planned + 1201 already delivered): 3001 pulses exceeds the maximum "
        "3000 pulses (the site's per-patient daily cap)"
    )
    for bad in (-1, True, 1.5):
        with pytest.raises(ValueError, match="must be an integer >= 0"):
            check_daily_budget(bad, 0, SITE)  # type: ignore[arg-type]
