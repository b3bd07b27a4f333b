"""docs/asyncapi.yaml is generated from the daemon's models and must not drift from them."""

from __future__ import annotations

from pathlib import Path

from stimd.commands import ErrorCode, LoadCommand, Verb
from stimd.mqtt.asyncapi import SCHEMA_REF, document, render, to_yaml

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.yaml"


def test_committed_document_matches_the_models() -> None:
    assert COMMITTED.read_text(encoding="utf-8") == render(), (
        "docs/asyncapi.yaml is stale: run `python -m stimd.mqtt.asyncapi > docs/asyncapi.yaml`"
    )


def test_every_verb_and_error_code_is_described() -> None:
    doc = document()
    command = doc["channels"]["command"]
    assert command["parameters"]["verb"]["enum"] == [v.value for v in Verb]
    assert set(command["messages"]) == {f"{v.value}Command" for v in Verb}
    for code in ErrorCode:
        assert code.value in doc["channels"]["reply"]["description"]


def test_schemas_are_the_models_own() -> None:
    schema = document()["components"]["schemas"]["LoadCommand"]
    own = LoadCommand.model_json_schema(ref_template=SCHEMA_REF)
    assert schema["properties"] == own["properties"]
    assert schema["additionalProperties"] is False


def test_yaml_rendering_quotes_every_string_and_nests_blocks() -> None:
    text = to_yaml({"a": ["yes", {"b": 1, "c": []}], "odd key": {}, "n": None})
    assert text == '\n'.join([
        "a:",
        '  - "yes"',
        "  - b: 1",
        "    c: []",
        '"odd key": {}',
        "n: null",
    ])
