"""A technician's connection to one device: commands with matched replies, and updates.

Each command gets a fresh id and the current time as ``ts``, carries an MQTT 5 Response
Topic and Correlation Data, and a Message Expiry so that a broker holding it can never
deliver it late. A reply is matched to its command by id, never assumed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from types import TracebackType
from typing import Any, Self

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import ValidationError

from stimd.commands import Reply, Verb
from stimd.mqtt.config import MqttConfig
from stimd.mqtt.connection import build_client
from stimd.mqtt.io import publish, raise_if_cancelling, subscribe
from stimd.mqtt.topics import DeviceTopics

#: How long a command may wait at the broker before it is dropped unexecuted.
COMMAND_EXPIRY_S = 10
UPDATE_BUFFER = 256


class NoReply(Exception):
    """The daemon did not answer in time (it may be down, or the broker may be)."""


class OperatorClient:
    """``async with OperatorClient(config, "dev01") as client: await client.request(...)``."""

    def __init__(self, config: MqttConfig, device_id: str, *, reply_timeout_s: float) -> None:
        self._config = config
        self.user = config.username
        self.topics = DeviceTopics(device_id)
        self._reply_timeout_s = reply_timeout_s
        self._client = build_client(
            config, client_id=f"stimctl-{self.user}-{secrets.token_hex(4)}"
        )
        self._pending: dict[str, asyncio.Future[Reply]] = {}
        self.updates: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(UPDATE_BUFFER)
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        await self._client.__aenter__()
        raise_if_cancelling()
        try:
            await subscribe(
                self._client, self.topics.reply_filter(self.user),
                within_s=self._config.io_timeout_s,
            )
        except BaseException:
            await self._client.__aexit__(None, None, None)
            raise
        self._reader = asyncio.create_task(self._read(), name="stimctl-reader")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await self._reader
        with contextlib.suppress(aiomqtt.MqttError):
            await self._client.__aexit__(exc_type, exc, tb)

    async def next_update(self) -> tuple[str, Any]:
        """The next update on a watched topic; NoReply once the connection is gone."""
        reader = self._reader
        if reader is None:
            raise NoReply("not connected")
        getter = asyncio.ensure_future(self.updates.get())
        try:
            await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not getter.done():
                getter.cancel()
        if getter.done() and not getter.cancelled():
            return getter.result()
        problem = reader.exception() if not reader.cancelled() else None
        raise NoReply(f"connection to the broker lost: {problem or 'closed'}")

    async def watch(self, *topics: str) -> None:
        """Receive these device topics (retained values first) on ``updates``."""
        for topic in topics:
            await subscribe(self._client, topic, within_s=self._config.io_timeout_s)

    async def request(self, verb: Verb, fields: dict[str, Any] | None = None) -> Reply:
        command_id = f"{self.user}-{secrets.token_hex(6)}"
        body = {"id": command_id, "ts": time.time(), **(fields or {})}
        reply_topic = self.topics.reply(self.user, command_id)
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.ResponseTopic = reply_topic
        properties.CorrelationData = command_id.encode()
        properties.MessageExpiryInterval = COMMAND_EXPIRY_S
        answer: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[command_id] = answer
        try:
            await publish(
                self._client, self.topics.command(self.user, verb.value),
                json.dumps(body, allow_nan=False).encode(), properties=properties,
                within_s=self._config.io_timeout_s,
            )
            async with asyncio.timeout(self._reply_timeout_s):
                return await answer
        except TimeoutError:
            raise NoReply(
                f"no reply to {verb.value} from {self.topics.device_id} within "
                f"{self._reply_timeout_s} s"
            ) from None
        finally:
            self._pending.pop(command_id, None)

    async def _read(self) -> None:
        reply_prefix = self.topics.reply(self.user, "")
        async for message in self._client.messages:
            topic = message.topic.value
            payload = message.payload if isinstance(message.payload, bytes) else b""
            if topic.startswith(reply_prefix):
                self._resolve(payload)
                continue
            try:
                value = json.loads(payload)
            except ValueError:
                continue
            if self.updates.full():
                self.updates.get_nowait()  # a live view wants the newest, not the oldest
            self.updates.put_nowait((topic, value))

    def _resolve(self, payload: bytes) -> None:
        try:
            reply = Reply.model_validate_json(payload)
        except ValidationError:
            return
        if reply.id is None:
            return
        waiting = self._pending.get(reply.id)
        if waiting is not None and not waiting.done():
            waiting.set_result(reply)

