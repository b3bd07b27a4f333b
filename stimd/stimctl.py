"""``stimctl``: the technician's command line for one stimulator, over MQTT.

    stimctl --device dev01 load demo-10hz-short --mt 55 --mt-method emg --patient P-0001
    stimctl --device dev01 start --follow

Connection settings come from the command line, else ``STIMCTL_*`` environment
variables, else a TOML file (``--config``, ``$STIMCTL_CONFIG`` or
``~/.config/stimctl.toml``). The password is only ever read from a file.

Exit codes: 0 done, 1 the daemon said no (every reason is printed) or the followed
session did not complete, 2 unusable input or settings, 3 no answer (broker or daemon
unreachable), 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tomllib
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TextIO

import aiomqtt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stimd.commands import Reply, Verb
from stimd.mqtt.config import MqttConfig
from stimd.mqtt.live_view import FINAL_STATES, render_reasons, render_state
from stimd.mqtt.operator_client import NoReply, OperatorClient

EXIT_OK, EXIT_NO, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
DEFAULT_CONFIG = Path("~/.config/stimctl.toml")
ENV_PREFIX = "STIMCTL_"
SETTINGS = ("host", "port", "user", "password_file", "ca_file", "cert_file", "key_file",
            "device")
RETAINED_WAIT_S = 2.0

ConfigPath = Annotated[Path, Field(strict=False)]


class StimctlSettings(BaseModel):
    """Connection settings, from whichever source gave each one."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = 1883
    user: str | None = None
    password_file: ConfigPath | None = None
    ca_file: ConfigPath | None = None
    cert_file: ConfigPath | None = None
    key_file: ConfigPath | None = None
    device: str | None = None


class UsageError(Exception):
    """Settings or arguments that cannot work; the message says which and why."""


def resolve_settings(args: argparse.Namespace, env: dict[str, str]) -> StimctlSettings:
    """Command line over environment over config file over defaults, key by key."""
    merged: dict[str, Any] = {}
    config_path = args.config or env.get(f"{ENV_PREFIX}CONFIG")
    path = Path(config_path).expanduser() if config_path else DEFAULT_CONFIG.expanduser()
    if config_path or path.exists():
        try:
            merged.update(tomllib.loads(path.read_text(encoding="utf-8")))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise UsageError(f"config file {path}: {exc}") from None
    for key in SETTINGS:
        value = env.get(f"{ENV_PREFIX}{key.upper()}")
        if value:
            merged[key] = int(value) if key == "port" and value.isdigit() else value
    for key in SETTINGS:
        value = getattr(args, key, None)
        if value is not None:
            merged[key] = value
    try:
        return StimctlSettings.model_validate(merged)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise UsageError(f"settings ({path}, {ENV_PREFIX}*, options): {problems}") from None


def mqtt_config(settings: StimctlSettings) -> MqttConfig:
    if settings.user is None:
        raise UsageError("no operator name: give --user, STIMCTL_USER or user= in the config")
    try:
        return MqttConfig.model_validate({
            "host": settings.host, "port": settings.port, "username": settings.user,
            "password_file": settings.password_file, "ca_file": settings.ca_file,
            "cert_file": settings.cert_file, "key_file": settings.key_file,
            "client_id": None,
        })
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}"
            for e in exc.errors()
        )
        raise UsageError(problems) from None


# ---------------------------------------------------------------------- output


def print_reply(verb: Verb, reply: Reply, out: TextIO) -> int:
    if reply.ok:
        print(f"{verb.value}: ok (state {reply.state})", file=out)
        for key, value in (reply.result or {}).items():
            if key != "patient_ref":
                print(f"  {key}: {value}", file=out)
        return EXIT_OK
    error = reply.error
    code = error.code.value if error else "UNKNOWN"
    message = error.message if error else "no error given"
    print(f"{verb.value}: REFUSED {code}: {message} (state {reply.state})", file=out)
    for line in render_reasons(error.details if error else None):
        print(f"  - {line}", file=out)
    return EXIT_NO


