"""One treatment session through MQTT, the way an operator console runs it.

Load, start, heartbeat while it runs, and wait for the event that ends it. The
benchmark protocols are checked here with the same validator the daemon uses, before
any process starts, so a protocol the daemon would refuse fails fast with its reasons.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bench.clients import Inbox, Received, command, heartbeats
from bench.stack import MODEL
from protocols.capabilities import device_profile
from protocols.model import parse_protocol
from protocols.motor_threshold import MotorThreshold
from protocols.schedule import PulseSchedule
from protocols.site import SiteLimits
from protocols.validation import validate
from stimd.commands import Verb
from stimd.demo import mains_for
from stimd.mqtt.operator_client import OperatorClient
from stimd.mqtt.topics import DeviceTopics

MOTOR_THRESHOLD_PCT_MSO = 50
HEARTBEAT_PERIOD_S = 2.0
END_EVENTS = frozenset({"session_completed", "session_aborted", "session_paused", "fault"})


def motor_threshold() -> dict[str, Any]:
    """The ``load`` command's motor threshold: 50 %MSO by EMG, measured now."""
    return {"pct_mso": MOTOR_THRESHOLD_PCT_MSO, "method": "emg",
            "measured_at": datetime.now(UTC).isoformat()}


def rtms_protocol(name: str, *, frequency_hz: int, pulses_per_train: int, trains: int,
                  inter_train_interval_s: float, description: str) -> dict[str, Any]:
    """An inline rTMS protocol at 100 % MT (inside Rossi et al. 2009, Table 3)."""
    return {
        "protocol": {"name": name, "description": description,
                     "reference": "stimd benchmarks (docs/performance.md)", "kind": "rtms",
                     "intensity_pct_mt": 100},
        "rtms": {"frequency_hz": frequency_hz, "pulses_per_train": pulses_per_train,
                 "trains": trains, "inter_train_interval_s": inter_train_interval_s},
    }


def planned_schedule(protocol: dict[str, Any]) -> PulseSchedule:
    """The schedule the daemon will run, or ``ValueError`` naming every failed check."""
    now = datetime.now(UTC)
    result = validate(
        parse_protocol(protocol, source="benchmark protocol"),
        MotorThreshold(MOTOR_THRESHOLD_PCT_MSO, "emg", now),
        device_profile(MODEL, mains_for(MODEL)), SiteLimits(), now=now)
    if result.plan is None or not result.accepted:
        reasons = "; ".join(c.message for c in result.checks if not c.ok)
        raise ValueError(f"benchmark protocol refused by the validator: {reasons}")
    return result.plan.schedule


@dataclass
class SessionOutcome:
    end: Received
    events: list[Received] = field(default_factory=list)

    @property
    def completed(self) -> bool:
        return bool(self.end.payload.get("type") == "session_completed")

    def of_type(self, event_type: str) -> list[Received]:
        return [e for e in self.events if e.payload.get("type") == event_type]


async def run_session(operator: OperatorClient, events: asyncio.Queue[Received], *,
                      protocol: str | dict[str, Any], patient_ref: str,
                      timeout_s: float) -> SessionOutcome:
    """Load, start and heartbeat until an end event; ``events`` watches ``evt/#``."""
    await command(operator, Verb.LOAD, protocol=protocol, motor_threshold=motor_threshold(),
                  patient_ref=patient_ref)
    while not events.empty():
        events.get_nowait()
    seen: list[Received] = []
    async with asyncio.TaskGroup() as group:
        await command(operator, Verb.START)
        beating = group.create_task(heartbeats(operator, HEARTBEAT_PERIOD_S))
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    event = await events.get()
                    seen.append(event)
                    if event.payload.get("type") in END_EVENTS:
                        return SessionOutcome(event, seen)
        finally:
            beating.cancel()


def event_queue(inbox: Inbox, device_id: str) -> asyncio.Queue[Received]:
    """Every later event of ``device_id`` (the connection must subscribe to it too)."""
    return inbox.watch(DeviceTopics(device_id).event("#"))
