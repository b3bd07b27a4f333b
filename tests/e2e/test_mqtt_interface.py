"""The MQTT interface against a real mosquitto, with a fake daemon behind it."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from e2e.broker import connect, json_of, next_message, nothing_arrives
from e2e.fake_target import FakeTarget, cancel_and_wait, running_service
from stimd.commands import Verb
from stimd.mqtt.connection import build_client, nodelay_enabled
from stimd.mqtt.private_broker import PrivateBroker

pytestmark = pytest.mark.e2e

LOAD = {
    "protocol": "demo-10hz-short",
    "motor_threshold": {"pct_mso": 55, "method": "emg", "measured_at": "2024-05-01T09:00:00Z"},
    "patient_ref": "P-0001",
}


async def command(
    client: aiomqtt.Client, user: str, verb: str, payload: dict[str, Any] | bytes,
    *, reply_level: str | None = None, device: str = "dev01",
) -> dict[str, Any]:
    """Publish one command and return its reply (the caller subscribed to its replies)."""
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    if reply_level is None:
        assert isinstance(payload, dict)
        reply_level = payload["id"]
    await client.publish(f"stimd/{device}/cmd/{user}/{verb}", raw, qos=1)
    reply = json_of(await next_message(client, f"stimd/{device}/reply/{user}/{reply_level}"))
    assert isinstance(reply, dict)
    return reply


async def test_retained_topics_and_offline_on_clean_stop(broker: PrivateBroker) -> None:
    target = FakeTarget()
    async with running_service(broker, target) as service:
        async with connect(broker, "dash-lobby") as dash:
            await dash.subscribe("stimd/dev01/#", qos=1)
            retained = {}
            for _ in range(3):
                message = await next_message(dash)
                assert message.retain
                retained[message.topic.value] = json_of(message)
        await cancel_and_wait(service)
        async with connect(broker, "dash-lobby", client_id="after") as dash:
            await dash.subscribe("stimd/dev01/status", qos=1)
            offline = json_of(await next_message(dash))
    status = retained["stimd/dev01/status"]
    assert status["online"] is True
    assert (status["lifecycle"], status["boot_id"], status["version"]) == (
        "ready", "boot-1", "9.9.9"
    )
    assert abs(status["ts"] - time.time()) < 60
    assert retained["stimd/dev01/meta"] == {"model": "fake", "simulated": True}
    assert retained["stimd/dev01/state"] == {"state": "IDLE", "progress": None}
    assert offline["online"] is False
    assert offline["boot_id"] == "boot-1"


async def test_command_is_executed_once_and_answered(broker: PrivateBroker) -> None:
    target = FakeTarget()
    async with running_service(broker, target), connect(broker, "tech-alice") as alice:
        await alice.subscribe("stimd/dev01/reply/tech-alice/#", qos=1)
        reply = await command(alice, "tech-alice", "load", {"id": "c-1", **LOAD})
        repeat = await command(alice, "tech-alice", "load", {"id": "c-1", **LOAD})
    assert reply == {
        "id": "c-1", "ok": True, "state": "LOADED", "result": {"done": "load"}, "error": None
    }
    assert repeat == reply
    assert target.executed == [("tech-alice", Verb.LOAD, "c-1")]


async def test_repeat_of_a_command_still_running_is_a_duplicate(broker: PrivateBroker) -> None:
    target = FakeTarget()
    target.gates[Verb.LOAD] = asyncio.Event()
    async with running_service(broker, target), connect(broker, "tech-alice") as alice:
        await alice.subscribe("stimd/dev01/reply/tech-alice/#", qos=1)
        payload = json.dumps({"id": "slow-1", **LOAD}).encode()
        await alice.publish("stimd/dev01/cmd/tech-alice/load", payload, qos=1)
        await asyncio.wait_for(target.entered.setdefault(Verb.LOAD, asyncio.Event()).wait(), 5)
        duplicate = await command(alice, "tech-alice", "load", payload, reply_level="slow-1")
        target.gates[Verb.LOAD].set()
        first = json_of(await next_message(alice, "stimd/dev01/reply/tech-alice/slow-1"))
    assert duplicate["ok"] is False
    assert duplicate["error"]["code"] == "DUPLICATE"
    assert "already being executed" in duplicate["error"]["message"]
    assert first["ok"] is True
    assert target.ids() == ["slow-1"]


BAD_PAYLOADS = [
    (b"{not json", "@null", "payload is not JSON"),
    (b'{"id": "b1", "ts": NaN}', "@null", "NaN and Infinity are refused"),
    (b'{"id": "b1", "ts": 1e999}', "@null", "overflows a 64-bit float"),
    (b'{"id": "b1", "id": "b2"}', "@null", "appears more than once"),
    (b'["id", "b1"]', "@null", "must be a JSON object, got list"),
    (b"\xff\xfe{}", "@null", "not UTF-8"),
    (b'{"ts": 1}', "@null", "id: missing or malformed"),
    (b'{"id": "has space"}', "@null", "id: missing or malformed"),
    (b'{"id": 7}', "@null", "id: missing or malformed"),
    (b'{"id": "b1", "colour": "red"}', "b1", "colour: Extra inputs are not permitted"),
    (b'{"id": "b1", "ts": "yesterday"}', "b1", "ts: Input should be a valid number"),
    (b"{" + b'"id": "b1", "pad": "' + b"x" * 70_000 + b'"}', "@null",
     "the limit (max_payload_bytes) is 65536"),
]


@pytest.mark.parametrize(("raw", "reply_level", "says"), BAD_PAYLOADS)
async def test_malformed_payloads_are_refused_and_change_nothing(
    broker: PrivateBroker, raw: bytes, reply_level: str, says: str
) -> None:
    target = FakeTarget()
    async with running_service(broker, target), connect(broker, "tech-alice") as alice:
        await alice.subscribe("stimd/dev01/reply/tech-alice/#", qos=1)
        reply = await command(alice, "tech-alice", "stop", raw, reply_level=reply_level)
    assert reply["ok"] is False
    assert reply["error"]["code"] == "INVALID_PAYLOAD"
    assert says in reply["error"]["message"]
    assert reply["id"] == (None if reply_level == "@null" else reply_level)
    assert reply["state"] == "IDLE"
    assert target.executed == []


async def test_load_with_wrong_types_names_every_field(broker: PrivateBroker) -> None:
    target = FakeTarget()
    bad = {"id": "l1", **LOAD, "motor_threshold": {
        "pct_mso": "55", "method": "guess", "measured_at": "2024-05-01T09:00:00Z"}}
    async with running_service(broker, target), connect(broker, "tech-alice") as alice:
        await alice.subscribe("stimd/dev01/reply/tech-alice/#", qos=1)
        reply = await command(alice, "tech-alice", "load", bad)
    fields = {d["field"] for d in reply["error"]["details"]}
    assert fields == {"motor_threshold.pct_mso", "motor_threshold.method"}
    assert target.executed == []


async def test_unknown_verb_and_unknown_operator(broker: PrivateBroker) -> None:
    target = FakeTarget()
    async with running_service(broker, target):
        async with connect(broker, "tech-alice") as alice:
            await alice.subscribe("stimd/dev01/reply/tech-alice/#", qos=1)
            unknown = await command(alice, "tech-alice", "fire", {"id": "v1"})
            nested = await command(alice, "tech-alice", "stop/now", {"id": "v2"})
        async with connect(broker, "tech-carol") as carol:
            await carol.subscribe("stimd/dev01/reply/tech-carol/#", qos=1)
            stranger = await command(carol, "tech-carol", "stop", {"id": "v3"})
    assert unknown["error"]["code"] == "UNKNOWN_VERB"
    assert "'fire'" in unknown["error"]["message"]
    assert nested["error"]["code"] == "UNKNOWN_VERB"
    assert stranger["error"]["code"] == "NOT_AUTHORIZED"
    assert "'tech-carol' is not a configured operator" in stranger["error"]["message"]
    assert target.executed == []


async def test_stale_and_future_timestamps(broker: PrivateBroker) -> None:
    target = FakeTarget()
    async with running_service(broker, target, max_command_age_s=30.0), connect(
        broker, "tech-alice"
    ) as alice:
        await alice.subscribe("stimd/dev01/reply/tech-alice/#", qos=1)
        stale = await command(alice, "tech-alice", "stop", {"id": "t1", "ts": time.time() - 45})
        future = await command(
            alice, "tech-alice", "stop", {"id": "t2", "ts": time.time() + 3600}
        )
        fresh = await command(alice, "tech-alice", "stop", {"id": "t3", "ts": time.time()})
    assert stale["error"]["code"] == "EXPIRED"
    assert "the limit (max_command_age_s) is 30.0 s" in stale["error"]["message"]
    assert future["error"]["code"] == "INVALID_PAYLOAD"
    assert "in the future" in future["error"]["message"]
    assert fresh["ok"] is True
    assert target.ids() == ["t3"]


async def test_mqtt5_response_topic_and_correlation_data(broker: PrivateBroker) -> None:
    target = FakeTarget()
    inbox = "stimd/dev01/reply/tech-alice/inbox-7"
    async with running_service(broker, target), connect(broker, "tech-alice") as alice:
        await alice.subscribe("stimd/dev01/reply/tech-alice/#", qos=1)
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.ResponseTopic = inbox
        properties.CorrelationData = b"\x00corr\xff"
        await alice.publish(
            "stimd/dev01/cmd/tech-alice/heartbeat", b'{"id": "h1"}', qos=1,
            properties=properties,
        )
        got = {}
        for _ in range(2):
            message = await next_message(alice)
            got[message.topic.value] = message
    assert set(got) == {inbox, "stimd/dev01/reply/tech-alice/h1"}
    assert got[inbox].properties is not None
    assert got[inbox].properties.CorrelationData == b"\x00corr\xff"
    assert json_of(got[inbox])["id"] == "h1"


async def test_mqtt311_operator_can_command(broker: PrivateBroker) -> None:
    target = FakeTarget()
    async with running_service(broker, target), connect(
        broker, "tech-bob", protocol=aiomqtt.ProtocolVersion.V311
    ) as bob:
        await bob.subscribe("stimd/dev01/reply/tech-bob/#", qos=1)
        reply = await command(bob, "tech-bob", "load", {"id": "old-1", **LOAD})
    assert reply["ok"] is True
    assert target.executed == [("tech-bob", Verb.LOAD, "old-1")]


async def test_stop_overtakes_queued_and_running_work(broker: PrivateBroker) -> None:
    target = FakeTarget()
    target.gates[Verb.LOAD] = asyncio.Event()
    async with running_service(broker, target), connect(broker, "tech-alice") as alice:
        await alice.subscribe("stimd/dev01/reply/tech-alice/#", qos=1)
        for index in range(5):
            payload = json.dumps({"id": f"q{index}", **LOAD}).encode()
            await alice.publish("stimd/dev01/cmd/tech-alice/load", payload, qos=1)
        await asyncio.wait_for(target.entered.setdefault(Verb.LOAD, asyncio.Event()).wait(), 5)
        stop = await command(alice, "tech-alice", "stop", {"id": "halt"})
        executed_when_stopped = target.ids()
        target.gates[Verb.LOAD].set()
    assert stop["ok"] is True
    assert executed_when_stopped == ["q0", "halt"]


async def test_flood_from_one_operator_neither_starves_another_nor_grows(
    broker: PrivateBroker,
) -> None:
    target = FakeTarget()
    target.gates[Verb.HEARTBEAT] = asyncio.Event()
    async with (
        running_service(broker, target, command_burst=5, command_rate_per_s=0.001, queue_depth=4),
        connect(broker, "tech-alice") as alice,
        connect(broker, "tech-bob") as bob,
    ):
        await alice.subscribe("stimd/dev01/reply/tech-alice/#", qos=1)
        await bob.subscribe("stimd/dev01/reply/tech-bob/#", qos=1)
        for index in range(200):
            await alice.publish(
                "stimd/dev01/cmd/tech-alice/heartbeat",
                json.dumps({"id": f"f{index}"}).encode(), qos=1,
            )
        stop = await command(bob, "tech-bob", "stop", {"id": "bob-stop"})
        target.gates[Verb.HEARTBEAT].set()
        answered: dict[str, str] = {}
        while sum(1 for code in answered.values() if code == "ok") < 5:
            reply = json_of(await next_message(alice))
            answered[reply["id"]] = "ok" if reply["ok"] else reply["error"]["code"]
    assert stop["ok"] is True
    # burst 5: one running behind the gate, four waiting (queue_depth 4); the other 195
    # were refused at the door instead of piling up (refusal replies to a flood may be
    # dropped when they outrun the broker; results never are).
    assert [(u, v) for u, v, _ in target.executed] == [
        *[("tech-alice", Verb.HEARTBEAT)] * 1, ("tech-bob", Verb.STOP),
        *[("tech-alice", Verb.HEARTBEAT)] * 4,
    ]
    assert sorted(i for i, code in answered.items() if code == "ok") == [
        f"f{n}" for n in range(5)
    ]
    assert set(answered.values()) <= {"ok", "RATE_LIMITED"}


async def test_broker_restart_pauses_reconnects_and_never_runs_late_commands(
    broker: PrivateBroker,
) -> None:
    target = FakeTarget()
    async with running_service(broker, target, reconnect_min_s=1.0, reconnect_max_s=1.0):
        broker.kill()
        for _ in range(200):
            if target.lost:
                break
            await asyncio.sleep(0.01)
        assert target.lost and "broker connection lost" in target.lost[0]
        broker.start()
        async with connect(broker, "tech-alice") as alice, connect(broker, "dash-lobby") as dash:
            await dash.subscribe("stimd/dev01/status", qos=1)
            # The daemon is still waiting out its backoff: this command has nowhere to go
            # and must never be executed later.
            await alice.publish(
                "stimd/dev01/cmd/tech-alice/load",
                json.dumps({"id": "while-away", **LOAD}).encode(), qos=1,
            )
            while True:
                status = json_of(await next_message(dash, within_s=10))
                if status["online"]:
                    break
            await alice.subscribe("stimd/dev01/reply/tech-alice/#", qos=1)
            after = await command(alice, "tech-alice", "resume", {"id": "resume-1"})
    assert after["ok"] is True
    assert "while-away" not in target.ids()
    assert len(target.lost) == 1


async def test_events_carry_boot_id_and_gap_free_seq(broker: PrivateBroker) -> None:
    target = FakeTarget()
    async with running_service(broker, target), connect(broker, "dash-lobby") as dash:
        await dash.subscribe("stimd/dev01/evt/#", qos=1)
        target.emit("train_started", {"train": 1})
        target.emit("state_changed", {"state": "RUNNING"})
        target.emit("train_completed", {"train": 1})
        target.emit("session_completed", {"pulses": 40})
        events = [await next_message(dash) for _ in range(3)]
    assert [m.topic.value for m in events] == [
        "stimd/dev01/evt/train_started", "stimd/dev01/evt/train_completed",
        "stimd/dev01/evt/session_completed",
    ]
    bodies = [json_of(m) for m in events]
    assert [b["seq"] for b in bodies] == [1, 2, 3]
    assert {b["boot_id"] for b in bodies} == {"boot-1"}
    assert bodies[2]["payload"] == {"pulses": 40}


async def test_state_follows_changes_and_repeats_while_running(broker: PrivateBroker) -> None:
    target = FakeTarget()
    async with running_service(broker, target, state_interval_s=0.05), connect(
        broker, "dash-lobby"
    ) as dash:
        await dash.subscribe("stimd/dev01/state", qos=1)
        assert json_of(await next_message(dash))["state"] == "IDLE"  # retained
        target.state = "RUNNING"
        target.emit("state_changed", {})
        running = [json_of(await next_message(dash))["state"] for _ in range(3)]
        target.state = "IDLE"
        target.emit("state_changed", {})
        while json_of(await next_message(dash))["state"] != "IDLE":
            pass
        quiet = await nothing_arrives(dash, "stimd/dev01/state", 0.3)
    assert running == ["RUNNING"] * 3
    assert quiet, "an unchanged idle state must not be republished"


async def test_lifecycle_change_republishes_status(broker: PrivateBroker) -> None:
    target = FakeTarget()
    phase = ["starting"]
    async with running_service(
        broker, target, lifecycle=lambda: phase[0], state_interval_s=0.05
    ), connect(broker, "dash-lobby") as dash:
        await dash.subscribe("stimd/dev01/status", qos=1)
        assert json_of(await next_message(dash))["lifecycle"] == "starting"
        phase[0] = "ready"
        status = json_of(await next_message(dash))
    assert (status["online"], status["lifecycle"]) == (True, "ready")


async def test_daemon_socket_has_tcp_nodelay(broker: PrivateBroker) -> None:
    client = build_client(broker.client_config("dev01"), client_id="nodelay-check")
    async with client:
        assert nodelay_enabled(client)
