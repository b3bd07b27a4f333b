"""One logging set-up for the daemon and its CLIs: JSON lines for machines, text for people.

Under systemd (or whenever stderr is not a terminal) every line is one JSON object, so the
journal and log shippers get fields, not prose; on a terminal the same events are rendered
readably. Library loggers (stdlib ``logging``) go through the same processors, so nothing
bypasses redaction: secrets never reach a log, and neither do patient references (the
session record keeps those; logs travel further than the record).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "[redacted]"
LEVELS: Mapping[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
# A key is redacted when its lower-cased name contains one of these.
_SECRET_KEY_PARTS = (
    "password", "passwd", "secret", "token", "credential", "api_key", "apikey",
    "authorization", "private_key", "patient",
)
# journald reads a "<N>" syslog priority prefix on each line of a stream it owns.
_SYSLOG_PRIORITY = {
    logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2,
}


def _is_sensitive(key: object) -> bool:
    lowered = str(key).lower()
    return any(part in lowered for part in _SECRET_KEY_PARTS)


def _redact(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: REDACTED if _is_sensitive(k) else _redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(item) for item in value]
    return value


def redact_sensitive(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: replace values of secret or patient keys, at any depth."""
    for key in list(event_dict):
        if key == "event":
            continue
        event_dict[key] = REDACTED if _is_sensitive(key) else _redact(event_dict[key])
    return event_dict


def stream_is_journal(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """True when ``stream`` is the journal stream systemd connected (JOURNAL_STREAM=dev:ino)."""
    value = environ.get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    try:
        info = os.fstat(stream.fileno())
        return (info.st_dev, info.st_ino) == (int(device), int(inode))
    except (ValueError, OSError):
        return False


class _JournalFormatter(structlog.stdlib.ProcessorFormatter):
    """Prefixes each line with its syslog priority so ``journalctl -p`` filters work."""

    def format(self, record: logging.LogRecord) -> str:
        priority = _SYSLOG_PRIORITY.get(record.levelno, 6)
        return f"<{priority}>{super().format(record)}"


def configure_logging(
    *,
    json: bool | None = None,
    level: str = "info",
    stream: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> bool:
    """Configure structlog and stdlib logging; returns whether JSON lines were chosen.

    ``json=None`` decides by the environment: JSON under systemd (JOURNAL_STREAM or
    INVOCATION_ID set) or when ``stream`` (default stderr) is not a terminal. Logs go to
    stderr so that a CLI's stdout stays clean for its output.
    """
    numeric = LEVELS.get(level.lower()) if isinstance(level, str) else None
    if numeric is None:
        raise ValueError(f"level={level!r} is not one of {', '.join(LEVELS)}")
    out = stream if stream is not None else sys.stderr
    env = environ if environ is not None else os.environ
    under_systemd = bool(env.get("JOURNAL_STREAM") or env.get("INVOCATION_ID"))
    use_json = json if json is not None else (under_systemd or not out.isatty())

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.PositionalArgumentsFormatter(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        redact_sensitive,
    ]
    renderer: Processor
    if use_json:
        renderer = structlog.processors.JSONRenderer(sort_keys=True)
        final: list[Processor] = [structlog.processors.format_exc_info, renderer]
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
        final = [renderer]
    formatter_class = (
        _JournalFormatter if use_json and stream_is_journal(out, env)
        else structlog.stdlib.ProcessorFormatter
    )
    formatter = formatter_class(
        foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    handler.set_name("stimd")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "stimd"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)

    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    return use_json
