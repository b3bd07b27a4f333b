"""Fuzzing the file inputs: protocol files and the daemon's configuration.

Invariant: any input is either accepted as a validated object or refused with the
module's own error listing reasons (``ProtocolError``, ``ConfigError``) — never another
exception, which at a clinic would be a traceback instead of a reason.
"""

from __future__ import annotations

import copy
import datetime as dt
import math
import time
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.capabilities import device_profile
from protocols.model import ProtocolError, ProtocolSpec, load_protocol_file, parse_protocol
from protocols.motor_threshold import MotorThreshold
from protocols.site import SiteLimits
from protocols.validation import validate
from stimd.config import ConfigError, StimdConfig, load_config, parse_config

from .judge import FAULT_PROTOCOL, MT_PCT_MSO
from .results import write_result

#: Examples per property in the normal suite, and in ``make soak``.
EXAMPLES, SOAK_EXAMPLES = 300, 5000
TALLY: Counter[str] = Counter()
RAPID2 = device_profile("magstim-rapid2", 240)
#: Keys whose value is free text: any string is a valid name or description.
FREE_TEXT_KEYS = frozenset({"name", "description", "reference"})

toml_scalars = st.one_of(
    st.booleans(), st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(), st.text(max_size=30),
    st.datetimes(timezones=st.none() | st.just(dt.UTC)), st.dates(), st.times(),
)
toml_values = st.recursive(
    toml_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12,
)


def near(keys: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """A table with some of the real keys (valid-ish values or junk) and stray keys."""
    return st.fixed_dictionaries(
        {}, optional={**{k: v | toml_values for k, v in keys.items()},
                      "unknown_key": toml_values},
    )


protocol_tables = st.fixed_dictionaries({}, optional={
    "protocol": near({
        "name": st.sampled_from(["p", "x-1", "A", ""]) | st.text(max_size=70),
        "description": st.text(max_size=20), "reference": st.text(max_size=20),
        "kind": st.sampled_from(["rtms", "tbs", "single", "RTMS", "deep"]),
        "intensity_pct_mt": st.integers(-10, 300) | st.floats(),
    }),
    "rtms": near({
        "frequency_hz": st.floats() | st.integers(-5, 1000),
        "pulses_per_train": st.integers(-5, 10**6), "trains": st.integers(-5, 10**6),
        "inter_train_interval_s": st.floats() | st.integers(-5, 10**6),
    }),
    "tbs": near({
        "pulses_per_burst": st.integers(-1, 10), "intra_burst_hz": st.floats(),
        "burst_hz": st.floats(), "bursts_per_train": st.integers(-1, 100),
        "trains": st.integers(-1, 100), "inter_train_interval_s": st.floats(),
    }),
    "single": near({"pulses": st.integers(-1, 10**5), "interval_s": st.floats()}),
    "junk": toml_values,
})


def record(name: str, outcome: str) -> None:
    TALLY[f"{name}:{outcome}"] += 1


@settings(max_examples=EXAMPLES, deadline=None, database=None)
@given(data=protocol_tables)
def test_fuzzed_protocol_tables_are_accepted_or_refused_with_reasons(
    data: dict[str, Any],
) -> None:
    try:
        spec = parse_protocol(data, source="fuzz")
    except ProtocolError as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)
        assert str(exc).startswith("fuzz")
        record("protocol_tables", "refused")
        return
    assert isinstance(spec, ProtocolSpec)
    record("protocol_tables", "accepted")


absurd = st.one_of(
    st.integers(min_value=-(2**63), max_value=-1), st.just(0),
    st.integers(min_value=10**6, max_value=2**63 - 1),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0, 5e-324]),
    st.text(max_size=8), st.booleans(), st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@settings(max_examples=EXAMPLES, deadline=None, database=None)
@given(table=st.sampled_from(["protocol", "rtms"]), data=st.data())
def test_one_absurd_value_in_a_valid_protocol_is_refused_naming_its_key(
    table: str, data: st.DataObject,
) -> None:
    """Through the daemon's whole load path: parsing, then every safety limit source."""
    tables = copy.deepcopy(FAULT_PROTOCOL)
    key = data.draw(st.sampled_from(sorted(tables[table])), label="key")
    value = data.draw(absurd, label="value")
    tables[table][key] = value
    try:
        spec = parse_protocol(tables, source="fuzz")
    except ProtocolError as exc:
        assert any(key in problem for problem in exc.problems), (key, exc.problems)
        record("protocol_absurd_value", "refused by the parser")
        return
    now = dt.datetime.now(dt.UTC)
    result = validate(spec, MotorThreshold(MT_PCT_MSO, "emg", now), RAPID2, SiteLimits(),
                      now=now)
    if key in FREE_TEXT_KEYS:
        record("protocol_absurd_value", "free text accepted")
        return
    if key == "inter_train_interval_s" and result.accepted:
        # A longer rest between trains is never less safe; no limit source caps it
        # (reported in docs/reliability.md: a session of days is accepted).
        record("protocol_absurd_value", "longer rest accepted")
        return
    assert not result.accepted, f"{table}.{key} = {value!r} was accepted"
    assert result.rejections and all(c.message for c in result.rejections)
    record("protocol_absurd_value", "refused by the safety checks")


