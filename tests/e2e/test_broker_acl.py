"""The clinic ACL, proven against a real mosquitto: who may write and read what.

A refused publish is proven by a barrier: after the refused message was acknowledged, an
allowed message goes to the same subscriber; mosquitto routes in order, so had the
refused one got through it would have arrived first.
"""

from __future__ import annotations

from pathlib import Path

import aiomqtt
import pytest

from e2e.broker import connect, next_message
from stimd.mqtt.broker_config import Account, Role, render_acl
from stimd.mqtt.private_broker import PrivateBroker

pytestmark = pytest.mark.e2e


async def _refused_then_barrier(
    broker: PrivateBroker, *, sender: str, topic: str, listener: str, listen: str,
    barrier_sender: str, barrier_topic: str,
) -> str:
    """Publish as ``sender`` to ``topic``; return the topic the listener saw first."""
    async with connect(broker, listener) as watcher:
        await watcher.subscribe(listen, qos=1)
        async with connect(broker, sender) as bad:
            await bad.publish(topic, b'{"id":"x1"}', qos=1)
        async with connect(broker, barrier_sender, client_id="barrier") as good:
            await good.publish(barrier_topic, b'{"id":"x2"}', qos=1)
        first = await next_message(watcher, listen)
        return first.topic.value


async def test_dashboard_cannot_command(broker: PrivateBroker) -> None:
    seen = await _refused_then_barrier(
        broker, sender="dash-lobby", topic="stimd/dev01/cmd/dash-lobby/start",
        listener="dev01", listen="stimd/dev01/cmd/#",
        barrier_sender="tech-alice", barrier_topic="stimd/dev01/cmd/tech-alice/start",
    )
    assert seen == "stimd/dev01/cmd/tech-alice/start"


async def test_operator_cannot_command_as_another_operator(broker: PrivateBroker) -> None:
    seen = await _refused_then_barrier(
        broker, sender="tech-bob", topic="stimd/dev01/cmd/tech-alice/start",
        listener="dev01", listen="stimd/dev01/cmd/#",
        barrier_sender="tech-alice", barrier_topic="stimd/dev01/cmd/tech-alice/stop",
    )
    assert seen == "stimd/dev01/cmd/tech-alice/stop"


async def test_operator_cannot_fake_device_topics(broker: PrivateBroker) -> None:
    seen = await _refused_then_barrier(
        broker, sender="tech-bob", topic="stimd/dev01/state",
        listener="dash-lobby", listen="stimd/+/state",
        barrier_sender="dev01", barrier_topic="stimd/dev01/state",
    )
    assert seen == "stimd/dev01/state"


async def test_device_cannot_write_another_devices_topics(broker: PrivateBroker) -> None:
    seen = await _refused_then_barrier(
        broker, sender="dev01", topic="stimd/dev02/state",
        listener="dash-lobby", listen="stimd/dev02/#",
        barrier_sender="dev02", barrier_topic="stimd/dev02/state",
    )
    assert seen == "stimd/dev02/state"


async def test_device_cannot_inject_commands_into_another_device(broker: PrivateBroker) -> None:
    seen = await _refused_then_barrier(
        broker, sender="dev01", topic="stimd/dev02/cmd/tech-alice/start",
        listener="dev02", listen="stimd/dev02/cmd/#",
        barrier_sender="tech-alice", barrier_topic="stimd/dev02/cmd/tech-alice/stop",
    )
    assert seen == "stimd/dev02/cmd/tech-alice/stop"


# (reader, filter it must not read through, writer, topic written, barrier writer, barrier)
READS_REFUSED = [
    ("dash-lobby", "stimd/+/cmd/#", "tech-alice", "stimd/dev01/cmd/tech-alice/load",
     "dev01", "stimd/dev01/state"),
    ("dash-lobby", "stimd/+/reply/#", "dev01", "stimd/dev01/reply/tech-alice/a1",
     "dev01", "stimd/dev01/state"),
    ("tech-bob", "stimd/+/reply/#", "dev01", "stimd/dev01/reply/tech-alice/a1",
     "dev01", "stimd/dev01/reply/tech-bob/b1"),
    ("tech-bob", "stimd/+/cmd/#", "tech-alice", "stimd/dev01/cmd/tech-alice/load",
     "dev01", "stimd/dev01/state"),
    ("dev01", "stimd/+/cmd/#", "tech-alice", "stimd/dev02/cmd/tech-alice/load",
     "tech-alice", "stimd/dev01/cmd/tech-alice/stop"),
    ("dev01", "stimd/+/reply/#", "dev02", "stimd/dev02/reply/tech-alice/a1",
     "dev01", "stimd/dev01/reply/tech-alice/a2"),
]


