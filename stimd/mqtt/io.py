"""Broker calls with timeouts that never swallow a cancellation.

aiomqtt bounds its calls with ``asyncio.wait_for``, which on Python 3.11 can lose a
cancellation that arrives while the acknowledgement completes; a task then carries on
after its task group cancelled it, and shutdown hangs. These wrappers give aiomqtt no
timeout of its own and bound the call with ``asyncio.timeout`` instead, which cancels
the calling task itself and so cannot lose the request.
"""

from __future__ import annotations

import asyncio
import math

import aiomqtt
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode


async def publish(
    client: aiomqtt.Client,
    topic: str,
    payload: bytes,
    *,
    within_s: float,
    qos: int = 1,
    retain: bool = False,
    properties: Properties | None = None,
) -> None:
    """Publish and wait for the broker's acknowledgement; TimeoutError after ``within_s``."""
    async with asyncio.timeout(within_s):
        await client.publish(
            topic, payload, qos=qos, retain=retain, properties=properties, timeout=math.inf
        )


async def subscribe(
    client: aiomqtt.Client, topic_filter: str, *, within_s: float, qos: int = 1
) -> tuple[int, ...] | list[ReasonCode]:
    """Subscribe; the granted QoS (3.1.1) or reason codes (5) per filter."""
    async with asyncio.timeout(within_s):
        return await client.subscribe(topic_filter, qos=qos, timeout=math.inf)


def raise_if_cancelling() -> None:
    """Re-raise a cancellation that a library call may have absorbed."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
