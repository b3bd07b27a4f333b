"""In-process dialect harness: a device core and a dialect with no pty in between,
so golden byte tests run in microseconds and see exactly what the unit sends."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from protocols.capabilities import device_profile
from simulator.coils import coil_for
from simulator.device import DeviceCore
from simulator.event_log import EventLog
from simulator.magstim_dialect import MagstimDialect
from simulator.magventure_dialect import MagVentureDialect

RAPIDS = ("magstim-rapid2", "magstim-superrapid2", "magstim-superrapid2-plus1")


@dataclass
class Wire:
    """What the unit sent, and a way to talk to it byte by byte."""

    dialect: MagstimDialect | MagVentureDialect
    core: DeviceCore
    events: EventLog
    sent: list[bytes] = field(default_factory=list)

    def exchange(self, raw: bytes) -> bytes:
        """Feed ``raw`` as the host would and return everything the unit answered."""
        self.sent.clear()
        for byte in raw:
            message = self.dialect.push(byte, 0)
            if message is not None:
                self.dialect.handle(message, 0)
        if self.dialect.idle_deadline_ns() is not None:
            self.dialect.on_idle(0)
        out = b"".join(self.sent)
        self.sent.clear()
        return out


@contextlib.asynccontextmanager
async def wire(
    model: str, *, firmware: tuple[int, int, int] | None = None,
    unlock_code: str | None = None, coil: str | None = None,
) -> AsyncIterator[Wire]:
    events = EventLog(None)
    sent: list[bytes] = []
    async with asyncio.TaskGroup() as group:
        core = DeviceCore(
            device_profile(model, 240 if model in RAPIDS else None), coil_for(model, coil),
            events, group.create_task)
        dialect: MagstimDialect | MagVentureDialect
        if model.startswith("magstim"):
            dialect = MagstimDialect(core, events, sent.append, model=model,
                                     firmware=firmware, unlock_code=unlock_code)
        else:
            dialect = MagVentureDialect(core, events, sent.append, model=model)
        harness = Wire(dialect, core, events, sent)
        try:
            yield harness
        finally:
            core.shutdown()
