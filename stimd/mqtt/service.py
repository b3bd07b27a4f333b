"""The daemon's MQTT interface: commands in, replies, events, state and status out.

Two broker connections, one transport. The main connection carries everything (status
with the Last Will, meta, state, events, commands, replies); the stop connection
subscribes to nothing but ``cmd/+/stop`` and answers stops itself. The broker queues
messages per connection and drops what exceeds ``max_queued_messages``, and the daemon
reads one packet per event-loop turn, so a flood of other commands can fill the main
connection's queue at the broker — but never the stop connection's. Stops that come in
on the main connection are only used as fences (``StopFence``): they tell when the main
connection has caught up with a stop, so an arming command sent before the stop cannot
run after it.

Lifetimes: the command workers and the event numbering live as long as the service; one
pair of connections at a time lives inside them, and losing either is losing the
transport. Then the daemon is told (``transport_lost``: finish the train, start no new
one, pause), ordinary commands still waiting are dropped unexecuted — they would
otherwise run late — and the service reconnects both with backoff. Waiting ``stop``
commands are kept: a late stop is still safe. After a reconnect the retained topics are
republished and the session stays paused until an operator sends ``resume``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Collection, Coroutine
from dataclasses import dataclass
from typing import Any

import aiomqtt
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic_core import to_json

from stimd.commands import (
    CommandBase,
    CommandError,
    CommandTarget,
    ErrorCode,
    Event,
    Reply,
    Verb,
)
from stimd.mqtt.admission import FairQueue, Lane, PriorityOutbox, TokenBucket
from stimd.mqtt.config import MqttConfig
from stimd.mqtt.connection import build_client, nodelay_enabled
from stimd.mqtt.decode import (
    PayloadRejected,
    parse_json_object,
    read_command_id,
    validate_command,
    verb_of,
)
from stimd.mqtt.ingress import FairIngress, StopIngress
from stimd.mqtt.io import publish, raise_if_cancelling, subscribe
from stimd.mqtt.payloads import EventMessage, StatusPayload
from stimd.mqtt.replay import InFlight, ReplayCache
from stimd.mqtt.stop_fence import StopFence, StopKey
from stimd.mqtt.topics import DeviceTopics

log = structlog.get_logger("stimd.mqtt")

QOS = 1
#: Events kept while the broker is away; older ones are dropped and the seq gap shows it.
EVENT_BACKLOG = 1000
#: Messages each client buffers before our reader takes them; the reader only parses.
#: On the main connection a flood beyond it is dropped fairly (``FairIngress``); the stop
#: connection's buffer holds only stops (``StopIngress``).
INCOMING_BUFFER = 256
#: The stop connection's client id is the main one's with this suffix.
STOP_CLIENT_SUFFIX = "-stop"
#: Stops whose two copies (one per connection) are not paired yet; beyond it the oldest
#: is forgotten. Far above any real backlog: only a flood of stops with fresh ids gets there.
STOP_FENCE_CAPACITY = 4096
#: Distinct command senders tracked when the daemon was given no operator list.
MAX_UNLISTED_SENDERS = 64
#: Seconds a goodbye ``status`` publish may take during shutdown.
GOODBYE_TIMEOUT_S = 1.0
#: Verbs that can energise the coil: a stop cancels those still waiting in the queue.
ENERGIZING_VERBS = frozenset({Verb.ARM, Verb.START, Verb.RESUME})
#: ``state`` values during which the snapshot is republished at the steady rate.
STEADY_STATES = frozenset({"ARMED", "RUNNING", "PAUSED"})


@dataclass(frozen=True, slots=True)
class ReplyRoute:
    """Where a command's answer goes: its reply topic and, for MQTT 5, the requester's."""

    topic: str
    response_topic: str | None = None
    correlation_data: bytes | None = None


def lane_of(verb: Verb) -> Lane:
    return Lane.STOP if verb is Verb.STOP else Lane.ORDINARY


@dataclass(frozen=True, slots=True)
class Answer:
    """A reply to send: a command's result, or one known without executing anything."""

    user: str
    route: ReplyRoute
    reply: Reply
    lane: Lane = Lane.ORDINARY  # STOP: goes out on the stop connection


