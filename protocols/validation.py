"""Validation: one prescription against every limit source, every failure reported.

``validate`` is pure and deterministic (the clock comes in as ``now``). It applies, in
order: the motor threshold, the %MSO conversion, the published evidence (Rossi 2009 /
Wassermann 1998 tables and Chen 1997 for conventional rTMS and single pulses, the TBS rule
set for theta burst), the device, and the site. Limits are never clamped: a value over
any limit rejects the prescription, and the message names the value, the limit and its
source. Only the validator can make a ``ValidatedPlan``; the daemon runs nothing else.
The rules and their codes are documented in ``docs/protocols.md``.
"""

from __future__ import annotations

import math
from contextvars import ContextVar
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from fractions import Fraction

from protocols import checks as codes
from protocols.capabilities import RAPID_MAX_ON_TIME_S, DeviceCapabilities
from protocols.checks import Check, CheckValue
from protocols.compile import build_schedule
from protocols.exact import MICROSECONDS_PER_S, exact, fmt_number, fmt_seconds_us, round_half_up
from protocols.library import load_library_protocol
from protocols.model import ProtocolError, ProtocolSpec, TbsParams
from protocols.motor_threshold import MotorThreshold
from protocols.safety_tables import safety_tables
from protocols.schedule import PulseSchedule
from protocols.site import ApprovedException, SiteLimits
from protocols.timing import ProtocolTiming, protocol_timing

# Chen 1997: 20 Hz trains with gaps of 1 s or less were unsafe above 100 % MT; 5 s gaps
# were safe, so above 100 % MT and at >= 5 Hz the gap must be at least 5 s.
CHEN_SOURCE = "Chen 1997"
CHEN_INTENSITY_PCT_MT = 100
CHEN_FREQUENCY_HZ = 5
CHEN_MIN_ITI_US = 5 * MICROSECONDS_PER_S
CHEN_UNSAFE_ITI_US = 1 * MICROSECONDS_PER_S

# The TBS rule set: the pattern with safety data is Huang 2005's (3 pulses at 50 Hz,
# bursts at 5 Hz); the longest continuous train with data is cTBS600 (39.84 s); iTBS
# rests 8 s between 2 s trains (THREE-D, SAINT); a seizure was reported during cTBS at
# 100 % RMT, so continuous trains (longer than iTBS's 2 s) must stay below 100 % MT.
TBS_SOURCE = "TBS rule set (Huang 2005; Blumberger 2018)"
TBS_MAX_PULSES_PER_BURST = 3
TBS_MAX_INTRA_BURST_HZ = 50
TBS_MAX_BURST_HZ = 5
TBS_MAX_TRAIN_US = 40 * MICROSECONDS_PER_S
TBS_MIN_ITI_US = 8 * MICROSECONDS_PER_S
TBS_INTERMITTENT_TRAIN_US = 2 * MICROSECONDS_PER_S
TBS_CONTINUOUS_MAX_PCT_MT = 100

VISUAL_MT_SOURCE = "Westin 2014"
_SECONDS_PER_DAY = 86_400


# Set only while ``validate`` constructs a plan. A context variable rather than a token
# argument, so that ``dataclasses.replace(plan, ...)`` — which re-runs ``__init__`` with
# the old fields — cannot mint an altered plan either.
_MINTING: ContextVar[bool] = ContextVar("protocols_validation_minting", default=False)


@dataclass(frozen=True, slots=True)
class ValidatedPlan:
    """A prescription that passed every check: the only thing the daemon may run.

    Constructing one anywhere but in ``validate`` raises ``TypeError``.
    """

    protocol: ProtocolSpec
    motor_threshold: MotorThreshold
    device: DeviceCapabilities
    intensity_pct_mso: int
    exceptions: tuple[ApprovedException, ...]
    warnings: tuple[Check, ...]
    checks: tuple[Check, ...]
    schedule: PulseSchedule
    validated_at: datetime

    def __post_init__(self) -> None:
        if not _MINTING.get():
            raise TypeError("a ValidatedPlan can only be made by protocols.validation.validate")

    @property
    def device_model(self) -> str:
        return self.device.model


