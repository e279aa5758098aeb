"""The governor: the front door for run requests.

Consumes `<prefix>.runs.submit`, validates each request, and hands it on durably:
a direct run to the agent actors (`<prefix>.runs.start`), a queued run into its DBOS
queue, where priority, the rate limit and concurrency hold across every process on
the database. Publishes `accepted` (and `queued`), or `rejected` plus a dead letter.

It also answers `<prefix>.runs.submit` requests (those sent with a reply subject) with
the run's `accepted` or `rejected` event, shaped so that it is also the PubAck (or the
JetStream API error) a JetStream client's publish waits for (`subjects.events.submit_answer`),
and serves `<prefix>.queues.configure`,
`<prefix>.queues.status`, `<prefix>.runs.list` and `<prefix>.runs.get` (runs as the database
holds them: `timestep.durable.listing`).
"""

from __future__ import annotations

import logging

from actors.agent import AgentActor
from actors.base import Actor, KnownAgents, origin
from subjects.events import Accepted, ErrorInfo, Failed, Queued, Rejected, decode_submit_answer, submit_answer
from subjects.messages import QueueConfigure, QueueDelete, QueueStatusRequest, Reply, RunFork, RunGet, RunsList, RunSteps
from subjects.names import SUBMIT_STREAM
from timestep.durable import admission, listing, queues
from timestep.ops import metrics, observe
from timestep.bus.connection import Bus, Message
from timestep.durable.events import now
from timestep.errors import DuplicateRunError, SessionBusyError, TimestepError, ValidationError
from timestep.bus.intake import Busy, Invalid, StartRun, encode, parse_request, to_spec
from timestep.durable.runs import RunSpec, enqueue_run, fork, run_state

log = logging.getLogger("actors.governor")

RELAY_TIMEOUT = 10.0


def _traced(spec: RunSpec) -> RunSpec:
    """The run keeps its trace context in its durable input: a recovered run's events carry it too."""
    ctx = observe.current_run()
    if ctx is not None and ctx.trace is not None:
        spec.traceparent, spec.tracestate = ctx.trace
    return spec


def _unknown_run(run_id: str) -> Reply:
    return Reply(ok=False, error=ErrorInfo(type="UnknownRun", message=f"id: no run {run_id!r}; `runs.list` lists them", field="id"))


