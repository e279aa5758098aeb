"""The agent actor: hosts the registered agents and executes their durable runs.

- Direct runs arrive on `<prefix>.runs.start` from a governor; the actor starts each
  as a DBOS workflow (the durable hand-off) and acks. Queued runs are started by
  DBOS from their queues in whichever agent actor polls first.
- Control messages on `<prefix>.runs.control.<run_id>.<action>` (stored, fire and forget) and
  `<prefix>.runs.command.<run_id>.<action>` (a request, answered): approve and reject go
  durably to the waiting run (it need not be in this process); cancel cancels it.
- Every event of the runs executed here is published through the bus event sink,
  from inside their durable steps, so `completed` is never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import msgspec

from actors.base import Actor, origin
from subjects.events import ErrorInfo, Interrupted, encode_event
from subjects.ids import run_id_problem
from subjects.messages import ApprovalList, Approve, Cancel, Reject, Reply
from subjects.names import CONTROL_STREAM, RUNTIME_HEADER, WORK_STREAM
from timestep.client import Client
from timestep.durable import definitions, handoff, registry
from timestep.ops import observe
from timestep.bus.connection import HOSTED_RENEW_SECONDS, Bus, Message
from timestep.durable.events import ENDINGS, listen
from timestep.bus.intake import StartRun, body_problem, encode
from timestep.durable import approvals as inbox
from timestep.durable.runs import cancel_run, run_state, start_run
from timestep.errors import ValidationError

log = logging.getLogger("actors.agent")

_start_decoder = msgspec.json.Decoder(StartRun)
_CONTROL_TYPES = {"approve": Approve, "reject": Reject, "cancel": Cancel}


class AgentActor(Actor):
    stream = WORK_STREAM
    durable = "agent"

    def __init__(self, bus: Bus) -> None:
        super().__init__(bus)
        self.subject = bus.subjects.start
        self.capacity = bus.settings.agent_concurrency
        self.concurrency = self.capacity
        self._running: set[asyncio.Task] = set()
        self._room = asyncio.Condition()
        self._renewing: asyncio.Task | None = None

    async def on_start(self) -> None:
        await self._announce()
        self._renewing = asyncio.create_task(self._renew(), name="agent-announce")
        handoff.set_handoff(self._hand_on)

    async def _hand_on(self, run_id: str, spec) -> dict:
        """A queued run this process's queues admitted for an agent TypeScript agent actors host: hand it to
        them (`<prefix>.runs.start.typescript`, once: its message id) and wait for its last event."""
        start = StartRun(run_id=run_id, timeout_seconds=None, spec=spec)
        await self.bus.publish_durably(self.bus.subjects.start_typescript, encode(start), run_id)
        async with contextlib.aclosing(Client(self.bus).events(run_id)) as events:
            async for event in events:
                if event.type in ENDINGS:
                    return msgspec.json.decode(encode_event(event))
        raise RuntimeError(f"the events of run {run_id!r} ended without its end")

    async def on_stop(self) -> None:
        handoff.set_handoff(None)
        if self._renewing is not None:
            self._renewing.cancel()
            await asyncio.gather(self._renewing, return_exceptions=True)

    async def _announce(self) -> None:
        await self.bus.announce_agents(registry.registered_agents(), self.bus.settings.executor_id)

    async def _renew(self) -> None:
        """Keep this process counted as a host while it lives (see `Bus.announce_agents`)."""
        failing = False
        while True:
            await asyncio.sleep(HOSTED_RENEW_SECONDS)
            try:
                await self._announce()
                if failing:
                    log.info("the hosted agents are announced again")
                failing = False
            except Exception as exc:
                if not failing:
                    log.warning("could not renew the hosted agents (%s: %s); retrying every %.0f s", type(exc).__name__, exc, HOSTED_RENEW_SECONDS)
                failing = True

    async def ready(self) -> None:
        async with self._room:
            await self._room.wait_for(lambda: len(self._running) < self.capacity)

    async def handle(self, msg: Message) -> None:
        await self.start_run(_start_decoder.decode(msg.data))

    async def start_run(self, start: StartRun) -> None:
        """The durable hand-off: once this returns, DBOS holds the run. A governor in the same
        process calls it directly, saving a trip through `<prefix>.runs.start`."""
        spec = start.spec
        if spec.definition == "" and spec.agent in registry.registered_agents():
            # Known here: the run need not record its agent's definition in a step of its own.
            spec.definition = await definitions.remember_async(definitions.describe(registry.get_agent(spec.agent)))
        observe.bind_run(start.run_id, observe.Trace(spec.traceparent, spec.tracestate) if spec.traceparent else None)
        async with self._room:
            await self._room.wait_for(lambda: len(self._running) < self.capacity)
        handle = await start_run(start.spec, start.run_id, start.timeout_seconds)
        task = asyncio.create_task(self._follow(handle, start.run_id))
        self._running.add(task)

    async def _follow(self, handle, run_id: str) -> None:
        """Hold a slot while the run executes here (its outcome is already in its events).
        A run waiting for approval gives its slot back: it may wait for days."""
        task = asyncio.current_task()

        async def release() -> None:
            async with self._room:
                self._running.discard(task)
                self._room.notify_all()

        def on_event(event) -> None:
            if isinstance(event, Interrupted):
                asyncio.ensure_future(release())

        stop = listen(run_id, on_event)
        try:
            await handle.get_result()
            log.info("run %s finished", run_id)
        except BaseException as exc:
            log.info("run %s ended: %s: %s", run_id, type(exc).__name__, exc)
        finally:
            stop()
            await release()


class Refused(Exception):
    """A control message that cannot be acted on: `kind` is the stable type of its ErrorInfo."""

    def __init__(self, kind: str, message: str, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.kind = kind
        self.message = str(self)
        self.field = field

    def info(self) -> ErrorInfo:
        return ErrorInfo(type=self.kind, message=self.message, field=self.field)


class NotStartedYet(Exception):
    """The run was accepted but its workflow is not in the database yet (it is on its way)."""


def server_user(headers: dict[str, str] | None) -> str | None:
    """The NATS user the server says sent a message, when it says (the `Nats-Request-Info`
    header nats-server adds to requests that cross accounts through a shared service import)."""
    info = (headers or {}).get("Nats-Request-Info")
    if not info:
        return None
    try:
        value = msgspec.json.decode(info)
    except msgspec.DecodeError:
        return None
    user = value.get("user") or value.get("name") if isinstance(value, dict) else None
    return user if isinstance(user, str) and user else None


class ControlActor(Actor):
    """Part of the agent role: approve, reject and cancel, two ways.

    - `<prefix>.runs.control.<run_id>.<action>` (the control stream): stored, acted on when an
      agent actor takes it; a refusal goes to the dead letters. Fire and forget.
    - `<prefix>.runs.command.<run_id>.<action>` (request/reply, core NATS, queue group
      `timestep-agent`): acted on at once and answered with a `Reply`: `ok`, or the refusal
      (`error.type` UnknownRun, AlreadyFinished, NotWaiting, NotStarted, InvalidRequest,
      InvalidSubject),
      which also goes to the dead letters.

    Both check the same things: the run id, the body, that the run exists and is not over,
    and for approve and reject that the call id is one the run waits on (from its approvals
    record, as the library's `approve_tool_call` does).
    """

    stream = CONTROL_STREAM
    durable = "agent-control"

    def __init__(self, bus: Bus) -> None:
        super().__init__(bus)
        self.subject = bus.subjects.all_control

    async def on_start(self) -> None:
        await self.serve(self.bus.subjects.all_commands, "timestep-agent", self._command)
        await self.answer(self.bus.subjects.approvals_list, "timestep-agent", ApprovalList, self._list_approvals, concurrent=True)

    async def _list_approvals(self, query: ApprovalList) -> Reply:
        records = await inbox.query_approvals(query)
        # TypeScript runs keep their approvals in their own database: asked for theirs, waiting and decided.
        records = sorted(records + await self._typescript_approvals(query), key=lambda r: r.requested_at, reverse=True)[: query.limit]
        return Reply(ok=True, approvals=records)

    async def _typescript_approvals(self, query: ApprovalList) -> list:
        """The approvals of TypeScript agents' runs the query asks for; none when no TypeScript agent actor answers
        (NATS says at once when nobody listens, so a deployment without one waits for nothing)."""
        try:
            answer = await self.bus.request(self.bus.subjects.typescript_approvals, msgspec.json.encode(query), timeout=5)
        except (TimeoutError, ConnectionError):
            return []
        try:
            reply = msgspec.json.decode(answer, type=Reply)
        except msgspec.ValidationError as exc:
            log.warning("a TypeScript agent actor's approvals were not the contract's (%s); left out", exc)
            return []
        return list(reply.approvals or [])

    async def handle(self, msg: Message) -> None:
        try:
            await self.act(msg.subject, msg.data, msg.headers)
        except Refused as refused:
            log.info("control message refused: %s", refused)
            await self._dead(msg, refused)
        except NotStartedYet as exc:
            raise RuntimeError(str(exc)) from None  # redelivered after a backoff, by when it has started

    async def _command(self, msg: Message) -> None:
        self.background(self._answer(msg))  # database round trips: not in nats-py's one-at-a-time callback

    async def _answer(self, msg: Message) -> None:
        try:
            await self.act(msg.subject, msg.data, msg.headers)
        except Refused as refused:
            log.info("command refused: %s", refused)
            await self.reply(msg, Reply(ok=False, error=refused.info()))
            await self._dead(msg, refused)
        except NotStartedYet as exc:
            await self.reply(msg, Reply(ok=False, error=ErrorInfo(type="NotStarted", message=str(exc))))
        except Exception as exc:
            log.exception("command on %s failed", msg.subject)
            await self.reply(msg, Reply(ok=False, error=ErrorInfo(type="Unavailable", message=f"{type(exc).__name__}: {exc}; try again")))
        else:
            await self.reply(msg, Reply(ok=True))

    async def act(self, subject: str, data: bytes, headers: dict[str, str] | None = None) -> None:
        """Validate one control message and carry it out durably; raise Refused when it cannot be."""
        parsed = self.bus.subjects.parse_control(subject)
        if parsed is None or parsed[1] not in _CONTROL_TYPES:
            raise Refused("InvalidSubject", f"{subject!r} is not <prefix>.runs.control|command.<run_id>.approve|reject|cancel")
        run_id, action = parsed
        observe.bind_run(run_id)  # this message's task: its log lines name the run
        problem = run_id_problem(run_id)
        if problem is not None:
            raise Refused("InvalidSubject", f"{run_id!r} {problem}", "run_id")
        try:
            command = msgspec.json.decode(data or b"{}", type=_CONTROL_TYPES[action])
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            field, problem = body_problem(exc, data=data, type=_CONTROL_TYPES[action])
            raise Refused("InvalidRequest", problem, field) from None
        state = await run_state(run_id)
        _, last_headers, kind = await self.bus.last_event(run_id)
        if last_headers.get(RUNTIME_HEADER) == "typescript":
            # A run DBOS's TypeScript SDK executes (a queued one is also here, handed on): its actors decide.
            if not isinstance(command, Cancel):
                command = msgspec.structs.replace(command, decided_by=server_user(headers) or command.decided_by)
            await self._to_typescript(run_id, action, msgspec.json.encode(command))
            return
        if state is None:
            if kind is None:
                raise Refused("UnknownRun", f"no run {run_id!r}; check the id (`timestep workflows list` lists the runs)", "run_id")
            if kind != "rejected":
                raise NotStartedYet(f"run {run_id!r} was accepted and has not started yet; try again in a moment")
        # A run's last event goes out just before DBOS records its end: `completed` may be
        # stored while the status still says PENDING. Either one means the run is over.
        status = state if state is not None else "rejected"
        cancelled_unannounced = status == "cancelled" and kind != "cancelled" and isinstance(command, Cancel)
        if kind in ENDINGS or status in ("completed", "failed", "rejected") or (status == "cancelled" and not cancelled_unannounced):
            outcome = kind if kind in ENDINGS else status
            raise Refused("AlreadyFinished", f"run {run_id!r} already finished ({outcome}); there is nothing to {action}")
        if isinstance(command, Cancel):
            observe.bind_run(run_id, observe.trace_from_headers(last_headers))  # its `cancelled` carries the run's trace
            await cancel_run(run_id)
            return
        try:
            record = await inbox.waiting_for(run_id, command.call_id)  # as the library's approve and reject decide
        except ValidationError as exc:
            raise Refused("NotWaiting", exc.reason, exc.field) from None
        if isinstance(command, Approve) and command.arguments is not None:
            try:
                inbox.check_arguments(record.agent, record.tool, command.arguments)
            except ValidationError as exc:
                raise Refused("InvalidRequest", exc.reason, exc.field) from None
        decided_by = server_user(headers) or command.decided_by
        await inbox.send_decision(run_id, msgspec.structs.replace(command, decided_by=decided_by, decided_at=None))

    async def _to_typescript(self, run_id: str, action: str, data: bytes) -> None:
        """Pass the (validated) control message on to the TypeScript agent actors and take their answer
        as this actor's own: done, or refused with their reason."""
        try:
            answer = await self.bus.request(self.bus.subjects.typescript_command(run_id, action), data or b"{}", timeout=10)
        except TimeoutError:
            raise RuntimeError(f"no TypeScript agent actor answered for run {run_id!r}; start one (serveAgents) and try again") from None
        reply = msgspec.json.decode(answer, type=Reply)
        if not reply.ok:
            error = reply.error or ErrorInfo(type="Unavailable", message="the TypeScript agent actor refused without a reason")
            raise Refused(error.type, error.message, error.field)

    async def _dead(self, msg: Message, refused: Refused) -> None:
        await self.bus.dead_letter(msg.subject, msg.data, msg.headers, refused.message, refused.info(), origin=origin(msg))
