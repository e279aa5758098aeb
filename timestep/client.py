"""The Python client of the bus: submit runs, follow their events, approve, reject, cancel,
and manage schedules and queues, from any process that can reach NATS.

>>> client = await Client.connect("nats://127.0.0.1:4222")
>>> run = await client.submit("assistant", "What's the weather in Paris?")
>>> async for event in run.events():
...     print(event.type, event.seq)
>>> completed = await run.result(timeout=60)
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from subjects.events import Cancelled, Completed, ErrorInfo, Failed, LiveText, Rejected, RunEvent, decode_event, decode_live, decode_submit_answer
from subjects.messages import (
    ApprovalList,
    ApprovalRecord,
    Approve,
    Cancel,
    QueueConfigure,
    QueueDelete,
    QueueStatus,
    QueueStatusRequest,
    Reject,
    Reply,
    RunFork,
    RunGet,
    RunInfo,
    RunRequest,
    RunsList,
    RunStep,
    RunSteps,
    Schedule,
    ScheduleCreate,
    ScheduleDelete,
    ScheduleList,
)
from subjects.ids import NAME_MAX_LENGTH, run_id_problem
from subjects.problems import body_problem
from timestep.ops import observe
from timestep.bus.connection import REFUSED_GIVE_UP_SECONDS, Bus, NatsTimeout, redact_url
from timestep.errors import NatsUnreachableError, RunCancelledError, TimestepError, ValidationError
from timestep.bus.server import url_file
from timestep.settings import Settings
from timestep.settings import current as current_settings

TERMINAL = (Completed, Failed, Cancelled, Rejected)
RESEND_SECONDS = 2.0
"""How long `submit` waits for the governor's answer before sending the request again."""
CONTROL_TIMEOUT = 10.0
"""How long approve, reject and cancel wait for an agent actor's answer."""
_encode = msgspec.json.encode


class RunRejectedError(TimestepError):
    """The governor refused the request; nothing ran."""

    def __init__(self, run_id: str, error: ErrorInfo) -> None:
        super().__init__(error.message)
        self.run_id = run_id
        self.error = error

    @property
    def field(self) -> str | None:
        """The request field at fault, as the contract names it (None when no one field is)."""
        return self.error.field


class RequestRefusedError(TimestepError):
    """A request was refused: nothing was done. `error.type` says why, in a word that stays
    the same (approve, reject, cancel: UnknownRun, AlreadyFinished, NotWaiting, NotStarted,
    InvalidSubject, InvalidRequest); `error.message` names the field and the fix."""

    def __init__(self, error: ErrorInfo) -> None:
        super().__init__(error.message)
        self.error = error

    @property
    def type(self) -> str:
        return self.error.type

    @property
    def field(self) -> str | None:
        """The request field at fault, as the contract names it (None when no one field is)."""
        return self.error.field


class RunFailedError(TimestepError):
    """The run ended with an error."""

    def __init__(self, run_id: str, error: ErrorInfo) -> None:
        super().__init__(f"run {run_id!r} failed: {error.type}: {error.message}")
        self.run_id = run_id
        self.error = error


def _is_pub_ack(data: bytes) -> bool:
    return data.startswith(b'{"stream"') and b'"type"' not in data


