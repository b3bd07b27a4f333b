"""The daemon's incoming-command buffer: a flood never pushes out another operator's stop."""

from __future__ import annotations

import asyncio

import aiomqtt
import pytest

from stimd.mqtt.ingress import FairIngress


def command(user: str, verb: str, index: int = 0) -> aiomqtt.Message:
    return aiomqtt.Message(f"stimd/dev01/cmd/{user}/{verb}", f'{{"id":"{index}"}}'.encode(),
                           qos=1, retain=False, mid=index, properties=None)


def topics(queue: FairIngress) -> list[str]:
    found = []
    while not queue.empty():
        found.append(queue.get_nowait().topic.value.removeprefix("stimd/dev01/cmd/"))
    return found


async def test_a_stop_from_another_operator_takes_the_flooders_newest_place() -> None:
    queue = FairIngress(maxsize=3)
    for index in range(3):
        queue.put_nowait(command("tech-alice", "load", index))
    queue.put_nowait(command("tech-bob", "stop"))
    assert topics(queue) == ["tech-alice/load", "tech-alice/load", "tech-bob/stop"]
    assert queue.dropped == 1


async def test_the_flooder_itself_is_refused_when_full() -> None:
    queue = FairIngress(maxsize=2)
    queue.put_nowait(command("tech-alice", "load", 1))
    queue.put_nowait(command("tech-alice", "load", 2))
    with pytest.raises(asyncio.QueueFull):
        queue.put_nowait(command("tech-alice", "load", 3))
    assert [m.mid for m in (queue.get_nowait(), queue.get_nowait())] == [1, 2]


async def test_the_flooders_own_stop_still_gets_in_and_order_is_kept() -> None:
    queue = FairIngress(maxsize=2)
    queue.put_nowait(command("tech-alice", "start", 1))
    queue.put_nowait(command("tech-alice", "load", 2))
    queue.put_nowait(command("tech-alice", "stop", 3))
    # the newest non-stop made room; the start sent before the stop stays before it
    assert [m.mid for m in (queue.get_nowait(), queue.get_nowait())] == [1, 3]


async def test_stops_are_never_dropped_to_make_room() -> None:
    queue = FairIngress(maxsize=2)
    queue.put_nowait(command("tech-alice", "stop", 1))
    queue.put_nowait(command("tech-alice", "stop", 2))
    with pytest.raises(asyncio.QueueFull):
        queue.put_nowait(command("tech-bob", "stop", 3))
    assert queue.dropped == 0


async def test_a_verb_that_only_starts_with_stop_is_not_a_stop() -> None:
    queue = FairIngress(maxsize=1)
    queue.put_nowait(command("tech-alice", "stop/now", 1))
    queue.put_nowait(command("tech-bob", "stop", 2))
    assert [queue.get_nowait().mid] == [2]
