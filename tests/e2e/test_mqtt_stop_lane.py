"""The stop connection against a real mosquitto: a backlog the broker drops, and its loss."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest

from e2e.broker import DASHBOARDS, DEVICES, OPERATORS, connect, json_of, next_message
from e2e.fake_target import FakeTarget, running_service
from e2e.test_mqtt_interface import command
from stimd.commands import Verb
from stimd.mqtt.private_broker import PrivateBroker, standard_accounts

pytestmark = pytest.mark.e2e

#: Per connection the broker holds 20 messages in flight plus this many queued; a
#: backlog beyond that is dropped. Small, so that the flood below certainly overflows.
SMALL_QUEUE = 10
FLOOD = 600
#: Commands ahead of a start on the main connection: enough that a stop sent after the
#: start reaches the daemon first on its own connection.
BACKLOG = 300
DROPPED = re.compile(r"Outgoing messages are being dropped for client (\S+)\.")


@pytest.fixture
def small_queue_broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    accounts = standard_accounts(DEVICES, OPERATORS, DASHBOARDS)
    with PrivateBroker(
        tmp_path / "broker", accounts, max_queued_messages=SMALL_QUEUE
    ) as running:
        yield running


def pipelined_client(broker: PrivateBroker, user: str) -> aiomqtt.Client:
    """An operator client that sends without waiting for acknowledgements: the whole
    flood reaches the broker at once, as from a fast or misbehaving sender."""
    return aiomqtt.Client(
        broker.host, broker.port, username=user, password=broker.accounts[user].password,
        identifier=f"pipelined-{user}", protocol=aiomqtt.ProtocolVersion.V5,
        max_inflight_messages=FLOOD, timeout=5,
    )


async def test_a_stop_gets_through_when_the_broker_drops_the_flood_before_it(
    small_queue_broker: PrivateBroker,
) -> None:
    broker = small_queue_broker
    target = FakeTarget()
    async with (
        running_service(broker, target),
        pipelined_client(broker, "tech-alice") as alice,
        connect(broker, "tech-bob") as bob,
    ):
        await bob.subscribe("stimd/dev01/reply/tech-bob/#", qos=1)
        await asyncio.gather(*(
            alice.publish("stimd/dev01/cmd/tech-alice/heartbeat",
                          json.dumps({"id": f"f{index}"}).encode(), qos=1)
            for index in range(FLOOD)
        ))
        await bob.publish("stimd/dev01/cmd/tech-bob/stop", b'{"id": "bob-stop"}', qos=1)
        stop = json_of(await next_message(bob, "stimd/dev01/reply/tech-bob/bob-stop"))
        # the main connection saw the same stop: it must not be answered twice
        with pytest.raises(TimeoutError):
            await next_message(bob, "stimd/dev01/reply/tech-bob/#", within_s=0.5)
        dropped_for = set(DROPPED.findall(broker.log_tail(1000)))
    assert "stimd-dev01" in dropped_for, "the flood did not overflow the main connection"
    assert "stimd-dev01-stop" not in dropped_for
    assert stop["ok"] is True
    assert [(user, verb) for user, verb, _ in target.executed if verb is Verb.STOP] == [
        ("tech-bob", Verb.STOP)
    ]


async def test_losing_the_stop_connection_is_losing_the_transport(
    broker: PrivateBroker,
) -> None:
    target = FakeTarget()
    async with (
        running_service(broker, target, reconnect_min_s=0.3, reconnect_max_s=0.3),
        connect(broker, "dash-lobby") as dash,
        connect(broker, "tech-bob") as bob,
    ):
        await dash.subscribe("stimd/dev01/status", qos=1)
        assert json_of(await next_message(dash))["online"] is True  # retained
        await bob.subscribe("stimd/dev01/reply/tech-bob/#", qos=1)
        # Another client taking the stop connection's id makes the broker close it; the
        # main connection is untouched.
        async with connect(broker, "dev01", client_id="stimd-dev01-stop"):
            pass
        lost = json_of(await next_message(dash))
        online = json_of(await next_message(dash))
        stop = json_of(await _command(bob, "stop", "after-loss"))
    assert (lost["online"], lost["lifecycle"]) == (False, "lost")
    assert online["online"] is True
    assert len(target.lost) == 1
    assert "stop connection" in target.lost[0], target.lost
    assert stop["ok"] is True


async def test_a_start_sent_before_a_stop_never_runs_after_it(broker: PrivateBroker) -> None:
    """bob's backlog delays the main connection, so alice's stop (on the stop connection)
    overtakes her start sent just before it: the start must be refused, not run late.
    A start sent after the stop runs normally."""
    target = FakeTarget()
    async with (
        running_service(broker, target),
        pipelined_client(broker, "tech-bob") as bob,
        connect(broker, "tech-alice") as alice,
    ):
        await alice.subscribe("stimd/dev01/reply/tech-alice/#", qos=1)
        await asyncio.gather(*(
            bob.publish("stimd/dev01/cmd/tech-bob/heartbeat",
                        json.dumps({"id": f"b{index}"}).encode(), qos=1)
            for index in range(BACKLOG)
        ))
        for verb, command_id in (("start", "early"), ("stop", "halt")):
            await alice.publish(f"stimd/dev01/cmd/tech-alice/{verb}",
                                json.dumps({"id": command_id}).encode(), qos=1)
        replies = {}
        while len(replies) < 2:
            reply = json_of(await next_message(alice, "stimd/dev01/reply/tech-alice/#"))
            replies[reply["id"]] = reply
        after = await command(alice, "tech-alice", "start", {"id": "later"})
        executed = [command_id for user, _, command_id in target.executed
                    if user == "tech-alice"]
    assert replies["halt"]["ok"] is True
    assert replies["early"]["error"]["code"] == "WRONG_STATE"
    assert "start was sent before stop 'halt' from 'tech-alice'" in (
        replies["early"]["error"]["message"])
    assert after["ok"] is True
    assert executed == ["halt", "later"]


async def _command(client: aiomqtt.Client, verb: str, command_id: str) -> aiomqtt.Message:
    await client.publish(f"stimd/dev01/cmd/tech-bob/{verb}",
                         json.dumps({"id": command_id}).encode(), qos=1)
    return await next_message(client, f"stimd/dev01/reply/tech-bob/{command_id}")