class LiveScreen:
    """Redraws the view in place on a terminal; prints each change otherwise."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._tty = out.isatty()
        self._shown: list[str] = []

    def show(self, lines: list[str]) -> None:
        if lines == self._shown:
            return
        if self._tty:
            if self._shown:
                self._out.write(f"\x1b[{len(self._shown)}F\x1b[J")
            self._out.write("\n".join(lines) + "\n")
        else:
            stamp = datetime.now(UTC).strftime("%H:%M:%S")
            self._out.write(f"[{stamp}] " + "\n           ".join(lines) + "\n")
        self._out.flush()
        self._shown = lines


# ---------------------------------------------------------------------- verbs


async def watch(
    client: OperatorClient, out: TextIO, *, heartbeat_s: float, until_done: bool
) -> int:
    """Live view with operator heartbeats; with ``until_done`` returns when the session ends."""
    await client.watch(client.topics.status, client.topics.state)
    screen = LiveScreen(out)
    status: dict[str, Any] | None = None

    async def heartbeat() -> None:
        while True:
            try:
                reply = await client.request(Verb.HEARTBEAT)
            except (NoReply, TimeoutError) as exc:
                print(f"warning: heartbeat unanswered: {exc}", file=sys.stderr)
            else:
                if not reply.ok and reply.error is not None:
                    print(f"warning: heartbeat refused: {reply.error.message}", file=sys.stderr)
            await asyncio.sleep(heartbeat_s)

    async with asyncio.TaskGroup() as tg:
        beat = tg.create_task(heartbeat(), name="stimctl-heartbeat")
        try:
            while True:
                topic, value = await client.next_update()
                if not isinstance(value, dict):
                    continue
                if topic == client.topics.status:
                    status = value
                    continue
                screen.show(render_state(value, status))
                if until_done and value.get("state") in FINAL_STATES - {"IDLE"}:
                    return EXIT_OK if value.get("state") == "COMPLETED" else EXIT_NO
        finally:
            beat.cancel()


async def retained(client: OperatorClient, *topics: str) -> dict[str, Any]:
    """The retained values of ``topics`` (those that have one)."""
    await client.watch(*topics)
    found: dict[str, Any] = {}
    try:
        async with asyncio.timeout(RETAINED_WAIT_S):
            while len(found) < len(topics):
                topic, value = await client.next_update()
                found[topic] = value
    except TimeoutError:
        pass
    return found


async def show_status(client: OperatorClient, out: TextIO) -> int:
    topics = client.topics
    found = await retained(client, topics.status, topics.meta, topics.state)
    status = found.get(topics.status)
    if not isinstance(status, dict):
        print(f"no status for {topics.device_id}: unknown device or never online", file=out)
        return EXIT_NO
    print(f"status: {'online' if status.get('online') else 'OFFLINE'} "
          f"({status.get('lifecycle')}), version {status.get('version')}, "
          f"boot {status.get('boot_id')}", file=out)
    meta = found.get(topics.meta)
    if isinstance(meta, dict):
        print("meta: " + ", ".join(f"{k}={v}" for k, v in meta.items()
                                  if not isinstance(v, dict | list)), file=out)
    state = found.get(topics.state)
    if isinstance(state, dict):
        for line in render_state(state, status):
            print(line, file=out)
    return EXIT_OK


async def show_history(client: OperatorClient, out: TextIO) -> int:
    """The device's latest session as its retained state tells it."""
    state = (await retained(client, client.topics.state)).get(client.topics.state)
    if not isinstance(state, dict):
        print(f"no state for {client.topics.device_id}", file=out)
        return EXIT_NO
    session = state.get("session")
    if not isinstance(session, dict):
        print("no session since the daemon started", file=out)
    else:
        print(f"session {session.get('id')} by {session.get('operator')}: "
              f"{state.get('state')}", file=out)
        for key, value in (state.get("plan") or {}).items():
            if key != "patient_ref":
                print(f"  {key}: {value}", file=out)
    for line in render_state(state)[1:]:
        print(f"  {line}", file=out)
    print("the full, verified record: `stimd history` on the daemon's host", file=out)
    return EXIT_OK


