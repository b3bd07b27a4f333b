"""Reusable broker fixtures: a private mosquitto per test, in the clinic ACL's shape.

Import the fixtures into a conftest (``from e2e.broker import broker``) or use
``PrivateBroker`` directly. Each test gets fresh accounts with random passwords; the
broker is killed and its files removed when the test ends, also when it fails.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from stimd.mqtt.connection import build_client
from stimd.mqtt.private_broker import PrivateBroker, standard_accounts

DEVICES = ("dev01", "dev02")
#: tech-carol has a broker account but is not an operator of any test daemon.
OPERATORS = ("tech-alice", "tech-bob", "tech-carol")
DAEMON_OPERATORS = ("tech-alice", "tech-bob")
DASHBOARDS = ("dash-lobby",)


def make_broker(workdir: Path) -> PrivateBroker:
    return PrivateBroker(workdir, standard_accounts(DEVICES, OPERATORS, DASHBOARDS))


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    with make_broker(tmp_path / "broker") as running:
        yield running


@asynccontextmanager
async def connect(
    broker: PrivateBroker,
    name: str | None,
    *,
    password: str | None = None,
    protocol: aiomqtt.ProtocolVersion = aiomqtt.ProtocolVersion.V5,
    client_id: str | None = None,
) -> AsyncIterator[aiomqtt.Client]:
    """A connected client for account ``name`` (None: anonymous)."""
    ident = client_id or f"test-{name or 'anonymous'}"
    if name is not None and password is None and protocol is aiomqtt.ProtocolVersion.V5:
        client = build_client(broker.client_config(name), client_id=ident)
    else:
        client = aiomqtt.Client(
            broker.host, broker.port, username=name,
            password=password if password is not None
            else (broker.accounts[name].password if name else None),
            identifier=ident, protocol=protocol, timeout=5,
        )
    async with client:
        yield client


async def next_message(
    client: aiomqtt.Client, topic_filter: str = "#", within_s: float = 5.0
) -> aiomqtt.Message:
    """The next message matching ``topic_filter``; TimeoutError if none arrives in time."""
    async with asyncio.timeout(within_s):
        async for message in client.messages:
            if message.topic.matches(topic_filter):
                return message
    raise AssertionError("message stream ended")


def json_of(message: aiomqtt.Message) -> Any:
    assert isinstance(message.payload, bytes)
    return json.loads(message.payload)


async def nothing_arrives(client: aiomqtt.Client, topic_filter: str, within_s: float) -> bool:
    try:
        await next_message(client, topic_filter, within_s)
    except TimeoutError:
        return True
    return False