class Submission:
    """A submitted run: `run_id`, its `accepted` event (None when no governor answered in
    time: the request is stored and runs when one is up), `events()` and `result()`;
    `traceparent`, the W3C trace context it was sent with (its events carry the same trace id);
    `reused`, True when the given `id` belonged to an earlier run."""

    def __init__(
        self, client: Client, run_id: str, accepted: RunEvent | None, traceparent: str | None = None, reused: bool = False
    ) -> None:
        self.client = client
        self.run_id = run_id
        self.accepted = accepted
        self.traceparent = traceparent
        self.reused = reused
        """The id was taken before this submit: this is the earlier run (this submit's input and options were not used)."""

    def events(self) -> AsyncIterator[RunEvent]:
        """Every event of the run from its first, live, until it completes, fails, is cancelled or rejected."""
        return self.client.events(self.run_id)

    async def result(self, timeout: float | None = None) -> Completed:
        """The `completed` event; raises RunFailedError, RunCancelledError or RunRejectedError."""

        async def wait() -> Completed:
            async for event in self.events():
                if isinstance(event, Completed):
                    return event
                if isinstance(event, Failed):
                    raise RunFailedError(self.run_id, event.error)
                if isinstance(event, Cancelled):
                    raise RunCancelledError(self.run_id)
                if isinstance(event, Rejected):
                    raise RunRejectedError(self.run_id, event.error)
            raise TimestepError(f"the events of run {self.run_id!r} ended early")

        return await asyncio.wait_for(wait(), timeout)

    def __repr__(self) -> str:
        return f"Submission({self.run_id!r})"


def _parent_trace(traceparent: str | None) -> observe.Trace | None:
    if traceparent is None:
        return None
    if observe.parse_traceparent(traceparent) is None:
        raise ValidationError(
            "traceparent", f"{traceparent!r} is not a W3C traceparent",
            "pass '00-<32 hex trace id>-<16 hex span id>-<2 hex flags>', or None to start a new trace",
        )
    return observe.Trace(traceparent.strip().lower())


def _more_stored(msg: Any) -> bool:
    try:
        return bool(msg.metadata.num_pending)
    except Exception:
        return False


def resolve_url(settings: Settings) -> str:
    """NATS_URL, else the URL `timestep up` wrote to $TIMESTEP_HOME/nats.url."""
    if settings.nats.url:
        return settings.nats.url
    path = url_file(settings.home)
    if path.exists():
        return path.read_text().strip()
    raise TimestepError(f"no NATS server: set NATS_URL, or start one with `timestep up` (it writes {path})")


def _unreachable(url: str, given: bool, settings: Settings) -> str:
    """One line on a URL where nothing listens: whose address it is, and what to start."""
    shown = redact_url(url)
    if given:
        return f"no NATS server answers at {shown} (connection refused); start it, or pass the URL of a running one"
    if settings.nats.url:
        return (
            f"no NATS server answers at NATS_URL={shown} (connection refused); start it, or unset NATS_URL "
            "and run `timestep up`, which starts its own"
        )
    path = url_file(settings.home)
    return (
        f"no `timestep up` answers at {shown} (the address in {path}, from one that has stopped); "
        "start one with `timestep up --agents YOUR_MODULE`, or set NATS_URL"
    )


def _body(tp: type, fields: dict[str, Any]) -> Any:
    """A control body built from the caller's values, checked as the agent actor will check it."""
    try:
        return msgspec.convert({k: v for k, v in fields.items() if v is not None}, tp)
    except msgspec.ValidationError as exc:
        field, problem = body_problem(exc, data=_encode({k: v for k, v in fields.items() if v is not None}), type=tp)
        raise ValidationError(field, problem) from None


def _check_run_id(run_id: Any) -> str:
    problem = run_id_problem(run_id)
    if problem is not None:
        shown = f"{run_id!r} " if isinstance(run_id, str) else ""
        raise ValidationError("run_id", f"{shown}{problem}", "use the id of a submitted run")
    return run_id


def _check_name(name: Any) -> str:
    """A queue's or a schedule's name, checked here: the server would refuse it in msgspec's words."""
    problem = run_id_problem(name, NAME_MAX_LENGTH)
    if problem is not None:
        shown = f"{name!r} " if isinstance(name, str) else ""
        raise ValidationError("name", f"{shown}{problem}")
    return name


