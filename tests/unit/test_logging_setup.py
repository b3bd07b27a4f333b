"""Logging: JSON lines under systemd or off a terminal, text on a terminal, no secrets."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from typing import Any, TextIO

import pytest
import structlog

from stimd.logging_setup import REDACTED, configure_logging, stream_is_journal


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    structlog.reset_defaults()


@pytest.fixture
def terminal() -> Iterator[TextIO]:
    """The slave side of a real pseudo-terminal: isatty() is true."""
    master, slave = os.openpty()
    stream = os.fdopen(slave, "w")
    yield stream
    stream.close()
    os.close(master)


def json_lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_json_lines_carry_iso_utc_time_level_and_fields() -> None:
    buffer = io.StringIO()
    assert configure_logging(json=True, stream=buffer, environ={}) is True
    structlog.get_logger("stimd.test").info("train_started", train=3, of=10)
    (line,) = json_lines(buffer)
    assert line["event"] == "train_started"
    assert (line["level"], line["logger"], line["train"], line["of"]) == (
        "info", "stimd.test", 3, 10
    )
    assert line["timestamp"].endswith("Z")
    assert line["timestamp"][10] == "T"


def test_secrets_and_patient_references_never_reach_the_log() -> None:
    buffer = io.StringIO()
    configure_logging(json=True, stream=buffer, environ={})
    structlog.get_logger().warning(
        "loaded",
        patient_ref="P-0042",
        mqtt_password="hunter2",
        payload={"patient_ref": "P-0042", "auth": {"Token": "abc"}, "id": "c1"},
        items=[{"api_key": "k"}],
        operator="tech-alice",
    )
    (line,) = json_lines(buffer)
    assert line["patient_ref"] == REDACTED
    assert line["mqtt_password"] == REDACTED
    assert line["payload"] == {"patient_ref": REDACTED, "auth": {"Token": REDACTED}, "id": "c1"}
    assert line["items"] == [{"api_key": REDACTED}]
    assert line["operator"] == "tech-alice"
    for secret in ("P-0042", "hunter2", "abc"):
        assert secret not in buffer.getvalue()


def test_stdlib_loggers_are_rendered_and_redacted_the_same_way() -> None:
    buffer = io.StringIO()
    configure_logging(json=True, stream=buffer, environ={})
    logging.getLogger("aiomqtt").error("lost %s", "broker", extra={"password": "pw"})
    (line,) = json_lines(buffer)
    assert (line["event"], line["level"], line["logger"]) == ("lost broker", "error", "aiomqtt")
    assert line["password"] == REDACTED


def test_the_level_filters() -> None:
    buffer = io.StringIO()
    configure_logging(json=True, level="WARNING", stream=buffer, environ={})
    log = structlog.get_logger()
    log.info("quiet")
    log.warning("loud")
    assert [line["event"] for line in json_lines(buffer)] == ["loud"]


@pytest.mark.parametrize("level", ["verbose", "", "INFO ", 20])
def test_an_unknown_level_is_rejected(level: Any) -> None:
    with pytest.raises(ValueError) as caught:
        configure_logging(level=level, stream=io.StringIO(), environ={})
    assert str(caught.value) == (
        f"level={level!r} is not one of debug, info, warning, error, critical"
    )


def test_a_terminal_gets_readable_text(terminal: TextIO) -> None:
    assert configure_logging(stream=terminal, environ={}) is False


def test_a_pipe_gets_json() -> None:
    assert configure_logging(stream=io.StringIO(), environ={}) is True


@pytest.mark.parametrize("variable", ["JOURNAL_STREAM", "INVOCATION_ID"])
def test_systemd_gets_json_even_on_a_terminal(terminal: TextIO, variable: str) -> None:
    assert configure_logging(stream=terminal, environ={variable: "8:1234"}) is True


def test_console_text_is_readable_and_redacted() -> None:
    buffer = io.StringIO()
    configure_logging(json=False, stream=buffer, environ={})
    structlog.get_logger().info("armed", patient_ref="P-9", device="dev01")
    text = buffer.getvalue()
    assert "armed" in text
    assert "device=dev01" in text
    assert "P-9" not in text
    assert not text.lstrip().startswith("{")


def test_the_journal_stream_gets_syslog_priorities(tmp_path: Any) -> None:
    path = tmp_path / "journal"
    with path.open("w") as stream:
        info = os.fstat(stream.fileno())
        environ = {"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"}
        assert stream_is_journal(stream, environ)
        configure_logging(stream=stream, environ=environ)
        structlog.get_logger().error("trip", cause="keep-alive gap")
        structlog.get_logger().info("idle")
    first, second = path.read_text().splitlines()
    assert first.startswith("<3>{")
    assert json.loads(first[3:])["cause"] == "keep-alive gap"
    assert second.startswith("<6>{")


def test_a_foreign_journal_stream_is_not_prefixed() -> None:
    buffer = io.StringIO()
    configure_logging(stream=buffer, environ={"JOURNAL_STREAM": "1:2"})
    structlog.get_logger().info("x")
    assert buffer.getvalue().startswith("{")
