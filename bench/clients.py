"""MQTT clients of the benchmarks: an operator console and a dashboard, with receive times.

Every message is stamped with ``time.monotonic_ns()`` the moment the reader takes it off
the connection, so it can be compared with the simulator's pulse log (same clock).
Replies are matched to commands by id, never assumed; other messages go to the queues of
the topic filters a benchmark watches.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiomqtt

from stimd.mqtt.connection import build_client
from stimd.mqtt.private_broker import PrivateBroker
from stimd.mqtt.topics import ROOT, DeviceTopics

QOS = 1
REPLY_TIMEOUT_S = 30.0


class CommandFailed(RuntimeError):
    """The daemon answered ``ok: false`` (or not at all) to a command the benchmark needed."""


@dataclass(frozen=True, slots=True)
class Received:
    topic: str
    payload: Any
    received_ns: int
    retain: bool


class Inbox:
    """Takes messages off one connection and routes them; ``run`` until cancelled."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self._watched: list[tuple[str, asyncio.Queue[Received]]] = []
        self._replies: dict[str, asyncio.Future[Received]] = {}

    def watch(self, topic_filter: str) -> asyncio.Queue[Received]:
        """A queue of every later message matching ``topic_filter`` (subscribe separately)."""
        queue: asyncio.Queue[Received] = asyncio.Queue()
        self._watched.append((topic_filter, queue))
        return queue

    def expect_reply(self, topic: str) -> asyncio.Future[Received]:
        future: asyncio.Future[Received] = asyncio.get_running_loop().create_future()
        self._replies[topic] = future
        return future

    async def run(self) -> None:
        async for message in self.client.messages:
            now = time.monotonic_ns()
            topic = message.topic.value
            raw = message.payload
            try:
                payload = json.loads(raw) if isinstance(raw, bytes | str) else raw
            except json.JSONDecodeError:
                payload = raw
            received = Received(topic, payload, now, bool(message.retain))
            future = self._replies.pop(topic, None)
            if future is not None and not future.done():
                future.set_result(received)
            for topic_filter, queue in self._watched:
                if message.topic.matches(topic_filter):
                    queue.put_nowait(received)


@asynccontextmanager
async def connected(
    broker: PrivateBroker, account: str, subscriptions: tuple[str, ...] = (),
) -> AsyncIterator[Inbox]:
    """A connection for ``account`` with its reader running; ``subscriptions`` at QoS 1.

    Watch queues must be created (``inbox.watch``) before a message can be routed to
    them, so retained messages delivered at subscription reach only filters watched
    before ``subscribe``; callers that need those pass no subscriptions here and
    subscribe themselves after watching.
    """
    client = build_client(
        broker.client_config(account),
        client_id=f"{account}-{os.getpid()}-{next(_CLIENT_NUMBERS)}",
    )
    async with client, asyncio.TaskGroup() as group:
        inbox = Inbox(client)
        reader = group.create_task(inbox.run(), name=f"bench-inbox-{account}")
        try:
            for topic_filter in subscriptions:
                await client.subscribe(topic_filter, qos=QOS)
            yield inbox
        finally:
            reader.cancel()


_CLIENT_NUMBERS = itertools.count(1)
_COMMAND_NUMBERS = itertools.count(1)
ONLINE_TIMEOUT_S = 120.0


async def wait_online(
    broker: PrivateBroker, account: str, device_ids: Collection[str], *,
    not_boot_ids: Collection[str] = (), timeout_s: float = ONLINE_TIMEOUT_S,
) -> dict[str, Received]:
    """Wait until every device's ``status`` says online (from a boot not in
    ``not_boot_ids``); returns each device's status message.

    READY comes before the daemon's MQTT connection, and a command published before the
    daemon subscribed is lost (clean sessions): this is what a console must wait for.
    """
    online: dict[str, Received] = {}
    async with connected(broker, account) as inbox:
        statuses = inbox.watch(f"{ROOT}/+/status")
        await inbox.client.subscribe(f"{ROOT}/+/status", qos=QOS)
        async with asyncio.timeout(timeout_s):
            while len(online) < len(device_ids):
                received = await statuses.get()
                device_id = received.topic.split("/")[1]
                status = received.payload
                if (device_id in device_ids and isinstance(status, dict)
                        and status.get("online") is True
                        and status.get("boot_id") not in not_boot_ids):
                    online.setdefault(device_id, received)
    return online


class Operator:
    """Sends commands as ``user`` to one device and waits for their matched replies."""

    def __init__(self, inbox: Inbox, user: str, device_id: str) -> None:
        self.inbox = inbox
        self.user = user
        self.topics = DeviceTopics(device_id)

    @staticmethod
    def new_id(verb: str) -> str:
        return f"bench-{os.getpid()}-{next(_COMMAND_NUMBERS)}-{verb}"

    async def send(self, verb: str, **fields: Any) -> tuple[asyncio.Future[Received], int]:
        """Publish one command; returns its reply future and the publish start (mono ns)."""
        command_id = self.new_id(verb)
        future = self.inbox.expect_reply(self.topics.reply(self.user, command_id))
        payload = json.dumps({"id": command_id, **fields}, default=str)
        sent_ns = time.monotonic_ns()
        await self.inbox.client.publish(
            self.topics.command(self.user, verb), payload, qos=QOS)
        return future, sent_ns

    async def command(self, verb: str, *, within_s: float = REPLY_TIMEOUT_S,
                      **fields: Any) -> dict[str, Any]:
        """Send and wait for an ``ok`` reply; ``CommandFailed`` with the reason otherwise."""
        future, _ = await self.send(verb, **fields)
        try:
            async with asyncio.timeout(within_s):
                reply = await future
        except TimeoutError:
            raise CommandFailed(
                f"{verb} to {self.topics.device_id}: no reply within {within_s} s") from None
        body: dict[str, Any] = reply.payload
        if not body.get("ok"):
            raise CommandFailed(
                f"{verb} to {self.topics.device_id} refused in state {body.get('state')}: "
                f"{body.get('error')}")
        return body


    async def heartbeats(self, period_s: float) -> None:
        """What an operator console does during a session: say "still here" regularly."""
        while True:
            await self.command("heartbeat")
            await asyncio.sleep(period_s)
