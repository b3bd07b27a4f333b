"""The physical floor a benchmark is compared with, measured in the same run.

Two parts bound how fast any controller can act through this stack: the broker's own
delivery (a bare QoS 1 publish from the operator's connection to a subscriber on the
same broker, with no daemon in between) and the serial line (a Magstim command cannot
be received before its last byte has crossed a 9600 baud line).
"""

from __future__ import annotations

import asyncio
import json
import time

from bench.clients import QOS, Inbox, Received
from bench.stack import FLOOR_DEVICE, OPERATOR
from drivers.magstim.codec import encode_command
from drivers.magstim.link import BAUDRATE
from stimd.mqtt.topics import DeviceTopics

BITS_PER_BYTE = 10  # 8N1: start bit, 8 data bits, stop bit
FLOOR_TIMEOUT_S = 10.0


def line_time_ns(byte_count: int, baud: int = BAUDRATE) -> int:
    """Time for ``byte_count`` bytes to cross the serial line, last byte included."""
    return round(byte_count * BITS_PER_BYTE * 1e9 / baud)


#: The Magstim disarm (``EA`` + checksum) and fire (``EH`` + checksum) commands.
DISARM_COMMAND = encode_command(b"E", b"A")
FIRE_COMMAND = encode_command(b"E", b"H")

#: Where the floor's probes go: the command subtree of a device no daemon serves, which
#: the operator account may write and the floor device account may read (clinic ACL).
FLOOR_TOPICS = DeviceTopics(FLOOR_DEVICE)
FLOOR_SUBSCRIPTION = FLOOR_TOPICS.command(OPERATOR, "#")


class MqttFloor:
    """Bare publish → delivery between two connections on the benchmark's broker."""

    def __init__(self, publisher: Inbox, subscriber: Inbox) -> None:
        self.publisher = publisher
        self.delivered = subscriber.watch(FLOOR_SUBSCRIPTION)
        self._probes = 0

    async def sample(self) -> int:
        """One probe, shaped like a ``stop`` command; its delivery time in ns."""
        self._probes += 1
        probe_id = f"floor-{self._probes}"
        payload = json.dumps({"id": probe_id})
        sent_ns = time.monotonic_ns()
        await self.publisher.client.publish(
            FLOOR_TOPICS.command(OPERATOR, "stop"), payload, qos=QOS)
        async with asyncio.timeout(FLOOR_TIMEOUT_S):
            while True:
                received: Received = await self.delivered.get()
                if isinstance(received.payload, dict) and received.payload.get("id") == probe_id:
                    return received.received_ns - sent_ns
