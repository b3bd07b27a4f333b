"""Security against the real stack: stop precedence, per-operator rate limits, log hygiene, TLS.

The broker ACL matrix itself is proven in ``tests/e2e/test_broker_acl.py`` (every role
against every topic class on a real mosquitto); it is not repeated here.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from .judge import FAULT_PROTOCOL, PATIENT_REF, TRAIN_PULSES, load_fields
from .results import write_result
from .stack import (
    OTHER_OPERATOR,
    Operator,
    Seen,
    Stack,
    operator_client,
    running_stack,
)
from .test_fuzz_mqtt import MAX_RSS_GROWTH_KB, rss_kb

pytestmark = pytest.mark.e2e

#: Bound on a stop's round trip while another operator floods the daemon: generous for
#: a loaded 2-core box (a stop normally answers in tens of ms); starvation would be
#: seconds to forever.
STOP_BOUND_S = 5.0
#: Long enough (about 19 s) that the stop lands inside the session whatever the flood.
LONG_PROTOCOL = {**FAULT_PROTOCOL, "rtms": {**FAULT_PROTOCOL["rtms"], "trains": 10}}
FLOOD = 400
BACKLOG = 2000


def is_topic(topic: str, seen: Seen) -> bool:
    return seen.topic == topic


async def test_stop_supersedes_arming_commands_queued_before_it(tmp_path: Path) -> None:
    """start, start, stop sent back to back: nothing may fire, however the queue stood."""
    async with running_stack(tmp_path / "stack") as stack, operator_client(stack.broker) as op:
        await op.wait_online()
        loaded = await op.command("load", **load_fields())
        assert loaded["ok"], loaded
        for command_id in ("start-1", "start-2", "resume-1", "arm-1"):
            await op.publish(command_id.split("-")[0], {"id": command_id})
        await asyncio.sleep(0.2)  # start-1 is arming, the others wait in the queue
        halt = await op.command("stop")
        replies: dict[str, Any] = {}
        for command_id in ("start-1", "start-2", "resume-1", "arm-1"):
            topic = f"stimd/dev01/reply/tech-alice/{command_id}"
            replies[command_id] = (await op.wait_for(partial(is_topic, topic))).payload
        fired = await stack.settled_pulse_count()
        state = (await op.command("resync"))["result"]["state"]
        armed = (await stack.sim.astate())["armed"]
    executed = sorted(k for k, r in replies.items() if r["ok"])
    write_result("security-stop_supersedes_queued_work", {
        "passed": halt["ok"] and fired == 0 and not armed and not executed,
        "summary": f"load, then start/start/resume/arm queued and a stop: stop ok="
                   f"{halt['ok']}, commands that ran after it: {executed or 'none'}, "
                   f"pulses {fired}, final state {state}",
        "finished_at": time.time(),
    })
    assert halt["ok"], halt
    assert fired == 0, f"{fired} pulses after a stop; replies: {replies}"
    assert not armed
    assert not executed, replies
    assert state in ("LOADED", "IDLE")


async def flood(op: Operator, count: int, prefix: str) -> None:
    """``count`` valid load commands from ``op``, as fast as the broker takes them."""
    body = json.dumps(load_fields())[1:]
    for index in range(count):
        await op.publish("load", f'{{"id": "{prefix}-{index}", {body}'.encode())


def reply_codes(op: Operator, marker: str) -> dict[str, int]:
    codes: dict[str, int] = {}
    for seen in op.seen:
        if "/reply/" in seen.topic and marker in seen.topic:
            reply = seen.payload
            code = "ok" if reply["ok"] else reply["error"]["code"]
            codes[code] = codes.get(code, 0) + 1
    return codes


async def test_flood_from_one_operator_starves_no_stop_grows_nothing_and_logs_no_secrets(
    tmp_path: Path,
) -> None:
    async with running_stack(tmp_path / "stack") as stack, \
            operator_client(stack.broker) as alice, \
            operator_client(stack.broker, OTHER_OPERATOR) as bob:
        await alice.wait_online()
        rss_before = rss_kb(stack.daemon.pid)
        loaded = await alice.command("load", **load_fields(LONG_PROTOCOL))
        assert loaded["ok"], loaded
        assert (await alice.command("start"))["ok"]
        await stack.wait_pulses(TRAIN_PULSES // 2)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(flood(alice, FLOOD, "flood"), name="alice-flood")
            await asyncio.sleep(0.2)
            sent = time.monotonic()
            stop = await bob.command("stop", within_s=30)
            stop_s = time.monotonic() - sent
            fired_by_stop = stack.pulse_count()
        fired = await stack.settled_pulse_count()
        await quiet(alice, "/flood-")
        rss_after = rss_kb(stack.daemon.pid)
        codes = reply_codes(alice, "/flood-")
        state = (await bob.command("resync"))["result"]["state"]
        leaks = secrets_in_log(stack)
    write_result("security-rate_limit_flood", {
        "passed": stop["ok"] and stop_s <= STOP_BOUND_S
        and fired - fired_by_stop <= TRAIN_PULSES and rss_after - rss_before <= MAX_RSS_GROWTH_KB,
        "summary": f"{FLOOD} loads from tech-alice during a session, tech-bob's stop in the "
                   f"middle: answered in {stop_s:.3f} s (ok={stop['ok']}), "
                   f"{fired - fired_by_stop} pulses after it (the train in flight), state "
                   f"{state}; alice's replies {codes} (refusals beyond the bounded reply queue "
                   f"are dropped); daemon RSS {rss_before} → {rss_after} kB",
        "finished_at": time.time(),
    })
    write_result("security-log_hygiene", {
        "passed": not leaks,
        "summary": "daemon log scanned for every broker password and the patient reference: "
                   + ("none found" if not leaks else f"FOUND {leaks}"),
        "finished_at": time.time(),
    })
    assert stop["ok"], stop
    assert stop_s <= STOP_BOUND_S, f"a stop took {stop_s:.2f} s behind a flood"
    assert fired - fired_by_stop <= TRAIN_PULSES, "pulses beyond the train in flight"
    # alice's valid loads still waiting after the stop may load a new plan: never run it
    assert state in ("ABORTED", "LOADED"), state
    assert codes.get("RATE_LIMITED", 0) > 0, codes
    # every reply that does go out is structured and one of the expected refusals
    assert set(codes) <= {"ok", "WRONG_STATE", "RATE_LIMITED"}, codes
    assert rss_after - rss_before <= MAX_RSS_GROWTH_KB
    assert not leaks, leaks


async def test_stop_from_another_operator_survives_a_flood_backlog(tmp_path: Path) -> None:
    """The whole flood is at the broker before the stop: the stop must still get through."""
    async with running_stack(tmp_path / "stack") as stack, \
            operator_client(stack.broker) as alice, \
            operator_client(stack.broker, OTHER_OPERATOR) as bob:
        await alice.wait_online()
        loaded = await alice.command("load", **load_fields(LONG_PROTOCOL))
        assert loaded["ok"], loaded
        await flood(alice, BACKLOG, "backlog")
        sent = time.monotonic()
        try:
            stop = await bob.command("stop", within_s=STOP_BOUND_S)
        except TimeoutError:
            stop = {"ok": False, "error": "no reply"}
        stop_s = time.monotonic() - sent
        # the daemon has two connections (stimd-dev01 and stimd-dev01-stop): name which
        # of them the broker dropped messages for, not just whether it did
        dropped = sorted(set(re.findall(
            r"Outgoing messages are being dropped for client (\S+)\.",
            stack.broker.log_tail(2000),
        ))) or "none"
    write_result("security-flood_backlog_stop", {
        "passed": bool(stop["ok"]),
        "summary": f"{BACKLOG} loads from tech-alice at the broker, then tech-bob's stop: "
                   + (f"answered in {stop_s:.3f} s" if stop["ok"] else
                      f"NOT answered within {STOP_BOUND_S} s")
                   + f" (broker dropped messages for: {dropped})",
        "finished_at": time.time(),
    })
    assert stop["ok"], stop


async def quiet(op: Operator, marker: str, quiet_s: float = 1.0, within_s: float = 30.0) -> None:
    """Wait until no reply containing ``marker`` arrived for ``quiet_s``."""
    deadline = time.monotonic() + within_s
    count = -1
    while time.monotonic() < deadline:
        now = sum(1 for s in op.seen if marker in s.topic)
        if now == count:
            return
        count = now
        await asyncio.sleep(quiet_s)
    raise AssertionError(f"replies to {marker!r} still arriving after {within_s} s")


def secrets_in_log(stack: Stack) -> list[str]:
    """Passwords and patient references the daemon's log must never carry."""
    text = stack.daemon.log_text()
    assert "session_id" in text or "state" in text, "the log is empty: nothing was scanned"
    found = [f"password of {name}" for name, account in stack.broker.accounts.items()
             if account.password in text]
    if PATIENT_REF in text:
        found.append(f"patient reference {PATIENT_REF}")
    return found


