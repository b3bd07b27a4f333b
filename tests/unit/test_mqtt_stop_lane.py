"""The stop connection's bookkeeping without a broker: the fence, its buffer, its topics."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiomqtt
import pytest
import structlog

from stimd.commands import CommandBase, CommandOutcome, Event, Verb
from stimd.mqtt.config import MqttConfig
from stimd.mqtt.ingress import StopIngress
from stimd.mqtt.service import Lane, MqttService
from stimd.mqtt.stop_fence import StopFence
from stimd.mqtt.topics import DeviceTopics

HOLD_S = 30.0


class IdleTarget:
    async def execute(self, operator: str, command: CommandBase, verb: Verb) -> CommandOutcome:
        del operator, command, verb
        return CommandOutcome(ok=True, state="IDLE")

    def snapshot(self) -> dict[str, Any]:
        return {"state": "IDLE"}

    def add_listener(self, listener: Callable[[Event], None]) -> None:
        del listener

    def transport_lost(self, reason: str) -> None:
        del reason


class Clock:
    def __init__(self) -> None:
        self.mono = 500.0

    def __call__(self) -> float:
        return self.mono


def service(clock: Clock) -> MqttService:
    return MqttService(
        MqttConfig.model_validate({"username": "dev01", "max_command_age_s": HOLD_S}),
        IdleTarget(), device_id="dev01", boot_id="b", version="v", meta={},
        lifecycle=lambda: "ready", operators=["alice", "bob"], monotonic=clock,
        wall_clock=lambda: 1_700_000_000.0,
    )


def cmd(user: str, verb: str, command_id: str) -> tuple[str, bytes, None]:
    return f"stimd/dev01/cmd/{user}/{verb}", json.dumps({"id": command_id}).encode(), None


# ------------------------------------------------------------------------------ fence

def test_fence_holds_from_the_executed_stop_until_its_main_copy() -> None:
    fence = StopFence(hold_s=HOLD_S, capacity=8)
    fence.stop_lane_copy(("alice", "s1"), 0.0, executes=True)
    assert fence.holder(0.1) == ("alice", "s1")
    fence.main_copy(("alice", "s1"), 0.2)
    assert fence.holder(0.2) is None
    assert len(fence) == 0


def test_fence_stays_shut_when_the_main_copy_came_first() -> None:
    fence = StopFence(hold_s=HOLD_S, capacity=8)
    fence.main_copy(("alice", "s1"), 0.0)
    fence.stop_lane_copy(("alice", "s1"), 0.1, executes=True)
    assert fence.holder(0.1) is None
    assert len(fence) == 0


def test_a_stop_that_was_not_executed_does_not_hold_the_fence() -> None:
    fence = StopFence(hold_s=HOLD_S, capacity=8)
    fence.stop_lane_copy(("alice", "refused"), 0.0, executes=False)
    assert fence.holder(0.0) is None
    fence.main_copy(("alice", "refused"), 0.1)
    assert len(fence) == 0


def test_a_repeat_counts_as_a_copy_of_its_own() -> None:
    fence = StopFence(hold_s=HOLD_S, capacity=8)
    fence.stop_lane_copy(("alice", "s1"), 0.0, executes=True)
    fence.stop_lane_copy(("alice", "s1"), 0.1, executes=False)  # answered from the cache
    fence.main_copy(("alice", "s1"), 0.2)
    assert fence.holder(0.2) == ("alice", "s1")
    fence.main_copy(("alice", "s1"), 0.3)
    assert fence.holder(0.3) is None


def test_a_lost_main_copy_releases_the_fence_after_hold_s() -> None:
    fence = StopFence(hold_s=HOLD_S, capacity=8)
    fence.stop_lane_copy(("alice", "s1"), 0.0, executes=True)
    assert fence.holder(HOLD_S - 0.001) == ("alice", "s1")
    with structlog.testing.capture_logs() as logs:
        assert fence.holder(HOLD_S) is None
    assert [(e["event"], e["id"]) for e in logs] == [("mqtt_stop_fence_released", "s1")]
    assert "did not arrive in time" in logs[0]["reason"]
    assert len(fence) == 0


def test_fence_memory_is_bounded_oldest_first() -> None:
    fence = StopFence(hold_s=HOLD_S, capacity=3)
    for index in range(10):
        fence.stop_lane_copy(("alice", f"s{index}"), 0.0, executes=True)
    assert len(fence) == 3
    assert fence.holder(0.0) == ("alice", "s7")


@pytest.mark.parametrize(("hold_s", "capacity", "says"), [
    (0.0, 1, "hold_s=0.0 must be positive"),
    (float("nan"), 1, "hold_s=nan must be positive"),
    (-1.0, 1, "hold_s=-1.0 must be positive"),
    (1.0, 0, "capacity=0 must be at least 1"),
])
def test_fence_refuses_absurd_settings(hold_s: float, capacity: int, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        StopFence(hold_s, capacity)


# ----------------------------------------------------------------- service entry points

def test_start_overtaken_by_a_stop_is_refused_until_the_main_copy_arrives() -> None:
    clock = Clock()
    svc = service(clock)
    assert svc.take_stop(*cmd("bob", "stop", "halt")) is None
    early = svc.take_main(*cmd("alice", "start", "early"))
    assert early is not None and early.reply.error is not None
    assert early.reply.error.code == "WRONG_STATE"
    assert early.reply.error.message == (
        "start was sent before stop 'halt' from 'bob' and arrived after it: not executed "
        "(send it again to proceed)"
    )
    assert early.lane is Lane.ORDINARY
    # the refusal is remembered: a repeat of the id does not run it either
    again = svc.take_main(*cmd("alice", "start", "early"))
    assert again is not None and again.reply is early.reply
    # non-arming commands are not held back
    assert svc.take_main(*cmd("alice", "heartbeat", "hb")) is None
    # the main connection's copy of the stop is the fence: never answered, never run
    assert svc.take_main(*cmd("bob", "stop", "halt")) is None
    assert svc.take_main(*cmd("alice", "resume", "later")) is None
    assert [p.command.id for p in svc._lanes[Lane.STOP].drain()] == ["halt"]
    assert [p.command.id for p in svc._lanes[Lane.ORDINARY].drain()] == ["hb", "later"]


def test_stop_replies_leave_on_the_stop_connection() -> None:
    svc = service(Clock())
    refused = svc.take_stop("stimd/dev01/cmd/alice/stop", b"{not json", None)
    assert refused is not None and refused.lane is Lane.STOP
    assert refused.route.topic == "stimd/dev01/reply/alice/@null"
    stranger = svc.take_stop(*cmd("mallory", "stop", "x"))
    assert stranger is not None and stranger.lane is Lane.STOP
    assert stranger.reply.error is not None
    assert stranger.reply.error.code == "NOT_AUTHORIZED"
    # neither was executed: nothing holds arming commands back
    assert svc.take_main(*cmd("alice", "arm", "a1")) is None


def test_link_loss_forgets_unpaired_stops() -> None:
    svc = service(Clock())
    svc.take_stop(*cmd("bob", "stop", "halt"))
    svc._link_lost("test")
    # a new broker session: nothing sent before it can arrive any more
    assert svc.take_main(*cmd("alice", "start", "fresh")) is None


def test_the_fence_of_a_lost_main_copy_opens_after_max_command_age() -> None:
    clock = Clock()
    svc = service(clock)
    svc.take_stop(*cmd("bob", "stop", "halt"))
    clock.mono += HOLD_S
    assert svc.take_main(*cmd("alice", "start", "much-later")) is None


@pytest.mark.parametrize(("topic", "is_stop"), [
    ("stimd/dev01/cmd/alice/stop", True),
    ("stimd/dev01/cmd//stop", True),  # '+' matches an empty level too
    ("stimd/dev01/cmd/alice/stop/now", False),
    ("stimd/dev01/cmd/alice/stopp", False),
    ("stimd/dev01/cmd/stop", False),
    ("stimd/dev02/cmd/alice/stop", False),
    ("stimd/dev01/reply/alice/stop", False),
])
def test_stop_topics_are_exactly_those_of_the_stop_subscription(
    topic: str, is_stop: bool
) -> None:
    topics = DeviceTopics("dev01")
    assert topics.stop_filter == "stimd/dev01/cmd/+/stop"
    assert topics.is_stop_command(topic) is is_stop
    assert aiomqtt.Topic(topic).matches(topics.stop_filter) is is_stop


# ------------------------------------------------------------------------ the buffer

def stop_message(user: str, index: int) -> aiomqtt.Message:
    return aiomqtt.Message(f"stimd/dev01/cmd/{user}/stop", f'{{"id":"{index}"}}'.encode(),
                           qos=1, retain=False, mid=index, properties=None)


async def test_stop_buffer_makes_room_for_another_operators_stop() -> None:
    queue = StopIngress(maxsize=3)
    for index in range(3):
        queue.put_nowait(stop_message("alice", index))
    queue.put_nowait(stop_message("bob", 9))
    with pytest.raises(asyncio.QueueFull):
        queue.put_nowait(stop_message("alice", 3))
    assert [queue.get_nowait().mid for _ in range(3)] == [0, 1, 9]
    assert queue.dropped == 1
