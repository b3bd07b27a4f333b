"""The session controller: the only object that changes session state.

Commands arrive through ``execute`` (the ``CommandTarget`` contract); the session's
trains run in one runner task; the device is polled by one poller task; anomalies go to
the ``SafetySupervisor``, which disarms and then calls back ``_latch_fault``. Every
transition is logged and written to the session record before it is announced.

Concurrency rules, so that a pulse never leaves on a stale decision:
- commands are serialised by a lock, except ``stop`` (it disarms before waiting for the
  lock, so a slow command cannot delay it), ``heartbeat`` and ``resync`` (read-only);
- the runner checks ``supervisor.inhibited`` right before each fire command, and is
  cancelled by stop and by the latch;
- a command that awaited the device re-checks the stop epoch and the latch before it
  changes state.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from drivers.base import DeviceIdentity, DeviceStatus, Stimulator
from drivers.errors import DriverError
from protocols.capabilities import DeviceCapabilities
from protocols.schedule import TrainSpec
from stimd.commands import (
    CommandBase,
    CommandError,
    CommandOutcome,
    ErrorCode,
    Event,
    LoadCommand,
    ResetCommand,
    Verb,
)
from stimd.config import StimdConfig
from stimd.interlocks import (
    CoilThermalPredictor,
    InterlockResult,
    LoadedPlan,
    Planner,
    PlanRejected,
    PlanUnusable,
    ThermalLimits,
    coil_present,
    coil_temperature,
    operator_present,
)
from stimd.record import RecordError, SessionRecord
from stimd.scheduler import (
    FiredTrain,
    earliest_fire_ns,
    monotonic_ns,
    remaining_us,
    shifted_anchor_ns,
    train_end_bound_ns,
    wait_until,
    wait_until_exactly,
)
from stimd.states import (
    ACTIVE_STATES,
    SessionState,
    allowed_verbs,
    check_transition,
    verb_allowed,
)
from stimd.supervisor import (
    SafetySupervisor,
    StatusLimits,
    TripCause,
    TripCode,
    status_anomaly,
    trip_code_for,
)

log = structlog.get_logger("stimd.controller")

S = SessionState
DriverFactory = Callable[[], Stimulator]

# Bounds on the daemon's own device calls beyond what the driver bounds itself: the
# handshake includes the Rapid's remote-control and version exchange at 9600 baud.
_CONNECT_TIMEOUT_S = 10.0
_CLOSE_TIMEOUT_S = 3.0
# Magstim arming takes ~1 s plus recharge; the driver returns when the unit is ready.
_ARM_TIMEOUT_S = 10.0
_PRESENCE_TICK_S = 0.1
#: Status poll periods beyond ``status_poll_interval_s`` (see ``_poll_interval_s``).
TRAIN_POLL_S = 2.0
IDLE_POLL_S = 3.0
#: The work before a train — interlocks (one status read, ≈ 40 ms at 9600 baud on a
#: Rapid), configuring, the write-ahead intent — is done this long before its onset, so
#: the fire command leaves on time. Below the keep-alive's 0.4 s armed period: the
#: status read renews the unit, and no keep-alive falls due between it and the fire.
ONSET_LEAD_NS = 250_000_000
#: The status poller stays off the line from this long before the lead window until the
#: fire command went out, so that the fire command never queues behind a poll (a
#: Rapid's full status read is ≈ 40 ms on the line; a loaded host adds to that).
_POLL_QUIET_NS = 150_000_000
#: The write-ahead intent is made durable this long before the onset (an SQLite commit
#: with its fsync, on a busy disk). From then on the train is committed: a pause asked
#: for in these last milliseconds is honoured after it, like one asked for mid-train (a
#: stop or trip still ends the runner before the fire command).
INTENT_LEAD_NS = 30_000_000
#: A Magstim unit disarms itself after 60 s armed without firing; the daemon disarms first
#: (back to LOADED, plan kept) so that waiting operators do not turn into a FAULT.
ARMED_IDLE_LIMIT_S = 45.0
_PAUSE_SETTLE_S = 2.0


class HandshakeFailed(Exception):
    """The first device handshake failed: the daemon cannot serve this device."""


class _Anomaly(Exception):
    """Something the daemon itself found wrong (not a driver error): trips with ``code``."""

    def __init__(self, code: TripCode, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


class _Refused(Exception):
    """A command the controller declines; becomes a CommandOutcome with this error."""

    def __init__(self, code: ErrorCode, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


@dataclass(slots=True)
class ActiveSession:
    """The session being delivered: its record id and how far it got."""

    session_id: int
    operator: str            # who started it (the record's operator)
    plan: LoadedPlan
    start_ns: int            # the session's time origin (actual onsets are recorded from it)
    #: the schedule's anchor: planned onsets count from here; late trains move it
    anchor_ns: int = 0
    #: whose silence pauses the session: who started it, or who last resumed it (a
    #: resume proves only the resuming operator present)
    responsible: str = ""
    next_index: int = 0
    pulses_delivered: int = 0
    #: the train fired last: its fire time and end bound set the next one's earliest
    last_fired: FiredTrain | None = None
    ended: bool = False

    def __post_init__(self) -> None:
        if not self.responsible:
            self.responsible = self.operator


@dataclass(frozen=True, slots=True)
class _Marks:
    """Counters a command reads when it arrives; a change means something happened
    while it ran that it must honour before it lets a train start."""

    stop_epoch: int
    transport_epoch: int


#: A disarm (or the status read confirming it) that failed: how to trip, and why.
DisarmFailure = tuple[TripCode, str]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class SessionController:
    """Implements ``stimd.commands.CommandTarget`` for one device."""

    def __init__(
        self,
        *,
        config: StimdConfig,
        driver_factory: DriverFactory,
        record: SessionRecord,
        planner: Planner | None = None,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._config = config
        self._driver_factory = driver_factory
        self._record = record
        self._planner = planner or Planner(config.site)
        self._clock = clock
        sup = config.supervisor
        self._thermal_limits = ThermalLimits(
            warning_c=sup.coil_warning_c, trip_c=sup.coil_trip_c,
            conservative_rise_c_per_kj=sup.conservative_rise_c_per_kj,
        )
        self._thermal = CoilThermalPredictor(self._thermal_limits)
        self.supervisor = SafetySupervisor(
            disarm=self._disarm_current_driver,
            latch=self._latch_fault,
            stall_matters=lambda: self._state in ACTIVE_STATES,
            disarm_timeout_s=sup.disarm_timeout_s,
            stall_threshold_s=sup.stall_threshold_s,
        )
        self._state = S.CONNECTING
        self._state_seq = 0
        self._state_since = time.monotonic()
        self._disarm_pending = False
        self._driver: Stimulator | None = None
        self._identity: DeviceIdentity | None = None
        self._caps: DeviceCapabilities | None = None
        self._status: DeviceStatus | None = None
        self._plan: LoadedPlan | None = None
        self._session: ActiveSession | None = None
        self._interlocks: dict[str, InterlockResult] = {}
        self._paused_reason: str | None = None
        self._pause_request: str | None = None
        self._last_heard: dict[str, float] = {}
        self._listeners: list[Callable[[Event], None]] = []
        self._last_snapshot: dict[str, Any] | None = None
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()          # pause or abort: leave a wait between trains
        self._abort = asyncio.Event()         # stop or trip: leave any wait, even mid-train
        self._shutting_down = False
        self._stop_epoch = 0                 # bumped by every stop or intentional disarm
        self._stop_reason = ""
        self._transport_epoch = 0            # bumped by every transport loss
        self._transport_lost_reason = ""
        self._device_ops_active = 0          # intentional arm/disarm in progress
        self._device_ops_generation = 0      # bumped by each one, for the poller
        self._in_train = False
        self._next_fire_ns: int | None = None   # the runner's next planned fire, if any
        self._configured: tuple[int, ...] | None = None
        self._runner: asyncio.Task[None] | None = None
        self._tg: asyncio.TaskGroup | None = None

    # ------------------------------------------------------------------ public surface

    @property
    def state(self) -> SessionState:
        return self._state

    @property
    def identity(self) -> DeviceIdentity | None:
        return self._identity

    @property
    def capabilities(self) -> DeviceCapabilities | None:
        return self._caps

    def add_listener(self, listener: Callable[[Event], None]) -> None:
        self._listeners.append(listener)

    def transport_lost(self, reason: str) -> None:
        """The command channel is gone: nobody could stop us, so stop moving forward."""
        text = f"command transport lost: {reason}"
        log.warning("transport lost", reason=reason, state=self._state.value)
        # a start, resume or arm still executing sees this and does not let a train start
        self._transport_epoch += 1
        self._transport_lost_reason = text
        if self._state is S.RUNNING:
            self._request_pause(text)
        elif self._state is S.ARMED and self._tg is not None:
            self._tg.create_task(self._disarm_back_to_loaded(text), name="disarm-armed")

    def snapshot(self) -> dict[str, Any]:
        plan = self._plan
        session = self._session
        status = self._status
        progress: dict[str, Any] | None = None
        if session is not None:
            schedule = session.plan.schedule
            progress = {
                "train": session.next_index,
                "trains": len(schedule.trains),
                "pulses_delivered": session.pulses_delivered,
                "pulses_planned": schedule.total_pulses,
                "time_left_s": round(remaining_us(schedule, session.next_index) / 1e6, 3),
            }
        return {
            "state": self._state.value,
            "device": {
                "id": self._config.device.id,
                "model": self._identity.model if self._identity else None,
                "connected": self._identity is not None and self._state is not S.CONNECTING,
                "armed": status.armed if status else None,
                "ready": status.ready if status else None,
                "train_running": status.train_running if status else None,
                "coil_present": status.coil_present if status else None,
                "coil_temperature_c": status.coil_temperature_c if status else None,
                "error_code": status.error_code if status else None,
            },
            "protocol": None if plan is None else {
                "name": plan.schedule.protocol_name,
                "kind": plan.schedule.kind,
                "digest": plan.schedule.digest,
            },
            "plan": None if plan is None else plan.summary,
            # dashboards read this: never the patient reference (the record keeps it)
            "session": None if session is None else {
                "id": session.session_id, "operator": session.operator,
            },
            "progress": progress,
            "interlocks": [i.to_json() for i in self._interlocks.values()],
            "paused_reason": self._paused_reason,
            "fault": None if self.supervisor.cause is None else self.supervisor.cause.to_json(),
        }

    async def execute(self, operator: str, command: CommandBase, verb: Verb) -> CommandOutcome:
        """Run one command; every refusal is an outcome, never an exception."""
        if operator not in self._config.operators.names:
            outcome = self._error(
                ErrorCode.NOT_AUTHORIZED,
                f"operator {operator!r} is not in [operators] names of this daemon",
            )
            self._announce_command(operator, command, verb, outcome)
            return outcome
        self._last_heard[operator] = time.monotonic()
        since = _Marks(self._stop_epoch, self._transport_epoch)
        log.info("command", operator=operator, verb=verb.value, id=command.id,
                 state=self._state.value)
        try:
            result = await self._dispatch(operator, command, verb, since)
            outcome = CommandOutcome(ok=True, state=self._state.value, result=result)
        except _Refused as refusal:
            outcome = self._error(refusal.code, refusal.message, refusal.details)
        except Exception as exc:   # a bug: never lose it, never keep stimulating on it
            log.exception("command failed unexpectedly", verb=verb.value)
            self.supervisor.trip_soon(
                TripCode.UNEXPECTED_EXCEPTION, f"{verb.value} command raised {exc!r}"
            )
            outcome = self._error(ErrorCode.INTERNAL, f"internal error during {verb.value}")
        self._announce_command(operator, command, verb, outcome)
        self._publish_state()
        return outcome

    async def serve(self, on_ready: Callable[[DeviceIdentity], None] | None = None) -> None:
        """Connect, then run the supervisor, poller and presence watcher until cancelled.

        Raises ``HandshakeFailed`` when the very first handshake fails: a daemon that
        never reached its device should exit and let systemd retry.
        """
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            tg.create_task(self.supervisor.run(), name="supervisor")
            try:
                identity = await self._handshake()
            except _Anomaly as exc:
                raise HandshakeFailed(exc.detail) from None
            if on_ready is not None:
                on_ready(identity)
            tg.create_task(self._guarded(self._poll_device), name="device-poller")
            tg.create_task(self._guarded(self._watch_presence), name="presence-watch")

    async def shutdown(self, reason: str) -> None:
        """Stop for the daemon's exit: end any session, disarm, close the device."""
        log.warning("shutting down", reason=reason, state=self._state.value)
        self._shutting_down = True
        self._bump_stop(reason)
        failure = await self._stop_runner()
        if failure is not None:
            # the driver's close below disarms again and otherwise silences the keep-alive
            log.error("disarm on shutdown failed", cause=failure[0].value, detail=failure[1])
        session = self._session
        if session is not None and not session.ended:
            self._end_session(session, "aborted", reason)
            if self._state in (S.RUNNING, S.PAUSED):
                self._transition(S.ABORTED, reason)
                self._emit("session_aborted", self._session_payload(session, reason))
        elif self._state is S.ARMED:
            self._transition(S.LOADED, reason)
        await self._close_driver()
        self._publish_state()

    # ------------------------------------------------------------------ dispatch

    async def _dispatch(
        self, operator: str, command: CommandBase, verb: Verb, since: _Marks
    ) -> dict[str, Any]:
        if verb is Verb.HEARTBEAT:
            return {}
        if verb is Verb.RESYNC:
            return self.snapshot()
        if verb is Verb.STOP:
            return await self._stop(operator)
        async with self._lock:
            self._check_verb(verb)
            if verb is Verb.LOAD:
                if not isinstance(command, LoadCommand):
                    raise _Refused(ErrorCode.INVALID_PAYLOAD, "load needs a LoadCommand payload")
                return await self._load(operator, command)
            if verb is Verb.UNLOAD:
                return await self._unload()
            if verb is Verb.ARM:
                return await self._arm_command(since)
            if verb is Verb.START:
                return await self._start(operator, since)
            if verb is Verb.PAUSE:
                return await self._pause_command(operator)
            if verb is Verb.RESUME:
                return await self._resume(operator, since)
            if verb is Verb.RESET:
                if not isinstance(command, ResetCommand):
                    raise _Refused(ErrorCode.INVALID_PAYLOAD, "reset needs a reason")
                return await self._reset(operator, command.reason)
        raise _Refused(ErrorCode.UNKNOWN_VERB, f"unknown verb {verb!r}")

    def _check_verb(self, verb: Verb) -> None:
        if verb_allowed(self._state, verb):
            return
        allowed = ", ".join(allowed_verbs(self._state))
        if self._state is S.FAULT:
            cause = self.supervisor.cause
            why = f" ({cause.code.value}: {cause.detail})" if cause else ""
            raise _Refused(
                ErrorCode.FAULT,
                f"{verb.value} refused: the daemon is in FAULT{why}; allowed: {allowed}",
            )
        raise _Refused(
            ErrorCode.WRONG_STATE,
            f"{verb.value} is not allowed in state {self._state.value}; allowed: {allowed}",
        )

    # ------------------------------------------------------------------ commands

    async def _load(self, operator: str, command: LoadCommand) -> dict[str, Any]:
        caps = self._require_caps()
        now = self._clock()
        try:
            already = self._record.pulses_today(command.patient_ref, now=now)
        except RecordError as exc:
            raise _Refused(
                ErrorCode.REJECTED_BY_SAFETY,
                f"the daily pulse budget cannot be checked: session record unreadable: {exc}",
            ) from None
        try:
            plan = self._planner.prepare(command, caps, already_today=already, now=now)
        except PlanUnusable as exc:
            raise _Refused(ErrorCode.INVALID_PAYLOAD, str(exc), exc.problems) from None
        except PlanRejected as exc:
            raise _Refused(ErrorCode.REJECTED_BY_SAFETY, str(exc), exc.checks) from None
        self._plan = plan
        self._session = None
        self._paused_reason = None
        self._interlocks = {}
        self._thermal.reset()
        self._transition(S.LOADED, f"{operator} loaded {plan.schedule.protocol_name}")
        echoed = {**plan.summary, "patient_ref": plan.patient_ref}
        self._record_event("plan_loaded", {"operator": operator, **echoed})
        return echoed   # only the loading operator's reply echoes the patient reference

    async def _unload(self) -> dict[str, Any]:
        if self._state is S.ARMED:
            await self._disarm_or_refuse("unload")
        self._plan = None
        self._session = None
        self._paused_reason = None
        self._interlocks = {}
        self._transition(S.IDLE, "plan unloaded")
        return {}

    async def _arm_command(self, since: _Marks) -> dict[str, Any]:
        plan = self._require_plan()
        first = plan.schedule.trains[0]
        await self._check_arm_interlocks(first, None)
        await self._arm_device(first, since)
        lost = self._transport_lost_since(since)
        if lost is not None:
            await self._disarm_or_refuse("arm")
            if self._state is S.ARMED:
                self._transition(S.LOADED, f"{lost}: disarmed, plan kept")
            raise _Refused(
                ErrorCode.REJECTED_BY_SAFETY, f"{lost} while arming: disarmed, plan kept"
            )
        return {}

    async def _start(self, operator: str, since: _Marks) -> dict[str, Any]:
        plan = self._require_plan()
        first = plan.schedule.trains[0]
        await self._check_arm_interlocks(first, None)
        try:
            session_id = self._record.begin_session(
                patient_ref=plan.patient_ref,
                protocol_name=plan.schedule.protocol_name,
                protocol_digest=plan.protocol_digest,
                schedule_digest=plan.schedule.digest,
                motor_threshold=plan.motor_threshold_json,
                operator=operator,
                intensity_pct_mso=plan.schedule.intensity_pct_mso,
                planned_pulses=plan.schedule.total_pulses,
                planned_trains=len(plan.schedule.trains),
                device=self._device_json(),
            )
        except RecordError as exc:
            await self.supervisor.trip(
                TripCode.RECORD_WRITE_FAILED, f"cannot begin the session record: {exc}"
            )
            raise _Refused(
                ErrorCode.FAULT, f"no stimulation: the session record cannot be written: {exc}"
            ) from None
        session = ActiveSession(
            session_id=session_id, operator=operator, plan=plan, start_ns=0
        )
        self._session = session
        try:
            if self._state is S.LOADED:
                await self._arm_device(first, since)
            elif (self._stop_epoch != since.stop_epoch
                  and self._transport_lost_since(since) is None):
                # armed by an earlier `arm`; a stop or a disarm came while we checked
                raise _Refused(
                    ErrorCode.WRONG_STATE, f"{self._stop_reason} while starting: not started"
                )
        except _Refused as refusal:
            self._end_session(session, "aborted", f"not started: {refusal.message}")
            if not self.supervisor.inhibited:
                self._session = None
            raise
        # the first train gets the same lead as every other: its interlocks, intent and
        # configuration are done before its onset
        session.start_ns = monotonic_ns() + ONSET_LEAD_NS - first.onset_us * 1000
        session.anchor_ns = session.start_ns
        lost = self._transport_lost_since(since)
        if lost is not None:
            # nobody could stop this session now: it begins paused, before its first train
            await self._disarm_or_refuse("start")
            self._transition(S.RUNNING, f"{operator} started session {session_id}")
            self._enter_paused(session, lost)
            raise _Refused(
                ErrorCode.REJECTED_BY_SAFETY,
                f"{lost} while starting: session {session_id} paused before its first "
                "train, device disarmed; resume to continue",
                {"session_id": session_id},
            )
        self._pause_request = None
        self._paused_reason = None
        self._transition(S.RUNNING, f"{operator} started session {session_id}")
        self._spawn_runner(session)
        return {"session_id": session_id}

    async def _pause_command(self, operator: str) -> dict[str, Any]:
        self._request_pause(f"paused by {operator}")
        if not self._in_train:
            await self._settle_runner(_PAUSE_SETTLE_S)
        return {"pending": self._state is S.RUNNING}

    async def _resume(self, operator: str, since: _Marks) -> dict[str, Any]:
        session = self._require_session()
        train = session.plan.schedule.trains[session.next_index]
        await self._check_arm_interlocks(train, session)
        await self._arm_device(train, since)
        lost = self._transport_lost_since(since)
        if lost is not None:
            await self._disarm_or_refuse("resume")
            self._paused_reason = lost
            self._emit("session_paused", {
                **self._session_payload(session, lost), "next_train": session.next_index,
            })
            raise _Refused(
                ErrorCode.REJECTED_BY_SAFETY,
                f"{lost} while resuming: session {session.session_id} stays paused, device "
                "disarmed",
            )
        self._paused_reason = None
        self._pause_request = None
        # the resuming operator is the one known present: their silence pauses it now
        session.responsible = operator
        self._transition(S.RUNNING, f"{operator} resumed session {session.session_id}")
        self._spawn_runner(session)
        return {"session_id": session.session_id, "next_train": session.next_index}

    async def _stop(self, operator: str) -> dict[str, Any]:
        """Accepted in every state, idempotent: disarm first, then tidy up the state."""
        reason = f"stopped by {operator}"
        self._bump_stop(reason)
        failure = await self._stop_runner()
        async with self._lock:
            if self._state in ACTIVE_STATES:
                # a command that held the lock may have armed (and started a runner) after
                # the first disarm: disarm again now that nothing else can run
                failure = await self._stop_runner()
            session = self._session
            if self._state in (S.RUNNING, S.PAUSED) and session is not None:
                self._end_session(session, "aborted", reason)
                self._transition(S.ABORTED, reason)
                self._emit("session_aborted", self._session_payload(session, reason))
            elif self._state is S.ARMED:
                self._transition(S.LOADED, f"{reason}: disarmed, plan kept")
            if failure is not None and self._state is not S.FAULT and self._driver is not None:
                await self.supervisor.trip(failure[0], f"stop: {failure[1]}")
        return {"disarmed": failure is None}

    async def _reset(self, operator: str, reason: str) -> dict[str, Any]:
        cause = self.supervisor.cause
        log.warning("reset", operator=operator, reason=reason,
                    cause=None if cause is None else cause.code.value)
        self._record_event("reset", {
            "operator": operator, "reason": reason,
            "cause": None if cause is None else cause.to_json(),
        })
        await self._close_driver()
        self._plan = None
        self._session = None
        self._paused_reason = None
        self._interlocks = {}
        self._thermal.reset()
        self.supervisor.clear()
        self._transition(S.CONNECTING, f"reset by {operator}: {reason}")
        try:
            await self._handshake()
        except _Anomaly as exc:
            await self.supervisor.trip(exc.code, f"handshake after reset failed: {exc.detail}")
            raise _Refused(ErrorCode.FAULT, f"handshake after reset failed: {exc.detail}") from None
        return {"identity": self._device_json()}

    # ------------------------------------------------------------------ arming

    async def _check_arm_interlocks(
        self, train: TrainSpec, session: ActiveSession | None
    ) -> None:
        """Every interlock before arming; a blocked one refuses with all the results."""
        try:
            results = await self._interlocks_before(train, session=session)
        except DriverError as exc:
            await self._trip_for(exc, "reading the device before arming")
            raise _Refused(ErrorCode.FAULT, f"device error: {_describe(exc)}") from None
        self._set_interlocks(results, train_index=train.index)
        blocked = [r for r in results if not r.ok]
        if blocked:
            raise _Refused(
                ErrorCode.REJECTED_BY_SAFETY,
                "interlock: " + "; ".join(r.reason for r in blocked),
                [r.to_json() for r in results],
            )

    async def _arm_device(self, train: TrainSpec, since: _Marks) -> None:
        """Configure ``train`` and arm: called only after ``_check_arm_interlocks``.

        A stop or an intentional disarm since the command arrived wins: the device is
        disarmed again and the command refused.
        """
        plan = self._require_plan()
        driver = self._require_driver()
        try:
            with self._device_op():
                async with asyncio.timeout(_ARM_TIMEOUT_S):
                    await driver.set_intensity(plan.schedule.intensity_pct_mso)
                    await self._configure(driver, train)
                    await driver.arm()
                    status = await driver.read_status()   # so that `state` shows it armed
        except (DriverError, TimeoutError) as exc:
            if self._stop_epoch != since.stop_epoch and not self.supervisor.inhibited:
                # our own stop's disarm cancels an arm in progress: expected, not an
                # anomaly; the disarm is confirmed below (or trips)
                log.info("arming ended by a stop", reason=self._stop_reason,
                         error=_describe(exc))
            else:
                await self._trip_for(exc, "arming")
                raise _Refused(ErrorCode.FAULT, f"arming failed: {_describe(exc)}") from None
        else:
            if driver is self._driver:
                self._status = status
        if self.supervisor.inhibited:
            raise _Refused(ErrorCode.FAULT, "tripped while arming")
        if self._stop_epoch != since.stop_epoch:
            await self._disarm_or_refuse("arm")
            raise _Refused(
                ErrorCode.WRONG_STATE, f"{self._stop_reason} while arming: disarmed"
            )
        if self._state is S.LOADED:
            self._transition(S.ARMED, "device armed")

    async def _configure(self, driver: Stimulator, train: TrainSpec) -> None:
        key = _train_key(train)
        if key != self._configured:
            self._configured = None
            await driver.configure_train(train)
            self._configured = key

    async def _interlocks_before(
        self, train: TrainSpec, *, session: ActiveSession | None
    ) -> list[InterlockResult]:
        """Every device-side interlock for arming or for the next train."""
        plan = self._require_plan()
        caps = self._require_caps()
        driver = self._require_driver()
        now = self._clock()
        results = [self._planner.recheck(plan, caps, now=now)]
        # the record already counts this session's delivered and in-flight pulses
        remaining = plan.schedule.total_pulses - (session.pulses_delivered if session else 0)
        try:
            already = self._record.pulses_today(plan.patient_ref, now=now)
        except RecordError as exc:
            results.append(InterlockResult(
                "daily_budget", False, f"session record unreadable: {exc}"
            ))
        else:
            results.append(self._planner.daily_budget(remaining, already))
        seq_before, generation_before = self._state_seq, self._device_ops_generation
        status = await driver.read_status()
        self._status = status
        # the poller stays off the line before a train: this reading is supervised too
        self._supervise(status, StatusLimits(coil_trip_c=self._thermal_limits.trip_c),
                        stable=self._armed_bit_is_stable(seq_before, generation_before))
        results.append(coil_present(status))
        results.append(
            coil_temperature(status, self._thermal.predicted_rise_c(train), self._thermal_limits)
        )
        return results

    def _set_interlocks(self, results: list[InterlockResult], *, train_index: int) -> None:
        """Publish interlock results; announce each one that becomes blocked."""
        for result in results:
            before = self._interlocks.get(result.name)
            self._interlocks[result.name] = result
            if not result.ok and (before is None or before.ok):
                log.warning("interlock", name=result.name, reason=result.reason)
                self._emit("interlock", {
                    "name": result.name, "reason": result.reason, "waits": result.waits,
                    "train": train_index,
                })
                self._record_event("interlock", {
                    "name": result.name, "reason": result.reason, "train": train_index,
                })

    # ------------------------------------------------------------------ the runner

    def _spawn_runner(self, session: ActiveSession) -> None:
        if self._tg is None:
            raise RuntimeError("the controller is not serving")
        self._wake.clear()
        self._abort.clear()
        self._runner = self._tg.create_task(self._run_session(session), name="session-runner")

    async def _run_session(self, session: ActiveSession) -> None:
        try:
            await self._run_trains(session)
        except asyncio.CancelledError:
            raise
        except DriverError as exc:
            self.supervisor.trip_soon(trip_code_for(exc), f"{exc.code}: {exc.reason}")
        except _Anomaly as exc:
            self.supervisor.trip_soon(exc.code, exc.detail)
        except RecordError as exc:
            self.supervisor.trip_soon(
                TripCode.RECORD_WRITE_FAILED, f"session record write failed: {exc}"
            )
        except Exception as exc:
            log.exception("session runner failed")
            self.supervisor.trip_soon(TripCode.UNEXPECTED_EXCEPTION, f"session runner: {exc!r}")

    async def _run_trains(self, session: ActiveSession) -> None:
        schedule = session.plan.schedule
        caps = self._require_caps()
        try:
            while session.next_index < len(schedule.trains):
                train = schedule.trains[session.next_index]
                onset = earliest_fire_ns(train, session.anchor_ns, session.last_fired, caps)
                self._next_fire_ns = onset
                # the device work before a train (interlock read, configuration) is done
                # ahead of its onset, so the fire command leaves on time
                if not await self._wait_between_trains(session, onset - ONSET_LEAD_NS):
                    return
                if not await self._train_may_start(session, train):
                    return
                await self._configure(self._require_driver(), train)
                if not await self._wait_between_trains(session, onset - INTENT_LEAD_NS):
                    return
                # a cooling wait (or a slow read) may have taken it past its onset: the
                # train is late, and every later train shifts with it
                onset = max(onset, monotonic_ns())
                session.anchor_ns = shifted_anchor_ns(session.anchor_ns, train, onset)
                if not await self._fire(session, train, onset):
                    return
                self._publish_state()
        finally:
            self._next_fire_ns = None
        await self._complete(session)

    async def _wait_between_trains(self, session: ActiveSession, deadline_ns: int) -> bool:
        """Sleep until ``deadline_ns``; False when the runner must leave (stop, trip, or a
        pause it has now entered)."""
        while not await wait_until(deadline_ns, self._wake):
            if self._must_leave():
                return False
            if self._pause_request is not None:
                await self._pause_if_requested(session)
                return False
            self._wake.clear()
        return not self._must_leave()

    async def _train_may_start(self, session: ActiveSession, train: TrainSpec) -> bool:
        """Interlocks before a train; waits for cooling, pauses on anything else."""
        waited_since = time.monotonic()
        max_wait = self._config.supervisor.max_cooldown_wait_s
        while True:
            if self._must_leave():
                return False
            if self._pause_request is not None:
                await self._pause_if_requested(session)
                return False
            presence = self._presence(session)
            results = [presence, *await self._interlocks_before(train, session=session)]
            self._set_interlocks(results, train_index=train.index)
            blocked = [r for r in results if not r.ok]
            if not blocked:
                return True
            if all(r.waits for r in blocked) and time.monotonic() - waited_since < max_wait:
                await wait_until(
                    monotonic_ns() + int(self._config.supervisor.status_poll_interval_s * 1e9),
                    self._wake,
                )
                continue
            reason = "; ".join(r.reason for r in blocked)
            if all(r.waits for r in blocked):
                reason = f"waited {max_wait:g} s (max_cooldown_wait_s): {reason}"
            self._request_pause(f"interlock before train {train.index}: {reason}")
            await self._pause_if_requested(session)
            return False

    async def _fire(self, session: ActiveSession, train: TrainSpec, onset_ns: int) -> bool:
        """Write the intent, fire at ``onset_ns``, confirm; False when a trip or stop got
        in first."""
        driver = self._require_driver()
        before_c = self._status.coil_temperature_c if self._status else None
        self._record.train_intent(
            session.session_id, train.index, train.onset_us, train.pulses
        )   # write-ahead: durable before the fire command leaves
        # committed: only a stop or a trip (the abort event) keeps this train from firing
        await wait_until_exactly(onset_ns, self._abort)
        if self._must_leave():
            return False
        self._in_train = True
        try:
            # the fire command's measurement point, the same for every train: the next
            # fire keeps the plan's onset spacing from it (scheduler.earliest_fire_ns)
            fired_ns = monotonic_ns()
            await driver.fire_train()
            replied_ns = monotonic_ns()
            self._next_fire_ns = None
            actual_onset_us = max(0, (fired_ns - session.start_ns) // 1000)
            self._emit("train_started", {
                "session_id": session.session_id, "train": train.index,
                "trains": len(session.plan.schedule.trains), "pulses": train.pulses,
                "planned_onset_us": train.onset_us, "actual_onset_us": actual_onset_us,
            })
            # the device times the train; sleep through it so that a stop or a trip can
            # end the runner here without interrupting a device exchange
            if not await wait_until(train_end_bound_ns(replied_ns, train, None), self._abort):
                return False
            # one reading after the train's nominal end: the coil temperature for the
            # thermal model, and whether the device still runs the train
            status = await driver.read_status()
            read_ns = monotonic_ns()
            ran_long = status.train_running
            reported = await driver.wait_train_complete(
                self._config.supervisor.train_end_margin_s
            )
            # the device's word on when it finished: by the reading that said so (a unit
            # may acknowledge a fire command before its first pulse, so the reply alone
            # does not bound the end)
            end_ns = train_end_bound_ns(
                replied_ns, train, monotonic_ns() if ran_long else read_ns
            )
        finally:
            self._in_train = False
        delivered = train.pulses if reported is None else reported
        ok = delivered == train.pulses
        self._record.train_result(
            session.session_id, train.index, actual_onset_us, delivered, ok
        )
        session.pulses_delivered += delivered
        session.next_index = train.index + 1
        session.last_fired = FiredTrain(train, fired_ns, end_ns)
        self._emit("train_completed", {
            "session_id": session.session_id, "train": train.index,
            "pulses_delivered": delivered, "session_pulses_delivered": session.pulses_delivered,
            "planned_onset_us": train.onset_us, "actual_onset_us": actual_onset_us,
        })
        if not ok:
            raise _Anomaly(
                TripCode.PULSE_COUNT_MISMATCH,
                f"train {train.index}: device reports {delivered} pulses, planned {train.pulses}",
            )
        if ran_long:
            status = await driver.read_status()
        self._status = status
        if before_c is not None and status.coil_temperature_c is not None:
            self._thermal.observe(train, before_c, status.coil_temperature_c)
        return True

    async def _complete(self, session: ActiveSession) -> None:
        await self._disarm_or_trip()
        if self.supervisor.inhibited:
            return
        self._end_session(session, "completed", None)
        self._transition(S.COMPLETED, f"session {session.session_id} completed")
        self._emit("session_completed", self._session_payload(session, None))

    async def _pause_if_requested(self, session: ActiveSession) -> None:
        reason = self._pause_request
        if reason is None or self._state is not S.RUNNING:
            return
        await self._disarm_or_trip()
        if self.supervisor.inhibited:
            return
        self._enter_paused(session, reason)

    def _enter_paused(self, session: ActiveSession, reason: str) -> None:
        """RUNNING → PAUSED with the device already disarmed."""
        self._pause_request = None
        self._paused_reason = reason
        self._transition(S.PAUSED, reason)
        self._emit("session_paused", {
            **self._session_payload(session, reason), "next_train": session.next_index,
        })

    def _request_pause(self, reason: str) -> None:
        if self._state is S.RUNNING and self._pause_request is None:
            log.warning("pause requested", reason=reason)
            self._pause_request = reason
            self._wake.set()

    async def _settle_runner(self, timeout_s: float) -> None:
        """Give a runner between trains a moment to act on a pause request."""
        runner = self._runner
        if runner is not None and not runner.done():
            await asyncio.wait({runner}, timeout=timeout_s)

    def _must_leave(self) -> bool:
        """The runner's check at every step: stop, trip or a state it did not make."""
        return (self._abort.is_set() or self.supervisor.inhibited
                or self._state is not S.RUNNING)

    async def _stop_runner(self, *, disarm: bool = True) -> DisarmFailure | None:
        """End the runner without cutting a device exchange in half; disarm meanwhile.

        The abort event wakes every wait of the runner; its in-flight exchange (if any)
        completes, the disarm queues right behind it on the driver's port lock, and
        the runner leaves at its next check. Cancelling is the last resort, after the
        runner had the train margin to notice; it may cut an exchange, so it trips (the
        reset's fresh handshake then opens a new driver). Returns the disarm's failure.
        """
        self._abort.set()
        self._wake.set()
        failure = await self._disarm_and_refresh() if disarm else None
        runner = self._runner
        if runner is None or runner.done() or runner is asyncio.current_task():
            return failure
        wait_s = self._config.supervisor.train_end_margin_s + 1.0
        done, _ = await asyncio.wait({runner}, timeout=wait_s)
        if not done:
            log.error("session runner did not stop in time: cancelling it")
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({runner})
            if not self._shutting_down:
                self.supervisor.trip_soon(
                    TripCode.DEVICE_TIMEOUT,
                    f"the session runner did not stop within {wait_s:g} s: cancelled it, "
                    "possibly in the middle of a device exchange",
                )
        return failure

    def _presence(self, session: ActiveSession) -> InterlockResult:
        return operator_present(
            session.responsible, self._last_heard.get(session.responsible), time.monotonic(),
            self._config.operators.heartbeat_timeout_s,
        )

    # ------------------------------------------------------------------ background tasks

    async def _guarded(self, body: Callable[[], Awaitable[None]]) -> None:
        """Run a background loop; an exception in it is an anomaly, not a crash."""
        while True:
            try:
                await body()
                return
            except asyncio.CancelledError:
                raise
            except DriverError as exc:
                self.supervisor.trip_soon(trip_code_for(exc), f"{exc.code}: {exc.reason}")
            except Exception as exc:
                log.exception("background task failed")
                self.supervisor.trip_soon(TripCode.UNEXPECTED_EXCEPTION, repr(exc))
            await asyncio.sleep(self._config.supervisor.status_poll_interval_s)

    def _poll_interval_s(self) -> float:
        """How often the poller reads the device: as often as safety needs in this state.

        Armed, running between trains, or paused: ``status_poll_interval_s``. During a
        train every ``TRAIN_POLL_S`` (the driver's keep-alive meanwhile checks the status
        byte of every renewal — error bit, armed — at least every 0.4 s, and the line
        stays free for a stop). Disarmed (IDLE, LOADED, COMPLETED, ABORTED) every
        ``IDLE_POLL_S``: nothing can fire, and arming reads the device itself first.
        """
        base = self._config.supervisor.status_poll_interval_s
        if self._state in ACTIVE_STATES:
            return max(base, TRAIN_POLL_S) if self._in_train else base
        return max(base, IDLE_POLL_S)

    async def _poll_device(self) -> None:
        limits = StatusLimits(coil_trip_c=self._config.supervisor.coil_trip_c)
        while True:
            await self._sleep_until_next_poll()
            driver = self._driver
            if driver is None or self._state in (S.CONNECTING, S.FAULT):
                continue
            if self._fire_is_near():
                continue      # the runner reads the device itself before its train
            seq_before, generation_before = self._state_seq, self._device_ops_generation
            try:
                status = await driver.read_status()
            except DriverError as exc:
                if driver is self._driver and not self._shutting_down:
                    self.supervisor.trip_soon(trip_code_for(exc), f"{exc.code}: {exc.reason}")
                continue
            if driver is not self._driver or self.supervisor.inhibited or self._shutting_down:
                continue
            self._status = status
            self._supervise(status, limits,
                            stable=self._armed_bit_is_stable(seq_before, generation_before))
            self._publish_state()

    def _supervise(self, status: DeviceStatus, limits: StatusLimits, *, stable: bool) -> None:
        """Trip on an anomaly in a reading, whoever read it (poller or runner)."""
        anomaly = status_anomaly(
            status, limits,
            device_should_be_armed=stable and self._state in (S.ARMED, S.RUNNING),
            session_active=self._state in ACTIVE_STATES,
        )
        if anomaly is not None:
            self.supervisor.trip_soon(*anomaly)

    async def _sleep_until_next_poll(self) -> None:
        """Sleep one poll interval. While a session is active, look again every
        ``status_poll_interval_s`` whether the interval shrank (the train ended)."""
        started = time.monotonic()
        while True:
            left = self._poll_interval_s() - (time.monotonic() - started)
            if left <= 0:
                return
            if self._state in ACTIVE_STATES:
                left = min(left, self._config.supervisor.status_poll_interval_s)
            await asyncio.sleep(left)

    def _fire_is_near(self) -> bool:
        """A fire command is due soon: a poll now could hold the line when it must leave."""
        fire_ns = self._next_fire_ns
        return fire_ns is not None and (
            monotonic_ns() >= fire_ns - ONSET_LEAD_NS - _POLL_QUIET_NS
        )

    async def _watch_presence(self) -> None:
        """Pause a silent operator's session; disarm a device left armed without a start."""
        while True:
            # fast only while a silent operator must pause a running session; the armed
            # idle limit (45 s) needs no better than a second
            await asyncio.sleep(_PRESENCE_TICK_S if self._state is S.RUNNING else 1.0)
            session = self._session
            if (self._state is S.ARMED and self._tg is not None and not self._disarm_pending
                    and time.monotonic() - self._state_since > ARMED_IDLE_LIMIT_S):
                self._disarm_pending = True
                self._tg.create_task(self._disarm_armed_idle(
                    f"armed for {ARMED_IDLE_LIMIT_S:g} s without a start"
                ), name="disarm-armed-idle")
            if self._state is not S.RUNNING or session is None:
                continue
            presence = self._presence(session)
            if not presence.ok:
                self._set_interlocks([presence], train_index=session.next_index)
                self._request_pause(presence.reason)

    async def _disarm_armed_idle(self, reason: str) -> None:
        try:
            await self._disarm_back_to_loaded(reason)
        finally:
            self._disarm_pending = False

    async def _disarm_back_to_loaded(self, reason: str) -> None:
        """Disarm an ARMED device back to LOADED (no session began), announcing why."""
        self._bump_stop(reason)
        failure = await self._disarm_and_refresh()
        if failure is not None:
            await self.supervisor.trip(failure[0], f"{reason}: {failure[1]}")
            return
        async with self._lock:
            if self._state is S.ARMED:
                self._transition(S.LOADED, f"{reason}: disarmed, plan kept")
                self._publish_state()

    # ------------------------------------------------------------------ device helpers

    async def _handshake(self) -> DeviceIdentity:
        """CONNECTING → IDLE with a fresh driver; only the configured port is opened.

        Raises ``_Anomaly(HANDSHAKE_FAILED)`` with the reason; the driver is closed then.
        """
        driver = self._driver_factory()
        driver.on_fault(lambda err: self._on_driver_fault(driver, err))
        self._driver = driver
        self._configured = None
        try:
            async with asyncio.timeout(_CONNECT_TIMEOUT_S):
                identity = await driver.connect()
                status = await driver.read_status()
        except TimeoutError:
            await self._close_driver()
            raise _Anomaly(
                TripCode.HANDSHAKE_FAILED, f"no handshake within {_CONNECT_TIMEOUT_S:g} s"
            ) from None
        except DriverError as exc:
            await self._close_driver()
            raise _Anomaly(TripCode.HANDSHAKE_FAILED, _describe(exc)) from None
        expected = self._config.device.expected_firmware
        if expected is not None and identity.firmware != expected:
            await self._close_driver()
            raise _Anomaly(
                TripCode.HANDSHAKE_FAILED,
                f"device reports firmware {identity.firmware!r}, configuration expects "
                f"{expected!r} (device.expected_firmware)",
            )
        self._identity = identity
        self._caps = driver.capabilities
        self._status = status
        log.info("device connected", model=identity.model, vendor=identity.vendor,
                 firmware=identity.firmware, serial_number=identity.serial_number,
                 dialect=identity.dialect, capabilities=capabilities_json(self._caps))
        self._transition(S.IDLE, f"handshake with {identity.model} firmware {identity.firmware}")
        return identity

    def _on_driver_fault(self, driver: Stimulator, error: DriverError) -> None:
        if driver is self._driver:
            self.supervisor.trip_on_driver_error(error)
        else:
            log.info("fault from a closed driver ignored", error=error.reason)

    async def _disarm_current_driver(self) -> None:
        driver = self._driver
        if driver is not None:
            with self._device_op():
                await driver.disarm()

    @contextlib.contextmanager
    def _device_op(self) -> Iterator[None]:
        """Mark an intentional arm or disarm, so the poller does not take the device's
        changing armed bit during it for an anomaly."""
        self._device_ops_active += 1
        self._device_ops_generation += 1
        try:
            yield
        finally:
            self._device_ops_active -= 1
            self._device_ops_generation += 1

    def _armed_bit_is_stable(self, seq_before: int, generation_before: int) -> bool:
        return (seq_before == self._state_seq
                and generation_before == self._device_ops_generation
                and self._device_ops_active == 0)

    async def _disarm_and_refresh(self) -> DisarmFailure | None:
        """Disarm, then read the device back so that ``state`` tells the truth.

        Each step is bounded by ``disarm_timeout_s``. Returns what failed (the caller
        trips on it, or logs it on the way out), None when the device answered.
        """
        bound = self._config.supervisor.disarm_timeout_s
        try:
            async with asyncio.timeout(bound):
                await self._disarm_current_driver()
        except (DriverError, TimeoutError) as exc:
            log.error("disarm failed", error=_describe(exc))
            return _failure_of(exc, f"disarm within {bound:g} s")
        driver = self._driver
        if driver is None or self._identity is None:
            return None      # no handshake yet (or a reset's is under way): nothing to read
        try:
            async with asyncio.timeout(bound):
                status = await driver.read_status()
        except (DriverError, TimeoutError) as exc:
            log.error("reading the device after the disarm failed", error=_describe(exc))
            return _failure_of(exc, f"reading the device within {bound:g} s after the disarm")
        if driver is self._driver:
            self._status = status
            self._publish_state()
        return None

    async def _disarm_or_trip(self) -> bool:
        """Disarm and confirm; on failure trip. True when the device answered."""
        failure = await self._disarm_and_refresh()
        if failure is not None:
            await self.supervisor.trip(*failure)
        return failure is None

    async def _disarm_or_refuse(self, verb: str) -> None:
        """``_disarm_or_trip`` for a command: a failure refuses it with the trip."""
        if not await self._disarm_or_trip():
            cause = self.supervisor.cause
            why = f": {cause.code.value}: {cause.detail}" if cause else ""
            raise _Refused(ErrorCode.FAULT, f"{verb}: the disarm failed, tripped{why}")

    def _bump_stop(self, reason: str) -> None:
        """A stop or an intentional disarm: commands in flight must not arm after it."""
        self._stop_epoch += 1
        self._stop_reason = reason

    def _transport_lost_since(self, since: _Marks) -> str | None:
        """Why the command transport was lost since ``since``, or None."""
        if self._transport_epoch != since.transport_epoch:
            return self._transport_lost_reason
        return None

    async def _close_driver(self) -> None:
        driver = self._driver
        self._driver = None
        self._identity = None
        self._status = None
        self._configured = None
        if driver is None:
            return
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                await driver.close()
        except (DriverError, TimeoutError) as exc:
            log.error("closing the driver failed", error=_describe(exc))

    async def _trip_for(self, exc: BaseException, doing: str) -> None:
        if isinstance(exc, DriverError):
            await self.supervisor.trip(trip_code_for(exc), f"{doing}: {exc.code}: {exc.reason}")
        else:
            await self.supervisor.trip(TripCode.DEVICE_TIMEOUT, f"{doing}: timed out")

    # ------------------------------------------------------------------ the latch

    async def _latch_fault(self, cause: TripCause, disarmed: bool) -> None:
        """Called by the supervisor after it disarmed: stop the runner, latch, record."""
        await self._stop_runner(disarm=False)
        self._pause_request = None
        # The reading from before the trip may show the unit armed mid-train; after a
        # lost link the driver's disarm is only best effort. Publish and record what a
        # fresh reading confirms, or that the device state is unknown.
        self._status = await self._status_after_trip()
        disarmed = disarmed and self._status is not None and not self._status.armed
        session = self._session
        if session is not None and not session.ended:
            self._end_session(session, "fault", f"{cause.code.value}: {cause.detail}")
        self._transition(S.FAULT, f"{cause.code.value}: {cause.detail}")
        self._record_event("fault", {**cause.to_json(), "disarmed": disarmed})
        self._emit("fault", {**cause.to_json(), "disarmed": disarmed})
        self._publish_state()

    async def _status_after_trip(self) -> DeviceStatus | None:
        """A fresh device reading after a trip, or None when the device cannot answer."""
        driver = self._driver
        if driver is None:
            return None
        try:
            async with asyncio.timeout(self._config.supervisor.disarm_timeout_s):
                return await driver.read_status()
        except (DriverError, TimeoutError) as exc:
            log.warning("device state unknown after the trip", error=_describe(exc))
            return None

    # ------------------------------------------------------------------ bookkeeping

    def _transition(self, target: SessionState, reason: str) -> None:
        current = self._state
        check_transition(current, target)
        self._state = target
        self._state_seq += 1
        self._state_since = time.monotonic()
        log.info("state", from_state=current.value, to_state=target.value, reason=reason)
        self._record_event("state_changed", {
            "from": current.value, "to": target.value, "reason": reason,
        })
        self._publish_state()

    def _end_session(self, session: ActiveSession, outcome: str, reason: str | None) -> None:
        if session.ended:
            return
        session.ended = True
        try:
            self._record.end_session(session.session_id, outcome, session.pulses_delivered,
                                     reason)
        except RecordError as exc:
            log.error("ending the session record failed", error=str(exc))
            if outcome != "fault":
                self.supervisor.trip_soon(
                    TripCode.RECORD_WRITE_FAILED, f"ending session {session.session_id}: {exc}"
                )

    def _record_event(self, kind: str, data: dict[str, Any]) -> None:
        session = self._session
        sid = session.session_id if session is not None else None
        try:
            self._record.event(kind, data, session_id=sid)
        except RecordError as exc:
            log.error("session record write failed", kind=kind, error=str(exc))
            if self._state in ACTIVE_STATES:
                self.supervisor.trip_soon(
                    TripCode.RECORD_WRITE_FAILED, f"recording {kind}: {exc}"
                )

    def _emit(self, kind: str, payload: dict[str, Any]) -> None:
        event = Event.model_validate({"type": kind, "payload": payload})
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception as exc:
                log.exception("event listener failed", event_type=kind)
                self.supervisor.trip_soon(
                    TripCode.UNEXPECTED_EXCEPTION, f"event listener failed on {kind}: {exc!r}"
                )

    def _publish_state(self) -> None:
        snap = self.snapshot()
        if snap != self._last_snapshot:
            self._last_snapshot = snap
            self._emit("state_changed", snap)

    def _announce_command(
        self, operator: str, command: CommandBase, verb: Verb, outcome: CommandOutcome
    ) -> None:
        payload: dict[str, Any] = {
            "operator": operator, "verb": verb.value, "id": command.id, "ok": outcome.ok,
            "state": outcome.state,
        }
        if outcome.error is not None:
            payload["error"] = {"code": outcome.error.code.value, "message": outcome.error.message}
        self._emit("command", payload)
        if verb not in (Verb.HEARTBEAT, Verb.RESYNC):
            self._record_event("command", payload)

    def _error(self, code: ErrorCode, message: str, details: Any = None) -> CommandOutcome:
        return CommandOutcome(
            ok=False, state=self._state.value,
            error=CommandError(code=code, message=message, details=details),
        )

    def _session_payload(self, session: ActiveSession, reason: str | None) -> dict[str, Any]:
        return {
            "session_id": session.session_id, "operator": session.operator,
            "pulses_delivered": session.pulses_delivered,
            "pulses_planned": session.plan.schedule.total_pulses,
            "trains_delivered": session.next_index, "reason": reason,
        }

    def _device_json(self) -> dict[str, Any]:
        identity = self._identity
        return {
            "id": self._config.device.id,
            "driver": self._config.device.driver,
            "port": self._config.device.port,
            "coil": self._config.device.coil,
            "model": identity.model if identity else None,
            "firmware": identity.firmware if identity else None,
            "serial_number": identity.serial_number if identity else None,
        }

    def _require_plan(self) -> LoadedPlan:
        if self._plan is None:
            raise _Refused(ErrorCode.WRONG_STATE, f"no plan loaded (state {self._state.value})")
        return self._plan

    def _require_session(self) -> ActiveSession:
        if self._session is None:
            raise _Refused(ErrorCode.WRONG_STATE, f"no session (state {self._state.value})")
        return self._session

    def _require_driver(self) -> Stimulator:
        if self._driver is None:
            raise _Refused(ErrorCode.WRONG_STATE, "no device connected")
        return self._driver

    def _require_caps(self) -> DeviceCapabilities:
        if self._caps is None:
            raise _Refused(ErrorCode.WRONG_STATE, "no device capabilities yet (not connected)")
        return self._caps


def _train_key(train: TrainSpec) -> tuple[int, ...]:
    return (train.pulses, train.pulse_interval_us, train.burst_pulses, train.bursts,
            train.burst_interval_us, train.intensity_pct_mso)


def _failure_of(exc: BaseException, doing: str) -> DisarmFailure:
    if isinstance(exc, DriverError):
        return trip_code_for(exc), f"{doing}: {exc.code}: {exc.reason}"
    return TripCode.DEVICE_TIMEOUT, f"{doing}: timed out"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, DriverError):
        return f"{exc.code}: {exc.reason}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return repr(exc)


def capabilities_json(caps: DeviceCapabilities) -> dict[str, Any]:
    """Every limit the attached device's profile contributes, for logs and ``meta``."""
    energy = caps.energy_model
    return {
        "model": caps.model, "vendor": caps.vendor, "display_name": caps.display_name,
        "max_output_pct_mso": caps.max_output_pct_mso,
        "max_frequency_hz": caps.max_frequency_hz, "supports_trains": caps.supports_trains,
        "supports_bursts": caps.supports_bursts, "max_burst_pulses": caps.max_burst_pulses,
        "max_pulses_per_train": caps.max_pulses_per_train,
        "min_single_pulse_interval_s": caps.min_single_pulse_interval_s,
        "min_inter_train_gap_s": caps.min_inter_train_gap_s, "mains_voltage": caps.mains_voltage,
        "energy_model": None if energy is None else {
            "rapid_type": energy.rapid_type.value, "mains_voltage": energy.mains_voltage,
        },
    }


__all__ = ["ActiveSession", "HandshakeFailed", "SessionController", "capabilities_json"]
