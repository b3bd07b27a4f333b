"""The daemon's internal command API: verbs, payload models, outcomes, error codes.

The MQTT interface (and any future transport) only parses bytes into these models and
hands them to ``SessionController.execute``; the daemon's behaviour is testable
without a broker. Names here are the v1 wire contract in DESIGN.md: extend, never rename.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, Protocol

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StringConstraints,
    WithJsonSchema,
)


class Verb(StrEnum):
    LOAD = "load"
    UNLOAD = "unload"
    ARM = "arm"
    START = "start"
    PAUSE = "pause"
    RESUME = "resume"
    STOP = "stop"
    RESET = "reset"
    HEARTBEAT = "heartbeat"
    RESYNC = "resync"


class ErrorCode(StrEnum):
    INVALID_PAYLOAD = "INVALID_PAYLOAD"
    UNKNOWN_VERB = "UNKNOWN_VERB"
    NOT_AUTHORIZED = "NOT_AUTHORIZED"
    WRONG_STATE = "WRONG_STATE"
    REJECTED_BY_SAFETY = "REJECTED_BY_SAFETY"
    DUPLICATE = "DUPLICATE"
    EXPIRED = "EXPIRED"
    FAULT = "FAULT"
    INTERNAL = "INTERNAL"
    RATE_LIMITED = "RATE_LIMITED"  # per-operator rate or queue bound (MQTT interface)


CommandId = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")
]
PatientRef = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")
]
ProtocolName = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$")
]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)


class CommandBase(_Strict):
    """Fields every command carries."""

    id: CommandId
    ts: float | None = Field(
        default=None, description="sender's wall clock, Unix seconds; stale commands expire"
    )


def _aware_datetime(value: object) -> datetime:
    """Accept an ISO 8601 string (as JSON carries it) or a datetime; demand a UTC offset.

    Numbers are refused: an epoch number says nothing about whose clock it was read on.
    """
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"not an ISO 8601 date-time: {value!r}") from None
    if not isinstance(value, datetime):
        raise ValueError(f"expected an ISO 8601 date-time string, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("date-time needs a UTC offset, e.g. 2026-11-30T09:15:00+01:00")
    return value


AwareDatetime = Annotated[
    datetime,
    PlainValidator(_aware_datetime, json_schema_input_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


class MotorThresholdPayload(_Strict):
    pct_mso: int = Field(description="resting motor threshold, integer %MSO 1-100")
    method: Literal["emg", "visual"]
    measured_at: AwareDatetime = Field(description="ISO 8601 with a UTC offset")


class LoadCommand(CommandBase):
    protocol: ProtocolName | dict[str, Any] = Field(
        description="a library protocol name, or the protocol file's tables as an object"
    )
    motor_threshold: MotorThresholdPayload
    patient_ref: PatientRef = Field(description="opaque patient reference, never a name")


class ResetCommand(CommandBase):
    reason: Annotated[str, StringConstraints(min_length=1, max_length=500)]


class PlainCommand(CommandBase):
    """unload, arm, start, pause, resume, stop, heartbeat, resync: no arguments."""


COMMAND_MODELS: dict[Verb, type[CommandBase]] = {
    Verb.LOAD: LoadCommand,
    Verb.RESET: ResetCommand,
    **{
        v: PlainCommand
        for v in (
            Verb.UNLOAD, Verb.ARM, Verb.START, Verb.PAUSE, Verb.RESUME,
            Verb.STOP, Verb.HEARTBEAT, Verb.RESYNC,
        )
    },
}


class CommandError(_Strict):
    code: ErrorCode
    message: str
    details: dict[str, Any] | list[Any] | None = None


class CommandOutcome(_Strict):
    """What a command did. ``state`` is the session state after the command."""

    ok: bool
    state: str
    result: dict[str, Any] | None = None
    error: CommandError | None = None


class Reply(_Strict):
    """The ``reply/<user>/<id>`` payload."""

    id: str | None
    ok: bool
    state: str
    result: dict[str, Any] | None = None
    error: CommandError | None = None


class Event(_Strict):
    """Something that happened, for ``evt/<type>`` (the transport adds boot_id and seq)."""

    type: Literal[
        "train_started", "train_completed", "session_completed", "session_aborted",
        "session_paused", "interlock", "fault", "command", "state_changed",
    ]
    payload: dict[str, Any]


class CommandTarget(Protocol):
    """What a transport needs from the daemon (implemented by the session controller)."""

    async def execute(self, operator: str, command: CommandBase, verb: Verb) -> CommandOutcome:
        """Run one validated command from ``operator``; never raises for bad input."""
        ...

    def snapshot(self) -> dict[str, Any]:
        """The full ``state`` topic payload, as of now."""
        ...

    def add_listener(self, listener: Callable[[Event], None]) -> None:
        """Be told of every event and every state change, in order."""
        ...

    def transport_lost(self, reason: str) -> None:
        """The command channel is gone: finish the current train, start no new one, pause."""
        ...
