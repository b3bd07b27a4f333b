"""Command payload decoding: everything malformed is one INVALID_PAYLOAD, never a crash."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stimd.commands import ErrorCode, LoadCommand, Verb
from stimd.mqtt.decode import (
    PayloadRejected,
    parse_json_object,
    read_command_id,
    validate_command,
)

LIMIT = 65536




@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"", "payload is not JSON: Expecting value"),
        (b"null", "must be a JSON object, got NoneType"),
        (b'"stop"', "must be a JSON object, got str"),
        (b'{"id": "a", "ts": -Infinity}', "-Infinity is not a number JSON allows"),
        (b'{"id": "a", "ts": 2e308}', "2e308 overflows a 64-bit float"),
        (b'{"id": "a", "n": ' + b"9" * 5000 + b"}", "payload refused: Exceeds the limit"),
        (b"[" * 100_000 + b"]" * 100_000, "payload is nested too deeply to be a command"),
        (b'{"a": 1, "a": 2}', "key 'a' appears more than once"),
        (b"\xc3\x28", "payload is not UTF-8: invalid continuation byte at byte 0"),
    ],
)
def test_malformed_json_is_refused_with_the_reason(raw: bytes, says: str) -> None:
    with pytest.raises(PayloadRejected) as caught:
        parse_json_object(raw, 10**6)
    assert caught.value.code is ErrorCode.INVALID_PAYLOAD
    assert says in caught.value.message


def test_deep_nesting_within_the_size_limit_is_refused() -> None:
    with pytest.raises(PayloadRejected) as caught:
        parse_json_object(b'{"a":' * 20_000 + b"1" + b"}" * 20_000, 10**6)
    assert caught.value.message == "payload is nested too deeply to be a command"


def test_oversized_payload_is_refused_before_parsing() -> None:
    with pytest.raises(PayloadRejected) as caught:
        parse_json_object(b" " * (LIMIT + 1), LIMIT)
    assert caught.value.message == (
        f"payload is {LIMIT + 1} bytes; the limit (max_payload_bytes) is {LIMIT}"
    )


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ({"id": "ok-1"}, "ok-1"),
        ({"id": ""}, None),
        ({"id": "x" * 129}, None),
        ({"id": "a/b"}, None),
        ({"id": "@null"}, None),
        ({"id": 12}, None),
        ({"id": None}, None),
        ({}, None),
    ],
)
def test_command_id_is_read_only_when_well_formed(
    obj: dict[str, object], expected: str | None
) -> None:
    assert read_command_id(obj) == expected


def test_load_validation_lists_every_wrong_field() -> None:
    raw = json.dumps({
        "id": "l1", "protocol": "Not A Name", "patient_ref": "P 1",
        "motor_threshold": {
            "pct_mso": 55.5, "method": "emg", "measured_at": "2024-01-01T00:00:00Z"
        },
        "extra": 1,
    }).encode()
    with pytest.raises(PayloadRejected) as caught:
        validate_command(raw, Verb.LOAD)
    assert caught.value.details is not None
    fields = {d["field"] for d in caught.value.details}
    assert {"patient_ref", "motor_threshold.pct_mso", "extra"} <= fields
    assert any(f.startswith("protocol") for f in fields)
    assert caught.value.message.startswith("invalid load command: ")


def test_a_valid_load_round_trips() -> None:
    raw = json.dumps({
        "id": "l2", "ts": 1714550000, "protocol": "demo-10hz-short", "patient_ref": "P-1",
        "motor_threshold": {"pct_mso": 55, "method": "emg", "measured_at": "2024-01-01T00:00:00Z"},
    }).encode()
    command = validate_command(raw, Verb.LOAD)
    assert isinstance(command, LoadCommand)
    assert command.motor_threshold.pct_mso == 55
    assert command.ts == 1714550000.0


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_escape_as_anything_but_a_refusal(raw: bytes) -> None:
    for verb in Verb:
        try:
            parse_json_object(raw, LIMIT)
            validate_command(raw, verb)
        except PayloadRejected as refusal:
            assert refusal.code is ErrorCode.INVALID_PAYLOAD
            assert refusal.message


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.sampled_from(["id", "ts", "reason", "protocol", "x"]), json_values))
def test_arbitrary_objects_are_validated_or_refused(obj: dict[str, object]) -> None:
    raw = json.dumps(obj).encode()
    try:
        command = validate_command(raw, Verb.RESET)
    except PayloadRejected as refusal:
        assert refusal.code is ErrorCode.INVALID_PAYLOAD
    else:
        assert set(obj) <= {"id", "ts", "reason"}
        assert command.id == obj["id"]
