"""The session record's hash chain: one canonical byte form per event and how rows link.

Kept apart from the SQLite code so that the exact bytes a hash covers are defined in one
place, are easy to re-implement for an external auditor (docs/record.md), and are the same
when writing and when verifying.

Canonical content of an event row: the UTF-8 bytes of the JSON object
``{"data": …, "kind": …, "seq": …, "session_id": …, "ts": …}`` serialised with sorted keys,
separators ``","`` and ``":"``, no ASCII escaping and no NaN/Infinity.
``hash = sha256(bytes.fromhex(prev_hash) + canonical)`` as lowercase hex; the first row's
``prev_hash`` is 64 zeros.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

GENESIS_HASH = "0" * 64


class CanonicalFormError(ValueError):
    """A value cannot be put in the canonical form (not JSON, NaN, naive datetime, …)."""


def format_timestamp(moment: datetime) -> str:
    """UTC with microseconds and a ``Z``: fixed width, so text order is time order."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise CanonicalFormError(f"timestamp {moment.isoformat()} has no UTC offset")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _to_json_value(value: object) -> object:
    # The daemon hands us pydantic dumps, enums and datetimes; they are converted once,
    # here, so that what is hashed is exactly what is stored and later re-read.
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise CanonicalFormError(f"datetime {value.isoformat()} has no UTC offset")
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    raise CanonicalFormError(f"{type(value).__name__} value {value!r} is not JSON")


def _dumps(value: object) -> str:
    try:
        return json.dumps(
            value,
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
            default=_to_json_value,
        )
    except (TypeError, ValueError) as exc:
        if isinstance(exc, CanonicalFormError):
            raise
        raise CanonicalFormError(str(exc)) from exc


def _reject_non_finite(value: object, path: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise CanonicalFormError(f"{path} is {value!r}: NaN and infinity have no JSON form")
    if isinstance(value, Mapping):
        for key, item in value.items():
            _reject_non_finite(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _reject_non_finite(item, f"{path}[{index}]")


def canonical_json(value: Mapping[str, Any]) -> str:
    """The canonical text of a JSON object, as stored in the ``data`` column."""
    _reject_non_finite(value, "")
    text = _dumps(value)
    # Round trip once: keys that json turns into strings, tuples into lists, etc. must
    # already be in their re-read form, or a verifier would compute a different hash.
    return _dumps(json.loads(text))


def canonical_content(
    *, seq: int, ts: str, session_id: int | None, kind: str, data_json: str
) -> bytes:
    """The bytes one event row's hash covers (see the module docstring)."""
    body = {
        "data": json.loads(data_json),
        "kind": kind,
        "seq": seq,
        "session_id": session_id,
        "ts": ts,
    }
    return _dumps(body).encode("utf-8")


def link_hash(prev_hash: str, content: bytes) -> str:
    """sha256 over the previous row's hash (raw 32 bytes) followed by this row's content."""
    return hashlib.sha256(bytes.fromhex(prev_hash) + content).hexdigest()
