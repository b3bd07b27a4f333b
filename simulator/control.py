"""The control socket: fault injection and state queries from another process.

One JSON object per line in, one JSON reply per line out:
``{"op": "state"}``, ``{"op": "pulse_count"}``, ``{"op": "clear"}``,
``{"op": "inject", "fault": "garble", "rate": 0.5}``. Replies are
``{"ok": true, "result": {...}}`` or ``{"ok": false, "error": "reason"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .faults import FaultRequestError

if TYPE_CHECKING:
    from .app import Simulator

log = logging.getLogger("simulator.control")

MAX_REQUEST_BYTES = 64 * 1024


class ControlRequestError(ValueError):
    """A control request that is not valid JSON or names an unknown operation."""


def dispatch(simulator: Simulator, request: Any) -> dict[str, Any]:
    """Execute one decoded request; raises ``ControlRequestError``/``FaultRequestError``."""
    if not isinstance(request, dict):
        raise ControlRequestError(f"request must be a JSON object, got {type(request).__name__}")
    op = request.get("op")
    rest = {k: v for k, v in request.items() if k != "op"}
    if op == "state":
        _no_extra(op, rest)
        return simulator.state()
    if op == "pulse_count":
        _no_extra(op, rest)
        return {"pulse_count": simulator.core.pulse_count, "trains": simulator.core.train_count}
    if op == "clear":
        _no_extra(op, rest)
        return simulator.clear()
    if op == "inject":
        fault = rest.pop("fault", None)
        if not isinstance(fault, str):
            raise ControlRequestError(f"inject needs a string 'fault', got {fault!r}")
        return simulator.inject(fault, **rest)
    raise ControlRequestError(
        f"unknown op {op!r}; known: state, pulse_count, inject, clear")


def _no_extra(op: str, rest: dict[str, Any]) -> None:
    if rest:
        raise ControlRequestError(f"op {op!r} takes no parameters, got {sorted(rest)}")


class ControlServer:
    """Unix-socket server bound to ``path``; removed again on close."""

    def __init__(self, path: Path, simulator: Simulator) -> None:
        self.path = path
        self.simulator = simulator
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            if self.path.is_socket():
                self.path.unlink()  # a stale socket from a killed simulator
        self._server = await asyncio.start_unix_server(
            self._client, path=str(self.path), limit=MAX_REQUEST_BYTES)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.add(writer)
        try:
            while line := await reader.readline():
                reply = self._answer(line)
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError) as exc:
            log.info("control client dropped: %s", exc)
        finally:
            self._clients.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
            return {"ok": True, "result": dispatch(self.simulator, request)}
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return {"ok": False, "error": f"request is not JSON: {exc}"}
        except (ControlRequestError, FaultRequestError, TypeError) as exc:
            return {"ok": False, "error": str(exc)}

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._clients):
                writer.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
