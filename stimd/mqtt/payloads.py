"""Payload models of the topics the daemon publishes (commands and replies live in
``stimd.commands``). The service builds its messages with these, and the AsyncAPI
document takes its schemas from them, so the two cannot drift apart."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class StatusPayload(_Strict):
    """``status`` (retained; also the Last Will with ``online: false``)."""

    online: bool
    lifecycle: str = Field(
        description="daemon phase, e.g. starting, ready, stopping; 'lost' in the Last Will"
    )
    boot_id: str = Field(description="changes at every daemon start; events restart at seq 1")
    version: str
    ts: float = Field(description="Unix seconds when this status was composed")


class EventMessage(_Strict):
    """``evt/<type>``: one event, numbered without gaps within a boot."""

    type: str
    boot_id: str
    seq: int = Field(ge=1, description="1, 2, 3, ... per boot_id, across all event types")
    ts: float = Field(description="Unix seconds when the daemon emitted the event")
    payload: dict[str, Any]