@pytest.mark.parametrize(
    ("reader", "topic_filter", "writer", "topic", "barrier_writer", "barrier"), READS_REFUSED
)
async def test_reads_outside_the_role_are_not_delivered(  # noqa: PLR0917 (parametrized)
    broker: PrivateBroker, reader: str, topic_filter: str, writer: str, topic: str,
    barrier_writer: str, barrier: str,
) -> None:
    # mosquitto grants wildcard subscriptions and filters each message by the read ACL,
    # so the proof is in what is delivered.
    async with connect(broker, reader) as client:
        await client.subscribe(topic_filter, qos=1)
        await client.subscribe(barrier, qos=1)
        async with connect(broker, writer, client_id="writer") as source:
            await source.publish(topic, b'{"id":"secret"}', qos=1)
        async with connect(broker, barrier_writer, client_id="barrier") as source:
            await source.publish(barrier, b'{"id":"barrier"}', qos=1)
        first = await next_message(client)
    assert first.topic.value == barrier, f"{reader} read {first.topic.value}"


@pytest.mark.parametrize(
    ("account", "topic_filter"),
    [
        ("dash-lobby", "stimd/+/state"),
        ("dash-lobby", "stimd/+/evt/#"),
        ("tech-alice", "stimd/+/reply/tech-alice/#"),
        ("tech-alice", "stimd/+/status"),
        ("dev01", "stimd/dev01/cmd/#"),
    ],
)
async def test_subscriptions_inside_the_role_are_granted(
    broker: PrivateBroker, account: str, topic_filter: str
) -> None:
    async with connect(broker, account) as client:
        codes = await client.subscribe(topic_filter, qos=1)
    assert not getattr(codes[0], "is_failure", True)


async def test_anonymous_clients_are_refused(broker: PrivateBroker) -> None:
    with pytest.raises(aiomqtt.MqttCodeError) as refused:
        async with connect(broker, None):
            pass
    assert "authori" in str(refused.value).lower()


async def test_wrong_password_is_refused(broker: PrivateBroker) -> None:
    with pytest.raises(aiomqtt.MqttCodeError) as refused:
        async with connect(broker, "tech-alice", password="not-the-password"):
            pass
    assert "bad user name or password" in str(refused.value).lower() or "authori" in str(
        refused.value
    ).lower()


async def test_mqtt311_operator_is_held_to_the_same_rules(broker: PrivateBroker) -> None:
    async with connect(broker, "dev01") as device:
        await device.subscribe("stimd/dev01/cmd/#", qos=1)
        async with connect(
            broker, "tech-bob", protocol=aiomqtt.ProtocolVersion.V311, client_id="bob311"
        ) as bob:
            await bob.publish("stimd/dev01/cmd/tech-alice/start", b"{}", qos=1)
            await bob.publish("stimd/dev01/cmd/tech-bob/stop", b"{}", qos=1)
        first = await next_message(device)
    assert first.topic.value == "stimd/dev01/cmd/tech-bob/stop"


def _rules_by_user(text: str) -> dict[str, list[str]]:
    rules: dict[str, list[str]] = {}
    user = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("user "):
            user = line.split(None, 1)[1]
            rules[user] = []
        else:
            assert user is not None, f"rule before any user block: {line!r}"
            assert not line.startswith("pattern"), line
            rules[user].append(line)
    return rules


def test_shipped_example_acl_has_the_generated_rules() -> None:
    example = Path(__file__).resolve().parents[2] / "systemd" / "mosquitto" / "stimd.acl"
    accounts = [
        Account("dev01", Role.DEVICE, "x"), Account("dev02", Role.DEVICE, "x"),
        Account("tech-alice", Role.OPERATOR, "x"), Account("tech-bob", Role.OPERATOR, "x"),
        Account("dash-lobby", Role.DASHBOARD, "x"),
    ]
    assert _rules_by_user(example.read_text()) == _rules_by_user(render_acl(accounts))
