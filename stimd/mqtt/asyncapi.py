"""The AsyncAPI 3 description of the MQTT interface, generated from the daemon's models.

    python -m stimd.mqtt.asyncapi > docs/asyncapi.yaml

Message schemas come from ``model_json_schema`` of the very pydantic models that
validate commands and build replies, status and events; a test regenerates the document
and fails when the committed file differs.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from stimd import __version__
from stimd.commands import (
    COMMAND_MODELS,
    ErrorCode,
    LoadCommand,
    PlainCommand,
    Reply,
    ResetCommand,
    Verb,
)
from stimd.mqtt.payloads import EventMessage, StatusPayload
from stimd.mqtt.topics import ROOT, UNREADABLE_ID_LEVEL

SCHEMA_REF = "#/components/schemas/{model}"
EVENT_TYPES = (
    "train_started", "train_completed", "session_completed", "session_aborted",
    "session_paused", "interlock", "fault", "command",
)
MODELS: tuple[type[BaseModel], ...] = (
    LoadCommand, ResetCommand, PlainCommand, Reply, StatusPayload, EventMessage,
)


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/{kind}/{name}"}


def _parameter(description: str, enum: list[str] | None = None) -> dict[str, Any]:
    parameter: dict[str, Any] = {"description": description}
    if enum is not None:
        parameter["enum"] = enum
    return parameter


def _schemas() -> dict[str, Any]:
    _, top = models_json_schema(
        [(model, "validation") for model in MODELS], ref_template=SCHEMA_REF
    )
    schemas: dict[str, Any] = dict(top["$defs"])
    schemas["State"] = {
        "type": "object",
        "description": (
            "Full snapshot owned by the session controller: state, device (armed, ready, "
            "coil_present, coil_temperature_c, ...), protocol (name, digest), plan, session, "
            "progress (train, trains, pulses_delivered, pulses_planned, time_left_s), "
            "interlocks [{name, ok, reason, waits}], paused_reason, fault."
        ),
        "required": ["state"],
        "properties": {"state": {"type": "string", "enum": [
            "CONNECTING", "IDLE", "LOADED", "ARMED", "RUNNING", "PAUSED", "COMPLETED",
            "ABORTED", "FAULT",
        ]}},
    }
    schemas["Meta"] = {
        "type": "object",
        "description": "Device model, dialect, firmware, capabilities, simulated or not, "
        "site limits, schema version: as the daemon reports them at connect.",
    }
    return dict(sorted(schemas.items()))


def _message(name: str, schema: str, summary: str) -> dict[str, Any]:
    return {"name": name, "summary": summary, "payload": _ref("components/schemas", schema)}


def document() -> dict[str, Any]:
    """The AsyncAPI document as plain data."""
    device = {"device_id": _parameter("the daemon's [device] id, e.g. dev01")}
    command_messages = {
        f"{verb.value}Command": _message(
            f"{verb.value}Command", COMMAND_MODELS[verb].__name__,
            f"`{verb.value}` from an operator",
        )
        for verb in Verb
    }
    channels: dict[str, Any] = {
        "status": {
            "address": f"{ROOT}/{{device_id}}/status", "parameters": device,
            "description": "Retained; also the Last Will (online false, lifecycle 'lost'), "
            "which the daemon publishes itself when only its stop connection was lost. "
            "Published online false on a clean stop too.",
            "messages": {"status": _message("status", "StatusPayload", "daemon liveness")},
        },
        "meta": {
            "address": f"{ROOT}/{{device_id}}/meta", "parameters": device,
            "description": "Retained.",
            "messages": {"meta": _message("meta", "Meta", "what the device is")},
        },
        "state": {
            "address": f"{ROOT}/{{device_id}}/state", "parameters": device,
            "description": "Retained; republished on every change and every "
            "state_interval_s while ARMED, RUNNING or PAUSED.",
            "messages": {"state": _message("state", "State", "full snapshot")},
        },
        "event": {
            "address": f"{ROOT}/{{device_id}}/evt/{{event_type}}",
            "parameters": {**device, "event_type": _parameter("event kind", list(EVENT_TYPES))},
            "description": "Not retained. seq counts 1, 2, 3, ... per boot_id across all "
            "event types; a gap means events were lost.",
            "messages": {"event": _message("event", "EventMessage", "one event")},
        },
        "command": {
            "address": f"{ROOT}/{{device_id}}/cmd/{{user}}/{{verb}}",
            "parameters": {
                **device,
                "user": _parameter("the sending operator; the broker ACL lets each operator "
                                   "write only under its own name"),
                "verb": _parameter("the command", [v.value for v in Verb]),
            },
            "description": "QoS 1. Every command has an id (a repeat is answered with the "
            "first answer, never executed twice) and an optional ts (older than "
            "max_command_age_s: EXPIRED). MQTT 5 Message Expiry, Response Topic and "
            "Correlation Data are honoured. `stop` never waits behind other commands: the "
            "daemon receives stops on a dedicated broker connection. An arm, start or resume "
            "sent before a stop is never executed after it.",
            "messages": command_messages,
        },
        "reply": {
            "address": f"{ROOT}/{{device_id}}/reply/{{user}}/{{command_id}}",
            "parameters": {
                **device,
                "user": _parameter("the operator who sent the command"),
                "command_id": _parameter(
                    f"the command's id, or `{UNREADABLE_ID_LEVEL}` when the id could not be "
                    "read (the reply's id is then null)"
                ),
            },
            "description": "Error codes: " + ", ".join(c.value for c in ErrorCode) + ".",
            "messages": {"reply": _message("reply", "Reply", "the answer to one command")},
        },
    }
    operations: dict[str, Any] = {
        "sendCommand": {
            "action": "send", "channel": _ref("channels", "command"),
            "summary": "An operator commands the daemon.",
            "messages": [_ref("channels/command/messages", name) for name in command_messages],
            "reply": {"channel": _ref("channels", "reply"),
                      "messages": [_ref("channels/reply/messages", "reply")]},
        },
        **{
            f"receive{name.capitalize()}": {
                "action": "receive", "channel": _ref("channels", name),
                "summary": f"Observers read {name}.",
                "messages": [_ref(f"channels/{name}/messages", name)],
            }
            for name in ("status", "meta", "state", "event")
        },
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "stimd MQTT interface",
            "version": f"1 (stimd {__version__.split('+')[0]})",
            "description": "Technicians command an rTMS stimulator's daemon; dashboards "
            "observe it. JSON payloads, UTF-8, QoS 1. Roles: operators command under their "
            "own name and read their replies; dashboards read status, meta, state and evt; "
            "each device reads and writes only its own subtree.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "clinic": {"host": "broker.clinic.example:8883", "protocol": "secure-mqtt",
                       "protocolVersion": "5", "description": "MQTT 5; 3.1.1 clients work "
                       "without Response Topic, Correlation Data and Message Expiry."},
        },
        "channels": channels,
        "operations": operations,
        "components": {"schemas": _schemas()},
    }


# ---------------------------------------------------------------------- YAML output

_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


def _key(key: str) -> str:
    return key if _PLAIN_KEY.fullmatch(key) else json.dumps(key, ensure_ascii=False)


def _scalar(value: Any) -> str:
    # JSON scalars are valid YAML 1.2 flow scalars; strings are always quoted so that no
    # value (yes, no, 1.0, a leading '#') changes meaning in a YAML reader.
    return json.dumps(value, ensure_ascii=False)


def to_yaml(value: Any, indent: int = 0) -> str:
    """Block-style YAML for JSON-shaped data, deterministic and dependency-free."""
    pad = "  " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, dict | list) and item:
                lines.append(f"{pad}{_key(str(key))}:")
                lines.append(to_yaml(item, indent + 1))
            else:
                lines.append(f"{pad}{_key(str(key))}: {_empty_or_scalar(item)}")
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict | list) and item:
                nested = to_yaml(item, indent + 1).lstrip()
                lines.append(f"{pad}- {nested}")
            else:
                lines.append(f"{pad}- {_empty_or_scalar(item)}")
    else:
        lines.append(pad + _scalar(value))
    return "\n".join(lines)


def _empty_or_scalar(value: Any) -> str:
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return _scalar(value)


def render() -> str:
    header = "# Generated by `python -m stimd.mqtt.asyncapi`; edit the models, not this file.\n"
    return header + to_yaml(document()) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