def load_fields(args: argparse.Namespace) -> dict[str, Any]:
    protocol: str | dict[str, Any] = args.protocol
    candidate = Path(args.protocol)
    if candidate.suffix == ".toml" or "/" in args.protocol:
        try:
            protocol = tomllib.loads(candidate.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise UsageError(f"protocol file {candidate}: {exc}") from None
    measured_at = args.mt_measured_at or datetime.now(UTC)
    if measured_at.tzinfo is None:
        raise UsageError("--mt-measured-at needs a UTC offset, e.g. 2024-05-01T09:00:00+00:00")
    return {
        "protocol": protocol,
        "motor_threshold": {
            "pct_mso": args.mt, "method": args.mt_method,
            "measured_at": measured_at.isoformat(),
        },
        "patient_ref": args.patient,
    }


async def run(args: argparse.Namespace, out: TextIO) -> int:
    settings = resolve_settings(args, dict(os.environ))
    if settings.device is None:
        raise UsageError("no device: give --device, STIMCTL_DEVICE or device= in the config")
    config = mqtt_config(settings)
    async with OperatorClient(config, settings.device, reply_timeout_s=args.timeout) as client:
        match args.verb:
            case "status":
                return await show_status(client, out)
            case "history":
                return await show_history(client, out)
            case "watch":
                return await watch(client, out, heartbeat_s=args.heartbeat_s, until_done=False)
        verb = Verb(args.verb)
        fields: dict[str, Any] = {}
        if verb is Verb.LOAD:
            fields = load_fields(args)
        elif verb is Verb.RESET:
            fields = {"reason": args.reason}
        code = print_reply(verb, await client.request(verb, fields), out)
        if verb is Verb.START and args.follow and code == EXIT_OK:
            return await watch(client, out, heartbeat_s=args.heartbeat_s, until_done=True)
        return code


# ---------------------------------------------------------------------- arguments


def _iso_datetime(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stimctl", description="Command an rTMS stimulator through its stimd daemon.",
    )
    parser.add_argument("--config", help=f"TOML settings file (default {DEFAULT_CONFIG})")
    parser.add_argument("--host", help="broker host (STIMCTL_HOST)")
    parser.add_argument("--port", type=int, help="broker port (STIMCTL_PORT)")
    parser.add_argument("--user", help="your operator name (STIMCTL_USER)")
    parser.add_argument("--password-file", help="file holding your password")
    parser.add_argument("--ca-file", help="CA bundle: connect with TLS")
    parser.add_argument("--cert-file", help="client certificate (TLS)")
    parser.add_argument("--key-file", help="client key (TLS)")
    parser.add_argument("--device", help="device id, e.g. dev01 (STIMCTL_DEVICE)")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds to wait for the daemon's reply (default 10)")
    parser.add_argument("--heartbeat-s", type=float, default=2.0,
                        help="operator heartbeat period while watching (default 2)")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    load = verbs.add_parser("load", help="validate and load a protocol for a patient")
    load.add_argument("protocol", help="library protocol name, or a protocol .toml file")
    load.add_argument("--mt", type=int, required=True, help="resting motor threshold, %%MSO")
    load.add_argument("--mt-method", choices=("emg", "visual"), required=True)
    load.add_argument("--mt-measured-at", type=_iso_datetime,
                      help="when the MT was measured, ISO 8601 with offset (default now)")
    load.add_argument("--patient", required=True, help="opaque patient reference, not a name")
    start = verbs.add_parser("start", help="arm if needed and run the loaded protocol")
    start.add_argument("--follow", action="store_true", help="watch until the session ends")
    for name, text in (
        ("unload", "drop the loaded protocol"), ("arm", "arm the device"),
        ("pause", "pause after the current train"), ("resume", "resume a paused session"),
        ("stop", "stop now and disarm (always accepted)"),
        ("resync", "ask for the full state again"),
    ):
        verbs.add_parser(name, help=text)
    reset = verbs.add_parser("reset", help="leave FAULT (recorded with your reason)")
    reset.add_argument("--reason", required=True)
    verbs.add_parser("status", help="online status, device and session at a glance")
    verbs.add_parser("watch", help="live view; sends your heartbeat while it runs")
    verbs.add_parser("history", help="the device's latest session")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.timeout > 0 or not args.heartbeat_s > 0:
        print("stimctl: --timeout and --heartbeat-s must be positive", file=sys.stderr)
        return EXIT_USAGE
    try:
        return asyncio.run(run(args, sys.stdout))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BaseExceptionGroup as group:
        first = group.exceptions[0]
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        return _explain(first)
    except Exception as exc:
        return _explain(exc)


def _explain(exc: BaseException) -> int:
    """The exit code for a failure, with one line saying what went wrong."""
    if isinstance(exc, UsageError):
        print(f"stimctl: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if isinstance(exc, NoReply | aiomqtt.MqttError | OSError | TimeoutError):
        print(f"stimctl: no answer: {exc or type(exc).__name__}", file=sys.stderr)
        return EXIT_UNREACHABLE
    raise exc

if __name__ == "__main__":
    sys.exit(main())
