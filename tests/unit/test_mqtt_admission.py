"""Admission of commands without a broker: queues, rate, repeats, expiry, stop lane."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from stimd.commands import CommandBase, CommandOutcome, Event, Reply, Verb
from stimd.mqtt.admission import FairQueue, PriorityOutbox, TokenBucket
from stimd.mqtt.config import MqttConfig
from stimd.mqtt.replay import InFlight, ReplayCache
from stimd.mqtt.service import Lane, MqttService, PendingCommand


class Clock:
    def __init__(self) -> None:
        self.mono = 1000.0
        self.wall = 1_700_000_000.0

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


class RecordingTarget:
    def __init__(self) -> None:
        self.executed: list[tuple[str, Verb, str]] = []

    async def execute(self, operator: str, command: CommandBase, verb: Verb) -> CommandOutcome:
        self.executed.append((operator, verb, command.id))
        return CommandOutcome(ok=True, state="IDLE")

    def snapshot(self) -> dict[str, Any]:
        return {"state": "IDLE"}

    def add_listener(self, listener: Callable[[Event], None]) -> None:
        del listener

    def transport_lost(self, reason: str) -> None:
        del reason


def service(clock: Clock, **config: Any) -> MqttService:
    return MqttService(
        MqttConfig.model_validate({"username": "dev01", **config}), RecordingTarget(),
        device_id="dev01", boot_id="b", version="v", meta={}, lifecycle=lambda: "ready",
        operators=["alice", "bob"], monotonic=lambda: clock.mono, wall_clock=lambda: clock.wall,
    )


def cmd(verb: str, **fields: Any) -> tuple[str, bytes]:
    return f"stimd/dev01/cmd/alice/{verb}", json.dumps(fields).encode()


def queued(svc: MqttService, lane: Lane) -> list[PendingCommand]:
    return svc._lanes[lane].drain()


def test_token_bucket_spends_and_refills() -> None:
    bucket = TokenBucket(rate_per_s=2.0, burst=2, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [True, True, False]
    assert bucket.take(0.5) is True
    assert bucket.take(0.5) is False
    assert bucket.take(100.0) is True  # refill is capped at the burst
    assert bucket.take(100.0) is True
    assert bucket.take(100.0) is False


@pytest.mark.parametrize(("rate", "burst", "says"), [
    (0.0, 1, "rate_per_s=0.0 must be positive"),
    (float("nan"), 1, "rate_per_s=nan must be positive"),
    (1.0, 0, "burst=0 must be at least 1"),
])
def test_token_bucket_refuses_absurd_settings(rate: float, burst: int, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        TokenBucket(rate, burst, 0.0)


async def test_fair_queue_serves_operators_round_robin_and_bounds_each() -> None:
    queue: FairQueue[str] = FairQueue(depth_per_operator=3)
    for index in range(3):
        assert queue.put("alice", f"a{index}") is None
    refusal = queue.put("alice", "a3")
    assert refusal is not None
    assert "already has 3 commands waiting (queue_depth 3)" in refusal.reason
    assert queue.put("bob", "b0") is None
    served = [await queue.get() for _ in range(4)]
    assert served == ["a0", "b0", "a1", "a2"]
    assert len(queue) == 0


def test_replay_cache_evicts_answers_but_keeps_in_flight_ids() -> None:
    cache = ReplayCache(size_per_operator=2)
    reply = Reply(id="x", ok=True, state="IDLE")
    cache.begin("alice", "pending")
    cache.finish("alice", "a", reply)
    cache.finish("alice", "b", reply)
    assert cache.lookup("alice", "pending") is InFlight.MARK
    assert cache.lookup("alice", "a") is None
    assert cache.lookup("alice", "b") == reply
    assert cache.lookup("bob", "b") is None
    cache.forget("alice", "pending")
    assert cache.lookup("alice", "pending") is None


def test_replay_cache_of_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="size_per_operator=0 must be at least 1"):
        ReplayCache(0)


def test_stop_goes_to_its_own_lane_and_ignores_the_rate_limit() -> None:
    clock = Clock()
    svc = service(clock, command_burst=1, command_rate_per_s=0.001)
    assert svc.admit(*cmd("heartbeat", id="h1"), None) is None
    limited = svc.admit(*cmd("heartbeat", id="h2"), None)
    assert limited is not None
    assert limited.reply.error is not None
    assert limited.reply.error.code == "RATE_LIMITED"
    assert "exceeds command_rate_per_s 0.001 (burst 1)" in limited.reply.error.message
    for index in range(3):
        assert svc.admit(*cmd("stop", id=f"s{index}"), None) is None
    assert [p.command.id for p in queued(svc, Lane.STOP)] == ["s0", "s1", "s2"]
    assert [p.command.id for p in queued(svc, Lane.ORDINARY)] == ["h1"]


def test_mqtt5_message_expiry_sets_the_deadline() -> None:
    clock = Clock()
    svc = service(clock)
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.MessageExpiryInterval = 2
    assert svc.admit(*cmd("heartbeat", id="e1"), properties) is None
    (pending,) = queued(svc, Lane.ORDINARY)
    assert pending.deadline == clock.mono + 2


def test_ts_age_shortens_the_deadline() -> None:
    clock = Clock()
    svc = service(clock, max_command_age_s=30.0)
    assert svc.admit(*cmd("heartbeat", id="e2", ts=clock.wall - 10), None) is None
    (pending,) = queued(svc, Lane.ORDINARY)
    assert pending.deadline == pytest.approx(clock.mono + 20)


async def test_a_command_past_its_deadline_is_expired_not_executed() -> None:
    clock = Clock()
    svc = service(clock)
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.MessageExpiryInterval = 1
    assert svc.admit(*cmd("start", id="late"), properties) is None
    (pending,) = queued(svc, Lane.ORDINARY)
    clock.advance(1.5)
    reply = await svc._execute(pending)
    assert reply.error is not None
    assert reply.error.code == "EXPIRED"
    assert "past its deadline by 0.500 s" in reply.error.message
    target = svc._target
    assert isinstance(target, RecordingTarget)
    assert target.executed == []


def test_unparseable_topics_are_ignored() -> None:
    svc = service(Clock())
    for topic in ("stimd/dev01/cmd", "stimd/dev01/cmd/+/stop", "stimd/dev02/cmd/alice/stop",
                  "stimd/dev01/cmd/a#b/stop"):
        assert svc.admit(topic, b'{"id": "x"}', None) is None
    assert len(svc._lanes[Lane.ORDINARY]) == len(svc._lanes[Lane.STOP]) == 0


def test_link_loss_drops_ordinary_commands_and_keeps_stops() -> None:
    svc = service(Clock())
    # (an unload: a stop itself supersedes a waiting start, see test_stop_supersedes_*)
    svc.admit(*cmd("unload", id="go"), None)
    svc.admit(*cmd("stop", id="halt"), None)
    svc._link_lost("test")
    assert len(svc._lanes[Lane.ORDINARY]) == 0
    assert len(svc._lanes[Lane.STOP]) == 1
    # the dropped id is free again: a retry after the reconnect is executed, not refused
    assert svc.admit(*cmd("unload", id="go"), None) is None


async def test_repeat_after_execution_gets_the_stored_reply() -> None:
    clock = Clock()
    svc = service(clock)
    svc.admit(*cmd("heartbeat", id="r1"), None)
    (pending,) = queued(svc, Lane.ORDINARY)
    reply = await svc._execute(pending)
    svc._replay.finish("alice", "r1", reply)
    again = svc.admit(*cmd("heartbeat", id="r1"), None)
    assert again is not None
    assert again.reply is reply


async def test_outbox_sends_results_before_refusals_and_bounds_each() -> None:
    outbox: PriorityOutbox[str] = PriorityOutbox(depth_per_operator=2)
    assert outbox.put("alice", "refused-1", first=False) is None
    assert outbox.put("alice", "refused-2", first=False) is None
    assert outbox.put("alice", "refused-3", first=False) is not None
    assert outbox.put("alice", "result-1", first=True) is None
    assert [await outbox.get() for _ in range(3)] == ["result-1", "refused-1", "refused-2"]
    assert outbox.drain() == []


def test_stop_supersedes_waiting_arming_commands_and_keeps_the_rest() -> None:
    svc = service(Clock())
    for verb, command_id in (("start", "s1"), ("heartbeat", "h1"), ("resume", "r1"),
                             ("arm", "a1")):
        assert svc.admit(*cmd(verb, id=command_id), None) is None
    assert svc.admit(*cmd("stop", id="halt"), None) is None
    assert [p.command.id for p in queued(svc, Lane.ORDINARY)] == ["h1"]
    # each superseded command is answered once, and a repeat of its id is not executed
    repeat = svc.admit(*cmd("start", id="s1"), None)
    assert repeat is not None and repeat.reply.error is not None
    assert repeat.reply.error.code.value == "WRONG_STATE"
    assert "was still waiting when stop 'halt' from 'alice' arrived" in repeat.reply.error.message
