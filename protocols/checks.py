"""One validation check, and the stable codes that name them.

Codes are a contract: the daemon, dashboards and site exceptions refer to them, so a
code is never renamed or reused (``docs/protocols.md`` lists them with their sources).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]
CheckValue = int | float | str | None

# motor threshold
MT_METHOD = "mt.method"
MT_AGE = "mt.age"
MT_VISUAL = "mt.visual"
# intensity as delivered
INTENSITY_MIN = "intensity.min"
# Rossi 2009 Table 3 / Wassermann 1998 Table 4 (conventional rTMS and single pulses)
TABLE_FREQUENCY = "safety-table.frequency"
TABLE_INTENSITY = "safety-table.intensity"
TABLE_TRAIN = "safety-table.train-pulses"
# Chen 1997 inter-train rules (conventional rTMS)
CHEN_ITI_5S = "chen.iti-5s"
CHEN_ITI_1S = "chen.iti-1s"
# theta-burst rule set
TBS_INTENSITY = "tbs.intensity"
TBS_PULSES_PER_BURST = "tbs.pulses-per-burst"
TBS_INTRA_BURST_HZ = "tbs.intra-burst-frequency"
TBS_BURST_HZ = "tbs.burst-frequency"
TBS_TRAIN_DURATION = "tbs.train-duration"
TBS_ITI = "tbs.iti"
TBS_CONTINUOUS_INTENSITY = "tbs.continuous-intensity"
# device
DEVICE_TRAINS = "device.trains"
DEVICE_BURSTS = "device.bursts"
DEVICE_BURST_PULSES = "device.burst-pulses"
DEVICE_MAX_OUTPUT = "device.max-output"
DEVICE_FREQUENCY = "device.frequency"
DEVICE_PULSES_PER_TRAIN = "device.pulses-per-train"
DEVICE_GAP = "device.inter-train-gap"
DEVICE_SINGLE_INTERVAL = "device.single-pulse-interval"
DEVICE_RAPID_ON_TIME = "device.rapid-on-time"
DEVICE_RAPID_WAIT = "device.rapid-wait"
# site
SITE_MAX_PCT_MSO = "site.max-pct-mso"
SITE_MAX_PCT_MT = "site.max-pct-mt"
SITE_PULSES_PER_SESSION = "site.pulses-per-session"
SITE_PULSES_PER_DAY = "site.pulses-per-day"
SITE_EXCEPTION = "site.exception"

# A site may approve a library protocol as an exception to published-evidence rules
# only. Device physics, the motor threshold and the site's own limits (including the TBS
# intensity ceiling, which is a site setting) are never overridable: the site changes
# its limits instead, and physics cannot be approved away.
OVERRIDABLE_CODES: frozenset[str] = frozenset({
    TABLE_FREQUENCY,
    TABLE_INTENSITY,
    TABLE_TRAIN,
    CHEN_ITI_5S,
    CHEN_ITI_1S,
    TBS_PULSES_PER_BURST,
    TBS_INTRA_BURST_HZ,
    TBS_BURST_HZ,
    TBS_TRAIN_DURATION,
    TBS_ITI,
    TBS_CONTINUOUS_INTENSITY,
})


@dataclass(frozen=True, slots=True)
class Check:
    """One limit applied to one prescription.

    ``ok`` False means the prescription is rejected. A ``warning`` is always ``ok``:
    something the operator must see (visual MT, an approved site exception).
    ``value`` and ``limit`` are in the unit the message states.
    """

    code: str
    ok: bool
    message: str
    source: str
    value: CheckValue
    limit: CheckValue
    severity: Severity = "error"

    def __post_init__(self) -> None:
        if self.severity == "warning" and not self.ok:
            raise ValueError(f"check {self.code}: a warning cannot fail")

    def to_json(self) -> dict[str, object]:
        return {
            "code": self.code,
            "ok": self.ok,
            "message": self.message,
            "source": self.source,
            "value": self.value,
            "limit": self.limit,
            "severity": self.severity,
        }
