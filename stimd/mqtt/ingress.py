"""The daemon's buffer of incoming commands: bounded, in arrival order, fair when full.

aiomqtt drops whatever arrives while its buffer is full. With a plain queue one
operator's flood fills it and a stop from another operator is then dropped, never
executed and never answered. This buffer keeps arrival order (a stop must not overtake
commands sent before it: the command lanes decide what a stop supersedes) and, when
full, makes room by dropping the newest waiting command of the operator who holds most
of the buffer. A stop is never dropped to make room.

The stop connection, which carries nothing but stops, uses ``StopIngress``: there the
heaviest sender's newest stop makes room for another operator's, so one operator's
stops cannot crowd out everyone else's either.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import aiomqtt
import structlog

log = structlog.get_logger("stimd.mqtt")

#: Topic levels of a command: stimd/<device>/cmd/<user>/<verb...>
_USER_LEVEL = 3
_VERB_LEVEL = 4


def _sender(message: aiomqtt.Message) -> str:
    levels = message.topic.value.split("/")
    return levels[_USER_LEVEL] if len(levels) > _USER_LEVEL else ""


def _is_stop(message: aiomqtt.Message) -> bool:
    levels = message.topic.value.split("/")
    return len(levels) == _VERB_LEVEL + 1 and levels[_VERB_LEVEL] == "stop"


class FairIngress(asyncio.Queue[aiomqtt.Message]):
    """aiomqtt's incoming-message queue (``queue_type``) for the daemon's client."""

    dropped = 0

    def put_nowait(self, item: aiomqtt.Message) -> None:
        if self.full():
            self._make_room_for(item)
        super().put_nowait(item)

    def _spared(self, message: aiomqtt.Message) -> bool:
        """Whether ``message`` is never dropped to make room."""
        return _is_stop(message)

    def _make_room_for(self, item: aiomqtt.Message) -> None:
        """Drop the heaviest sender's newest droppable command, or raise QueueFull."""
        waiting: list[aiomqtt.Message] = list(self._queue)  # type: ignore[attr-defined]
        loads = Counter(_sender(m) for m in waiting)
        candidates = [m for m in waiting if not self._spared(m)]
        if not candidates:
            raise asyncio.QueueFull
        heaviest = max(candidates, key=lambda m: loads[_sender(m)])
        sender = _sender(heaviest)
        if not self._spared(item) and loads[_sender(item)] >= loads[sender]:
            raise asyncio.QueueFull  # the newcomer is the flood: it is the one dropped
        victim = next(
            m for m in reversed(waiting) if _sender(m) == sender and not self._spared(m)
        )
        self._queue.remove(victim)  # type: ignore[attr-defined]
        self.dropped += 1
        log.warning("mqtt_incoming_dropped", sender=sender, topic=victim.topic.value[:200],
                    to_admit=_sender(item), waiting=len(waiting), dropped=self.dropped)


class StopIngress(FairIngress):
    """The stop connection's buffer: every message is a stop, none is spared."""

    def _spared(self, message: aiomqtt.Message) -> bool:
        return False
