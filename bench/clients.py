"""MQTT clients of the benchmarks: stimctl's operator client, and timestamped watchers.

Commands go through ``stimd.mqtt.operator_client.OperatorClient``, the client ``stimctl``
uses, so they carry what a technician's commands carry (``ts``, Response Topic,
Correlation Data, Message Expiry) and replies are matched by id. Watching is separate:
every message a watcher receives is stamped with ``time.monotonic_ns()`` the moment the
reader takes it off the connection, so it can be compared with the simulator's pulse
log (same clock).
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

from stimd.commands import Reply, Verb
from stimd.mqtt.connection import build_client
from stimd.mqtt.operator_client import OperatorClient
from stimd.mqtt.private_broker import PrivateBroker
from stimd.mqtt.topics import ROOT

QOS = 1
#: Above the longest command: ``start`` arms the device (~1 s, more on a loaded machine).
REPLY_TIMEOUT_S = 30.0
ONLINE_TIMEOUT_S = 120.0
_CLIENT_NUMBERS = itertools.count(1)


class CommandFailed(RuntimeError):
    """The daemon refused a command the benchmark needed; the message has its reason."""


@dataclass(frozen=True, slots=True)
class Received:
    topic: str
    payload: Any
    received_ns: int

    @property
    def device_id(self) -> str:
        return self.topic.split("/")[1]


class Inbox:
    """Takes messages off one connection and routes them; ``run`` until cancelled."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self._watched: list[tuple[str, asyncio.Queue[Received]]] = []

    def watch(self, topic_filter: str) -> asyncio.Queue[Received]:
        """A queue of every later message matching ``topic_filter`` (subscribe separately)."""
        queue: asyncio.Queue[Received] = asyncio.Queue()
        self._watched.append((topic_filter, queue))
        return queue

    async def run(self) -> None:
        async for message in self.client.messages:
            now = time.monotonic_ns()
            raw = message.payload
            try:
                payload = json.loads(raw) if isinstance(raw, bytes | str) else raw
            except json.JSONDecodeError:
                payload = raw
            received = Received(message.topic.value, payload, now)
            for topic_filter, queue in self._watched:
                if message.topic.matches(topic_filter):
                    queue.put_nowait(received)


@asynccontextmanager
async def connected(
    broker: PrivateBroker, account: str, subscriptions: tuple[str, ...] = (),
) -> AsyncIterator[Inbox]:
    """A connection for ``account`` with its reader running; ``subscriptions`` at QoS 1.

    A message is routed only to filters watched when it arrives: watch a topic with
    retained values before subscribing to it (``inbox.client.subscribe``).
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


def console(broker: PrivateBroker, account: str, device_id: str) -> OperatorClient:
    """stimctl's client for ``account`` commanding ``device_id`` (``async with`` it)."""
    return OperatorClient(broker.client_config(account), device_id,
                          reply_timeout_s=REPLY_TIMEOUT_S)


async def command(client: OperatorClient, verb: Verb, **fields: Any) -> Reply:
    """One command with its matched reply; ``CommandFailed`` when the daemon says no."""
    reply = await client.request(verb, fields)
    if not reply.ok:
        raise CommandFailed(
            f"{verb.value} to {client.topics.device_id} refused in state {reply.state}: "
            f"{reply.error}")
    return reply


async def heartbeats(client: OperatorClient, period_s: float) -> None:
    """What an operator console does during a session: say "still here" regularly."""
    while True:
        await command(client, Verb.HEARTBEAT)
        await asyncio.sleep(period_s)


async def wait_online(
    broker: PrivateBroker, account: str, device_ids: Collection[str], *,
    timeout_s: float = ONLINE_TIMEOUT_S,
) -> None:
    """Wait until every device's retained ``status`` says online.

    READY comes before the daemon's MQTT connection, and a command published before the
    daemon subscribed is lost (clean sessions): this is what a console must wait for.
    """
    online: set[str] = set()
    async with connected(broker, account) as inbox:
        statuses = inbox.watch(f"{ROOT}/+/status")
        await inbox.client.subscribe(f"{ROOT}/+/status", qos=QOS)
        async with asyncio.timeout(timeout_s):
            while not online >= set(device_ids):
                received = await statuses.get()
                status = received.payload
                if isinstance(status, dict) and status.get("online") is True:
                    online.add(received.device_id)
