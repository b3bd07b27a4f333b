"""A stand-in for the session controller, for the transport's own tests.

The MQTT layer only needs ``CommandTarget``; testing it against the real controller would
test the controller again. This fake records what reached it, can hold a verb at a gate
to stage slow commands, and emits events on request.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

from e2e.broker import DAEMON_OPERATORS, connect, json_of, next_message
from stimd.commands import CommandBase, CommandError, CommandOutcome, Event, Verb
from stimd.mqtt import serve_mqtt
from stimd.mqtt.private_broker import PrivateBroker

STATE_AFTER: dict[Verb, str] = {
    Verb.LOAD: "LOADED", Verb.START: "RUNNING", Verb.PAUSE: "PAUSED",
    Verb.RESUME: "RUNNING", Verb.STOP: "ABORTED", Verb.UNLOAD: "IDLE",
}


class FakeTarget:
    def __init__(self) -> None:
        self.state = "IDLE"
        self.executed: list[tuple[str, Verb, str]] = []
        self.lost: list[str] = []
        self.gates: dict[Verb, asyncio.Event] = {}
        self.entered: dict[Verb, asyncio.Event] = {}
        self.refusals: dict[Verb, CommandError] = {}
        self._executed_more = asyncio.Event()
        self._listeners: list[Callable[[Event], None]] = []

    async def execute(self, operator: str, command: CommandBase, verb: Verb) -> CommandOutcome:
        self.executed.append((operator, verb, command.id))
        self._executed_more.set()
        self.entered.setdefault(verb, asyncio.Event()).set()
        gate = self.gates.get(verb)
        if gate is not None:
            await gate.wait()
        refusal = self.refusals.get(verb)
        if refusal is not None:
            return CommandOutcome(ok=False, state=self.state, error=refusal)
        self.state = STATE_AFTER.get(verb, self.state)
        self.emit("state_changed", {"state": self.state})
        return CommandOutcome(ok=True, state=self.state, result={"done": verb.value})

    async def executed_at_least(self, verb: Verb, count: int) -> None:
        while sum(1 for _, seen, _ in self.executed if seen is verb) < count:
            self._executed_more.clear()
            await self._executed_more.wait()

    def snapshot(self) -> dict[str, Any]:
        return {"state": self.state, "progress": None}

    def add_listener(self, listener: Callable[[Event], None]) -> None:
        self._listeners.append(listener)

    def transport_lost(self, reason: str) -> None:
        self.lost.append(reason)

    def emit(self, kind: str, payload: dict[str, Any]) -> None:
        event = Event.model_validate({"type": kind, "payload": payload})
        for listener in self._listeners:
            listener(event)

    def ids(self) -> list[str]:
        return [command_id for _, _, command_id in self.executed]


@asynccontextmanager
async def running_service(
    broker: PrivateBroker,
    target: FakeTarget,
    device: str = "dev01",
    lifecycle: Callable[[], str] = lambda: "ready",
    **config: object,
) -> AsyncIterator[asyncio.Task[None]]:
    """The MQTT interface of ``device`` served for ``target``, online before the body."""
    async with connect(broker, "dash-lobby", client_id=f"wait-{device}") as watcher:
        await watcher.subscribe(f"stimd/{device}/status", qos=1)
        task = asyncio.create_task(
            serve_mqtt(
                broker.client_config(device, **config), target, device_id=device,
                boot_id="boot-1", version="9.9.9", meta={"model": "fake", "simulated": True},
                lifecycle=lifecycle, operators=DAEMON_OPERATORS,
            ),
            name=f"serve-mqtt-{device}",
        )
        try:
            while not json_of(await next_message(watcher, within_s=10))["online"]:
                pass
        except BaseException:
            await cancel_and_wait(task)
            raise
    try:
        yield task
    finally:
        await cancel_and_wait(task)


async def cancel_and_wait(task: asyncio.Task[None]) -> None:
    """Cancel the service; a real failure inside it still fails the test."""
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task
