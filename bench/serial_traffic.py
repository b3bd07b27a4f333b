"""What occupied the simulated serial line, from the simulator's command log.

A Magstim exchange is one command and its reply; the daemon's driver sends the next
command only after the reply (one port owner, matched replies), so a stop that arrives
while another exchange is on the line waits for its reply to finish. Knowing which
exchange was in the way explains a slow stop or a late train.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.floor import line_time_ns
from drivers.magstim.codec import FIXED_REPLY_LENGTHS, rapid_parameters_reply_length

#: ``stimd-sim``'s default Rapid software version (its ``\\@`` reply is 24 bytes).
SIMULATED_FIRMWARE = (9, 0, 0)


def reply_bytes(command_text: str) -> int:
    """Length of the reply to a received command (``command`` record of the log)."""
    key = command_text[:1].encode("latin-1")
    if key == b"\\":
        return rapid_parameters_reply_length(SIMULATED_FIRMWARE)
    return FIXED_REPLY_LENGTHS.get(key, 3)


def exchange_end_ns(record: dict[str, Any]) -> int:
    """When the reply to a received command has fully left the simulated device."""
    received_ns: int = record["mono_ns"]
    return received_ns + line_time_ns(reply_bytes(record["command"]))


def in_the_way(records: Sequence[dict[str, Any]], since_ns: int,
               until_ns: int) -> list[str]:
    """Commands whose exchange held the line at some moment in ``[since_ns, until_ns)``.

    A command received before ``since_ns`` counts while its reply is still going out; one
    received in the window counts because its whole exchange came first.
    """
    blocking = []
    for record in records:
        if record.get("event") != "command" or record["mono_ns"] >= until_ns:
            continue
        if exchange_end_ns(record) > since_ns:
            blocking.append(record["command"])
    return blocking