@dataclass(frozen=True, slots=True)
class ValidationResult:
    """Every check that ran, and the plan when all of them passed."""

    accepted: bool
    checks: tuple[Check, ...]
    plan: ValidatedPlan | None

    @property
    def rejections(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.ok)

    @property
    def warnings(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.severity == "warning")

    def to_json(self) -> dict[str, object]:
        """The ``stimd validate --json`` document."""
        plan: dict[str, object] | None = None
        if self.plan is not None:
            plan = {
                "total_pulses": self.plan.schedule.total_pulses,
                "duration_s": self.plan.schedule.duration_s,
                "intensity_pct_mso": self.plan.intensity_pct_mso,
                "digest": self.plan.schedule.digest,
            }
        return {
            "accepted": self.accepted,
            "checks": [c.to_json() for c in self.checks],
            "plan": plan,
        }


def _num(value: Fraction | int | float) -> CheckValue:
    """A check value: an int when whole, else a float (text if not JSON-representable)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    frac = value if isinstance(value, Fraction) else exact(value)
    if frac.denominator == 1:
        return frac.numerator
    try:
        return float(frac)
    except OverflowError:  # absurd input (e.g. a 1e-320 Hz rate): keep it JSON-safe, as text
        return f"{Decimal(frac.numerator) / Decimal(frac.denominator):.6e}"


def _seconds(us: int) -> CheckValue:
    return _num(Fraction(us, MICROSECONDS_PER_S))


def _at_most(code: str, source: str, subject: str, value: Fraction | int | float,
             limit: Fraction | int | float, *, unit: str, why: str) -> Check:
    ok = _within(value, limit, at_most=True)
    verdict = "is within" if ok else "exceeds"
    return Check(
        code=code, ok=ok, source=source, value=_num(value), limit=_num(limit),
        message=f"{subject}: {fmt_number(value)}{unit} {verdict} the maximum "
                f"{fmt_number(limit)}{unit} ({why})",
    )


def _at_least(code: str, source: str, subject: str, value: Fraction | int | float,
               limit: Fraction | int | float, *, unit: str, why: str) -> Check:
    ok = _within(value, limit, at_most=False)
    verdict = "meets" if ok else "is below"
    return Check(
        code=code, ok=ok, source=source, value=_num(value), limit=_num(limit),
        message=f"{subject}: {fmt_number(value)}{unit} {verdict} the minimum "
                f"{fmt_number(limit)}{unit} ({why})",
    )


def _within(value: Fraction | int | float, limit: Fraction | int | float, *,
            at_most: bool) -> bool:
    """Exact comparison; a non-finite value or limit (from absurd input) never passes
    unless it is an infinite maximum, i.e. no limit at all."""
    for number in (value, limit):
        if isinstance(number, float) and not math.isfinite(number):
            return at_most and number is limit and number == math.inf
    exact_value = value if isinstance(value, Fraction) else exact(value)
    exact_limit = limit if isinstance(limit, Fraction) else exact(limit)
    return exact_value <= exact_limit if at_most else exact_value >= exact_limit


@dataclass(frozen=True, slots=True)
class _Prescription:
    protocol: ProtocolSpec
    timing: ProtocolTiming
    mt: MotorThreshold
    device: DeviceCapabilities
    site: SiteLimits
    pct_mt: Fraction
    pct_mso: int
    now: datetime


def _motor_threshold_checks(p: _Prescription) -> list[Check]:
    mt, site = p.mt, p.site
    accepted = ", ".join(site.accepted_mt_methods)
    found = [
        Check(
            code=codes.MT_METHOD,
            ok=mt.method in site.accepted_mt_methods,
            source="site accepted_mt_methods",
            value=mt.method,
            limit=accepted,
            message=f"motor threshold method {mt.method!r} "
                    f"{'is' if mt.method in site.accepted_mt_methods else 'is not'} "
                    f"accepted by the site (accepted: {accepted})",
        )
    ]
    age_s = Fraction((p.now - mt.measured_at).total_seconds())
    age_days = age_s / _SECONDS_PER_DAY
    if age_s < 0:
        found.append(Check(
            code=codes.MT_AGE, ok=False, source="site max_mt_age_days",
            value=_num(age_days), limit=_num(site.max_mt_age_days),
            message=f"motor threshold measured_at {mt.measured_at.isoformat()} is in the "
                    f"future (now {p.now.isoformat()})",
        ))
    else:
        ok = age_days <= exact(site.max_mt_age_days)
        shown = fmt_number(Fraction(round(age_days * 100), 100))
        found.append(Check(
            code=codes.MT_AGE, ok=ok, source="site max_mt_age_days",
            value=round(float(age_days), 3), limit=_num(site.max_mt_age_days),
            message=f"motor threshold age {shown} days "
                    f"{'is within' if ok else 'exceeds'} the maximum "
                    f"{fmt_number(site.max_mt_age_days)} days (measured "
                    f"{mt.measured_at.isoformat()}; thresholds drift over a course)",
        ))
    if mt.method == "visual":
        found.append(Check(
            code=codes.MT_VISUAL, ok=True, severity="warning", source=VISUAL_MT_SOURCE,
            value="visual", limit="emg",
            message="motor threshold was found by visible twitch, which runs on average "
                    "~11 % higher than EMG (Westin 2014): the delivered intensity may exceed "
                    "the prescription and the safety tables",
        ))
    return found


def _intensity_checks(p: _Prescription) -> list[Check]:
    product = Fraction(p.mt.pct_mso) * p.pct_mt / 100
    return [Check(
        code=codes.INTENSITY_MIN, ok=p.pct_mso >= 1, source="intensity conversion",
        value=p.pct_mso, limit=1,
        message=f"MT {p.mt.pct_mso} %MSO × {fmt_number(p.pct_mt)} % MT = "
                f"{fmt_number(product)} → {p.pct_mso} %MSO"
                + ("" if p.pct_mso >= 1 else ", which delivers nothing"),
    )]


def _table_checks(p: _Prescription) -> list[Check]:
    """Rossi 2009 / Wassermann 1998, for conventional rTMS and single pulses."""
    tables = safety_tables()
    both = " / ".join(tables.citations)
    frequency = p.timing.nominal_frequency_hz
    row = tables.row_for(frequency)
    column = tables.column_for(p.pct_mt)
    top_hz, top_pct = tables.frequencies_hz[-1], tables.intensities_pct_mt[-1]
    found = [
        Check(
            code=codes.TABLE_FREQUENCY, ok=row is not None, source=both,
            value=_num(frequency), limit=top_hz,
            message=(
                f"rate {fmt_number(frequency)} Hz uses the {row} Hz row (next stricter)"
                if row is not None else
                f"rate {fmt_number(frequency)} Hz is above the highest tabulated "
                f"{top_hz} Hz: no safety data, never extrapolated"
            ),
        ),
        Check(
            code=codes.TABLE_INTENSITY, ok=column is not None, source=both,
            value=_num(p.pct_mt), limit=top_pct,
            message=(
                f"intensity {fmt_number(p.pct_mt)} % MT uses the {column} % MT column "
                "(next stricter)"
                if column is not None else
                f"intensity {fmt_number(p.pct_mt)} % MT is above the highest tabulated "
                f"{top_pct} % MT: no safety data, never extrapolated"
            ),
        ),
    ]
    if row is None or column is None:
        return found
    limit = tables.train_limit(row, column)
    timing = p.timing
    if p.protocol.kind == "single":
        pulses = timing.total_pulses
        subject = (
            f"single pulses every {fmt_seconds_us(timing.pulse_interval_us)}, counted as "
            f"one {fmt_number(frequency)} Hz train"
        )
    else:
        pulses = timing.pulses_per_train
        subject = (
            f"pulses per train ({fmt_seconds_us(timing.train_duration_us)} at "
            f"{fmt_number(frequency)} Hz)"
        )
    why = f"{limit.cell.label}: {limit.cell.text!r}"
    if limit.limiting is not limit.cell:
        why += (
            f"; lowered from {limit.cell.pulses} by {limit.limiting.label} "
            f"{limit.limiting.text!r}, as a higher rate or intensity never allows more"
        )
    found.append(_at_most(codes.TABLE_TRAIN, limit.limiting.table, subject, pulses,
                          limit.pulses, unit=" pulses", why=why))
    return found


def _chen_checks(p: _Prescription) -> list[Check]:
    iti = p.timing.iti_us
    if iti is None or p.pct_mt <= CHEN_INTENSITY_PCT_MT:
        return []
    found = [Check(
        code=codes.CHEN_ITI_1S, ok=iti > CHEN_UNSAFE_ITI_US, source=CHEN_SOURCE,
        value=_seconds(iti), limit=1,
        message=(
            f"inter-train interval: {fmt_seconds_us(iti)} "
            + ("is longer than" if iti > CHEN_UNSAFE_ITI_US else "is not longer than")
            + f" 1 s (gaps of 1 s or less were unsafe above 100 % MT; prescribed "
            f"{fmt_number(p.pct_mt)} % MT)"
        ),
    )]
    if p.timing.nominal_frequency_hz >= CHEN_FREQUENCY_HZ:
        found.append(_at_least(
            codes.CHEN_ITI_5S, CHEN_SOURCE, "inter-train interval",
            Fraction(iti, MICROSECONDS_PER_S), 5, unit=" s",
            why=f"above 100 % MT at >= 5 Hz; prescribed {fmt_number(p.pct_mt)} % MT at "
            f"{fmt_number(p.timing.nominal_frequency_hz)} Hz",
        ))
    return found


def _tbs_checks(p: _Prescription, tbs: TbsParams) -> list[Check]:
    timing = p.timing
    found = [
        _at_most(codes.TBS_INTENSITY, "site tbs_max_pct_mt", "TBS intensity", p.pct_mt,
                 p.site.tbs_max_pct_mt, unit=" % MT", why="the site's theta-burst ceiling"),
        _at_most(codes.TBS_PULSES_PER_BURST, TBS_SOURCE, "pulses per burst",
                 tbs.pulses_per_burst, TBS_MAX_PULSES_PER_BURST, unit="",
                 why="safety data exist for triplets only"),
        _at_most(codes.TBS_INTRA_BURST_HZ, TBS_SOURCE, "intra-burst rate",
                 tbs.intra_burst_hz, TBS_MAX_INTRA_BURST_HZ, unit=" Hz",
                 why="safety data exist up to 50 Hz bursts"),
        _at_most(codes.TBS_BURST_HZ, TBS_SOURCE, "burst rate", tbs.burst_hz,
                 TBS_MAX_BURST_HZ, unit=" Hz", why="theta rhythm of the published pattern"),
        _at_most(codes.TBS_TRAIN_DURATION, TBS_SOURCE, "train duration",
                 Fraction(timing.train_duration_us, MICROSECONDS_PER_S),
                 Fraction(TBS_MAX_TRAIN_US, MICROSECONDS_PER_S), unit=" s",
                 why="cTBS600, 40 s, is the longest continuous train with safety data"),
    ]
    if timing.iti_us is not None:
        found.append(_at_least(
            codes.TBS_ITI, TBS_SOURCE, "inter-train interval",
            Fraction(timing.iti_us, MICROSECONDS_PER_S),
            Fraction(TBS_MIN_ITI_US, MICROSECONDS_PER_S), unit=" s",
            why="iTBS safety data rest 8 s between trains",
        ))
    if timing.train_duration_us > TBS_INTERMITTENT_TRAIN_US:
        ok = p.pct_mt < TBS_CONTINUOUS_MAX_PCT_MT
        found.append(Check(
            code=codes.TBS_CONTINUOUS_INTENSITY, ok=ok, source=TBS_SOURCE,
            value=_num(p.pct_mt), limit=TBS_CONTINUOUS_MAX_PCT_MT,
            message=f"continuous theta burst ({fmt_seconds_us(timing.train_duration_us)} "
                    f"trains, longer than iTBS's 2 s) at {fmt_number(p.pct_mt)} % MT "
                    + ("is below" if ok else "is not below")
                    + " 100 % MT (a seizure was reported during cTBS at 100 % RMT)",
        ))
    return found


def _device_checks(p: _Prescription) -> list[Check]:
    device, timing, kind = p.device, p.timing, p.protocol.kind
    volts = f", {device.mains_voltage} V" if device.mains_voltage else ""
    source = f"device {device.model} ({device.display_name}{volts})"
    found: list[Check] = []
    if kind != "single":
        found.append(Check(
            code=codes.DEVICE_TRAINS, ok=device.supports_trains, source=source,
            value=kind, limit="trains" if device.supports_trains else "single pulses only",
            message=f"{device.display_name} "
                    + ("runs trains" if device.supports_trains
                       else f"delivers single pulses only; a {kind} protocol needs trains"),
        ))
    if kind == "tbs":
        found.append(Check(
            code=codes.DEVICE_BURSTS, ok=device.supports_bursts, source=source,
            value="bursts", limit="bursts" if device.supports_bursts else "no bursts",
            message=f"{device.display_name} "
                    + ("produces bursts" if device.supports_bursts
                       else "cannot produce theta bursts over its remote interface"),
        ))
        if device.supports_bursts:
            found.append(_at_most(
                codes.DEVICE_BURST_PULSES, source, "pulses per burst", timing.burst_pulses,
                device.max_burst_pulses, unit="", why="the device's burst size"))
    found.append(_at_most(
        codes.DEVICE_MAX_OUTPUT, source, "output", p.pct_mso, device.max_output_pct_mso,
        unit=" %MSO", why="the device's maximum output; enhanced power mode is never used"))
    power_known = 0 <= p.pct_mso <= device.max_output_pct_mso
    if kind != "single" and device.supports_trains:
        if power_known:
            found.append(_at_most(
                codes.DEVICE_FREQUENCY, source, "pulse rate", timing.nominal_frequency_hz,
                device.max_frequency_at(p.pct_mso), unit=" Hz",
                why=f"the device's maximum rate at {p.pct_mso} %MSO"))
        found.append(_at_most(
            codes.DEVICE_PULSES_PER_TRAIN, source, "pulses per train",
            timing.pulses_per_train, device.max_pulses_per_train, unit="",
            why="the device's train length"))
        if timing.iti_us is not None:
            found.append(_at_least(
                codes.DEVICE_GAP, source, "inter-train interval",
                Fraction(timing.iti_us, MICROSECONDS_PER_S),
                device.min_inter_train_gap_s, unit=" s", why="the device's own minimum"))
    if kind == "single" and timing.iti_us is not None:
        # Unknown power (a rejected MT) falls back to the strictest band.
        at_pct = p.pct_mso if power_known else device.max_output_pct_mso
        found.append(_at_least(
            codes.DEVICE_SINGLE_INTERVAL, source, "single-pulse interval",
            Fraction(timing.pulse_interval_us, MICROSECONDS_PER_S),
            device.min_single_pulse_interval_at(at_pct), unit=" s",
            why=f"the device's single-pulse recharge time at {at_pct} %MSO"))
    energy = device.energy_model
    if energy is not None and kind == "rtms" and power_known:
        frequency = float(timing.nominal_frequency_hz)
        # Magstim counts a train as N/f long, so its on-time and the gap it sees after a
        # train are measured from one pulse interval past the last pulse.
        on_time_us = timing.pulses_per_train * timing.pulse_interval_us
        on_time = Fraction(on_time_us, MICROSECONDS_PER_S)
        max_on_time = energy.max_on_time_s(p.pct_mso, frequency)
        if max_on_time >= RAPID_MAX_ON_TIME_S:
            # MagPy and MAGIC compare min(duration, 60 s) with 63000 J / (f·J): a rate the
            # supply sustains for 60 s is not limited by on-time at all.
            found.append(Check(
                code=codes.DEVICE_RAPID_ON_TIME, ok=True, source=source,
                value=_num(on_time), limit=None,
                message=f"train on-time: {fmt_number(on_time)} s at "
                        f"{fmt_number(timing.nominal_frequency_hz)} Hz and {p.pct_mso} %MSO "
                        "is unlimited by the Rapid energy model (63000 J / (f·J) >= 60 s)",
            ))
        else:
            found.append(_at_most(
                codes.DEVICE_RAPID_ON_TIME, source, "train on-time (pulses ÷ rate)",
                on_time, max_on_time, unit=" s",
                why=f"Rapid energy model: 63000 J / (f·J) at {p.pct_mso} %MSO"))
        if timing.iti_us is not None:
            found.append(_at_least(
                codes.DEVICE_RAPID_WAIT, source, "rest after a train (ITI − one pulse interval)",
                Fraction(timing.iti_us - timing.pulse_interval_us, MICROSECONDS_PER_S),
                energy.min_wait_s(p.pct_mso, frequency, timing.pulses_per_train), unit=" s",
                why=f"Rapid energy model: max(0.5, N·(f·J − 1050) / (1050·f)) at "
                f"{p.pct_mso} %MSO"))
    return found


def _site_checks(p: _Prescription) -> list[Check]:
    site = p.site
    return [
        _at_most(codes.SITE_MAX_PCT_MSO, "site max_pct_mso", "output", p.pct_mso,
                 site.max_pct_mso, unit=" %MSO", why="the site's output ceiling"),
        _at_most(codes.SITE_MAX_PCT_MT, "site max_pct_mt", "intensity", p.pct_mt,
                 site.max_pct_mt, unit=" % MT", why="the site's prescription ceiling"),
        _at_most(codes.SITE_PULSES_PER_SESSION, "site max_pulses_per_session",
                 "session total", p.timing.total_pulses, site.max_pulses_per_session,
                 unit=" pulses", why="the site's session cap"),
    ]


def _apply_exceptions(
    found: list[Check], protocol: ProtocolSpec, site: SiteLimits
) -> tuple[list[Check], tuple[ApprovedException, ...]]:
    """Turn failures a site approved into visible warnings; report every approval."""
    approvals = [e for e in site.approved_exceptions if e.protocol == protocol.name]
    if not approvals:
        return found, ()
    try:
        is_library = load_library_protocol(protocol.name) == protocol
    except ProtocolError:
        is_library = False
    applied: list[ApprovedException] = []
    result = list(found)
    notes: list[Check] = []
    for approval in approvals:
        if not is_library:
            notes.append(Check(
                code=codes.SITE_EXCEPTION, ok=True, severity="warning",
                source="site approved_exceptions", value=approval.rule, limit=None,
                message=f"NOT applied: {approval.describe()}: this protocol differs from the "
                        f"library protocol {protocol.name!r}, which is what was approved",
            ))
            continue
        hits = [i for i, c in enumerate(result) if c.code == approval.rule and not c.ok]
        for i in hits:
            result[i] = replace(
                result[i], ok=True, severity="warning",
                message=f"{result[i].message} — ALLOWED by {approval.describe()}",
            )
        if hits:
            applied.append(approval)
        notes.append(Check(
            code=codes.SITE_EXCEPTION, ok=True, severity="warning",
            source="site approved_exceptions", value=approval.rule, limit=None,
            message=("applied: " if hits else "not needed, the rule passed: ")
            + approval.describe(),
        ))
    return result + notes, tuple(applied)


def validate(
    protocol: ProtocolSpec,
    motor_threshold: MotorThreshold,
    device: DeviceCapabilities,
    site: SiteLimits,
    *,
    now: datetime,
) -> ValidationResult:
    """Check ``protocol`` for this patient, device and site; list every failed check."""
    if now.utcoffset() is None:
        raise ValueError(f"now must carry a UTC offset, got {now.isoformat()}")
    pct_mt = exact(protocol.intensity_pct_mt)
    p = _Prescription(
        protocol=protocol,
        timing=protocol_timing(protocol),
        mt=motor_threshold,
        device=device,
        site=site,
        pct_mt=pct_mt,
        pct_mso=round_half_up(Fraction(motor_threshold.pct_mso) * pct_mt / 100),
        now=now,
    )
    found = _motor_threshold_checks(p) + _intensity_checks(p)
    if protocol.tbs is not None:
        found += _tbs_checks(p, protocol.tbs)
    else:
        found += _table_checks(p)
        if protocol.kind == "rtms":
            found += _chen_checks(p)
    found += _device_checks(p) + _site_checks(p)
    found, applied = _apply_exceptions(found, protocol, site)
    all_checks = tuple(found)
    accepted = all(c.ok for c in all_checks)
    plan = None
    if accepted:
        schedule = build_schedule(protocol, p.pct_mso, device.model)
        minting = _MINTING.set(True)
        try:
            plan = ValidatedPlan(
                protocol=protocol,
                motor_threshold=motor_threshold,
                device=device,
                intensity_pct_mso=p.pct_mso,
                exceptions=applied,
                warnings=tuple(c for c in all_checks if c.severity == "warning"),
                checks=all_checks,
                schedule=schedule,
                validated_at=now,
            )
        finally:
            _MINTING.reset(minting)
    return ValidationResult(accepted=accepted, checks=all_checks, plan=plan)


def check_daily_budget(planned: int, already_today: int, site: SiteLimits) -> Check:
    """The per-patient daily pulse cap, for the daemon that knows today's history."""
    for name, value in (("planned", planned), ("already_today", already_today)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name}: must be an integer >= 0, got {value!r}")
    total = planned + already_today
    return _at_most(
        codes.SITE_PULSES_PER_DAY, "site max_pulses_per_patient_per_day",
        f"pulses today ({planned} planned + {already_today} already delivered)", total,
        site.max_pulses_per_patient_per_day, unit=" pulses", why="the site's per-patient daily cap")
