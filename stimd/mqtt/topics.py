"""Topic names of the MQTT interface v1, in one place.

Every topic lives under ``stimd/<device_id>/``. A command's operator and verb are topic
levels so the broker's ACL, not the payload, decides who may send what.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ROOT = "stimd"

# Operator and device names become topic levels and ACL entries: no wildcards, no
# separators, nothing a shell or a config file would need to quote.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

# The reply topic's last level for a command whose id could not be read. Command ids
# cannot contain "@", so this never collides with a real id's reply topic.
UNREADABLE_ID_LEVEL = "@null"


def is_valid_name(name: str) -> bool:
    return NAME_PATTERN.fullmatch(name) is not None


@dataclass(frozen=True, slots=True)
class CommandTopic:
    """What the topic of an incoming command says: who sent it and which verb."""

    user: str
    verb: str


@dataclass(frozen=True, slots=True)
class DeviceTopics:
    """The topics of one device's subtree."""

    device_id: str

    def __post_init__(self) -> None:
        if not is_valid_name(self.device_id):
            raise ValueError(
                f"device_id={self.device_id!r} is not a valid topic level "
                f"(must match {NAME_PATTERN.pattern})"
            )

    @property
    def base(self) -> str:
        return f"{ROOT}/{self.device_id}"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def meta(self) -> str:
        return f"{self.base}/meta"

    @property
    def state(self) -> str:
        return f"{self.base}/state"

    def event(self, event_type: str) -> str:
        return f"{self.base}/evt/{event_type}"

    @property
    def command_filter(self) -> str:
        return f"{self.base}/cmd/#"

    @property
    def stop_filter(self) -> str:
        """Every operator's ``stop``: what the daemon's stop connection subscribes to."""
        return f"{self.base}/cmd/+/stop"

    def command(self, user: str, verb: str) -> str:
        return f"{self.base}/cmd/{user}/{verb}"

    def reply(self, user: str, command_id: str | None) -> str:
        level = UNREADABLE_ID_LEVEL if command_id is None else command_id
        return f"{self.base}/reply/{user}/{level}"

    def reply_filter(self, user: str) -> str:
        return f"{self.base}/reply/{user}/#"

    def is_stop_command(self, topic: str) -> bool:
        """Whether ``topic`` matches ``stop_filter`` (``+`` matches any one level)."""
        prefix = f"{self.base}/cmd/"
        if not topic.startswith(prefix):
            return False
        _, separator, verb = topic[len(prefix):].partition("/")
        return bool(separator) and verb == "stop"

    def parse_command(self, topic: str) -> CommandTopic | None:
        """Split ``stimd/<dev>/cmd/<user>/<verb...>``; None when no operator level exists.

        Extra levels after the verb stay part of the verb so that the sender is told
        UNKNOWN_VERB rather than nothing.
        """
        prefix = f"{self.base}/cmd/"
        if not topic.startswith(prefix):
            return None
        rest = topic[len(prefix):]
        user, _, verb = rest.partition("/")
        if not is_valid_name(user):
            return None
        return CommandTopic(user=user, verb=verb)
