"""``stimd run --config FILE``: start the daemon for one device.

Order matters: the instance lock before the record (two daemons must never both write
it), recovery of interrupted sessions before the device is touched (never resumed),
and READY only after the device handshake. Exit codes: 0 orderly stop, 1 the daemon
could not serve (lock held, record unusable, device silent), 2 unusable configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import structlog

from stimd import __version__
from stimd.config import ConfigError, load_config
from stimd.daemon import run_daemon
from stimd.instance_lock import InstanceLock, InstanceLockedError
from stimd.logging_setup import configure_logging
from stimd.record import RecordError, SessionRecord
from stimd.sdnotify import SystemdNotifier

log = structlog.get_logger("stimd.run")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "run", help="run the daemon for one device",
        description="Run stimd for the device described by a TOML configuration file.",
    )
    parser.add_argument("--config", required=True, type=Path, metavar="FILE",
                        help="the daemon's TOML configuration")
    parser.add_argument("--log-format", choices=("auto", "json", "console"), default="auto",
                        help="JSON lines (default under systemd or when not a terminal)")
    parser.add_argument("--log-level", default="info",
                        choices=("debug", "info", "warning", "error", "critical"))
    parser.set_defaults(func=run_command)


def run_command(args: argparse.Namespace) -> int:
    json_logs = {"auto": None, "json": True, "console": False}[args.log_format]
    configure_logging(json=json_logs, level=args.log_level)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"stimd run: {exc}", file=sys.stderr)
        return 2
    state_dir = Path(config.storage.state_dir)
    try:
        lock = InstanceLock(state_dir, config.device.id)
    except InstanceLockedError as exc:
        print(f"stimd run: refusing to start: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"stimd run: cannot take the instance lock in {state_dir}: {exc}", file=sys.stderr)
        return 1
    with lock:
        try:
            record = SessionRecord.open(state_dir)
        except RecordError as exc:
            print(f"stimd run: no stimulation without a writable session record: {exc}",
                  file=sys.stderr)
            return 1
        with record:
            try:
                interrupted = record.recover_interrupted()
            except RecordError as exc:
                print(f"stimd run: cannot recover the session record: {exc}", file=sys.stderr)
                return 1
            for session in interrupted:
                log.warning(
                    "session closed as interrupted (never resumed)",
                    session_id=session.session_id, protocol=session.protocol_name,
                    operator=session.operator, pulses_delivered=session.pulses_delivered,
                    pulses_uncertain=session.pulses_uncertain,
                    uncertain_trains=list(session.uncertain_trains),
                )
            log.info("stimd", version=__version__, config=str(args.config),
                     config_digest=config.digest())
            notifier = SystemdNotifier()
            try:
                code = asyncio.run(run_daemon(config, record, notifier))
            finally:
                notifier.close()
    if code == 1:
        print(f"stimd run: the device {config.device.driver} on {config.device.port} did not "
              "complete the handshake (see the log)", file=sys.stderr)
    return code