# ------------------------------------------------------------------------------- TLS

def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(directory: Path, name: str) -> Path:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-keyout", f"{name}.key", "-out", f"{name}.crt", "-subj", f"/CN={name}",
             cwd=directory)
    return directory / f"{name}.crt"


def make_server_cert(directory: Path, ca: str) -> tuple[Path, Path]:
    (directory / "san.ext").write_text(
        "subjectAltName = IP:127.0.0.1, DNS:localhost\n", encoding="utf-8")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key",
             "-out", "broker.csr", "-subj", "/CN=127.0.0.1", cwd=directory)
    _openssl("x509", "-req", "-in", "broker.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "broker.crt",
             cwd=directory)
    return directory / "broker.crt", directory / "broker.key"


EXAMPLE_CONF = Path(__file__).resolve().parents[2] / "systemd" / "mosquitto" / "stimd-clinic.conf"


def example_tls_listener(port: int, ca: Path, cert: Path, key: Path) -> str:
    """The TLS listener block of the shipped clinic example, on a test port and test PKI."""
    text = EXAMPLE_CONF.read_text(encoding="utf-8")
    match = re.search(r"^listener 8883\n(?:(?!listener ).*\n)*?tls_version .*\n", text,
                      re.MULTILINE)
    assert match, "the clinic example has no 'listener 8883 … tls_version' block"
    block = match.group(0)
    block = block.replace("listener 8883", f"listener {port} 127.0.0.1")
    block = re.sub(r"^certfile .*$", f"certfile {cert}", block, flags=re.MULTILINE)
    block = re.sub(r"^keyfile .*$", f"keyfile {key}", block, flags=re.MULTILINE)
    return re.sub(r"^cafile .*$", f"cafile {ca}", block, flags=re.MULTILINE)


