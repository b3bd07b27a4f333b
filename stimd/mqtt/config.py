"""The daemon's ``[mqtt]`` configuration table.

Strict and frozen like the rest of the daemon's configuration: an unknown key or an
out-of-range value is an error naming the key, never silently corrected. The password is
not part of the configuration: ``password_file`` names a file that is read at connect time,
so the secret never sits in a config dump, a log line or a repr.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

# Paths arrive as TOML strings; strict mode would refuse to turn them into Path objects.
ConfigPath = Annotated[Path, Field(strict=False)]
MqttUsername = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
]


class MqttConfig(BaseModel):
    """How the daemon reaches its broker, and the limits it puts on what arrives there."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    host: Annotated[str, StringConstraints(min_length=1, max_length=253)] = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    username: MqttUsername = Field(
        description="the daemon's own broker account; the clinic ACL names it after the device"
    )
    password_file: ConfigPath | None = Field(
        default=None, description="file holding the password; read at connect, never logged"
    )
    ca_file: ConfigPath | None = Field(default=None, description="CA bundle; enables TLS")
    cert_file: ConfigPath | None = Field(default=None, description="client certificate (TLS)")
    key_file: ConfigPath | None = Field(default=None, description="client key (TLS)")
    client_id: MqttUsername | None = Field(
        default=None, description="MQTT client id; default stimd-<device id>"
    )
    keepalive_s: int = Field(
        default=5,
        ge=1,
        le=300,
        description="MQTT keep-alive; the broker publishes the Last Will after 1.5x this",
    )
    io_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=60,
        allow_inf_nan=False,
        description="bound on connecting and on each broker acknowledgement",
    )
    reconnect_min_s: float = Field(default=0.2, gt=0, le=60, allow_inf_nan=False)
    reconnect_max_s: float = Field(default=5.0, gt=0, le=300, allow_inf_nan=False)
    state_interval_s: float = Field(
        default=1.0,
        ge=0.05,
        le=60,
        allow_inf_nan=False,
        description="steady republish period of the state topic while a session runs",
    )
    max_command_age_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        allow_inf_nan=False,
        description="a command whose ts is older than this is EXPIRED, never executed",
    )
    max_payload_bytes: int = Field(default=65536, ge=256, le=1_048_576)
    command_rate_per_s: float = Field(
        default=20.0,
        gt=0,
        le=1000,
        allow_inf_nan=False,
        description="sustained commands per second per operator (token bucket refill)",
    )
    command_burst: int = Field(default=40, ge=1, le=1000)
    queue_depth: int = Field(
        default=32, ge=1, le=1024, description="waiting commands per operator before refusal"
    )
    replay_cache_size: int = Field(
        default=256,
        ge=1,
        le=100_000,
        description="command ids remembered per operator to answer repeats",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError(
                f"reconnect_min_s: {self.reconnect_min_s} exceeds "
                f"reconnect_max_s {self.reconnect_max_s}"
            )
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file: cert_file and key_file must be given together")
        if self.cert_file is not None and self.ca_file is None:
            raise ValueError("ca_file: required with cert_file/key_file (client certs imply TLS)")
        return self

    @property
    def tls(self) -> bool:
        return self.ca_file is not None

    def read_password(self) -> str | None:
        """The broker password, read fresh at every connect so a rotated file is honoured."""
        if self.password_file is None:
            return None
        text = self.password_file.read_text(encoding="utf-8")
        password = text.rstrip("\r\n")
        if not password:
            raise ValueError(f"password_file {self.password_file} is empty")
        return password

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before reconnect ``attempt`` (0-based): doubling, capped."""
        if attempt < 0:
            raise ValueError(f"attempt={attempt} is negative")
        exponent = min(attempt, 32)
        delay = self.reconnect_min_s * math.pow(2.0, exponent)
        return min(delay, self.reconnect_max_s)
