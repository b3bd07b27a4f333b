"""``stimd run`` configuration: strict, every problem named, digest without secrets."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stimd.config import ConfigError, StimdConfig, load_config, parse_config


def minimal(**tables: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = {
        "device": {"id": "dev01", "driver": "magstim-rapid2", "port": "/dev/ttyUSB0",
                   "mains_voltage": 240},
        "operators": {"names": ["tech-alice"], "heartbeat_timeout_s": 10.0},
        "storage": {"state_dir": "/var/lib/stimd"},
    }
    for name, table in tables.items():
        data[name] = {**data.get(name, {}), **table}
    return data


def problems_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, source="test.toml")
    return info.value.problems


def test_minimal_config_gets_safe_defaults() -> None:
    config = parse_config(minimal(), source="test.toml")
    assert config.site.max_pct_mso == 90
    assert config.supervisor.coil_trip_c == 40.0
    assert config.mqtt is None


def test_unknown_keys_are_errors_naming_the_key() -> None:
    data = minimal(device={"baud": 9600})
    data["extra_table"] = {}
    assert sorted(problems_of(data)) == ["device.baud: unknown key", "extra_table: unknown key"]


def test_every_problem_is_listed_at_once() -> None:
    data = minimal(device={"mains_voltage": 230}, operators={"heartbeat_timeout_s": -1.0})
    problems = problems_of(data)
    assert "device.mains_voltage: Input should be 115 or 240 (got 230)" in problems
    assert ("operators.heartbeat_timeout_s: Input should be greater than or equal to 1 "
            "(got -1.0)") in problems


def test_rapid_without_mains_voltage_is_rejected_with_the_reason() -> None:
    data = minimal()
    del data["device"]["mains_voltage"]
    (problem,) = problems_of(data)
    assert problem.startswith("device.mains_voltage: magstim-rapid2 needs mains_voltage 240 or")


@pytest.mark.parametrize("bad_id", ["dev/01", "dev+", "#", "", "dev 01", "ünï"])
def test_device_id_must_be_a_safe_topic_level(bad_id: str) -> None:
    (problem,) = problems_of(minimal(device={"id": bad_id}))
    assert problem.startswith("device.id: ")


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("coil_trip_c", math.nan, "supervisor.coil_trip_c: Input should be a finite number"),
        ("coil_trip_c", 45.0, "supervisor.coil_trip_c: Input should be less than or equal to 41"),
        ("stall_threshold_s", 5.0,
         "supervisor.stall_threshold_s: Input should be less than or equal to 1"),
        ("conservative_rise_c_per_kj", 0.0,
         "supervisor.conservative_rise_c_per_kj: Input should be greater than 0"),
        ("disarm_timeout_s", "1", "supervisor.disarm_timeout_s: Input should be a valid number"),
    ],
)
def test_supervisor_limits_reject_absurd_values(key: str, value: object, expected: str) -> None:
    (problem,) = problems_of(minimal(supervisor={key: value}))
    assert problem.startswith(expected)


def test_warning_must_be_below_trip() -> None:
    (problem,) = problems_of(minimal(supervisor={"coil_warning_c": 40.0, "coil_trip_c": 39.0}))
    assert problem == "supervisor.coil_warning_c: 40.0 must be below coil_trip_c 39.0"


def test_duplicate_operators_are_rejected() -> None:
    (problem,) = problems_of(minimal(operators={"names": ["a", "b", "a"]}))
    assert problem == "operators.names: duplicate operator names ['a']"


def test_site_table_is_the_protocols_site_model() -> None:
    (problem,) = problems_of(minimal(site={"max_pct_mso": 101}))
    assert problem.startswith("site.max_pct_mso: Input should be less than or equal to 100")


def test_digest_is_stable_and_ignores_secrets() -> None:
    a = parse_config(minimal(device={"unlock_code": "1234-abcdefgh-xy"}), source="a")
    b = parse_config(minimal(device={"unlock_code": "9999-zzzzzzzz-zz"}), source="b")
    c = parse_config(minimal(device={"port": "/dev/ttyUSB1"}), source="c")
    assert a.digest() == b.digest() != c.digest()
    assert len(a.digest()) == 64
    assert "1234" not in repr(a)


def test_load_config_reports_toml_syntax_and_missing_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[device\nid = 1\n")
    with pytest.raises(ConfigError, match="TOML syntax"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")


@settings(max_examples=50, deadline=None)
@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(), st.text(),
                 st.booleans(), st.none()))
def test_heartbeat_timeout_accepts_only_sane_numbers(value: object) -> None:
    data = minimal(operators={"heartbeat_timeout_s": value})
    try:
        config = parse_config(data, source="t")
    except ConfigError as exc:
        assert all(p.startswith("operators.heartbeat_timeout_s: ") for p in exc.problems)
    else:
        assert isinstance(config, StimdConfig)
        timeout = config.operators.heartbeat_timeout_s
        assert 1.0 <= timeout <= 60.0 and math.isfinite(timeout)


def test_the_shipped_example_configuration_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "systemd" / "stimd.example.toml"
    config = load_config(example)
    assert config.device.id == "dev01"
    assert config.mqtt is not None and config.mqtt.username == "stimd-dev01"
    assert set(config.operators.names) >= {"tech-alice"}
