"""Interlocks: conditions that must hold before arming and before every train.

An interlock never fires anything and never trips by itself; it says "not now" with a
reason. Some clear with time (a warm coil cools, ``waits`` is True) and the scheduler
waits for them; the others block until someone acts. The supervisor trips separately
when a condition becomes an anomaly (coil at the trip limit, coil gone while armed).

Device-side interlocks (coil, temperature, operator presence) are plain functions; the
limit-source interlocks (plan validity, motor-threshold age, daily budget) ask the
protocol validator again through ``Planner``, which also validates loads.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from drivers.base import DeviceStatus
from protocols.capabilities import DeviceCapabilities, rapid_joules_per_pulse
from protocols.library import load_library_protocol
from protocols.model import ProtocolError, ProtocolSpec, parse_protocol
from protocols.motor_threshold import MotorThreshold
from protocols.schedule import PulseSchedule, TrainSpec
from protocols.site import SiteLimits
from protocols.validation import ValidatedPlan, check_daily_budget, validate
from stimd.commands import LoadCommand


@dataclass(frozen=True, slots=True)
class InterlockResult:
    name: str            # "plan_valid" | "coil_present" | "coil_temperature" | ...
    ok: bool
    reason: str
    waits: bool = False  # True: expected to clear with time alone (a coil cooling down)

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "ok": self.ok, "reason": self.reason, "waits": self.waits}


@dataclass(frozen=True, slots=True)
class ThermalLimits:
    warning_c: float
    trip_c: float
    conservative_rise_c_per_kj: float   # coil heating per kJ of stored pulse energy


class CoilThermalPredictor:
    """Predicts a train's coil temperature rise, erring high.

    Rises are normalised per kJ of stored pulse energy (Magstim's joules-per-pulse
    table, which grows with the square of the output). The prediction is the larger of
    the conservative model and the last observed rise: the model covers the first train
    and a sensor that lags, the observation covers a coil that heats faster than the
    model assumed.
    """

    def __init__(self, limits: ThermalLimits) -> None:
        self._limits = limits
        self._observed_c_per_unit: float | None = None

    def predicted_rise_c(self, train: TrainSpec) -> float:
        units = _heat_units(train)
        model = self._limits.conservative_rise_c_per_kj * units
        if self._observed_c_per_unit is None:
            return model
        return max(model, self._observed_c_per_unit * units)

    def observe(self, train: TrainSpec, before_c: float, after_c: float) -> None:
        """Learn from one train; a coil that cooled during the train teaches nothing."""
        units = _heat_units(train)
        if units <= 0:
            return
        self._observed_c_per_unit = max(0.0, after_c - before_c) / units

    def reset(self) -> None:
        self._observed_c_per_unit = None


def _heat_units(train: TrainSpec) -> float:
    """Stored energy of the train in kJ."""
    return train.pulses * rapid_joules_per_pulse(train.intensity_pct_mso) / 1000.0


def coil_present(status: DeviceStatus) -> InterlockResult:
    if status.coil_present:
        return InterlockResult("coil_present", True, "coil present")
    return InterlockResult("coil_present", False, "coil not present: connect the coil")


def coil_temperature(
    status: DeviceStatus, predicted_rise_c: float, limits: ThermalLimits
) -> InterlockResult:
    """Pass only if the coil stays below the warning limit after the next train."""
    temp = status.coil_temperature_c
    if temp is None:
        return InterlockResult(
            "coil_temperature", False,
            "coil temperature not reported by the device: cannot predict the next train's "
            "heating",
        )
    predicted = temp + predicted_rise_c
    if temp >= limits.trip_c:
        return InterlockResult(
            "coil_temperature", False,
            f"coil temperature {temp:.1f} °C is at the trip limit {limits.trip_c:.1f} °C",
        )
    if predicted >= limits.warning_c:
        return InterlockResult(
            "coil_temperature", False,
            f"coil temperature {temp:.1f} °C + predicted rise {predicted_rise_c:.2f} °C = "
            f"{predicted:.2f} °C reaches the warning limit {limits.warning_c:.1f} °C: "
            "waiting for the coil to cool",
            waits=True,
        )
    return InterlockResult(
        "coil_temperature", True,
        f"coil {temp:.1f} °C, predicted {predicted:.2f} °C after the next train "
        f"(warning limit {limits.warning_c:.1f} °C)",
    )


def operator_present(
    operator: str, last_heard_s: float | None, now_s: float, timeout_s: float
) -> InterlockResult:
    """The operator who started the session was heard from within ``timeout_s``."""
    if last_heard_s is None:
        return InterlockResult(
            "operator_present", False, f"operator {operator!r} has not been heard from"
        )
    if now_s - last_heard_s > timeout_s:
        return InterlockResult(
            "operator_present", False,
            f"operator {operator!r} not heard from for more than heartbeat_timeout_s = "
            f"{timeout_s:g} s",
        )
    return InterlockResult("operator_present", True, f"operator {operator!r} present")


def from_reasons(name: str, reasons: list[str], ok_reason: str) -> InterlockResult:
    """An interlock backed by a validator: pass when it gave no reasons."""
    if not reasons:
        return InterlockResult(name, True, ok_reason)
    return InterlockResult(name, False, "; ".join(reasons))


# --------------------------------------------------------------------------------------
# Limit-source interlocks: the protocol validator is the judge at load, before arming
# and before every train (a motor threshold can expire and a device can change under a
# loaded plan; the daily budget moves as pulses are delivered).


class PlanUnusable(Exception):
    """The load command's protocol or motor threshold is malformed (INVALID_PAYLOAD)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class PlanRejected(Exception):
    """A limit source rejected the prescription (REJECTED_BY_SAFETY); all checks kept."""

    def __init__(self, message: str, checks: list[dict[str, object]]) -> None:
        super().__init__(message)
        self.checks = checks