class Client:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.subjects = bus.subjects

    @classmethod
    async def connect(cls, url: str | None = None, *, settings: Settings | None = None) -> Client:
        """Connect to NATS: `url`, else NATS_URL, else the embedded server a `timestep up` started
        in this TIMESTEP_HOME (found again in its nats.url when it restarts on another port);
        with the auth and TLS settings of the environment."""
        settings = settings or current_settings()
        target = url or resolve_url(settings)
        from_file = url_file(settings.home) if not (url or settings.nats.url) else None
        try:
            bus = await Bus.connect(
                target, settings=settings, name="timestep-client", refused_give_up=REFUSED_GIVE_UP_SECONDS, url_file=from_file
            )
        except NatsUnreachableError as exc:
            raise NatsUnreachableError(target, _unreachable(target, url is not None, settings)) from exc
        return cls(bus)

    async def close(self) -> None:
        await self.bus.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- runs -------------------------------------------------------------------

    async def submit(
        self,
        agent: str,
        input: str | list[dict[str, Any]],
        *,
        id: str | None = None,
        session_id: str | None = None,
        queue: str | None = None,
        priority: int | None = None,
        deduplication_id: str | None = None,
        timeout_seconds: float | None = None,
        stream: bool = False,
        metadata: dict[str, str] | None = None,
        approval_timeout_seconds: float | None = None,
        reply_timeout: float = 10.0,
        traceparent: str | None = None,
        max_tokens: int | None = None,
        session_policy: str | None = None,
        context: dict[str, Any] | None = None,
    ) -> Submission:
        """Submit a run. It gets a fresh id unless `id` is given; submitting the same id again
        is the same run. Raises RunRejectedError when the governor refuses it (`error.type`
        `SessionBusy` for `session_policy="reject"` when the session has an unfinished run).
        `context` is the run context, a JSON object the run's tools see as `ctx.context`; the
        `completed` event carries it as the run left it.

        The request carries a W3C `traceparent` header: `traceparent` when given, else the
        current OpenTelemetry span's context, else a new trace."""
        run_id = id or uuid.uuid4().hex
        parent = _parent_trace(traceparent)
        reused = id is not None and await self.bus.stored_event(run_id, "accepted") is not None
        request = RunRequest(
            agent=agent, input=input, id=run_id, session_id=session_id, queue=queue, priority=priority,
            deduplication_id=deduplication_id, timeout_seconds=timeout_seconds, stream=stream, metadata=metadata,
            max_tokens=max_tokens,
            approval_timeout_seconds=approval_timeout_seconds,
            session_policy=session_policy,
            context=context,
        )
        with observe.span("timestep.submit", parent, run_id=run_id, agent=agent, queue=queue) as trace:
            data = await self._send_until_answered(_encode(request), run_id, reply_timeout, observe.trace_headers(trace))
        if data is None:
            return Submission(self, run_id, None, trace.traceparent, reused)
        event = decode_submit_answer(data)
        if isinstance(event, Rejected):
            raise RunRejectedError(run_id, event.error)
        return Submission(self, run_id, event, trace.traceparent, reused)

    async def _send_until_answered(
        self, body: bytes, run_id: str, reply_timeout: float, headers: dict[str, str] | None = None
    ) -> bytes | None:
        """Send the request, and again with the same Nats-Msg-Id while no governor answers:
        a request lost with a dropped connection or a restarting server is sent again, and
        one that arrived is either dropped as a duplicate or finds its run already there.
        None when nothing answered within `reply_timeout` (the request may be stored and
        waiting for a governor)."""
        deadline = asyncio.get_running_loop().time() + reply_timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return None
            try:
                answer = await self.bus.request(
                    self.subjects.submit, body, min(left, RESEND_SECONDS), headers={"Nats-Msg-Id": run_id, **(headers or {})}
                )
                if not _is_pub_ack(answer):
                    return answer
                # JetStream itself answered (a replicated stream acknowledges a repeated
                # Nats-Msg-Id even with no_ack): the request is stored; the governor's answer
                # is the run's stored event.
                return await self.bus.run_outcome(run_id, max(0.0, deadline - asyncio.get_running_loop().time()))
            except TimeoutError:
                continue
            except ConnectionError:  # connection closed or reconnecting: wait a moment, send again
                await asyncio.sleep(min(0.25, max(0.0, deadline - asyncio.get_running_loop().time())))

    def events(self, run_id: str | None = None, *, from_start: bool | None = None) -> AsyncIterator[RunEvent]:
        """A run's events from its first (or, without `run_id`, every run's new events), live.
        A run's stream ends after its last event (completed, failed, cancelled or rejected), or,
        for a cancelled run that was resumed, after the last event of the resumed run.
        A malformed `run_id` raises ValidationError here, not at the first event it would never get."""
        subject = self.subjects.run_events(_check_run_id(run_id)) if run_id is not None else self.subjects.all_events
        replay = from_start if from_start is not None else run_id is not None
        return self._events(subject, run_id, replay)

    async def _events(self, subject: str, run_id: str | None, replay: bool) -> AsyncIterator[RunEvent]:
        # Closed with this generator, so its subscription ends before the connection is drained.
        async with contextlib.aclosing(self.bus.follow(subject, from_start=replay)) as messages:
            async for msg in messages:
                event = decode_event(msg.data)
                yield event
                # A cancelled run may have been resumed: its later events are stored after this one.
                if run_id and isinstance(event, TERMINAL) and not _more_stored(msg):
                    return

    async def live(self, run_id: str) -> AsyncIterator[LiveText]:
        """A run's streamed model text, each piece the moment the model yields it (core NATS,
        `<prefix>.runs.live.<run_id>`, not stored), until the run ends. Only pieces yielded after
        the subscription are seen: submit with your own `id` after opening it for all of them.
        A gap in `offset` means a piece was missed (core NATS delivers at most once); the run's
        `delta` events (`events()`) hold the whole text, stored."""
        _check_run_id(run_id)
        nc = self.bus.nc
        sub = await nc.subscribe(self.subjects.live(run_id))
        await nc.flush()  # the subscription is in place before the first piece is asked for

        async def until_done() -> None:
            async for _ in self.events(run_id):
                pass

        follower = asyncio.ensure_future(until_done())
        try:
            while True:
                piece = asyncio.ensure_future(sub.next_msg(timeout=None))
                await asyncio.wait({piece, follower}, return_when=asyncio.FIRST_COMPLETED)
                if not piece.done():
                    piece.cancel()
                    with contextlib.suppress(BaseException):
                        await piece
                    break
                with contextlib.suppress(msgspec.DecodeError):
                    yield decode_live(piece.result().data)
            follower.result()  # the events' error, if they failed
            # Every piece was published before the run's last event: after a round trip to the
            # server they are all queued here.
            await nc.flush()
            while True:
                try:
                    msg = await sub.next_msg(timeout=0.05)
                except NatsTimeout:
                    return
                with contextlib.suppress(msgspec.DecodeError):
                    yield decode_live(msg.data)
        finally:
            follower.cancel()
            with contextlib.suppress(BaseException):
                await follower
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def approve(
        self, run_id: str, call_id: str, *, always: bool = False, arguments: str | None = None,
        decided_by: str | None = None, wait: bool = True,
    ) -> None:
        """Approve a tool call the run waits on (`call_id` from its `interrupted` event, or `list_approvals`).

        `arguments` (a JSON object as a string) replaces the model's arguments: the tool runs
        with them, once the agent actor checked them against the tool's parameters (a bad edit
        is refused, `InvalidRequest` naming the field, and the call stays pending). `always`
        approves every call of this tool for the rest of the run. `decided_by` is kept as who
        decided (the NATS user instead, where the server names it).

        Returns once an agent actor handed the approval to the run; raises RequestRefusedError
        when it refused (`error.type`: UnknownRun, AlreadyFinished, NotWaiting, InvalidRequest, ...).
        With `wait=False` the approval is only stored: an agent actor acts on it when one runs,
        and a refusal goes to the dead letters.

        >>> await client.approve(run_id, "call_1", arguments='{"to": "bob@example.com"}', decided_by="ada")"""
        body = _body(Approve, {"call_id": call_id, "always": always, "arguments": arguments, "decided_by": decided_by})
        await self._control(run_id, "approve", body, call_id, wait)

    async def reject(
        self, run_id: str, call_id: str, message: str | None = None, *, always: bool = False,
        decided_by: str | None = None, wait: bool = True,
    ) -> None:
        """Reject a tool call the run waits on; the model is told `message`. `always` rejects every
        call of this tool for the rest of the run. Answered as `approve`."""
        body = _body(Reject, {"call_id": call_id, "message": message, "always": always, "decided_by": decided_by})
        await self._control(run_id, "reject", body, call_id, wait)

    async def list_approvals(
        self, status: str = "pending", *, run_id: str | None = None, agent: str | None = None, tool: str | None = None,
        queue: str | None = None, older_than_seconds: float | None = None, newer_than_seconds: float | None = None,
        limit: int = 100,
    ) -> list[ApprovalRecord]:
        """Approvals across runs, newest first (`<prefix>.approvals.list`, answered by an agent actor):
        `status` "pending" (the inbox), "decided" (the audit trail: who decided what, when) or "all",
        filtered by run, agent, tool, queue and age in seconds.

        >>> for a in await client.list_approvals(tool="send_email"):
        ...     await client.approve(a.run_id, a.call_id)"""
        body = _body(ApprovalList, {
            "status": status, "run_id": run_id, "agent": agent, "tool": tool, "queue": queue,
            "older_than_seconds": older_than_seconds, "newer_than_seconds": newer_than_seconds, "limit": limit,
        })
        try:
            return (await self._admin(self.subjects.approvals_list, body)).approvals or []
        except TimeoutError:
            raise TimestepError(
                "no agent actor answered approvals.list within 10 s; start one (`timestep up`, with the agent role)"
            ) from None

    async def cancel(self, run_id: str, *, wait: bool = True) -> None:
        """Cancel a queued or running run. Answered as `approve` (AlreadyFinished for a run that ended)."""
        await self._control(run_id, "cancel", Cancel(), "run", wait)

    async def _control(self, run_id: str, action: str, body: Any, key: str, wait: bool) -> None:
        _check_run_id(run_id)
        if not wait:
            await self.bus.publish_durably(self.subjects.control(run_id, action), _encode(body), f"{run_id}.{action}.{key}")
            return
        subject = self.subjects.command(run_id, action)
        try:
            answer = await self.bus.request(subject, _encode(body), CONTROL_TIMEOUT, refusal_fails=True)
        except TimeoutError:
            raise TimestepError(
                f"no agent actor answered {action} for run {run_id!r} within {CONTROL_TIMEOUT:g} s; start one "
                "(`timestep up`, with the agent role), or send it with wait=False to have it stored until one runs"
            ) from None
        reply = msgspec.json.decode(answer, type=Reply)
        if not reply.ok:
            raise RequestRefusedError(reply.error or ErrorInfo(type="Error", message="refused"))

    # --- schedules and queues ---------------------------------------------------------

    async def create_schedule(self, name: str, cron: str, request: RunRequest | dict[str, Any]) -> Schedule:
        """A schedule of runs of `request` at the times of `cron`, read in UTC (5 fields, or 6 with seconds first)."""
        if isinstance(request, dict):
            try:
                request = _body(RunRequest, request)
            except ValidationError as exc:
                raise ValidationError(f"request.{exc.field}", exc.problem, exc.fix) from None
        body = ScheduleCreate(name=_check_name(name), cron=cron, request=request)
        reply = await self._admin(self.subjects.schedules_create, body)
        assert reply.schedule is not None
        return reply.schedule

    async def delete_schedule(self, name: str) -> bool:
        return bool((await self._admin(self.subjects.schedules_delete, ScheduleDelete(name=_check_name(name)))).deleted)

    async def list_schedules(self) -> list[Schedule]:
        return (await self._admin(self.subjects.schedules_list, ScheduleList())).schedules or []

    async def configure_queue(
        self, name: str, *, limit: int | None = None, period_seconds: float | None = None,
        concurrency: int | None = None, tokens_per_period: int | None = None, max_tokens_per_run: int | None = None,
    ) -> QueueStatus:
        body = QueueConfigure(
            name=_check_name(name), limit=limit, period_seconds=period_seconds, concurrency=concurrency,
            tokens_per_period=tokens_per_period, max_tokens_per_run=max_tokens_per_run,
        )
        return (await self._admin(self.subjects.queues_configure, body)).queues[0]  # type: ignore[index]

    async def delete_queue(self, name: str) -> bool:
        """Delete queue `name`; False when there was none. RequestRefusedError, saying how many,
        while runs wait or run on it."""
        return bool((await self._admin(self.subjects.queues_delete, QueueDelete(name=_check_name(name)))).deleted)

    async def queue_status(self, name: str | None = None) -> list[QueueStatus]:
        return (await self._admin(self.subjects.queues_status, QueueStatusRequest(name=name if name is None else _check_name(name)))).queues or []

    # --- runs as the database holds them ------------------------------------------------

    async def list_runs(
        self, *, status: str | None = None, agent: str | None = None, queue: str | None = None, limit: int = 100
    ) -> list[RunInfo]:
        """The newest runs first (`<prefix>.runs.list`), filtered by status (`queued`, `running`,
        `waiting`, `completed`, `failed`, `cancelled`), agent and queue."""
        body = _body(RunsList, {"status": status, "agent": agent, "queue": queue, "limit": limit})
        return (await self._admin(self.subjects.runs_list, body)).runs or []

    async def get_run(self, run_id: str) -> RunInfo:
        """One run (`<prefix>.runs.get`); RequestRefusedError with type UnknownRun when there is none."""
        body = _body(RunGet, {"id": _check_run_id(run_id)})
        return (await self._admin(self.subjects.runs_get, body)).run  # type: ignore[return-value]

    async def steps(self, run_id: str, step: int | None = None) -> list[RunStep]:
        """The run's recorded steps, in order (`<prefix>.runs.steps`), each value cut to 2,000
        characters of JSON (`.cut`); with `step`, that one step, whole. RequestRefusedError with type
        UnknownRun when there is no such run."""
        body = _body(RunSteps, {"id": _check_run_id(run_id), "step": step})
        return (await self._admin(self.subjects.runs_steps, body)).steps or []

    async def fork(self, run_id: str, from_step: int, *, fork_id: str | None = None) -> RunInfo:
        """A new run that goes on from step `from_step` of the finished run `run_id`
        (`<prefix>.runs.fork`): the steps before it come from the record, so nothing before it runs
        again, and from it on an agent actor runs it with the agent as deployed now. Returns the
        fork (its `id`; follow it with `events(id)`, whose first is `forked`). RequestRefusedError
        naming the field: a run that has not ended or has a session, a step it does not have, an
        agent no actor hosts.

        >>> fork = await client.fork("r-1", 3)
        >>> async for event in client.events(fork.id): ...
        """
        body = _body(RunFork, {"id": _check_run_id(run_id), "from_step": from_step, "fork_id": fork_id})
        return (await self._admin(self.subjects.runs_fork, body)).run  # type: ignore[return-value]

    async def _admin(self, subject: str, body: Any, timeout: float = 10.0) -> Reply:
        """A request answered with a `Reply`; PermissionDeniedError at once when this user may not send it."""
        reply = msgspec.json.decode(await self.bus.request(subject, _encode(body), timeout, refusal_fails=True), type=Reply)
        if not reply.ok:
            raise RequestRefusedError(reply.error or ErrorInfo(type="Error", message="refused"))
        return reply
