"""Fuzzing the MQTT command interface of a running daemon (real broker, real simulator).

Hypothesis generates payloads for every verb — malformed JSON, wrong types, huge and
deeply nested values, NaN and Infinity, odd unicode, repeated and stale ids — and
topics with unexpected levels. Invariants: every command is answered with a
structured reply (``ok``, ``state`` and, when refused, a stable error code); the daemon
never crashes and never fires (the simulator's pulse log stays empty and the unit is
never armed); its memory stays bounded.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stimd.commands import ErrorCode, Verb

from .results import write_result
from .stack import DEVICE_ID, OPERATOR, Operator, Stack, operator_client, running_stack

pytestmark = pytest.mark.e2e

#: Examples in the normal suite, and in ``make soak``.
EXAMPLES, SOAK_EXAMPLES = 200, 3000
TOPIC_EXAMPLES, SOAK_TOPIC_EXAMPLES = 40, 600
SOAK_TIMEOUT_S = 3600
#: RSS growth allowed over a fuzz run. Generous on purpose: this catches unbounded
#: growth (a cache or queue per message), not allocator noise.
MAX_RSS_GROWTH_KB = 40_000
REPLY_TIMEOUT_S = 10.0
ERROR_CODES = frozenset(code.value for code in ErrorCode)
#: Ids drawn from a small pool so that repeats (answered, never re-executed) happen.
ID_POOL = [f"fz-{i}" for i in range(8)]


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=25,
)
odd_text = st.one_of(
    st.text(alphabet=st.characters(codec="utf-8"), max_size=60),
    st.sampled_from(["\u202e\u0000", "\ud7ff\ufeff", "e\u0301" * 40, "🧠" * 50, "\x00" * 8,
                     "stop\n", " fz-1", "fz-1 ", "a" * 129, ""]),
)
ids = st.one_of(st.sampled_from(ID_POOL), odd_text, json_scalars)
stamps = st.one_of(
    st.just(None), st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["stale", "future", "now"]),
)


@st.composite
def command_objects(draw: st.DrawFn) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    if draw(st.integers(0, 9)):  # one in ten has no id at all
        obj["id"] = draw(ids)
    stamp = draw(stamps)
    if stamp == "stale":
        obj["ts"] = time.time() - 3600
    elif stamp == "future":
        obj["ts"] = time.time() + 3600
    elif stamp == "now":
        obj["ts"] = time.time()
    elif stamp is not None:
        obj["ts"] = stamp
    for key in draw(st.lists(st.sampled_from(
        ["protocol", "motor_threshold", "patient_ref", "reason", "extra", "id2"]
    ), max_size=4, unique=True)):
        obj[key] = draw(json_values)
    return obj


def deeply_nested(depth: int) -> bytes:
    return b'{"id":"fz-deep","protocol":' + b"[" * depth + b"]" * depth + b"}"


@st.composite
def plain_commands(draw: st.DrawFn) -> dict[str, Any]:
    """Well-formed but for the state or the clock: repeats, stale and future stamps."""
    obj: dict[str, Any] = {"id": draw(st.sampled_from(ID_POOL))}
    stamp = draw(st.sampled_from([None, "stale", "future", "now"]))
    if stamp is not None:
        obj["ts"] = time.time() + {"stale": -3600, "future": 3600, "now": 0}[stamp]
    if draw(st.booleans()):
        obj["reason"] = draw(odd_text)
    return obj


raw_payloads = st.one_of(
    plain_commands().map(lambda o: json.dumps(o).encode()),
    command_objects().map(lambda o: json.dumps(o).encode()),
    st.binary(max_size=200),
    command_objects().map(lambda o: json.dumps(o).encode()[: max(1, len(json.dumps(o)) // 2)]),
    st.sampled_from([
        b'{"id": "fz-nan", "ts": NaN}', b'{"id": "fz-inf", "ts": Infinity}',
        b'{"id": "fz-ninf", "ts": -Infinity}', b'{"id": "fz-big", "ts": 1e400}',
        b'{"id": "fz-dup", "id": "fz-dup2"}', b"[]", b"null", b'"stop"', b"",
        b'{"id": "fz-bom"}'.join([b"\xef\xbb\xbf", b""]), b"\xff\xfe{}",
        deeply_nested(5000), deeply_nested(100),
        b'{"id": "fz-huge", "reason": "' + b"x" * 70_000 + b'"}',
        b'{"id": "fz-wide", "protocol": {' + b",".join(
            b'"k%d": %d' % (i, i) for i in range(5000)) + b"}}",
    ]),
)
verbs = st.one_of(
    st.sampled_from([v.value for v in Verb]),
    st.sampled_from(["fire", "STOP", "stop/now", "arm/../start", "", "heartbeat/x/y"]),
)


def check_reply(reply: Any, where: str) -> str:
    """A structured reply: returns its error code, or "ok"."""
    assert isinstance(reply, dict), f"{where}: reply is not a JSON object: {reply!r}"
    assert set(reply) >= {"id", "ok", "state"}, f"{where}: reply keys {sorted(reply)}"
    assert isinstance(reply["ok"], bool) and isinstance(reply["state"], str), where
    if reply["ok"]:
        return "ok"
    error = reply.get("error")
    assert isinstance(error, dict), f"{where}: refused without an error object: {reply}"
    assert error.get("code") in ERROR_CODES, f"{where}: unstable error code {error}"
    assert isinstance(error.get("message"), str) and error["message"], where
    return str(error["code"])


@dataclass
class FuzzRun:
    stack: Stack
    op: Operator
    rss_before_kb: int
    sent: int = 0
    codes: dict[str, int] = field(default_factory=dict)

    async def send(self, topic: str, payload: bytes) -> str:
        """Publish one message and return the code of the reply it gets."""
        mark = len(self.op.seen)
        await self.op.client.publish(topic, payload, qos=1)
        self.sent += 1
        prefix = f"stimd/{DEVICE_ID}/reply/{OPERATOR}/"
        seen = await self.op.wait_for(lambda s: s.topic.startswith(prefix),
                                      REPLY_TIMEOUT_S, start=mark)
        code = check_reply(seen.payload, f"{topic} {payload[:80]!r}")
        self.codes[code] = self.codes.get(code, 0) + 1
        return code

    async def finish(self, name: str) -> None:
        stack = self.stack
        beat = await self.op.command("heartbeat")
        assert beat["ok"], f"the daemon stopped answering: {beat}"
        assert stack.daemon.running, "the daemon died"
        rss_after = rss_kb(stack.daemon.pid)
        pulses = stack.pulse_count()
        armed_ever = len(stack.sim.events("armed"))
        write_result(f"fuzz-{name}", {
            "messages": self.sent, "reply_codes": self.codes,
            "rss_before_kb": self.rss_before_kb, "rss_after_kb": rss_after,
            "pulses": pulses, "armed": armed_ever,
            "passed": pulses == 0 and armed_ever == 0
            and rss_after - self.rss_before_kb <= MAX_RSS_GROWTH_KB,
            "finished_at": time.time(),
        })
        assert pulses == 0 and armed_ever == 0, "fuzzing made the device arm or fire"
        assert rss_after - self.rss_before_kb <= MAX_RSS_GROWTH_KB, (
            f"daemon RSS grew {rss_after - self.rss_before_kb} kB"
        )


@pytest.fixture
async def fuzz_run(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[FuzzRun]:
    """One stack for all examples of a test; the invariants over the whole run are
    checked (and the volume recorded) when the test is done."""
    # a generous rate limit, so that the fuzz reaches validation instead of the bucket
    extra = {"command_rate_per_s": 1000.0, "command_burst": 1000}
    async with running_stack(tmp_path / "stack", mqtt_extra=extra) as stack, \
            operator_client(stack.broker) as op:
        await op.wait_online()
        run = FuzzRun(stack, op, rss_kb(stack.daemon.pid))
        yield run
        name = request.node.originalname.removeprefix("test_")
        await run.finish(name)


FUZZ_SETTINGS = settings(
    deadline=None, database=None,
    # one daemon serves every example: that is the point (it must survive them all)
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
)


def payload_test(examples: int) -> Any:
    @settings(FUZZ_SETTINGS, max_examples=examples)
    @given(verb=verbs, payload=raw_payloads)
    async def test(fuzz_run: FuzzRun, verb: str, payload: bytes) -> None:
        await fuzz_run.send(f"stimd/{DEVICE_ID}/cmd/{OPERATOR}/{verb}", payload)

    return test


test_fuzzed_payloads_get_structured_replies = payload_test(EXAMPLES)
test_soak_fuzzed_payloads = pytest.mark.soak(
    pytest.mark.timeout(SOAK_TIMEOUT_S)(payload_test(SOAK_EXAMPLES)))


# Levels the broker passes on: MQTT forbids control characters and non-characters in
# topics (mosquitto drops a client sending them), and '+', '#', '/' are syntax.
topic_levels = st.lists(
    st.text(
        alphabet=st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Cn", "Co"),
                               exclude_characters="+#/"),
        max_size=12,
    ),
    min_size=0, max_size=4,
)


def topic_test(examples: int) -> Any:
    @settings(FUZZ_SETTINGS, max_examples=examples)
    @given(levels=topic_levels)
    async def test(fuzz_run: FuzzRun, levels: list[str]) -> None:
        topic = "/".join([f"stimd/{DEVICE_ID}/cmd/{OPERATOR}", *levels])
        payload = json.dumps({"id": f"topic-{fuzz_run.sent}"}).encode()
        code = await fuzz_run.send(topic, payload)
        if "/".join(levels) not in {v.value for v in Verb}:
            assert code == "UNKNOWN_VERB", f"{topic!r} answered {code}"

    return test


test_fuzzed_topic_levels_are_unknown_verbs = topic_test(TOPIC_EXAMPLES)
test_soak_fuzzed_topic_levels = pytest.mark.soak(
    pytest.mark.timeout(SOAK_TIMEOUT_S)(topic_test(SOAK_TOPIC_EXAMPLES)))
