"""Strict decoding of command payloads: bytes in, a validated command or one clear reason out.

JSON is parsed twice on purpose: first by the standard library with hooks that refuse
what pydantic would let through (NaN, Infinity, numbers that overflow to infinity,
duplicate keys), then by the command's pydantic model in strict JSON mode. A payload
that fails either step changes nothing and is answered with INVALID_PAYLOAD.
"""

from __future__ import annotations

import json
import math
from typing import Any

from pydantic import TypeAdapter, ValidationError

from stimd.commands import COMMAND_MODELS, CommandBase, CommandId, ErrorCode, Verb

_COMMAND_ID = TypeAdapter(CommandId)
_SHOWN_INPUT_CHARS = 80


class PayloadRejected(Exception):
    """Why a payload was refused before it reached the daemon."""

    def __init__(
        self, code: ErrorCode, message: str, details: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details = details


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows (NaN and Infinity are refused)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:_SHOWN_INPUT_CHARS]} overflows a 64-bit float")
    return value


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"key {key!r} appears more than once")
        obj[key] = value
    return obj


def parse_json_object(raw: bytes, max_bytes: int) -> dict[str, Any]:
    """The payload as a JSON object, or PayloadRejected saying exactly what is wrong."""
    if len(raw) > max_bytes:
        raise PayloadRejected(
            ErrorCode.INVALID_PAYLOAD,
            f"payload is {len(raw)} bytes; the limit (max_payload_bytes) is {max_bytes}",
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadRejected(
            ErrorCode.INVALID_PAYLOAD, f"payload is not UTF-8: {exc.reason} at byte {exc.start}"
        ) from None
    try:
        value = json.loads(
            text,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
            object_pairs_hook=_no_duplicate_keys,
        )
    except json.JSONDecodeError as exc:
        raise PayloadRejected(
            ErrorCode.INVALID_PAYLOAD,
            f"payload is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
        ) from None
    except RecursionError:
        raise PayloadRejected(
            ErrorCode.INVALID_PAYLOAD, "payload is nested too deeply to be a command"
        ) from None
    except ValueError as exc:
        raise PayloadRejected(ErrorCode.INVALID_PAYLOAD, f"payload refused: {exc}") from None
    if not isinstance(value, dict):
        raise PayloadRejected(
            ErrorCode.INVALID_PAYLOAD,
            f"payload must be a JSON object, got {type(value).__name__}",
        )
    return value


def read_command_id(obj: dict[str, Any]) -> str | None:
    """The command's id when it is present and well-formed, else None."""
    try:
        return _COMMAND_ID.validate_python(obj.get("id"), strict=True)
    except ValidationError:
        return None


def _describe(error: Any) -> dict[str, Any]:
    location = ".".join(str(part) for part in error["loc"]) or "(payload)"
    shown = repr(error.get("input"))
    if len(shown) > _SHOWN_INPUT_CHARS:
        shown = shown[:_SHOWN_INPUT_CHARS] + "..."
    return {"field": location, "problem": error["msg"], "type": error["type"], "got": shown}


def validate_command(raw: bytes, verb: Verb) -> CommandBase:
    """The verb's pydantic model, validated strictly from the (already vetted) JSON."""
    model = COMMAND_MODELS[verb]
    try:
        return model.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        details = [_describe(e) for e in exc.errors(include_url=False)]
        summary = "; ".join(f"{d['field']}: {d['problem']} (got {d['got']})" for d in details)
        raise PayloadRejected(
            ErrorCode.INVALID_PAYLOAD, f"invalid {verb.value} command: {summary}", details
        ) from None


def verb_of(level: str) -> Verb | None:
    try:
        return Verb(level)
    except ValueError:
        return None
