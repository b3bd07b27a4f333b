"""End to end: real mosquitto, ``stimd run``, ``stimd-sim`` on a pty, the simulator's
pulse log as the judge."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from e2e.broker import connect, json_of, next_message
from e2e.stack import (
    SHORT_PROTOCOL,
    SHORT_PROTOCOL_PULSES,
    load_fields,
    ok,
    operator,
    running_daemon,
    states_until,
)
from stimd.commands import Verb
from stimd.mqtt.private_broker import PrivateBroker

pytestmark = pytest.mark.e2e


async def test_technician_session_from_load_to_completion(
    broker: PrivateBroker, tmp_path: Path
) -> None:
    async with running_daemon(broker, tmp_path) as daemon, operator(broker) as alice:
        await alice.watch(alice.topics.state, alice.topics.event("#"))
        loaded = await ok(alice, Verb.LOAD, load_fields())
        started = await ok(alice, Verb.START)
        events: list[tuple[str, Any]] = []
        seen = await states_until(
            alice, ["COMPLETED", "FAULT", "ABORTED", "PAUSED"], events=events
        )
        while not any(t.endswith("/session_completed") for t, _ in events):
            async with asyncio.timeout(10):
                topic, value = await alice.next_update()
            if "/evt/" in topic:
                events.append((topic, value))
        pulses = daemon.pulses()
    assert loaded.result is not None
    assert loaded.result["total_pulses"] == SHORT_PROTOCOL_PULSES
    assert loaded.result["intensity_pct_mso"] == 55
    assert started.state in {"ARMED", "RUNNING"}
    assert seen[-1]["state"] == "COMPLETED"
    assert seen[-1]["progress"]["pulses_delivered"] == SHORT_PROTOCOL_PULSES
    assert len(pulses) == SHORT_PROTOCOL_PULSES
    assert {p.get("intensity_pct_mso", 55) for p in pulses} == {55}
    kinds = [t.rsplit("/", 1)[1] for t, _ in events]
    assert kinds.count("train_completed") == 3
    seqs = [v["seq"] for _, v in events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "event seq must be gap-free"
    assert len({v["boot_id"] for _, v in events}) == 1


async def test_every_verb_refuses_what_it_must(broker: PrivateBroker, tmp_path: Path) -> None:
    async with running_daemon(broker, tmp_path) as daemon, operator(broker) as alice:
        wrong_state = {
            verb: await alice.request(verb)
            for verb in (Verb.START, Verb.PAUSE, Verb.RESUME, Verb.UNLOAD, Verb.ARM)
        }
        reset = await alice.request(Verb.RESET, {"reason": "nothing to reset"})
        unsafe = await alice.request(
            Verb.LOAD,
            load_fields({**SHORT_PROTOCOL, "rtms": {**SHORT_PROTOCOL["rtms"],
                                                    "frequency_hz": 60}}),
        )
        stale_mt = await alice.request(Verb.LOAD, load_fields(measured_at="2001-01-01T00:00:00Z"))
        unknown = await alice.request(Verb.LOAD, load_fields("no-such-protocol"))
        stop = await alice.request(Verb.STOP)
        snapshot = await alice.request(Verb.RESYNC)
        pulses = daemon.pulses()
    for verb, reply in wrong_state.items():
        assert not reply.ok, verb
        assert reply.error is not None
        assert reply.error.code == "WRONG_STATE", (verb, reply.error)
    assert reset.error is not None and reset.error.code == "WRONG_STATE"
    assert unsafe.error is not None and unsafe.error.code == "REJECTED_BY_SAFETY"
    assert "frequency" in json.dumps(unsafe.error.model_dump()).lower()
    assert stale_mt.error is not None
    assert stale_mt.error.code in {"REJECTED_BY_SAFETY", "INVALID_PAYLOAD"}
    assert unknown.error is not None
    assert unknown.error.code in {"REJECTED_BY_SAFETY", "INVALID_PAYLOAD"}
    assert stop.ok, "stop is accepted in every state"
    assert snapshot.ok and snapshot.result is not None and snapshot.result["state"] == "IDLE"
    assert pulses == []


async def test_duplicate_and_expired_commands(broker: PrivateBroker, tmp_path: Path) -> None:
    async with running_daemon(broker, tmp_path), connect(broker, "tech-alice") as alice:
        await alice.subscribe("stimd/dev01/reply/tech-alice/#", qos=1)
        load = json.dumps({"id": "load-1", **load_fields()}).encode()
        replies = []
        for _ in range(2):
            await alice.publish("stimd/dev01/cmd/tech-alice/load", load, qos=1)
            replies.append(json_of(await next_message(
                alice, "stimd/dev01/reply/tech-alice/load-1", within_s=20)))
        stale = json.dumps({"id": "old-1", "ts": time.time() - 3600}).encode()
        await alice.publish("stimd/dev01/cmd/tech-alice/start", stale, qos=1)
        expired = json_of(await next_message(alice, "stimd/dev01/reply/tech-alice/old-1"))
        async with operator(broker) as view:
            state = (await view.request(Verb.RESYNC)).state
    assert replies[0]["ok"] is True
    assert replies[1] == replies[0]
    assert expired["error"]["code"] == "EXPIRED"
    assert state == "LOADED", "the expired start must not have run"


async def test_broker_restart_mid_session_pauses_until_resumed(
    broker: PrivateBroker, tmp_path: Path
) -> None:
    async with running_daemon(broker, tmp_path) as daemon:
        async with operator(broker) as alice:
            await ok(alice, Verb.LOAD, load_fields())
            await ok(alice, Verb.START)
        await daemon.sim.await_event("pulse", 1, timeout_s=20)
        broker.kill()
        await asyncio.sleep(0.5)
        broker.start()
        async with operator(broker) as alice:
            await alice.watch(alice.topics.status, alice.topics.state)
            paused = await states_until(alice, ["PAUSED", "COMPLETED", "FAULT"], within_s=30)
            held = len(daemon.pulses())
            await asyncio.sleep(2.0)  # longer than the protocol's 1.5 s inter-train gap
            still_held = len(daemon.pulses())
            await ok(alice, Verb.RESUME)
            done = await states_until(alice, ["COMPLETED", "FAULT", "ABORTED"], within_s=30)
        pulses = daemon.pulses()
    assert paused[-1]["state"] == "PAUSED"
    assert "lost" in str(paused[-1]["paused_reason"])
    assert still_held == held, "no train may start while paused"
    assert held < SHORT_PROTOCOL_PULSES
    assert done[-1]["state"] == "COMPLETED"
    assert len(pulses) == SHORT_PROTOCOL_PULSES


async def test_silent_operator_pauses_the_session(broker: PrivateBroker, tmp_path: Path) -> None:
    async with running_daemon(broker, tmp_path, heartbeat_timeout_s=1.0) as daemon:
        async with operator(broker) as alice:
            await alice.watch(alice.topics.state)
            await ok(alice, Verb.LOAD, load_fields())
            await ok(alice, Verb.START)
            seen = await states_until(alice, ["PAUSED", "COMPLETED", "FAULT"], within_s=30)
            held = len(daemon.pulses())
            await asyncio.sleep(2.0)  # longer than the protocol's 1.5 s inter-train gap
        pulses = daemon.pulses()
    assert seen[-1]["state"] == "PAUSED"
    assert "tech-alice" in str(seen[-1]["paused_reason"])
    # arming alone can outlast a 1 s heartbeat timeout: the pause may come before train 1
    assert len(pulses) == held < SHORT_PROTOCOL_PULSES


async def test_two_daemons_one_dashboard(broker: PrivateBroker, tmp_path: Path) -> None:
    async with (
        connect(broker, "dash-lobby") as dash,
        running_daemon(broker, tmp_path, "dev01"),
        running_daemon(broker, tmp_path, "dev02"),
    ):
        await dash.subscribe("stimd/+/state", qos=1)
        seen: dict[str, str] = {}
        async with asyncio.timeout(20):
            while len(seen) < 2:
                message = await next_message(dash, within_s=20)
                seen[message.topic.value] = json_of(message)["state"]
        async with operator(broker, "dev02") as alice:
            await ok(alice, Verb.LOAD, load_fields())
        async with asyncio.timeout(20):
            while True:
                message = await next_message(dash, "stimd/dev02/state", within_s=20)
                if json_of(message)["state"] == "LOADED":
                    break
    assert set(seen) == {"stimd/dev01/state", "stimd/dev02/state"}
    assert set(seen.values()) == {"IDLE"}


async def test_killed_daemon_leaves_its_last_will(broker: PrivateBroker, tmp_path: Path) -> None:
    async with running_daemon(broker, tmp_path, mqtt={"keepalive_s": 1}) as daemon, connect(
        broker, "dash-lobby"
    ) as dash:
        await dash.subscribe("stimd/dev01/status", qos=1)
        assert json_of(await next_message(dash))["online"] is True
        assert daemon.process.process is not None
        daemon.process.process.send_signal(signal.SIGKILL)
        will = json_of(await next_message(dash, within_s=10))
    assert will["online"] is False
    assert will["lifecycle"] == "lost"