@dataclass(frozen=True, slots=True)
class PendingCommand:
    user: str
    verb: Verb
    command: CommandBase
    route: ReplyRoute
    deadline: float  # monotonic seconds; past it the command is EXPIRED, not executed


def _response_route(default_topic: str, properties: Properties | None) -> ReplyRoute:
    if properties is None:
        return ReplyRoute(default_topic)
    response_topic = getattr(properties, "ResponseTopic", None)
    correlation = getattr(properties, "CorrelationData", None)
    if not isinstance(response_topic, str) or not response_topic or any(
        c in response_topic for c in "+#\x00"
    ):
        response_topic = None
    if not isinstance(correlation, bytes):
        correlation = None
    return ReplyRoute(default_topic, response_topic, correlation)


def _message_expiry(properties: Properties | None) -> float | None:
    value = getattr(properties, "MessageExpiryInterval", None) if properties else None
    return float(value) if isinstance(value, int) else None


def session_state(snapshot: dict[str, Any]) -> str:
    """The session state named in a ``state`` snapshot (for replies the daemon never saw)."""
    value = snapshot.get("state")
    return value if isinstance(value, str) else "UNKNOWN"


class MqttService:
    """One device's MQTT interface; ``run`` until cancelled."""

    def __init__(
        self,
        config: MqttConfig,
        target: CommandTarget,
        *,
        device_id: str,
        boot_id: str,
        version: str,
        meta: dict[str, Any],
        lifecycle: Callable[[], str],
        operators: Collection[str] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._target = target
        self._topics = DeviceTopics(device_id)
        self._boot_id = boot_id
        self._version = version
        self._meta = meta
        self._lifecycle = lifecycle
        self._operators = frozenset(operators) if operators is not None else None
        self._monotonic = monotonic
        self._wall_clock = wall_clock
        self._client_id = config.client_id or f"stimd-{device_id}"
        self._stop_client_id = self._client_id + STOP_CLIENT_SUFFIX
        self._io_timeout = config.io_timeout_s

        self._client: aiomqtt.Client | None = None
        self._stop_client: aiomqtt.Client | None = None
        self._loss_reported = False
        self._lanes: dict[Lane, FairQueue[PendingCommand]] = {
            Lane.STOP: FairQueue(config.queue_depth),
            Lane.ORDINARY: FairQueue(config.queue_depth),
        }
        self._buckets: dict[str, TokenBucket] = {}
        self._replay = ReplayCache(config.replay_cache_size)
        self._outbox: PriorityOutbox[Answer] = PriorityOutbox(2 * config.queue_depth)
        self._stop_outbox: PriorityOutbox[Answer] = PriorityOutbox(2 * config.queue_depth)
        self._fence = StopFence(config.max_command_age_s, STOP_FENCE_CAPACITY)

        self._seq = 0
        self._events: deque[tuple[str, bytes]] = deque()
        self._events_ready = asyncio.Event()
        self._state_dirty = asyncio.Event()

    # ------------------------------------------------------------------ lifetime

    async def run(self) -> None:
        self._target.add_listener(self._on_event)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._work(Lane.STOP), name="mqtt-stop-lane")
            tg.create_task(self._work(Lane.ORDINARY), name="mqtt-command-lane")
            tg.create_task(self._stay_connected(), name="mqtt-connection")

    async def _stay_connected(self) -> None:
        attempt = 0
        while True:
            reason = await self._one_connection()
            if reason is None:
                attempt += 1
            else:
                attempt = 1
            delay = self._config.backoff(attempt - 1)
            log.info("mqtt_reconnect_scheduled", delay_s=round(delay, 3), attempt=attempt)
            await asyncio.sleep(delay)

    async def _one_connection(self) -> str | None:
        """Connect both and serve; returns why the transport was lost, or None if it never
        came up."""
        will = aiomqtt.Will(
            self._topics.status, self._status_payload(online=False, lifecycle="lost"),
            qos=QOS, retain=True,
        )
        try:
            client = build_client(
                self._config, client_id=self._client_id, will=will,
                max_queued_incoming=INCOMING_BUFFER, queue_type=FairIngress,
            )
            stop_client = build_client(
                self._config, client_id=self._stop_client_id,
                max_queued_incoming=INCOMING_BUFFER, queue_type=StopIngress,
            )
        except (OSError, ValueError) as exc:
            log.error("mqtt_client_unusable", error=str(exc), host=self._config.host)
            return None
        log.info("mqtt_connecting", host=self._config.host, port=self._config.port,
                 client_id=self._client_id, stop_client_id=self._stop_client_id,
                 tls=self._config.tls)
        reason: str | None = None
        self._loss_reported = False
        try:
            # The stop connection first: by the time the main connection says "online",
            # a stop can no longer be held up behind other commands.
            async with stop_client:
                raise_if_cancelling()  # the connect may have absorbed a cancellation
                await subscribe(stop_client, self._topics.stop_filter, within_s=self._io_timeout)
                async with client:
                    reason = "connection closed while subscribing"
                    raise_if_cancelling()
                    await subscribe(
                        client, self._topics.command_filter, within_s=self._io_timeout
                    )
                    for name, connected in (("main", client), ("stop", stop_client)):
                        if not nodelay_enabled(connected):
                            log.warning("mqtt_tcp_nodelay_missing", connection=name,
                                        effect="slow command round trips")
                    reason = await self._serve_connection(client, stop_client)
        except (aiomqtt.MqttError, TimeoutError) as exc:
            problem = str(exc) or type(exc).__name__
            if reason is None:
                log.warning("mqtt_connect_failed", error=problem)
                return None
            reason = f"{reason} ({problem})"
        return self._link_lost(reason)

    async def _serve_connection(
        self, client: aiomqtt.Client, stop_client: aiomqtt.Client
    ) -> str:
        """Serve one live pair of connections until either breaks; returns why."""
        broken: asyncio.Future[tuple[aiomqtt.Client, str]] = (
            asyncio.get_running_loop().create_future()
        )

        async def guard(
            connection: aiomqtt.Client, name: str, job: Coroutine[Any, Any, None]
        ) -> None:
            try:
                await job
            except (aiomqtt.MqttError, TimeoutError) as exc:
                if not broken.done():
                    broken.set_result((connection, f"{name}: {exc or type(exc).__name__}"))

        self._client = client
        self._stop_client = stop_client
        log.info("mqtt_connected", device_topic=self._topics.base,
                 stop_topic=self._topics.stop_filter)
        try:
            async with asyncio.TaskGroup() as tg:
                jobs = [
                    (client, "reading commands", self._read(client, self.take_main)),
                    (client, "publishing state", self._publish_state(client)),
                    (client, "publishing events", self._publish_events(client)),
                    (client, "publishing replies", self._publish_replies(client, self._outbox)),
                    (client, "state clock", self._tick()),
                    (stop_client, "stop connection: reading stops",
                     self._read(stop_client, self.take_stop)),
                    (stop_client, "stop connection: publishing replies",
                     self._publish_replies(stop_client, self._stop_outbox)),
                ]
                tasks = [tg.create_task(guard(connection, name, job), name=f"mqtt-{name}")
                         for connection, name, job in jobs]
                failed, reason = await broken
                self._link_lost(reason)  # at once: the daemon must not wait for teardown
                for task in tasks:
                    task.cancel()
            if failed is stop_client:
                await self._say_lost(client)
        except asyncio.CancelledError:
            await self._say_goodbye(client)
            raise
        finally:
            self._client = None
            self._stop_client = None
        return reason

    def _link_lost(self, reason: str) -> str:
        """Tell the daemon, once per pair of connections, and drop what must not run
        late."""
        self._client = None
        self._stop_client = None
        if self._loss_reported:
            return reason
        self._loss_reported = True
        dropped = self._lanes[Lane.ORDINARY].drain()
        for item in dropped:
            self._replay.forget(item.user, item.command.id)
        self._outbox.drain()
        self._stop_outbox.drain()
        self._fence.clear()  # the next session starts empty: nothing older can arrive
        log.warning(
            "mqtt_link_lost", reason=reason, dropped_commands=len(dropped),
            kept_stops=len(self._lanes[Lane.STOP]),
        )
        self._target.transport_lost(f"broker connection lost: {reason}")
        return reason

    async def _say_lost(self, client: aiomqtt.Client) -> None:
        """The stop connection broke but the main one still works, and closing it cleanly
        would suppress the Last Will: publish what the Will would have said."""
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
            await publish(
                client, self._topics.status,
                self._status_payload(online=False, lifecycle="lost"),
                retain=True, within_s=GOODBYE_TIMEOUT_S,
            )

    async def _say_goodbye(self, client: aiomqtt.Client) -> None:
        """Clean stop: say offline ourselves; the Will only covers unclean ends."""
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
            await publish(
                client, self._topics.status,
                self._status_payload(online=False, lifecycle=self._lifecycle()),
                retain=True, within_s=GOODBYE_TIMEOUT_S,
            )
            log.info("mqtt_offline_published")

    # ------------------------------------------------------------------ outgoing

    def _status_payload(self, *, online: bool, lifecycle: str) -> bytes:
        return StatusPayload(
            online=online, lifecycle=lifecycle, boot_id=self._boot_id, version=self._version,
            ts=self._wall_clock(),
        ).model_dump_json().encode()

    def _on_event(self, event: Event) -> None:
        """Called by the daemon, in order, for every event: number it and queue it."""
        self._state_dirty.set()
        if event.type == "state_changed":
            return  # carried by the retained state topic, not an evt topic
        self._seq += 1
        envelope = EventMessage(
            type=event.type, boot_id=self._boot_id, seq=self._seq, ts=self._wall_clock(),
            payload=event.payload,
        )
        if len(self._events) >= EVENT_BACKLOG:
            dropped_topic, _ = self._events.popleft()
            log.warning("mqtt_event_dropped", topic=dropped_topic, backlog=EVENT_BACKLOG)
        self._events.append((self._topics.event(event.type), to_json(envelope)))
        self._events_ready.set()

    async def _publish_events(self, client: aiomqtt.Client) -> None:
        # An event leaves the backlog only once the broker acknowledged it, so a lost
        # link resends it after the reconnect (at least once; seq lets readers dedupe).
        while True:
            if not self._events:
                self._events_ready.clear()
                await self._events_ready.wait()
                continue
            topic, payload = self._events[0]
            await publish(client, topic, payload, within_s=self._io_timeout)
            if self._events and self._events[0][1] is payload:
                self._events.popleft()

    async def _publish_state(self, client: aiomqtt.Client) -> None:
        """Retained topics: all three on connect, then state on change and while active."""
        lifecycle = self._lifecycle()
        snapshot = self._target.snapshot()
        state = to_json(snapshot)
        for topic, payload in (
            (self._topics.status, self._status_payload(online=True, lifecycle=lifecycle)),
            (self._topics.meta, to_json(self._meta)),
            (self._topics.state, state),
        ):
            await publish(client, topic, payload, retain=True, within_s=self._io_timeout)
        while True:
            await self._state_dirty.wait()
            self._state_dirty.clear()
            snapshot = self._target.snapshot()
            payload = to_json(snapshot)
            if payload != state or session_state(snapshot) in STEADY_STATES:
                await publish(
                    client, self._topics.state, payload, retain=True, within_s=self._io_timeout
                )
                state = payload
            now = self._lifecycle()
            if now != lifecycle:
                await publish(
                    client, self._topics.status,
                    self._status_payload(online=True, lifecycle=now),
                    retain=True, within_s=self._io_timeout,
                )
                lifecycle = now

    async def _tick(self) -> None:
        # A plain sleep, not a timeout around the event wait: asyncio.timeout in 3.11 can
        # swallow a cancellation that lands in the same loop iteration as its expiry.
        while True:
            await asyncio.sleep(self._config.state_interval_s)
            self._state_dirty.set()

    def _post_reply(self, answer: Answer, *, executed: bool) -> None:
        """Hand a reply to its connection's sender; never waits on the network.

        Stop replies leave on the stop connection: on the main one they could wait for
        the broker's acknowledgement of a refusal sent to a flooding operator."""
        if answer.lane is Lane.STOP:
            client, outbox = self._stop_client, self._stop_outbox
        else:
            client, outbox = self._client, self._outbox
        if client is None:
            log.warning("mqtt_reply_undeliverable", user=answer.user, id=answer.reply.id,
                        reason="broker connection down; a repeat of the id gets it")
        elif outbox.put(answer.user, answer, first=executed) is not None:
            log.warning("mqtt_reply_dropped", user=answer.user, id=answer.reply.id,
                        reason="reply queue full")

    async def _publish_replies(
        self, client: aiomqtt.Client, outbox: PriorityOutbox[Answer]
    ) -> None:
        while True:
            answer = await outbox.get()
            route = answer.route
            payload = answer.reply.model_dump_json().encode()
            properties: Properties | None = None
            if route.correlation_data is not None:
                properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                properties.CorrelationData = route.correlation_data
            topics = [route.topic]
            if route.response_topic is not None and route.response_topic != route.topic:
                topics.append(route.response_topic)
            for topic in topics:
                await publish(
                    client, topic, payload, properties=properties, within_s=self._io_timeout
                )

    # ------------------------------------------------------------------ incoming

    async def _read(
        self,
        client: aiomqtt.Client,
        take: Callable[[str, bytes, Properties | None], Answer | None],
    ) -> None:
        """Hand every incoming message to ``take``; raises MqttError when the link goes."""
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else b""
            answer = take(message.topic.value, payload, message.properties)
            if answer is not None:
                self._post_reply(answer, executed=False)

    def take_main(
        self, topic: str, payload: bytes, properties: Properties | None
    ) -> Answer | None:
        """A message of the main connection: a stop there is only the fence's copy (the
        stop connection executes and answers it); anything else is admitted."""
        if self._topics.is_stop_command(topic):
            key = self._stop_key(topic, payload)
            if key is not None:
                self._fence.main_copy(key, self._monotonic())
            return None
        return self.admit(topic, payload, properties)

    def take_stop(
        self, topic: str, payload: bytes, properties: Properties | None
    ) -> Answer | None:
        """A message of the stop connection (its subscription admits only stops)."""
        answer = self.admit(topic, payload, properties)
        key = self._stop_key(topic, payload)
        if key is not None:
            self._fence.stop_lane_copy(key, self._monotonic(), executes=answer is None)
        return answer

    def _stop_key(self, topic: str, payload: bytes) -> StopKey | None:
        """Who sent a stop and its id, when both can be read: pairs the two copies."""
        parsed = self._topics.parse_command(topic)
        if parsed is None:
            return None
        try:
            command_id = read_command_id(
                parse_json_object(payload, self._config.max_payload_bytes)
            )
        except PayloadRejected:
            return None
        return None if command_id is None else (parsed.user, command_id)

    def admit(
        self, topic: str, payload: bytes, properties: Properties | None
    ) -> Answer | None:
        """Queue a command, or return the answer it gets right away (refusals, repeats)."""
        parsed = self._topics.parse_command(topic)
        if parsed is None:
            log.warning("mqtt_command_topic_unusable", topic=topic[:200])
            return None
        user = parsed.user
        now = self._monotonic()
        answer_lane = Lane.STOP if self._topics.is_stop_command(topic) else Lane.ORDINARY
        route = _response_route(self._topics.reply(user, None), properties)
        command_id: str | None = None
        try:
            obj = parse_json_object(payload, self._config.max_payload_bytes)
            command_id = read_command_id(obj)
            if command_id is None:
                raise PayloadRejected(
                    ErrorCode.INVALID_PAYLOAD,
                    "id: missing or malformed (1-128 characters of A-Z a-z 0-9 . _ : -)",
                )
            route = ReplyRoute(
                self._topics.reply(user, command_id), route.response_topic,
                route.correlation_data,
            )
            self._check_sender(user)
            remembered = self._replay.lookup(user, command_id)
            if remembered is InFlight.MARK:
                raise PayloadRejected(
                    ErrorCode.DUPLICATE,
                    f"command id {command_id!r} is already being executed; its reply will "
                    f"follow on {route.topic}",
                )
            if isinstance(remembered, Reply):
                log.info("mqtt_command_repeated", user=user, id=command_id)
                return Answer(user, route, remembered, answer_lane)
            verb = verb_of(parsed.verb)
            if verb is None:
                raise PayloadRejected(
                    ErrorCode.UNKNOWN_VERB,
                    f"unknown verb {parsed.verb[:64]!r}; verbs are "
                    + ", ".join(v.value for v in Verb),
                )
            lane = lane_of(verb)
            if lane is Lane.ORDINARY and not self._bucket(user, now).take(now):
                raise PayloadRejected(
                    ErrorCode.RATE_LIMITED,
                    f"operator {user!r} exceeds command_rate_per_s "
                    f"{self._config.command_rate_per_s} (burst {self._config.command_burst})",
                )
            command = validate_command(payload, verb)
            deadline = self._deadline(command, properties, now)
            if verb in ENERGIZING_VERBS:
                fenced = self._fenced_out(user, verb, command_id, now)
                if fenced is not None:
                    return Answer(user, route, fenced, answer_lane)
            pending = PendingCommand(user, verb, command, route, deadline)
            self._replay.begin(user, command_id)
            refusal = self._lanes[lane].put(user, pending)
            if refusal is not None:
                self._replay.forget(user, command_id)
                raise PayloadRejected(ErrorCode.RATE_LIMITED, refusal.reason)
        except PayloadRejected as rejected:
            log.info("mqtt_command_refused", user=user, id=command_id, verb=parsed.verb[:64],
                     code=rejected.code.value, reason=rejected.message)
            return Answer(user, route, self._refusal(command_id, rejected), answer_lane)
        log.info("mqtt_command_queued", user=user, id=command_id, verb=verb.value)
        if verb is Verb.STOP:
            self._supersede_queued(user, command_id)
        return None

    def _supersede_queued(self, stopper: str, stop_id: str) -> None:
        """A stop cancels the arming commands still waiting: they were sent before it, and
        running them after it would undo it (start, start, stop must fire nothing)."""
        superseded = self._lanes[Lane.ORDINARY].remove_if(
            lambda item: item.verb in ENERGIZING_VERBS
        )
        for item in superseded:
            log.warning("mqtt_command_superseded_by_stop", user=item.user, id=item.command.id,
                        verb=item.verb.value, stop_id=stop_id, stopped_by=stopper)
            reply = self._refusal(item.command.id, PayloadRejected(
                ErrorCode.WRONG_STATE,
                f"{item.verb.value} was still waiting when stop {stop_id!r} from "
                f"{stopper!r} arrived: not executed (send it again to proceed)",
            ))
            self._replay.finish(item.user, item.command.id, reply)
            self._post_reply(Answer(item.user, item.route, reply), executed=True)

    def _fenced_out(
        self, user: str, verb: Verb, command_id: str, now: float
    ) -> Reply | None:
        """The refusal of an arming command that was sent before an executed stop but
        arrived after it (see ``StopFence``); remembered like a superseded command's."""
        holder = self._fence.holder(now)
        if holder is None:
            return None
        stopper, stop_id = holder
        log.warning("mqtt_command_superseded_by_stop", user=user, id=command_id,
                    verb=verb.value, stop_id=stop_id, stopped_by=stopper, in_transit=True)
        reply = self._refusal(command_id, PayloadRejected(
            ErrorCode.WRONG_STATE,
            f"{verb.value} was sent before stop {stop_id!r} from {stopper!r} and arrived "
            "after it: not executed (send it again to proceed)",
        ))
        self._replay.finish(user, command_id, reply)
        return reply

    def _check_sender(self, user: str) -> None:
        if self._operators is not None and user not in self._operators:
            raise PayloadRejected(
                ErrorCode.NOT_AUTHORIZED, f"{user!r} is not a configured operator of this device"
            )
        if (
            self._operators is None
            and user not in self._buckets
            and len(self._buckets) >= MAX_UNLISTED_SENDERS
        ):
            raise PayloadRejected(
                ErrorCode.NOT_AUTHORIZED,
                f"too many distinct senders (limit {MAX_UNLISTED_SENDERS}); {user!r} refused",
            )

    def _bucket(self, user: str, now: float) -> TokenBucket:
        bucket = self._buckets.get(user)
        if bucket is None:
            bucket = self._buckets[user] = TokenBucket(
                self._config.command_rate_per_s, self._config.command_burst, now
            )
        return bucket

    def _deadline(
        self, command: CommandBase, properties: Properties | None, now: float
    ) -> float:
        limit = self._config.max_command_age_s
        deadline = now + limit
        if command.ts is not None:
            age = self._wall_clock() - command.ts
            if age > limit:
                raise PayloadRejected(
                    ErrorCode.EXPIRED,
                    f"ts: command is {age:.1f} s old; the limit (max_command_age_s) is {limit} s",
                )
            if -age > limit:
                raise PayloadRejected(
                    ErrorCode.INVALID_PAYLOAD,
                    f"ts: {command.ts} is {-age:.1f} s in the future; clocks differ by more "
                    f"than max_command_age_s {limit} s",
                )
            deadline = min(deadline, now + limit - age)
        expiry = _message_expiry(properties)
        if expiry is not None:
            deadline = min(deadline, now + expiry)
        return deadline

    def _refusal(self, command_id: str | None, rejected: PayloadRejected) -> Reply:
        return Reply(
            id=command_id, ok=False, state=session_state(self._target.snapshot()),
            error=CommandError(
                code=rejected.code, message=rejected.message, details=rejected.details
            ),
        )

    # ------------------------------------------------------------------ execution

    async def _work(self, lane: Lane) -> None:
        queue = self._lanes[lane]
        while True:
            item = await queue.get()
            reply = await self._execute(item)
            self._replay.finish(item.user, item.command.id, reply)
            self._post_reply(Answer(item.user, item.route, reply, lane), executed=True)

    async def _execute(self, item: PendingCommand) -> Reply:
        late_by = self._monotonic() - item.deadline
        if late_by > 0:
            log.warning("mqtt_command_expired_in_queue", user=item.user, id=item.command.id,
                        verb=item.verb.value, late_by_s=round(late_by, 3))
            return self._refusal(item.command.id, PayloadRejected(
                ErrorCode.EXPIRED,
                f"command waited past its deadline by {late_by:.3f} s and was not executed",
            ))
        log.info("mqtt_command_executing", user=item.user, id=item.command.id,
                 verb=item.verb.value)
        try:
            outcome = await self._target.execute(item.user, item.command, item.verb)
        except Exception as exc:
            # The daemon promised never to raise; answer the operator, then let the
            # failure reach the daemon's task group (its supervisor latches FAULT).
            log.exception("mqtt_command_crashed", user=item.user, id=item.command.id)
            self._post_reply(Answer(item.user, item.route, self._refusal(
                item.command.id, PayloadRejected(
                    ErrorCode.INTERNAL, f"the daemon failed executing {item.verb.value}: {exc!r}"
                ),
            ), lane_of(item.verb)), executed=True)
            raise
        return Reply(id=item.command.id, ok=outcome.ok, state=outcome.state,
                     result=outcome.result, error=outcome.error)


async def serve_mqtt(
    config: MqttConfig,
    target: CommandTarget,
    *,
    device_id: str,
    boot_id: str,
    version: str,
    meta: dict[str, Any],
    lifecycle: Callable[[], str],
    operators: Collection[str] | None = None,
) -> None:
    """Run the MQTT interface of one device until cancelled.

    ``operators``: the configured operator names; commands from anyone else are refused
    with NOT_AUTHORIZED here already (the daemon checks too). On cancellation ``status``
    is published ``online: false`` and the connection is closed cleanly.
    """
    service = MqttService(
        config, target, device_id=device_id, boot_id=boot_id, version=version, meta=meta,
        lifecycle=lifecycle, operators=operators,
    )
    await service.run()
