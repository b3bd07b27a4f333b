"""``[mqtt]`` configuration: absurd values are refused with the key and the limit."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from stimd.mqtt.config import MqttConfig

BASE: dict[str, Any] = {"username": "dev01"}


def refusal(**changes: Any) -> tuple[str, str]:
    with pytest.raises(ValidationError) as caught:
        MqttConfig.model_validate({**BASE, **changes})
    error = caught.value.errors()[0]
    return ".".join(str(p) for p in error["loc"]), error["msg"]


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("port", 0, "greater than or equal to 1"),
        ("port", 70000, "less than or equal to 65535"),
        ("port", "1883", "valid integer"),
        ("port", 1883.0, "valid integer"),
        ("keepalive_s", -5, "greater than or equal to 1"),
        ("max_command_age_s", math.nan, "finite number"),
        ("max_command_age_s", math.inf, "finite number"),
        ("max_command_age_s", 0, "greater than 0"),
        ("max_command_age_s", 1e9, "less than or equal to 3600"),
        ("state_interval_s", 0.001, "greater than or equal to 0.05"),
        ("max_payload_bytes", 10**12, "less than or equal to 1048576"),
        ("command_rate_per_s", -1.0, "greater than 0"),
        ("queue_depth", True, "valid integer"),
        ("username", "dev/01", "should match pattern"),
        ("username", "", "at least 1 character"),
        ("colour", "red", "Extra inputs are not permitted"),
    ],
)
def test_absurd_values_are_refused_naming_the_key(key: str, value: object, says: str) -> None:
    where, message = refusal(**{key: value})
    assert where == key
    assert says in message


def test_reconnect_bounds_must_be_ordered() -> None:
    _, message = refusal(reconnect_min_s=10.0, reconnect_max_s=1.0)
    assert "reconnect_min_s: 10.0 exceeds reconnect_max_s 1.0" in message


def test_client_certificate_needs_its_key_and_a_ca(tmp_path: Path) -> None:
    _, alone = refusal(cert_file=str(tmp_path / "c.pem"))
    assert "cert_file and key_file must be given together" in alone
    _, no_ca = refusal(cert_file=str(tmp_path / "c.pem"), key_file=str(tmp_path / "k.pem"))
    assert "ca_file: required" in no_ca


def test_paths_come_from_toml_strings_and_the_password_is_read_fresh(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("first\n")
    config = MqttConfig.model_validate({**BASE, "password_file": str(secret)})
    assert config.read_password() == "first"
    secret.write_text("rotated")
    assert config.read_password() == "rotated"
    assert "rotated" not in repr(config)


def test_an_empty_password_file_is_an_error(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("\n")
    config = MqttConfig.model_validate({**BASE, "password_file": str(secret)})
    with pytest.raises(ValueError, match="is empty"):
        config.read_password()


def test_backoff_doubles_up_to_the_cap() -> None:
    config = MqttConfig.model_validate({**BASE, "reconnect_min_s": 0.5, "reconnect_max_s": 3.0})
    assert [config.backoff(n) for n in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert config.backoff(10**9) == 3.0
    with pytest.raises(ValueError, match="attempt=-1 is negative"):
        config.backoff(-1)