class Governor(Actor):
    stream = SUBMIT_STREAM
    durable = "governor"

    def __init__(self, bus: Bus, local_agent: AgentActor | None = None) -> None:
        super().__init__(bus)
        self.subject = bus.subjects.submit
        self.local_agent = local_agent
        self._agents = KnownAgents(bus)

    async def on_start(self) -> None:
        s = self.bus.subjects
        await self.serve(s.submit, "timestep-governor", self._relay)
        await self.answer(s.queues_configure, "timestep-governor", QueueConfigure, self._configure_queue)
        await self.answer(s.queues_status, "timestep-governor", QueueStatusRequest, self._queue_status)
        await self.answer(s.queues_delete, "timestep-governor", QueueDelete, self._delete_queue)
        await self.answer(s.runs_list, "timestep-governor", RunsList, self._runs_list)
        await self.answer(s.runs_get, "timestep-governor", RunGet, self._run_get)
        await self.answer(s.runs_steps, "timestep-governor", RunSteps, self._run_steps)
        await self.answer(s.runs_fork, "timestep-governor", RunFork, self._fork)

    # --- the mailbox: every request, from the submit stream ------------------------

    async def handle(self, msg: Message) -> None:
        try:
            request, run_id = parse_request(msg.data, msg.headers, self.bus.settings.max_request_bytes)
            # The request's trace context (a new trace when it has none) goes with the run; bound
            # for this message's task, so its log lines and events name the run.
            with observe.span("timestep.admit", observe.trace_from_headers(msg.headers), run_id=run_id, queue=request.queue) as trace:
                observe.bind_run(run_id, trace)
                await self._admit(request, run_id)
        except Invalid as bad:
            await self._reject(msg, bad)

    async def _admit(self, request, run_id: str) -> None:
        problem = await self._agents.problem(request.agent)
        if problem is not None:
            raise Invalid("agent", problem, run_id)
        try:
            await admission.refuse_if_busy(request.session_id, request.session_policy, run_id)  # as the library does
        except SessionBusyError as busy:
            raise Busy(busy.field, busy.problem, run_id) from None
        typescript = await self._agents.runtime(request.agent) == "typescript"
        if request.queue is None:
            await self._start_now(request, run_id, typescript=typescript)
        else:
            await self._enqueue(request, run_id, typescript=typescript)
        metrics.RUNS_ADMITTED.labels(kind="direct" if request.queue is None else "queued", queue=request.queue or "").inc()
        log.info("admitted run %s (%s)", run_id, f"queue {request.queue}" if request.queue else "direct")

    async def _start_now(self, request, run_id: str, *, typescript: bool = False) -> None:
        # `accepted` is stored first, so no event of the run comes before it, wherever the run starts.
        # A crash before the run is handed on redelivers the request (it is acked after this), which
        # publishes `accepted` again (stored once: its message id) and hands the run on.
        start = StartRun(run_id=run_id, timeout_seconds=request.timeout_seconds, spec=_traced(to_spec(request, seq_base=1)))
        await self.bus.publish_event(Accepted(run_id=run_id, seq=1, time=now()))
        if self.local_agent is not None and not typescript:
            await self.local_agent.start_run(start)
        else:
            trace = observe.run_trace(run_id)
            subject = self.bus.subjects.start_typescript if typescript else self.bus.subjects.start
            await self.bus.publish_durably(subject, encode(start), run_id, headers=observe.trace_headers(trace))

    async def on_give_up(self, msg: Message, exc: Exception) -> None:
        """A request whose run was accepted but could not be handed on (the database or the bus
        failing for every attempt) ends with `failed`, so nobody waits on it forever."""
        try:
            _, run_id = parse_request(msg.data, msg.headers, self.bus.settings.max_request_bytes)
        except Invalid:
            return
        if await run_state(run_id) is not None or await self.bus.stored_event(run_id, "accepted") is None:
            return  # the run exists and says its own end, or was never accepted
        error = ErrorInfo(type="Unavailable", message=f"the run could not be started: {type(exc).__name__}: {exc}; submit it again")
        await self.bus.publish_event(Failed(run_id=run_id, seq=2, time=now(), error=error))

    async def _enqueue(self, request, run_id: str, *, typescript: bool = False) -> None:
        queue = request.queue
        spec = _traced(to_spec(request, seq_base=2))
        if typescript:
            spec.runtime = "typescript"  # admitted by the queue here, then handed on (see `handoff`)
        try:
            # Woken after `accepted` and `queued` are stored, so they come before `started`.
            await enqueue_run(spec, run_id, request, wake=False)
        except DuplicateRunError as dup:
            # A redelivery of this very request finds its own run holding the id: fine.
            if await run_state(run_id) is None:
                raise Invalid(dup.field, dup.problem, run_id) from None
        except TimestepError as exc:
            raise Invalid(getattr(exc, "field", "request"), str(exc), run_id) from None
        await self.bus.publish_event(Accepted(run_id=run_id, seq=1, time=now()))
        await self.bus.publish_event(Queued(run_id=run_id, seq=2, time=now(), queue=queue))
        queues.wake(queue)

    async def _reject(self, msg: Message, bad: Invalid) -> None:
        if bad.run_id is not None and observe.run_trace(bad.run_id) is None:
            observe.bind_run(bad.run_id, observe.trace_from_headers(msg.headers) or observe.new_trace())
        log.info("rejected a request on %s: %s", msg.subject, bad)
        # A bad request that names an existing run is refused without touching that run's history.
        if bad.run_id is not None and await run_state(bad.run_id) is None:
            await self.bus.publish_event(Rejected(run_id=bad.run_id, seq=1, time=now(), error=bad.info()))
        await self.bus.dead_letter(msg.subject, msg.data, msg.headers, f"rejected: {bad}", bad.info(), origin=origin(msg))

    # --- request/reply: answer with the run's accepted or rejected event -----------

    async def _relay(self, msg: Message) -> None:
        if not msg.reply:
            return  # a plain publish: the stream copy is all there is to handle
        try:
            _, run_id = parse_request(msg.data, msg.headers, self.bus.settings.max_request_bytes)
        except Invalid as bad:
            await msg.respond(submit_answer(Rejected(run_id=bad.run_id or "", seq=1, time=now(), error=bad.info()), stream=SUBMIT_STREAM))
            return
        # Waiting here would hold up every request behind this one (nats-py runs a
        # subscription's callbacks one at a time), and a run's outcome can take seconds.
        self.background(self._answer(msg, run_id))

    async def _answer(self, msg: Message, run_id: str) -> None:
        # JetStream drops a repeat of a Nats-Msg-Id silently (the stream is no_ack), so a repeat is
        # told by its run: accepted already when the request came. A fresh request's own admission
        # can rarely beat this look on a busy governor; it is then answered as a repeat.
        stored = await self.bus.stored_event(run_id, "accepted")
        answer = stored or await self.bus.run_outcome(run_id, RELAY_TIMEOUT)
        if answer is not None:
            await msg.respond(submit_answer(decode_submit_answer(answer), stream=SUBMIT_STREAM, duplicate=stored is not None))

    # --- queues ----------------------------------------------------------------------

    async def _configure_queue(self, req: QueueConfigure) -> Reply:
        try:
            await queues.configure_queue(
                req.name, req.limit, req.period_seconds, req.concurrency,
                tokens_per_period=req.tokens_per_period, max_tokens_per_run=req.max_tokens_per_run, model_retry=req.model_retry,
            )
        except ValidationError as exc:  # the library calls it `period`; on the bus it is `period_seconds`
            field = "period_seconds" if exc.field == "period" else exc.field
            raise ValidationError(field, exc.problem, exc.fix) from None
        return Reply(ok=True, queues=[await queues.queue_status(req.name)])

    async def _delete_queue(self, req: QueueDelete) -> Reply:
        return Reply(ok=True, deleted=await queues.delete_queue(req.name))

    async def _queue_status(self, req: QueueStatusRequest) -> Reply:
        names = [req.name] if req.name else await queues.names()
        return Reply(ok=True, queues=[await queues.queue_status(n) for n in names])

    # --- runs ------------------------------------------------------------------------

    async def _runs_list(self, req: RunsList) -> Reply:
        return Reply(ok=True, runs=await listing.list_runs(status=req.status, agent=req.agent, queue=req.queue, limit=req.limit))

    async def _run_get(self, req: RunGet) -> Reply:
        run = await listing.get_run(req.id)
        if run is None:
            return _unknown_run(req.id)
        return Reply(ok=True, run=run)

    async def _run_steps(self, req: RunSteps) -> Reply:
        steps = await listing.run_steps(req.id, req.step)
        if steps is None:
            return _unknown_run(req.id)
        if req.step is not None and not steps:
            return Reply(ok=False, error=ErrorInfo(type="UnknownStep", message=f"step: run {req.id!r} has no step {req.step}", field="step"))
        return Reply(ok=True, steps=steps)

    async def _fork(self, req: RunFork) -> Reply:
        async def hosted(agent: str) -> None:
            problem = await self._agents.problem(agent)
            if problem is not None:
                raise ValidationError("id", f"run {req.id!r} is a run of agent {agent!r}: {problem}", "start an agent actor that hosts it, then fork again")

        try:
            new_id = await fork(req.id, req.from_step, req.fork_id, check_agent=hosted, announce=self.bus.publish_event)
        except ValidationError as exc:  # the library's `run_id` and `workflow_id` are `id` and `fork_id` here
            field = {"run_id": "id", "workflow_id": "fork_id"}.get(exc.field or "", exc.field)
            raise ValidationError(field, exc.problem, exc.fix) from None
        return Reply(ok=True, run=await listing.get_run(new_id))