def refusal_logged(log: str) -> bool:
    return "CERTIFICATE_VERIFY_FAILED" in log or "certificate verify failed" in log


async def refused_certificate(stack: Stack, within_s: float = 20.0) -> None:
    """Wait until the daemon logged that it refused the broker's certificate."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:  # a log file to poll: there is no event to wait on
        if refusal_logged(stack.daemon.log_text()):
            break
        await asyncio.sleep(0.1)
    else:
        raise TimeoutError(f"no certificate refusal in the daemon log within {within_s} s")
    await asyncio.sleep(0.5)  # had it connected anyway, its status would be out by now


@pytest.mark.parametrize("trusted", [True, False], ids=["right-ca", "wrong-ca"])
async def test_daemon_reaches_the_example_tls_listener_only_with_the_right_ca(
    tmp_path: Path, trusted: bool,
) -> None:
    from stimd.mqtt.private_broker import free_loopback_port

    pki = tmp_path / "pki"
    pki.mkdir()
    ca = await asyncio.to_thread(make_ca, pki, "clinic-ca")
    other_ca = await asyncio.to_thread(make_ca, pki, "other-ca")
    cert, key = await asyncio.to_thread(make_server_cert, pki, "clinic-ca")
    tls_port = free_loopback_port()
    async with running_stack(
        tmp_path / "stack", start_daemon=False,
        mqtt_extra={"port": tls_port, "ca_file": str(ca if trusted else other_ca)},
    ) as stack:
        broker = stack.broker
        await asyncio.to_thread(broker.stop)
        with broker.conf_file.open("a", encoding="utf-8") as conf:
            conf.write(example_tls_listener(tls_port, ca, cert, key))
        await asyncio.to_thread(broker.start)
        async with operator_client(broker) as op:
            stack.daemon.start()
            online = True
            try:
                if trusted:
                    await op.wait_online(within_s=20)
                else:
                    await refused_certificate(stack)
                    online = any(isinstance(s.payload, dict) and s.payload.get("online")
                                 for s in op.seen)
            except TimeoutError:
                online = False
        log = stack.daemon.log_text()
    verified = refusal_logged(log)
    write_result(f"security-tls_{'right' if trusted else 'wrong'}_ca", {
        "passed": online if trusted else (not online and verified),
        "summary": ("daemon connected through the example TLS listener with a generated CA: "
                    f"online={online}") if trusted else
                   ("daemon given another CA: online=" f"{online}, certificate refused in its "
                    f"log={verified}"),
        "finished_at": time.time(),
    })
    if trusted:
        assert online, log[-2000:]
    else:
        assert not online, "the daemon trusted a broker certificate from an unknown CA"
        assert verified, log[-2000:]
