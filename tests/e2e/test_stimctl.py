"""``stimctl`` as a technician runs it: a real process, a real broker, a fake daemon."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from e2e.fake_target import FakeTarget, running_service
from stimd.commands import CommandError, ErrorCode, Verb
from stimd.mqtt.private_broker import PrivateBroker

pytestmark = pytest.mark.e2e


async def stimctl(
    broker: PrivateBroker, *args: str, user: str = "tech-alice", env: dict[str, str] | None = None,
    connection: bool = True,
) -> tuple[int, str, str]:
    options = [
        "--host", broker.host, "--port", str(broker.port), "--user", user,
        "--password-file", str(broker.password_file(user)), "--device", "dev01",
        "--timeout", "5",
    ] if connection else []
    environment = {k: v for k, v in os.environ.items() if not k.startswith("STIMCTL_")}
    environment.update(env or {})
    environment["HOME"] = str(broker.workdir)  # no personal ~/.config/stimctl.toml
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "stimd.stimctl", *options, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=environment,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_load_prints_the_plan(broker: PrivateBroker) -> None:
    target = FakeTarget()
    async with running_service(broker, target):
        code, out, _ = await stimctl(
            broker, "load", "demo-10hz-short", "--mt", "55", "--mt-method", "emg",
            "--patient", "P-0001", "--mt-measured-at", "2024-05-01T09:00:00+00:00",
        )
    assert code == 0
    assert "load: ok (state LOADED)" in out
    assert "done: load" in out
    assert [(u, v) for u, v, _ in target.executed] == [("tech-alice", Verb.LOAD)]


async def test_load_of_a_protocol_file_sends_its_tables_inline(
    broker: PrivateBroker, tmp_path: Path
) -> None:
    protocol = tmp_path / "mine.toml"
    protocol.write_text('[protocol]\nname = "mine"\n\n[rtms]\nfrequency_hz = 1.0\n')
    target = FakeTarget()
    seen: list[object] = []
    original = target.execute

    async def spy(operator: str, command: object, verb: Verb) -> object:
        seen.append(getattr(command, "protocol", None))
        return await original(operator, command, verb)  # type: ignore[arg-type]

    target.execute = spy  # type: ignore[method-assign,assignment]
    async with running_service(broker, target):
        code, _, err = await stimctl(
            broker, "load", str(protocol), "--mt", "55", "--mt-method", "visual",
            "--patient", "P-2",
        )
    assert code == 0, err
    assert seen == [{"protocol": {"name": "mine"}, "rtms": {"frequency_hz": 1.0}}]


async def test_a_refusal_prints_every_reason_and_exits_1(broker: PrivateBroker) -> None:
    target = FakeTarget()
    target.refusals[Verb.LOAD] = CommandError(
        code=ErrorCode.REJECTED_BY_SAFETY, message="rejected: 2 limits exceeded",
        details=[
            {"name": "frequency", "ok": False, "message": "20 Hz exceeds 10 Hz at 120 % MT"},
            {"name": "site", "ok": True, "message": "fine"},
            {"name": "train_length", "ok": False, "message": "train 9 s exceeds 5 s"},
        ],
    )
    async with running_service(broker, target):
        code, out, _ = await stimctl(
            broker, "load", "demo-10hz-short", "--mt", "55", "--mt-method", "emg",
            "--patient", "P-0001",
        )
    assert code == 1
    assert "REFUSED REJECTED_BY_SAFETY: rejected: 2 limits exceeded" in out
    assert "  - frequency: 20 Hz exceeds 10 Hz at 120 % MT" in out
    assert "  - train_length: train 9 s exceeds 5 s" in out
    assert "site" not in out


async def test_settings_from_environment_and_config_file(broker: PrivateBroker) -> None:
    target = FakeTarget()
    config = broker.workdir / "stimctl.toml"
    config.write_text(
        f'host = "{broker.host}"\nport = {broker.port}\ndevice = "dev01"\n'
        f'password_file = "{broker.password_file("tech-bob")}"\n'
    )
    async with running_service(broker, target):
        code, out, err = await stimctl(
            broker, "stop", connection=False,
            env={"STIMCTL_CONFIG": str(config), "STIMCTL_USER": "tech-bob"},
        )
    assert code == 0, err
    assert "stop: ok" in out
    assert target.executed[0][:2] == ("tech-bob", Verb.STOP)


async def test_unusable_settings_exit_2_and_say_why(broker: PrivateBroker) -> None:
    code, _, err = await stimctl(broker, "stop", connection=False,
                                 env={"STIMCTL_DEVICE": "dev01"})
    assert code == 2
    assert "no operator name" in err
    config = broker.workdir / "bad.toml"
    config.write_text('colour = "red"\n')
    code, _, err = await stimctl(broker, "stop", connection=False,
                                 env={"STIMCTL_CONFIG": str(config)})
    assert code == 2
    assert "colour: Extra inputs are not permitted" in err


async def test_silent_daemon_exits_3(broker: PrivateBroker) -> None:
    code, _, err = await stimctl(broker, "--timeout", "0.5", "stop")
    assert code == 3
    assert "no reply to stop from dev01 within 0.5 s" in err


async def test_status_shows_online_and_state(broker: PrivateBroker) -> None:
    async with running_service(broker, FakeTarget()):
        code, out, _ = await stimctl(broker, "status")
    assert code == 0
    assert "status: online (ready), version 9.9.9, boot boot-1" in out
    assert "IDLE" in out


async def test_start_follow_watches_to_completion_with_heartbeats(
    broker: PrivateBroker,
) -> None:
    target = FakeTarget()
    target.state = "LOADED"
    async with running_service(broker, target, state_interval_s=0.05):
        follower = asyncio.create_task(
            stimctl(broker, "--heartbeat-s", "0.1", "start", "--follow")
        )
        async with asyncio.timeout(30):
            await target.executed_at_least(Verb.HEARTBEAT, 2)
        target.state = "COMPLETED"
        target.emit("session_completed", {"pulses_delivered": 40})
        code, out, err = await follower
    assert code == 0, err
    assert "start: ok (state RUNNING)" in out
    assert "RUNNING" in out and "COMPLETED" in out


async def test_reset_sends_the_reason(broker: PrivateBroker) -> None:
    target = FakeTarget()
    async with running_service(broker, target):
        code, _, _ = await stimctl(broker, "reset", "--reason", "coil swapped")
    assert code == 0
    assert target.executed[0][:2] == ("tech-alice", Verb.RESET)