@dataclass(frozen=True, slots=True)
class LoadedPlan:
    """A validated prescription for one patient on this device, ready to run.

    Only the validator makes a ``ValidatedPlan``, so a ``LoadedPlan`` cannot exist for a
    prescription that did not pass every limit source.
    """

    patient_ref: str
    validated: ValidatedPlan
    motor_threshold_json: dict[str, Any]
    protocol_digest: str
    #: what dashboards may see: never the patient reference (it goes to the record and
    #: to the operator who loaded the plan, nowhere else)
    summary: dict[str, Any]

    @property
    def schedule(self) -> PulseSchedule:
        return self.validated.schedule


class Planner:
    """Adapts the protocol validator to the daemon's commands and interlocks."""

    def __init__(self, site: SiteLimits) -> None:
        self._site = site

    def prepare(
        self,
        command: LoadCommand,
        device: DeviceCapabilities,
        *,
        already_today: int,
        now: datetime,
    ) -> LoadedPlan:
        """Validate a load against every limit source, or raise with every reason."""
        try:
            if isinstance(command.protocol, str):
                # the library only: a command never makes the daemon read a file by path
                protocol = load_library_protocol(command.protocol)
            else:
                protocol = parse_protocol(command.protocol, source="load.protocol")
            mt_in = command.motor_threshold
            mt = MotorThreshold(
                pct_mso=mt_in.pct_mso, method=mt_in.method, measured_at=mt_in.measured_at
            )
        except ProtocolError as exc:
            raise PlanUnusable(exc.problems) from None
        result = validate(protocol, mt, device, self._site, now=now)
        checks = [c.to_json() for c in result.checks]
        planned = result.plan.schedule.total_pulses if result.plan is not None else 0
        budget = check_daily_budget(planned, already_today, self._site)
        checks.append(budget.to_json())
        failed = [c for c in checks if not c["ok"]]
        plan = result.plan
        if plan is None or not result.accepted or failed:
            reasons = "; ".join(str(c["message"]) for c in failed) or "validation rejected"
            raise PlanRejected(f"rejected: {reasons}", checks)
        schedule = plan.schedule
        summary: dict[str, Any] = {
            "protocol": schedule.protocol_name,
            "total_pulses": schedule.total_pulses,
            "duration_s": schedule.duration_s,
            "intensity_pct_mso": plan.intensity_pct_mso,
            "digest": schedule.digest,
            "trains": len(schedule.trains),
            "warnings": [c.message for c in plan.warnings],
            "exceptions": [e.describe() for e in plan.exceptions],
            "pulses_today_before": already_today,
        }
        return LoadedPlan(
            patient_ref=command.patient_ref,
            validated=plan,
            motor_threshold_json={
                "pct_mso": mt.pct_mso, "method": mt.method,
                "measured_at": mt.measured_at.isoformat(),
            },
            protocol_digest=_protocol_digest(protocol),
            summary=summary,
        )

    def recheck(self, plan: LoadedPlan, device: DeviceCapabilities, *, now: datetime) -> (
        InterlockResult
    ):
        """The loaded plan is still valid now, for this device: same schedule, MT fresh."""
        loaded = plan.validated
        result = validate(loaded.protocol, loaded.motor_threshold, device, self._site, now=now)
        reasons = [c.message for c in result.checks if not c.ok]
        if not reasons and (result.plan is None or not result.accepted):
            reasons.append("validation no longer accepts the plan")
        if result.plan is not None and result.plan.schedule.digest != plan.schedule.digest:
            reasons.append(
                f"the plan compiles differently now (digest {result.plan.schedule.digest[:12]} "
                f"≠ loaded {plan.schedule.digest[:12]}): reload it"
            )
        return from_reasons("plan_valid", reasons, "plan valid for the attached device")

    def daily_budget(self, remaining: int, already_today: int) -> InterlockResult:
        check = check_daily_budget(remaining, already_today, self._site)
        return InterlockResult("daily_budget", check.ok, check.message)


def _protocol_digest(protocol: ProtocolSpec) -> str:
    canonical = json.dumps(protocol.to_tables(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
