"""sd_notify against a real AF_UNIX datagram socket, named and abstract."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from stimd.sdnotify import SystemdNotifier


def receive(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


@pytest.fixture
def named_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)  # a lost datagram fails the test instead of hanging it
    yield sock, str(path)
    sock.close()


@pytest.fixture
def abstract_socket() -> Iterator[tuple[socket.socket, str]]:
    name = f"stimd-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    yield sock, "@" + name
    sock.close()


def test_lifecycle_messages_reach_a_named_socket(named_socket: tuple[socket.socket, str]) -> None:
    sock, address = named_socket
    notifier = SystemdNotifier({"NOTIFY_SOCKET": address})
    assert notifier.enabled
    assert notifier.ready()
    assert notifier.status("IDLE, device dev01 connected")
    assert notifier.watchdog()
    assert notifier.stopping()
    notifier.close()
    notifier.close()
    assert [receive(sock) for _ in range(4)] == [
        "READY=1", "STATUS=IDLE, device dev01 connected", "WATCHDOG=1", "STOPPING=1",
    ]


def test_abstract_sockets_are_supported(abstract_socket: tuple[socket.socket, str]) -> None:
    sock, address = abstract_socket
    notifier = SystemdNotifier({"NOTIFY_SOCKET": address})
    assert notifier.ready()
    notifier.close()
    assert receive(sock) == "READY=1"


def test_without_notify_socket_every_call_is_a_no_op() -> None:
    notifier = SystemdNotifier({})
    assert not notifier.enabled
    assert (notifier.ready(), notifier.watchdog(), notifier.stopping()) == (False,) * 3
    assert notifier.status("x") is False
    assert notifier.watchdog_interval() is None


def test_an_unsupported_socket_address_disables_notification() -> None:
    assert not SystemdNotifier({"NOTIFY_SOCKET": "vsock:2:1234"}).enabled


def test_a_vanished_socket_is_reported_not_raised(tmp_path: Path) -> None:
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert notifier.watchdog() is False
    notifier.close()


@pytest.mark.parametrize("text", ["one\nREADY=1", "nul\0byte"])
def test_status_text_cannot_inject_assignments(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        SystemdNotifier({}).status(text)
    assert str(caught.value) == f"status text {text!r} must be one line without NUL"


@pytest.mark.parametrize(
    ("environ", "interval"),
    [
        ({"WATCHDOG_USEC": "10000000"}, 5.0),
        ({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid())}, 5.0),
        ({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "ten"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_the_configured_timeout(
    environ: dict[str, str], interval: float | None
) -> None:
    assert SystemdNotifier(environ).watchdog_interval() == interval