@settings(max_examples=EXAMPLES // 3, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=400) | st.text(max_size=400).map(str.encode))
def test_fuzzed_protocol_file_bytes_are_refused_with_reasons(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "fuzz.toml"
    path.write_bytes(raw)
    try:
        load_protocol_file(path)
    except ProtocolError as exc:
        assert exc.problems
        record("protocol_files", "refused")
        return
    record("protocol_files", "accepted")


config_tables = st.fixed_dictionaries({}, optional={
    "device": near({
        "id": st.sampled_from(["dev01", "a/b", "#", ""]) | st.text(max_size=70),
        "driver": st.sampled_from(["magstim-rapid2", "magventure-x100", "nope"]),
        "port": st.text(max_size=20), "mains_voltage": st.sampled_from([115, 240, 230, 0]),
        "unlock_code": st.text(max_size=70),
    }),
    "operators": near({
        "names": st.lists(st.sampled_from(["tech-alice", "a b", ""]), max_size=4),
        "heartbeat_timeout_s": st.floats() | st.integers(-1, 100),
    }),
    "storage": near({"state_dir": st.text(max_size=20)}),
    "supervisor": near({
        "coil_warning_c": st.floats(), "coil_trip_c": st.floats(),
        "status_poll_interval_s": st.floats(), "disarm_timeout_s": st.floats(),
    }),
    "site": near({"max_pct_mso": st.integers(-5, 200), "max_pct_mt": st.floats()}),
    "mqtt": near({
        "host": st.text(max_size=20), "port": st.integers(-1, 70000),
        "username": st.text(max_size=10), "keepalive_s": st.integers(-1, 1000),
        "reconnect_min_s": st.floats(), "reconnect_max_s": st.floats(),
        "cert_file": st.text(max_size=10), "key_file": st.text(max_size=10),
    }),
    "extra": toml_values,
})


@settings(max_examples=EXAMPLES, deadline=None, database=None)
@given(data=config_tables)
def test_fuzzed_configurations_are_accepted_or_refused_with_reasons(
    data: dict[str, Any],
) -> None:
    try:
        config = parse_config(data, source="fuzz.toml")
    except ConfigError as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)
        record("config_tables", "refused")
        return
    assert isinstance(config, StimdConfig)
    record("config_tables", "accepted")


@settings(max_examples=EXAMPLES // 3, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=400) | st.text(max_size=400).map(str.encode))
def test_fuzzed_config_file_bytes_are_refused_with_reasons(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "fuzz.toml"
    path.write_bytes(raw)
    try:
        load_config(path)
    except ConfigError as exc:
        assert exc.problems
        record("config_files", "refused")
        return
    record("config_files", "accepted")


def test_the_shipped_example_configuration_still_loads() -> None:
    """A control: the fuzz's refusals are not a loader that refuses everything."""
    example = Path(__file__).resolve().parents[2] / "systemd" / "stimd.example.toml"
    with example.open("rb") as handle:
        assert isinstance(parse_config(tomllib.load(handle), source=str(example)), StimdConfig)


@pytest.mark.soak
@pytest.mark.timeout(3600)
def test_soak_file_inputs() -> None:
    """The three table properties above with ``SOAK_EXAMPLES`` each."""
    for prop, strategies in (
        (test_fuzzed_protocol_tables_are_accepted_or_refused_with_reasons,
         {"data": protocol_tables}),
        (test_one_absurd_value_in_a_valid_protocol_is_refused_naming_its_key,
         {"table": st.sampled_from(["protocol", "rtms"]), "data": st.data()}),
        (test_fuzzed_configurations_are_accepted_or_refused_with_reasons,
         {"data": config_tables}),
    ):
        inner = prop.hypothesis.inner_test  # type: ignore[attr-defined]
        settings(max_examples=SOAK_EXAMPLES, deadline=None, database=None)(
            given(**strategies)(inner))()


@pytest.fixture(autouse=True)
def report_volume(request: pytest.FixtureRequest) -> Any:
    """Each property test's volume and verdict, in its own results file (xdist-safe)."""
    TALLY.clear()
    failed_before = request.session.testsfailed
    yield
    if TALLY:
        write_result(f"fuzz-{request.node.name.removeprefix('test_')}", {
            "examples": dict(sorted(TALLY.items())), "total": sum(TALLY.values()),
            "passed": request.session.testsfailed == failed_before, "finished_at": time.time(),
        })
