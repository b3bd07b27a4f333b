"""The clinic's own limits: the site limit source, and its approved exceptions.

Defaults are conservative: they run the standard library at typical motor thresholds
and nothing more; a site raises a limit deliberately, in its configuration file. The
daemon's config embeds ``SiteLimits`` as its ``[site]`` table.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from protocols.checks import OVERRIDABLE_CODES
from protocols.library import library_names
from protocols.model import ProtocolError

NonEmptyText = Annotated[str, Field(min_length=1, max_length=500, pattern=r"\S")]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class ApprovedException(_Strict):
    """A site's documented approval to run one library protocol beyond one evidence rule.

    Only rules from the published evidence (safety tables, Chen 1997, the TBS rule set)
    can be overridden: never the device, the motor threshold or the site's own limits.
    """

    protocol: str = Field(description="library protocol name")
    rule: str = Field(description="the check code it overrides, e.g. safety-table.train-pulses")
    reference: NonEmptyText = Field(description="the evidence the approval rests on")
    approved_by: NonEmptyText | None = Field(
        default=None, description="who approved it (name, role or committee decision)"
    )

    @field_validator("protocol")
    @classmethod
    def _known_protocol(cls, value: str) -> str:
        known = library_names()
        if value not in known:
            raise ValueError(
                f"{value!r} is not a library protocol (known: {', '.join(known)}); "
                "exceptions name library protocols only, so a name always means one protocol"
            )
        return value

    @field_validator("rule")
    @classmethod
    def _overridable_rule(cls, value: str) -> str:
        if value not in OVERRIDABLE_CODES:
            raise ValueError(
                f"{value!r} cannot be overridden (overridable: "
                f"{', '.join(sorted(OVERRIDABLE_CODES))})"
            )
        return value

    def describe(self) -> str:
        by = f", approved by {self.approved_by}" if self.approved_by else ""
        return (
            f"site exception for {self.protocol} over {self.rule} "
            f"(reference: {self.reference}{by})"
        )


class SiteLimits(_Strict):
    """The site limit source. Every field is validated; unknown fields are errors."""

    max_pct_mso: int = Field(
        default=90, ge=1, le=100,
        description="highest output the site allows, %MSO",
    )
    max_pct_mt: float = Field(
        default=120.0, gt=0, le=220, allow_inf_nan=False,
        description="highest prescription, % of motor threshold (FDA protocol: 120)",
    )
    tbs_max_pct_mt: float = Field(
        default=120.0, gt=0, le=220, allow_inf_nan=False,
        description="theta-burst intensity ceiling, % MT (THREE-D iTBS: 120)",
    )
    max_pulses_per_session: int = Field(
        default=3000, ge=1, le=100_000,
        description="pulses in one session (NeuroStar: 3000)",
    )
    max_pulses_per_patient_per_day: int = Field(
        default=3000, ge=1, le=100_000,
        description="pulses per patient per calendar day (SAINT needs 18000)",
    )
    max_mt_age_days: float = Field(
        default=7.0, gt=0, le=365, allow_inf_nan=False,
        description="oldest motor threshold accepted, days",
    )
    accepted_mt_methods: Annotated[
        tuple[Literal["emg", "visual"], ...], Field(strict=False)
    ] = Field(
        default=("emg",),
        description="visual MT overestimates by ~11 % (Westin 2014): opt in deliberately",
    )
    approved_exceptions: Annotated[tuple[ApprovedException, ...], Field(strict=False)] = ()

    @field_validator("accepted_mt_methods")
    @classmethod
    def _some_method(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("must name at least one method (emg, visual)")
        if len(set(value)) != len(value):
            raise ValueError("lists a method twice")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.max_pulses_per_session > self.max_pulses_per_patient_per_day:
            raise ValueError(
                f"max_pulses_per_session ({self.max_pulses_per_session}) exceeds "
                f"max_pulses_per_patient_per_day ({self.max_pulses_per_patient_per_day})"
            )
        return self


def site_problems(error: ValidationError, *, prefix: str = "site") -> list[str]:
    """Pydantic's errors as ``site.<field>: <problem>, got <input>`` lines."""
    problems = []
    for item in error.errors(include_url=False):
        loc = ".".join(str(part) for part in (prefix, *item["loc"]))
        message = item["msg"].removeprefix("Value error, ")
        got = f", got {item['input']!r}" if item["loc"] else ""  # whole-model rules name values
        problems.append(f"{loc}: {message}{got}")
    return problems


def load_site(path: str | Path) -> SiteLimits:
    """Site limits from a TOML file of top-level keys (or one ``[site]`` table)."""
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProtocolError(["file: not found"], source=str(file)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProtocolError([f"file: cannot be read ({exc})"], source=str(file)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ProtocolError([f"file: not valid TOML ({exc})"], source=str(file)) from None
    if set(data) == {"site"} and isinstance(data["site"], dict):
        data = data["site"]
    try:
        return SiteLimits.model_validate(data)
    except ValidationError as exc:
        raise ProtocolError(site_problems(exc), source=str(file)) from None
