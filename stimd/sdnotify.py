"""systemd's notify protocol (sd_notify), in the standard library only.

systemd starts the daemon with ``Type=notify``: it is "started" only when it says READY
(after the device handshake), and with ``WatchdogSec`` it is killed and restarted when
the WATCHDOG pings stop; the daemon pings only while its supervisor is alive, so a hung
supervisor is a restart, not a silent daemon. Without NOTIFY_SOCKET (a terminal, a test)
every call is a no-op, so the daemon's code does not branch on how it was started.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

import structlog

log = structlog.get_logger(__name__)


class SystemdNotifier:
    """Sends notify datagrams to ``$NOTIFY_SOCKET`` (a path, or ``@name`` for abstract)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = environ if environ is not None else os.environ
        self._environ = dict(env)
        self._address = self._parse_address(env.get("NOTIFY_SOCKET", ""))
        self._socket: socket.socket | None = None
        self._warned = False

    @staticmethod
    def _parse_address(value: str) -> str | None:
        if not value:
            return None
        if value.startswith("@"):
            return "\0" + value[1:]
        if value.startswith("/"):
            return value
        log.warning("sd_notify_unsupported_socket", notify_socket=value,
                    reason="only absolute paths and @abstract names are supported")
        return None

    @property
    def enabled(self) -> bool:
        """True when systemd gave us a socket to notify."""
        return self._address is not None

    def ready(self) -> bool:
        """The device handshake is done: systemd considers the service started."""
        return self._send("READY=1")

    def status(self, text: str) -> bool:
        """One line for ``systemctl status``; a newline would inject other assignments."""
        if "\n" in text or "\0" in text:
            raise ValueError(f"status text {text!r} must be one line without NUL")
        return self._send(f"STATUS={text}")

    def watchdog(self) -> bool:
        """Tell systemd the supervisor is alive; call every ``watchdog_interval()`` s."""
        return self._send("WATCHDOG=1")

    def stopping(self) -> bool:
        """Shutdown has begun (disarm, close the record); systemd waits TimeoutStopSec."""
        return self._send("STOPPING=1")

    def watchdog_interval(self) -> float | None:
        """How often to ping, in seconds: half of WatchdogSec, as systemd recommends.

        None when no watchdog is configured for this process (WATCHDOG_USEC unset, not a
        positive integer, or WATCHDOG_PID naming another process).
        """
        usec = self._environ.get("WATCHDOG_USEC", "")
        pid = self._environ.get("WATCHDOG_PID")
        if pid is not None and pid != str(os.getpid()):
            return None
        if not usec.isdigit() or int(usec) == 0:
            return None
        return int(usec) / 2_000_000

    def _send(self, message: str) -> bool:
        if self._address is None:
            return False
        try:
            if self._socket is None:
                self._socket = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                )
            # never block the event loop on a full notify queue: a lost datagram is
            # handled by systemd itself, a blocked loop is not
            self._socket.sendto(message.encode("utf-8"), socket.MSG_DONTWAIT, self._address)
        except OSError as exc:
            # systemd acts on missing notifications itself (start timeout, watchdog kill);
            # raising here would only turn a lost datagram into a daemon crash.
            if not self._warned:
                log.warning("sd_notify_failed", message=message.partition("=")[0], error=str(exc))
                self._warned = True
            return False
        self._warned = False
        return True

    def close(self) -> None:
        """Release the socket (idempotent)."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None
