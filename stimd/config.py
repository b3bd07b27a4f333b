"""``stimd run --config FILE``: the daemon's TOML configuration, validated strictly.

A configuration mistake at a clinic must stop the daemon with every problem named
(key, value, limit), never start it with a guessed value: models are strict, frozen and
reject unknown keys. The digest identifies the exact configuration in the start log and
the session record without revealing secrets.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from protocols.capabilities import DEVICE_MODELS, device_profile
from protocols.site import SiteLimits
from stimd.mqtt.config import MqttConfig

# The device id is an MQTT topic level and a file-name part: no '/', '+', '#', spaces.
DeviceId = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
]
OperatorName = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
]
DriverName = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$")
]
ConfigPath = Annotated[Path, Field(strict=False)]   # TOML gives strings

#: Keys whose values never enter the digest, a log line or a dump.
SECRET_KEYS: frozenset[tuple[str, str]] = frozenset({("device", "unlock_code")})


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class DeviceConfig(_Strict):
    id: DeviceId = Field(description="the MQTT topic level stimd/<id>/ and the lock name")
    driver: DriverName = Field(description="driver registry name, e.g. magstim-rapid2")
    port: Annotated[str, StringConstraints(min_length=1, max_length=512)] = Field(
        description="serial device, the simulator's link, or socket://host:port; the only "
        "port the daemon ever opens"
    )
    mains_voltage: Literal[115, 240] | None = Field(
        default=None, description="the Rapid limits depend on it; required for Rapids"
    )
    coil: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = Field(
        default=None, description="what the site says is attached"
    )
    unlock_code: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = Field(
        default=None, description="Magstim Rapid v9+ remote-control unlock code (secret)",
        repr=False,
    )
    expected_firmware: Annotated[str, StringConstraints(min_length=1, max_length=32)] | None = (
        Field(default=None, description="refuse a unit that reports other firmware")
    )

    @model_validator(mode="after")
    def _builtin_profile_accepts(self) -> Self:
        if self.driver in DEVICE_MODELS:
            try:
                device_profile(self.driver, self.mains_voltage)
            except ValueError as exc:
                raise ValueError(f"mains_voltage: {exc}") from None
        return self


class OperatorsConfig(_Strict):
    names: list[OperatorName] = Field(min_length=1, max_length=100)
    heartbeat_timeout_s: float = Field(
        ge=1.0, le=60.0, allow_inf_nan=False,
        description="a running session pauses when its operator is silent this long",
    )

    @model_validator(mode="after")
    def _unique(self) -> Self:
        dupes = sorted(name for name, count in Counter(self.names).items() if count > 1)
        if dupes:
            raise ValueError(f"names: duplicate operator names {dupes}")
        return self


class StorageConfig(_Strict):
    state_dir: ConfigPath = Field(description="session record and instance lock live here")


class SupervisorConfig(_Strict):
    """Thresholds of the safety supervisor and interlocks; defaults are the safe ones."""

    coil_warning_c: float = Field(
        default=38.0, ge=20.0, le=41.0, allow_inf_nan=False,
        description="no train starts that is predicted to bring the coil to this",
    )
    coil_trip_c: float = Field(
        default=40.0, ge=20.0, le=41.0, allow_inf_nan=False,
        description="trip at this coil temperature; 41 °C is the IEC 60601-1 skin limit",
    )
    conservative_rise_c_per_kj: float = Field(
        default=0.2, gt=0.0, le=10.0, allow_inf_nan=False,
        description="coil rise per kJ of pulse energy assumed until a train is observed; "
        "above every simulated coil (at most 0.17 °C/kJ, docs/daemon.md)",
    )
    max_cooldown_wait_s: float = Field(
        default=40.0, gt=0.0, le=50.0, allow_inf_nan=False,
        description="waiting longer than this for the coil to cool pauses the session; "
        "the device stays armed meanwhile and a Magstim disarms itself after 60 s",
    )
    status_poll_interval_s: float = Field(default=0.5, ge=0.05, le=2.0, allow_inf_nan=False)
    stall_threshold_s: float = Field(
        default=0.5, ge=0.05, le=1.0, allow_inf_nan=False,
        description="event-loop lag that trips while a session is active; above ~1 s the "
        "Magstim keep-alive would lapse",
    )
    disarm_timeout_s: float = Field(default=1.0, gt=0.0, le=5.0, allow_inf_nan=False)
    train_end_margin_s: float = Field(
        default=2.0, gt=0.0, le=10.0, allow_inf_nan=False,
        description="a train still running this long after its nominal end trips",
    )

    @model_validator(mode="after")
    def _warning_below_trip(self) -> Self:
        if self.coil_warning_c >= self.coil_trip_c:
            raise ValueError(
                f"coil_warning_c: {self.coil_warning_c} must be below coil_trip_c "
                f"{self.coil_trip_c}"
            )
        return self


class StimdConfig(_Strict):
    device: DeviceConfig
    site: SiteLimits = Field(default_factory=SiteLimits)
    operators: OperatorsConfig
    storage: StorageConfig
    supervisor: SupervisorConfig = Field(default_factory=SupervisorConfig)
    mqtt: MqttConfig | None = None

    def digest(self) -> str:
        """SHA-256 of the canonical configuration without secrets."""
        data = self.model_dump(mode="json")
        for table, key in SECRET_KEYS:
            data.get(table, {}).pop(key, None)
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


class ConfigError(Exception):
    """The configuration is unusable; ``problems`` lists every reason, one per line."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: invalid configuration:\n  " + "\n  ".join(problems))


def describe_validation_error(error: ValidationError) -> list[str]:
    """``table.key: message (got value)`` for each problem pydantic found."""
    problems = []
    for item in error.errors():
        loc = ".".join(str(p) for p in item["loc"])
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            problems.append(f"{loc}: unknown key")
        elif item["type"] == "missing":
            problems.append(f"{loc}: required key missing")
        elif ":" in msg and item["type"] == "value_error":
            # our own validators name the key themselves
            problems.append(f"{loc + '.' if loc else ''}{msg}")
        else:
            problems.append(f"{loc}: {msg} (got {_show(item.get('input'))})")
    return problems


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def parse_config(data: dict[str, Any], *, source: str) -> StimdConfig:
    try:
        return StimdConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, describe_validation_error(exc)) from None


def load_config(path: Path) -> StimdConfig:
    """Read and validate ``path``; ``ConfigError`` lists every problem found."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read: {exc.strerror or exc}"]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), [f"not UTF-8: {exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [f"TOML syntax: {exc}"]) from None
    return parse_config(data, source=str(path))
