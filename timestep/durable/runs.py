"""Durable agent runs: the workflow, `run_agent_workflow`, `queue_agent_workflow` and their results."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import threading
import time
import uuid
from datetime import datetime, timezone
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from agents import Agent, RunConfig, RunHooks, Runner, RunState

from subjects.events import (
    Approval,
    Cancelled,
    Completed,
    ErrorInfo,
    Failed,
    Forked,
    Interrupted,
    Rejected,
    RunEvent,
    Started,
    TokenUsage,
    ToolApproved,
    ToolRejected,
)
from subjects.ids import run_id_problem
from subjects.messages import Approve, ModelRetry, Reject, RunRequest, Schedule
from timestep.durable import approvals as inbox
from timestep.durable import admission, definitions, engine, handoff, queues, registry, run_context, sessions, store, ticks, turns
from timestep.durable.ticks import tick_run_id
from timestep.durable import run_config as run_options
from timestep.durable.queues import register_default_queue
from timestep.ops import observe
from timestep.durable.steps import RunRecorder, durable_session, durable_run_config, recording, stop_recording, wrap_agent
from timestep.durable.sdk_errors import picklable
from timestep.errors import (
    AgentChangedError, RunCancelledError, RunTimeoutError, SessionBusyError, TimestepError, UnknownAgentError, ValidationError,
    error_info,
)
from timestep.durable.events import ENDINGS, dispatch, last_stored, listen, now, say_cancelled
from timestep.durable.models import durable_provider
from timestep.durable.sessions import DatabaseSession
from timestep.settings import current as current_settings
from timestep.durable.state_store import clear_keys, definition_of, save_serialized, state_keys, with_definition

log = logging.getLogger("timestep.durable.runs")

#: How long a recovered run waits for start-up code to register its agent.
AGENT_WAIT_SECONDS = 10.0
DEFAULT_MAX_TURNS = 10


class RunSpec(msgspec.Struct, kw_only=True):
    """A run's workflow input, as DBOS stores it: names and data only, no live objects."""

    agent: str
    input: str | list[Any] | None = None
    state: str | None = None
    session_id: str | None = None
    stream: bool = False
    max_turns: int = DEFAULT_MAX_TURNS
    wait_for_approval: bool = False
    """Bus runs: when interrupted, wait (durably) for decisions sent with `send_decision`
    instead of returning; the run then continues in the same workflow."""
    seq_base: int = 0
    """Events published for this run before its workflow started (`accepted`, `queued`)."""
    token_queue: str | None = None
    """Set when the run's queue had a token budget at enqueue time: the run waits for the
    budget before it starts, and its model usage counts against it."""
    traceparent: str | None = None
    """W3C trace context of the request that started the run, kept here so that a recovered
    run's events carry it too (see `timestep.ops.observe`)."""
    tracestate: str | None = None
    queue: str | None = None
    """The queue the run came through: a provider's rate limit met by the run pauses it, and its
    approvals' records name it."""
    max_tokens: int | None = None
    """The run's model-token budget (see `BudgetExceeded`)."""
    pause_checked: bool = False
    """A queued run checks, in a step, that its queue is not paused before it starts (False for runs
    queued before that step existed, so that their recorded steps replay as they were)."""
    model_retry: ModelRetry | None = None
    """The run's retry settings, its queue's under its own (the agent's and TIMESTEP_MODEL_* under both)."""
    metadata: dict[str, str] | None = None
    """The request's metadata, for its approvals' records."""
    approval_timeout_seconds: float | None = None
    """A deadline for each approval the run waits for (else the tools' from the agent's registration)."""
    session_policy: str | None = None
    """What the run does when another run of its session is unfinished (see `turns`); None: a run
    created before session turns existed, which takes none."""
    context: bytes | None = None
    """The run's context (`context=`), pickled: see `run_context`."""
    options: bytes | None = None
    """The run's own RunConfig fields and RunHooks, pickled: see `run_config`."""
    context_json: bool = False
    """The context came as a JSON object (a request on the bus): it becomes the agent's registered
    context type as the run starts, and the `completed` event shows it as JSON."""
    session_recipe: dict[str, Any] | None = None
    """How to make the caller's own session object again where it is not at hand (see `sessions.recipe`);
    None: Timestep's database session, or the agent's registered session factory."""
    definition: str | None = None
    """Digest of the agent definition the run started under (see `definitions`); "" when the run was
    created without its agent at hand (it records the definition in its first step); None: unchecked."""
    runtime: str | None = None
    """"typescript": a queued run of an agent TypeScript agent actors host; admitted here, then handed on
    to them (see `handoff`). None: the run executes here."""


DECISION_TOPIC = inbox.DECISION_TOPIC
DECISION_WAIT_SECONDS = 3600.0
send_decision = inbox.send_decision


class RunResult(msgspec.Struct, kw_only=True):
    """What a finished run returns.

    `status` is "completed" or "interrupted"; `interruptions` lists the tool calls
    waiting for approval (the run's state is saved: see `RunStateStore`).
    """

    workflow_id: str
    status: str
    output: Any = None
    interruptions: list[Approval] = msgspec.field(default_factory=list)
    usage: TokenUsage = msgspec.field(default_factory=TokenUsage)
    last_agent: str | None = None
    context: Any = None
    """The run's context as the run left it (runs given a `context`)."""


class RunStatus(msgspec.Struct, kw_only=True):
    """Where a run stands: `status` is queued, running, completed, failed or cancelled (`timestep.durable.engine.records`)."""

    workflow_id: str
    status: str
    queue_name: str | None
    priority: int | None
    executor_id: str | None
    recovery_attempts: int | None
    created_at: float | None
    updated_at: float | None


# Live session objects handed in by callers, by session id (a custom SDK session
# cannot be pickled into the workflow's input). A run recovered where its session object is gone
# makes it again as the run stored (`sessions.recipe`).
_sessions: dict[str, Any] = {}


# The caller's own context, run config and hooks objects, by run id, for a run that executes in the
# process that started it: the SDK hands a run the objects it was given, not copies. A run
# recovered elsewhere gets them from what was stored (see `run_context`, `run_config`).
_live: dict[str, dict[str, Any]] = {}


def _hold(run_id: str, **objects: Any) -> None:
    given = {name: value for name, value in objects.items() if value is not None}
    if given:
        _live[run_id] = given


def _tracing() -> bool:
    return current_settings().tracing


def _session_for(spec: RunSpec) -> Any:
    live = _sessions.get(spec.session_id or "")
    return live if live is not None else sessions.make(spec.session_id or "", spec.agent, spec.session_recipe)


#: The workflow of every agent run (its name in the database).
WORKFLOW = "timestep.agent_run"


@engine.workflow(WORKFLOW)
async def agent_run(spec: RunSpec) -> RunResult:
    """One agent run. Model calls, tool calls and session I/O are steps (see `durable`)."""
    run_id = engine.current_workflow_id()
    bound = observe.bind_run(run_id, observe.Trace(spec.traceparent, spec.tracestate) if spec.traceparent else None)
    try:
        with observe.run_span("timestep.run", agent=spec.agent):
            return await _agent_run(spec, run_id)
    finally:
        observe.unbind_run(bound)


async def _agent_run(spec: RunSpec, run_id: str) -> RunResult:
    if spec.runtime == "typescript":
        return await _handed_on(spec, run_id)
    try:
        agent: Agent | None = await registry.wait_for_agent(spec.agent, AGENT_WAIT_SECONDS)
    except UnknownAgentError:
        agent = None
    retry = current_settings().model_retry.over(registry.agent_model_retry(spec.agent), spec.model_retry)
    recorder = RunRecorder(run_id, stream=spec.stream, token_queue=spec.token_queue, queue=spec.queue, max_tokens=spec.max_tokens, model_retry=retry)
    recorder.seq = spec.seq_base
    if agent is None:
        # Accepted while a process hosted the agent, which a deploy since removed or renamed:
        # the run ends here, saying so, instead of leaving its followers waiting.
        missing = UnknownAgentError(spec.agent, registry.registered_agents(), waited=AGENT_WAIT_SECONDS)
        await _ended(spec, run_id)
        await recorder.finish(Failed, error=error_info(missing))
        raise missing
    if spec.session_id and spec.session_policy:
        try:
            await turns.take_turn(spec.session_id, run_id, spec.session_policy, resume=spec.state is not None)
        except SessionBusyError as busy:
            await recorder.finish(Rejected, error=error_info(busy, "SessionBusy"))
            raise
    try:
        if spec.context is not None:
            recorder.context, recorder.has_context = _context_of(spec, run_id), True
        agent = await _definition(spec, agent, recorder)
        if spec.token_queue:
            await _wait_for_token_budget(spec.token_queue)
        if spec.queue and spec.pause_checked:
            await _wait_while_paused(spec.queue)
    except Exception as exc:  # a run that ends before it starts still ends with an event
        await _ended(spec, run_id)
        await recorder.finish(Failed, error=error_info(exc))
        raise
    recorder.event(Started)
    token = recording(recorder)
    try:
        return await _run(spec, run_id, agent, recorder)
    finally:
        stop_recording(token)
        _live.pop(run_id, None)  # a queued run's: its caller's objects are not needed past its end


async def _definition(spec: RunSpec, agent: Agent, recorder: RunRecorder) -> Agent:
    """The agent to run: as registered, plus stand-ins for the tools the run's history used that it
    lost since the run started; `recorder.change` says what changed (see `definitions`)."""
    started = spec.definition
    if started == "":
        live = definitions.describe(agent)

        async def record() -> str:
            return await definitions.remember_async(live)

        started = await engine.step("agent.definition", record)
    if started is None:
        return agent
    spec.definition = started  # what an interruption saves with the state
    change, agent = await definitions.compare_async(agent, started, functools.partial(registry.change_policy, spec.agent))
    recorder.change = change
    return agent


async def _ended(spec: RunSpec, run_id: str, how: str = "") -> None:
    """The run is over: the next run of its session may take its turn, and calls still waiting
    for a decision leave the inbox (`how` says why). Idempotent: not a step."""
    if spec.session_id and spec.session_policy:
        await turns.release(run_id)
    if spec.wait_for_approval and how:
        await inbox.close_pending(run_id, how)


async def _cancelled_in_database(run_id: str) -> bool:
    """Whether an asyncio cancel of the run was a cancel through DBOS. Never while this
    process stops its workflows (the run resumes later and must not say `cancelled`), and
    never recorded: a step the replay would not make again fails the recovered run."""
    if engine.stopping():
        return False
    try:
        state = await asyncio.wait_for(engine.status(run_id), 5)
    except BaseException:  # the event loop is closing: no database to ask
        return False
    return state is not None and state.status == "cancelled"


async def _run(spec: RunSpec, run_id: str, agent: Agent, recorder: RunRecorder) -> RunResult:
    durable_agent = wrap_agent(agent)
    session = durable_session(_session_for(spec), recorder) if spec.session_id else None
    context = recorder.context
    run_input: Any = spec.input
    if spec.state:
        run_input = await RunState.from_string(
            durable_agent, spec.state, **({"context_override": context} if spec.context is not None else {}),
        )
    live = _live.get(run_id, {})
    user_config, hooks = run_options.resolve(spec.agent, spec.options, run_id, live.get("run_config"), live.get("hooks"))
    config = durable_run_config(user_config, durable_provider(), tracing_disabled=not _tracing())
    while True:
        try:
            result = await Runner.run(
                durable_agent, run_input, session=session, run_config=config, max_turns=spec.max_turns, hooks=hooks,
                **({"context": context} if spec.context is not None else {}),
            )
        except engine.CancelledInside:
            await _ended(spec, run_id)
            await recorder.finish(Cancelled)
            raise
        except asyncio.CancelledError:
            # A cancel or timeout through DBOS, or this process shutting down (the run is
            # recovered later and must not say `cancelled`): the database tells which.
            if await _cancelled_in_database(run_id):
                await _ended(spec, run_id)
                await recorder.finish(Cancelled)
            raise
        except Exception as exc:
            # The SDK wraps what a tool step raised; a changed agent is named as itself.
            changed = exc.__cause__ if isinstance(exc.__cause__, AgentChangedError) else None
            # A provider's error is named as the provider names it (RateLimitError, not ModelCallError).
            kind = getattr(exc, "provider_error", None) or type(changed or exc).__name__
            await _ended(spec, run_id)
            await recorder.finish(Failed, error=ErrorInfo(type=kind, message=str(changed or exc)))
            if changed is not None:
                raise changed from None
            stored = picklable(exc)  # DBOS pickles it: the SDK's errors keep their class (see `sdk_errors`)
            if stored is not exc:
                raise stored from None
            raise
        usage = _usage(result.context_wrapper.usage)
        last_agent = result.last_agent.name
        if not result.interruptions:
            break
        approvals = [Approval(call_id=i.call_id or "", tool=i.name or "", arguments=i.arguments or "") for i in result.interruptions]
        state = result.to_state()
        serialized = with_definition(
            state.to_string(**({"context_serializer": run_context.for_state} if spec.context is not None else {})),
            recorder.definition or spec.definition,
        )

        async def save(emit: Callable[..., Any]) -> list[Approval]:
            await save_serialized(state_keys(spec.session_id, run_id), agent.name, serialized)
            if spec.session_id and spec.session_policy and not spec.wait_for_approval:
                await turns.hold(run_id)  # the session's turn stays this run's until its resume ends
            waiting = approvals
            if spec.wait_for_approval:  # the inbox's records, with their deadlines
                waiting = await inbox.record_requested(
                    run_id, agent.name, approvals, session_id=spec.session_id, queue=spec.queue,
                    metadata=spec.metadata, timeout_seconds=spec.approval_timeout_seconds,
                )
            await emit(Interrupted, approvals=waiting)
            return waiting

        approvals = await recorder.step("run.interrupted", save)
        if not spec.wait_for_approval:
            return RunResult(
                workflow_id=run_id, status="interrupted", interruptions=approvals, usage=usage, last_agent=last_agent,
                context=_final(recorder),
            )
        try:
            await _await_decisions(run_id, agent.name, state, recorder, approvals)
        except engine.CancelledInside:  # cancelled while it waited (by request, or by a newer run of its session)
            await _ended(spec, run_id, "the run was cancelled while it waited")
            await recorder.finish(Cancelled)
            raise
        except AgentChangedError as exc:  # approved, but its agent changed meanwhile and may not go on
            await _ended(spec, run_id, "the run failed: AgentChangedError")
            await recorder.finish(Failed, error=ErrorInfo(type=type(exc).__name__, message=str(exc)))
            raise
        run_input = state

    output = result.final_output
    if (spec.state or spec.wait_for_approval) and spec.session_id:
        await clear_keys(state_keys(spec.session_id, None))  # idempotent: safe on a replay
    await _ended(spec, run_id)
    final = _final(recorder)
    shown = _jsonable(final) if spec.context_json and final is not None else None  # a request's context: its JSON form
    await recorder.finish(Completed, output=_jsonable(output), usage=usage, **({"context": shown} if isinstance(shown, dict) else {}))
    return RunResult(workflow_id=run_id, status="completed", output=output, usage=usage, last_agent=last_agent, context=final)


async def _handed_on(spec: RunSpec, run_id: str) -> RunResult:
    """A queued run another runtime executes: admitted here (a pause, a token budget), then handed on; it
    holds its place in the queue until it ends there. Its events are that runtime's, numbered on from
    `spec.seq_base`; its usage counts against the queue's token budget."""
    if spec.token_queue:
        await _wait_for_token_budget(spec.token_queue)
    if spec.queue and spec.pause_checked:
        await _wait_while_paused(spec.queue)

    async def hand_on() -> dict[str, Any]:
        return await handoff.hand_on(run_id, spec)

    # Preemptible: a graceful stop cuts the wait off (the run goes on there); the next process waits again.
    last = await engine.step("run.handoff", hand_on, preemptible=True)
    usage = TokenUsage(**(last.get("usage") or {}))
    if spec.token_queue and usage.total_tokens:
        await engine.step("queue.tokens", lambda: engine.blocking(queues.record_tokens, spec.token_queue, usage.total_tokens))
    status = last.get("type", "failed")
    if status == "cancelled":
        raise RunCancelledError(run_id)
    if status != "completed":
        error = last.get("error") or {}
        raise handoff.HandedOnRunFailed(f"run {run_id!r} failed in its TypeScript agent actor: {error.get('type', 'Error')}: {error.get('message', '')}")
    return RunResult(workflow_id=run_id, status="completed", output=last.get("output"), usage=usage)


def _context_of(spec: RunSpec, run_id: str) -> Any:
    """The run's context: the caller's object in the process that started the run, else as stored,
    and for a request's JSON object, as the agent's context type."""
    given = _live.get(run_id, {}).get("context")
    if given is not None:
        return given
    context = run_context.unpack(spec.context, run_id) if spec.context is not None else None
    if spec.context_json and isinstance(context, dict):
        context = run_context.from_json(context, registry.agent_context_type(spec.agent))
    return context


def _final(recorder: RunRecorder) -> Any:
    """The context the run returns: as its last step left it (None when it has none, or holds
    what cannot be stored now, which the run's result must not carry)."""
    if not recorder.has_context or run_context.snapshot(recorder.context) is None:
        return None
    return recorder.context


async def _wait_for_token_budget(queue: str) -> None:
    """Wait (durably) until the queue's runs used fewer tokens than its budget in the last period."""
    await _wait_out("queue.token_budget", queues.token_wait_seconds, queue)


async def _wait_while_paused(queue: str) -> None:
    """Wait (durably) while the run's queue is paused. The queue's workers hold their polls during a
    pause, but a poll that checked just before the pause began may still take a run; that run
    waits here, before its first model call, instead of meeting the provider's rate limit."""
    await _wait_out("queue.pause", queues.paused_seconds, queue)


async def _wait_out(step: str, seconds_left: Callable[[str], float], queue: str) -> None:
    """Ask `seconds_left(queue)` (blocking) in a recorded step, sleep that long durably, and ask
    again, until it answers 0."""
    async def check() -> float:
        return await engine.blocking(seconds_left, queue)

    while (wait := await engine.step(step, check)) > 0:
        await engine.sleep(wait)


async def _await_decisions(run_id: str, agent: str, state: RunState, recorder: RunRecorder, approvals: list[Approval]) -> None:
    """Wait durably until every pending tool call of `state` is decided: approved (perhaps with
    edited arguments), rejected, or rejected at its deadline. Each decision is an event and
    updates the call's record in the same step, so the run's history shows it and tells which
    calls still wait.

    The deadlines are in the recorded `interrupted` step and each wait is a `recv` whose end
    DBOS records, so a restart does not move them; a wait ends without a message only at the
    earliest deadline, which makes which calls expired the same on a replay."""
    pending = {item.call_id: item for item in state.get_interruptions()}
    deadlines = {a.call_id: a.deadline for a in approvals if a.deadline is not None}
    while pending:
        due = [deadlines[c] for c in pending if c in deadlines]
        earliest = min(due) if due else None
        wait = max(0.0, earliest - time.time()) if earliest is not None else DECISION_WAIT_SECONDS
        decision = await engine.recv(DECISION_TOPIC, wait)
        if decision is None or decision == turns.WAKE:  # a wake: the next recv sees a cancel
            if decision is None and earliest is not None:
                expired = [pending.pop(c) for c in list(pending) if deadlines.get(c, float("inf")) <= earliest]
                await _expire(run_id, state, recorder, expired, earliest)
            continue
        call_id = getattr(decision, "call_id", None)
        item = pending.get(call_id)
        if item is None or not isinstance(decision, (Approve, Reject)):
            log.warning("run %s: a decision for call_id %r, which is not waiting for approval, was ignored", run_id, call_id)
            continue
        if isinstance(decision, Approve) and decision.arguments is not None:
            try:  # checked before it was sent; checked again here, where the tool is
                inbox.check_arguments(agent, item.name or "", decision.arguments)
            except TimestepError as exc:
                log.warning("run %s: an approval of %r with arguments the tool refuses was ignored: %s", run_id, call_id, exc)
                continue
            recorder.edited_arguments[call_id] = decision.arguments
            inbox.show_edited_arguments(state, item, decision.arguments)
        # `always` decides every waiting call of the same tool too (the SDK applies it by tool name).
        same = [c for c, i in pending.items() if c == call_id or (decision.always and i.name == item.name)]
        decided = [pending.pop(c) for c in same]
        if isinstance(decision, Approve):
            state.approve(item, always_approve=decision.always)
            event: type = ToolApproved
            status = "approved"
        else:
            state.reject(item, always_reject=decision.always, rejection_message=decision.message)
            event, status = ToolRejected, "rejected"
        await _record_decision(run_id, recorder, decided, decision, event, status)


async def _record_decision(run_id: str, recorder: RunRecorder, decided: list[Any], decision: Approve | Reject, event: type, status: str) -> None:
    edited = decision.arguments if isinstance(decision, Approve) else None
    message = decision.message if isinstance(decision, Reject) else None

    async def record(emit: Callable[..., Any]) -> None:
        for i in decided:
            await inbox.record_decision(
                run_id, [i.call_id], status=status, decided_at=decision.decided_at or 0.0, decided_by=decision.decided_by,
                message=message, always=decision.always, approved_arguments=edited if i.call_id == decision.call_id else None,
            )
            fields: dict[str, Any] = {"always": decision.always, "decided_by": decision.decided_by}
            if event is ToolApproved:
                fields["arguments"] = edited if i.call_id == decision.call_id else None
            else:
                fields["message"] = message
            await emit(event, call_id=i.call_id or "", tool=i.name or "", **fields)

    await recorder.step("run.decision", record)


async def _expire(run_id: str, state: RunState, recorder: RunRecorder, expired: list[Any], deadline: float) -> None:
    when = datetime.fromtimestamp(deadline, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    message = f"Not approved before its deadline ({when}); the tool did not run."
    for item in expired:
        state.reject(item, rejection_message=message)

    async def record(emit: Callable[..., Any]) -> None:
        await inbox.record_decision(
            run_id, [i.call_id for i in expired], status="expired", decided_at=deadline, decided_by=inbox.DEADLINE, message=message
        )
        for i in expired:
            await emit(ToolRejected, call_id=i.call_id or "", tool=i.name or "", message=message, decided_by=inbox.DEADLINE, expired=True)

    await recorder.step("run.expired", record)


def _usage(usage: Any) -> TokenUsage:
    return TokenUsage(
        requests=usage.requests,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        total_tokens=usage.total_tokens,
    )


def _jsonable(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    try:
        return msgspec.to_builtins(value)
    except TypeError:
        return str(value)


# --- validation at the boundary ---------------------------------------------------


def _check_run_id(field: str, run_id: Any) -> None:
    problem = run_id_problem(run_id)
    if problem is not None:
        raise ValidationError(field, f"{run_id!r} {problem}", "run ids are NATS subject tokens: letters, digits, '_' and '-'")


def _check_workflow_id(workflow_id: Any) -> None:
    _check_run_id("workflow_id", workflow_id)


async def session_of(session: Any, agent: Any) -> tuple[Any, dict[str, Any] | None]:
    """The run's session id (a string is checked with the other options: `admission.run_request`)
    and how to make its session object again (`sessions.recipe`); the object is held for this process."""
    if session is None or isinstance(session, str):
        return session, None
    if not callable(getattr(session, "get_items", None)):
        raise ValidationError("session", f"{type(session).__name__} is not an Agents SDK session", "pass a session id string or a Session object")
    session_id = await sessions.session_id_of(session)
    if not isinstance(session_id, str) or not session_id:
        raise ValidationError("session", f"{type(session).__name__} has no session id", "pass a session id string or a Session object")
    how = sessions.recipe(session, getattr(agent, "name", ""))
    if not isinstance(session, DatabaseSession):
        _sessions[session_id] = session
    return session_id, how


def _prepare(
    agent: Any, input_items: Any, session: Any, stream: Any, workflow_id: Any, timeout_seconds: Any, max_turns: Any,
    max_tokens: Any = None, model_retry: Any = None, wait_for_approval: Any = False, approval_timeout_seconds: Any = None,
    session_policy: Any = None, context: Any = None, config: Any = None, hooks: Any = None, session_recipe: Any = None,
    **queueing: Any,
) -> tuple[RunSpec, str, RunRequest]:
    """Validate everything before anything is written (the options by the rules of a request on
    the bus: `admission`); register the agent for the caller."""
    if not isinstance(agent, Agent):
        raise ValidationError("agent", f"expected an agents.Agent, got {type(agent).__name__}", "pass the Agent to run")
    items = admission.library_input(input_items)
    if isinstance(max_turns, bool) or not isinstance(max_turns, int) or max_turns < 1:
        raise ValidationError("max_turns", f"{max_turns!r} is not a whole number of at least 1", "pass e.g. max_turns=10")
    retry = registry.check_model_retry(model_retry)  # also refuses a setting it does not know (a typo)
    if not isinstance(wait_for_approval, bool):
        raise ValidationError("wait_for_approval", f"{wait_for_approval!r} is not True or False", "pass wait_for_approval=True to wait for decisions")
    if approval_timeout_seconds is not None and not wait_for_approval:
        raise ValidationError("approval_timeout_seconds", "is set without wait_for_approval=True", "a run that returns at an interruption has no deadline")
    session_id = session  # made a string by `session_of`
    packed = run_context.pack(context) if context is not None else None
    options = run_options.pack(config, hooks)
    if packed is None and isinstance(items, RunState):
        packed = run_context.from_state(items)  # the interrupted run's context goes on with it
    request = admission.run_request(
        agent.name, items if not isinstance(items, RunState) else "", id=workflow_id, session_id=session_id, stream=stream,
        timeout_seconds=timeout_seconds, max_tokens=max_tokens, model_retry=retry, approval_timeout_seconds=approval_timeout_seconds,
        session_policy=session_policy, **queueing,
    )
    registry.register_agent(agent)
    if isinstance(items, RunState):
        state = items.to_string()
        # Resuming the same decisions twice is one run, not two.
        wid = request.id or "resume-" + hashlib.sha256(state.encode()).hexdigest()[:40]
        # The interrupted run's definition, when the state was loaded from the store.
        spec = spec_for(
            request, input=None, state=state, max_turns=max_turns, wait_for_approval=wait_for_approval,
            definition=definition_of(items) or "", context=packed, options=options, session_recipe=session_recipe,
        )
        return spec, wid, request
    spec = spec_for(
        request, max_turns=max_turns, wait_for_approval=wait_for_approval, context=packed, options=options, session_recipe=session_recipe,
    )
    return spec, request.id or uuid.uuid4().hex, request


def spec_for(request: RunRequest, **only: Any) -> RunSpec:
    """The workflow input of a run admitted as `request`, on either way in; `only` holds what one
    way alone sets (the library's `max_turns` and a resumed `state`, the bus's `seq_base`)."""
    fields: dict[str, Any] = {
        "agent": request.agent, "input": request.input, "session_id": request.session_id, "stream": request.stream,
        "max_tokens": request.max_tokens, "model_retry": request.model_retry, "queue": request.queue, "metadata": request.metadata,
        "approval_timeout_seconds": request.approval_timeout_seconds, "session_policy": request.session_policy or turns.DEFAULT_POLICY,
        "context": run_context.pack(request.context) if request.context is not None else None,
        "context_json": request.context is not None,
        # Filled in by whoever has the agent at hand when the run starts, else by the run's first step.
        "definition": "",
    }
    return RunSpec(**(fields | only))


def _returned(result: RunResult, context: Any) -> RunResult:
    """The result, with the caller's context object made to hold the run's final context (as the
    SDK's `Runner.run` leaves it)."""
    if context is not None and result.context is not None:
        run_context.restore(context, result.context)
        result.context = context
    return result


async def _result(handle: Any, workflow_id: str) -> RunResult:
    try:
        return await handle.get_result()
    except engine.WorkflowCancelled:
        status = await engine.status(workflow_id)
        deadline = status.deadline if status else None
        if deadline is not None and time.time() >= deadline - 0.05:
            raise RunTimeoutError(workflow_id, status.timeout_seconds or 0) from None
        raise RunCancelledError(workflow_id) from None


def ensure_dbos_launched() -> None:
    """Launch DBOS once (see `timestep.durable.launch`): every workflow is declared by now,
    this module's, so recovery finds them."""
    if not engine.is_launched():
        engine.after_launch(register_default_queue)
        engine.launch()


#: The workflow of a tick of a schedule an earlier version made with DBOS's scheduler: kept declared
#: so those ticks still in flight finish (their schedules move to Timestep's table at launch).
SCHEDULED_WORKFLOW = "timestep.scheduled_run"


@engine.workflow(SCHEDULED_WORKFLOW)
async def scheduled_run(scheduled_at: datetime, context: dict[str, Any]) -> None:
    spec = RunSpec(**context["spec"])
    workflow_id = tick_run_id(context["name"], scheduled_at)
    handle = await engine.start(agent_run, spec, workflow_id=workflow_id, timeout_seconds=None)
    await _result(handle, workflow_id)


# --- the library's schedules: each launched process fires the ticks of those whose agent it
# registered (see `timestep.durable.ticks`; the bus's are the scheduler actor's) ---------------

def _start_library_clock() -> None:
    launch = engine.runtime.current()
    threading.Thread(target=_library_clock, args=(launch,), name="timestep-schedules", daemon=True).start()


engine.on_every_launch(_start_library_clock)


def _library_clock(launch: engine.runtime.Runtime) -> None:
    """Until this launch ends (a shutdown; a later launch starts its own clock)."""
    try:
        _adopt_dbos_schedules()
    except Exception:  # DBOS's schedules could not be listed
        log.exception("the schedules of an earlier version could not be moved to Timestep's table; they fire as before")
    clock = ticks.Clock(log)

    def current() -> bool:  # not after a shutdown, whose database may be gone, nor beside a newer clock
        return launch.launched and engine.runtime.current() is launch

    while current():
        try:
            _fire_library_ticks(clock, current)
        except Exception as exc:
            log.warning("the schedules' clock could not read its schedules (%s: %s); trying again", type(exc).__name__, exc)
            clock.reload_soon()
            time.sleep(1.0)
        time.sleep(ticks.TICK_SECONDS)


def _fire_library_ticks(clock: ticks.Clock, current: Callable[[], bool]) -> None:
    hosted = set(registry.registered_agents())
    if not hosted or engine.stopping() or not current():
        return
    db = store.get_engine()
    if clock.stale():
        clock.update(*ticks.load(db))
    now = datetime.now(timezone.utc)
    mine = lambda row: row.schedule.origin == "library" and row.schedule.request.agent in hosted  # noqa: E731
    for row, tick in clock.due(now, mine):
        name = row.schedule.name
        run_id = tick_run_id(name, tick)
        try:
            spec = spec_for(row.schedule.request, session_recipe=row.session_recipe)
            engine.enqueue_now(agent_run, spec, workflow_id=run_id)
            ticks.mark_fired(db, name, tick)
        except Exception as exc:  # this schedule's trouble alone: the others still fire
            clock.failed(name, f"its tick failed ({type(exc).__name__}: {exc}); trying again")
            continue
        clock.fired(name, tick, now)
        log.info("schedule %s fired run %s", name, run_id)


def _adopt_dbos_schedules() -> None:
    """Move the schedules an earlier version made with DBOS's scheduler into Timestep's table, where
    they are listed with every other and fire the same way (their ticks keep their run ids)."""
    for found in engine.list_schedules(SCHEDULED_WORKFLOW):
        name, context = found["schedule_name"], found.get("context") or {}
        spec = context.get("spec") or {}
        fields = {k: spec[k] for k in ("agent", "input", "session_id", "stream") if spec.get(k) is not None}
        try:
            request = msgspec.convert(fields, RunRequest)
            row = ticks.Row(
                Schedule(name=name, cron=found["schedule"], request=request, created_at=time.time(), origin="library"),
                spec.get("session_recipe"),
            )
            ticks.save(store.get_engine(), row)
            engine.delete_schedule(name)  # a no-op when another process moved it first
        except Exception:  # this schedule alone: it stays with DBOS's scheduler, the others move
            log.exception("schedule %s of an earlier version could not be moved to Timestep's table; it fires as before", name)
            continue
        log.info("schedule %s moved from DBOS's scheduler to Timestep's table", name)


async def run_agent_workflow(
    agent: Agent,
    input_items: str | list[Any] | RunState,
    session: Any = None,
    stream: bool = False,
    workflow_id: str | None = None,
    timeout_seconds: float | None = None,
    *,
    on_event: Callable[[RunEvent], Any] | None = None,
    max_turns: int = DEFAULT_MAX_TURNS,
    max_tokens: int | None = None,
    model_retry: ModelRetry | dict | None = None,
    wait_for_approval: bool = False,
    approval_timeout_seconds: float | None = None,
    session_policy: str = "enqueue",
    context: Any = None,
    run_config: RunConfig | None = None,
    hooks: RunHooks | None = None,
) -> RunResult:
    """Run `agent` as a durable workflow and return its result.

    Every model call, tool call and session read/write is a step, so after a
    crash the run resumes where it was. The same `workflow_id` again returns
    the stored result and runs nothing. `on_event` receives the run's events
    in order (with `stream=True`, text deltas too). With `max_tokens`, the run fails with
    `BudgetExceeded` after the model call that takes its usage over that many tokens.
    `model_retry=ModelRetry(max_attempts=3)` changes how its failed model calls are retried.
    With `wait_for_approval=True` an interrupted run waits (durably, in the approvals inbox:
    see `list_approvals`) for its decisions instead of returning, each with the deadline
    `approval_timeout_seconds` if given.

    With a `session`, `session_policy` says what happens when another run of the session is
    unfinished: "enqueue" (wait for it, in order of arrival), "reject" (raise SessionBusyError)
    or "interrupt" (cancel it and go on with the history so far).

    `context` is the run context, as `Runner.run(agent, input, context=...)` takes it: every tool,
    guardrail and handoff callback sees it as `ctx.context`. It is stored with the run (pickled), each
    step records the changes made to it, and a recovered run goes on with the context its finished
    steps left; when the run ends here, `context` itself holds the final state, as `result.context` does.

    `run_config` and `hooks` are the SDK's (`Runner.run(..., run_config=..., hooks=...)`): stored with
    the run, so what they hold must pickle (functions at a module's top level); register with the
    agent what cannot (`register_agent(agent, run_config=..., hooks=...)`). Timestep's durable model
    provider stands in for the SDK's default one, and wraps one the run config names.

    >>> result = await run_agent_workflow(agent, "What's the weather in Paris?", "user-42")
    >>> result.output, result.interruptions, result.usage.total_tokens
    """
    session, recipe = await session_of(session, agent)
    spec, wid, request = _prepare(
        agent, input_items, session, stream, workflow_id, timeout_seconds, max_turns, max_tokens, model_retry,
        wait_for_approval, approval_timeout_seconds, session_policy, context, run_config, hooks,
        session_recipe=recipe,
    )
    ensure_dbos_launched()
    if spec.definition == "":  # known now: the run need not record it in a step of its own
        spec.definition = await definitions.remember_async(definitions.describe(agent))
    if spec.state is None:  # a resume holds the session's turn already
        await admission.refuse_if_busy(spec.session_id, spec.session_policy, wid)
    stop = listen(wid, on_event) if on_event is not None else None
    _hold(wid, context=context, run_config=run_config, hooks=hooks)
    try:
        handle = await start_run(spec, wid, request.timeout_seconds)
        return _returned(await _result(handle, wid), context)
    finally:
        _live.pop(wid, None)
        if stop is not None:
            stop()


class RunHandle:
    """A queued run: `workflow_id`, `await get_result()`, `await get_status()`, `await cancel()`."""

    def __init__(self, workflow_id: str, context: Any = None) -> None:
        self.workflow_id = workflow_id
        self._context = context  # the caller's context object, when this handle queued the run

    async def get_result(self) -> RunResult:
        return _returned(await _result(await engine.retrieve(self.workflow_id), self.workflow_id), self._context)

    async def get_status(self) -> RunStatus:
        s = await engine.status(self.workflow_id)
        if s is None:
            raise TimestepError(f"workflow_id: no run {self.workflow_id!r} in this database")
        return RunStatus(
            workflow_id=self.workflow_id,
            status=s.status,
            queue_name=s.queue,
            priority=s.priority,
            executor_id=s.executor_id,
            recovery_attempts=s.recovery_attempts,
            created_at=s.created_at,
            updated_at=s.updated_at,
        )

    async def cancel(self) -> None:
        await engine.cancel(self.workflow_id)

    def __repr__(self) -> str:
        return f"RunHandle({self.workflow_id!r})"


async def queue_agent_workflow(
    agent: Agent,
    input_items: str | list[Any] | RunState,
    session: Any = None,
    stream: bool = False,
    queue_name: str | None = None,
    priority: int | None = None,
    deduplication_id: str | None = None,
    workflow_id: str | None = None,
    timeout_seconds: float | None = None,
    *,
    on_duplicate: str = "error",
    max_turns: int = DEFAULT_MAX_TURNS,
    max_tokens: int | None = None,
    model_retry: ModelRetry | dict | None = None,
    wait_for_approval: bool = False,
    approval_timeout_seconds: float | None = None,
    session_policy: str = "enqueue",
    context: Any = None,
    run_config: RunConfig | None = None,
    hooks: RunHooks | None = None,
) -> RunHandle:
    """Queue a durable run and return its handle at once.

    The default queue admits 50 runs per 60 s (see `configure_queue`). A lower
    `priority` runs first; a run without one runs after all prioritised runs.
    A `deduplication_id` still queued or running raises DuplicateRunError, or
    with `on_duplicate="return"` gives the existing run's handle. Without `max_tokens`, the
    run takes the queue's `max_tokens_per_run`. While the queue is paused (a run of it met a
    provider's rate limit that named a time to come back), it admits no run in any process.

    >>> handle = await queue_agent_workflow(agent, "Summarise", priority=1, deduplication_id="user-42-summary")
    >>> result = await handle.get_result()
    """
    if on_duplicate not in ("error", "return"):
        raise ValidationError("on_duplicate", f"{on_duplicate!r} is not 'error' or 'return'", "choose what a duplicate deduplication_id does")
    session, recipe = await session_of(session, agent)
    spec, wid, request = _prepare(
        agent, input_items, session, stream, workflow_id, timeout_seconds, max_turns, max_tokens, model_retry,
        wait_for_approval, approval_timeout_seconds, session_policy, context, run_config, hooks,
        session_recipe=recipe,
        queue=queue_name if queue_name is not None else queues.DEFAULT_QUEUE, priority=priority, deduplication_id=deduplication_id,
    )
    ensure_dbos_launched()
    if spec.state is None:  # a resume holds the session's turn already
        await admission.refuse_if_busy(spec.session_id, spec.session_policy, wid)
    _hold(wid, context=context, run_config=run_config, hooks=hooks)
    try:
        handle = await enqueue_run(spec, wid, request, return_existing=on_duplicate == "return")
    except BaseException:
        _live.pop(wid, None)
        raise
    if handle.workflow_id != wid:
        _live.pop(wid, None)
    # A duplicate's handle is another run's: its context is not the one given here.
    return RunHandle(handle.workflow_id, context if handle.workflow_id == wid else None)


async def enqueue_run(spec: RunSpec, run_id: str, request: RunRequest, *, return_existing: bool = False, wake: bool = True) -> Any:
    """Put an admitted run on its queue (made with the default policy the first time it is named),
    with what it takes from the queue's policy: the one enqueue of both ways in. With `wake=False`
    this process's workers wait for their next poll (or `engine.wake_queue`). Raises
    DuplicateRunError for a `deduplication_id` still queued or running, unless `return_existing`."""
    queue = request.queue or queues.DEFAULT_QUEUE
    await queues.ensure_queue(queue)
    await apply_queue(spec, queue)
    return await engine.enqueue(
        queue,
        agent_run,
        spec,
        workflow_id=run_id,
        priority=queues.stored_priority(request.priority),
        deduplication_id=request.deduplication_id,
        return_existing=return_existing,
        timeout_seconds=request.timeout_seconds,
        wake=wake,
    )


async def start_run(spec: RunSpec, run_id: str, timeout_seconds: float | None) -> Any:
    """Start an admitted run now, in this process: the one start of both ways in (the library's
    `run_agent_workflow`, a bus run handed to an agent actor). Returns its DBOS handle."""
    return await engine.start(agent_run, spec, workflow_id=run_id, timeout_seconds=timeout_seconds)


async def fork_run(run_id: str, from_step: int, *, workflow_id: str | None = None) -> RunHandle:
    """A new run that goes on from step `from_step` of the finished run `run_id` (the step numbers
    of `run_steps`): the steps before it are taken from the record, so no model call, tool call or
    other step before it runs again, and from it on the run runs with the agent as registered now
    (changed since: an `agent_changed` event says what changed, or, when the agent's policy is
    `fail`, the fork fails with AgentChangedError). Its id is `workflow_id`, else a new one; its
    first event is `forked` (numbered 0); await `get_result()` of the returned handle for its
    result. Refused (ValidationError naming the argument): a run that has not ended, a run with a
    session (the fork would write its turn to the session a second time), a step the run does not
    have, an agent not registered here.

    >>> handle = await fork_run("r-1", 3)   # run r-1 again from its step 3, with the agent as it is now
    >>> (await handle.get_result()).output
    """

    async def registered_here(agent: str) -> None:
        registry.get_agent(agent)  # UnknownAgentError: the fork runs here, with the agent registered here

    return RunHandle(await fork(run_id, from_step, workflow_id, check_agent=registered_here))


async def fork(
    run_id: Any, from_step: Any, workflow_id: Any = None, *,
    check_agent: Callable[[str], Awaitable[None]], announce: Callable[[Any], Awaitable[None]] = dispatch,
) -> str:
    """The fork of every way in (`fork_run`, the governor's `runs.fork`): check it (`fork_checks`,
    then `check_agent(agent)`, which raises when the agent cannot run it), `announce` its `forked`
    event (numbered 0: the fork's first), and hand it to DBOS, whose internal queue a process of the
    deployment takes it from. Returns the fork's id."""
    ensure_dbos_launched()
    spec, new_id = await fork_checks(engine.Here(), run_id, from_step, workflow_id)
    await check_agent(spec.agent)
    await announce(Forked(run_id=new_id, seq=0, time=now(), from_run=run_id, from_step=from_step, agent=spec.agent))
    await engine.fork(run_id, from_step, new_id)
    return new_id


#: How long a fork waits for the record of a run whose last stored event ended it (`completed`,
#: `failed`, `cancelled`), and for any other running run (its ending may not be stored where this
#: process can read it: a governor without an agent keeps no event sink).
ENDED_RECORD_SECONDS = 10.0
RUNNING_RECORD_SECONDS = 1.0


async def _when_recorded_as_ended(source: Any, run: Any) -> Any:
    """The run as the database has it once its workflow is recorded as ended, when that is about to
    happen. A run's last event is stored a moment before its workflow's end is recorded, so a client
    that forks as soon as it reads `completed` would otherwise be told the run is still running."""
    if run.status != "running":
        return run
    last = await last_stored(run.id)
    ended = last is not None and last[1] in ENDINGS
    loop = asyncio.get_running_loop()
    deadline = loop.time() + (ENDED_RECORD_SECONDS if ended else RUNNING_RECORD_SECONDS)
    while not run.finished and loop.time() < deadline:
        await asyncio.sleep(0.05)
        found = await source.list_workflows(ids=[run.id], name=WORKFLOW)
        if not found:
            break
        run = found[0]
    return run


async def fork_checks(source: Any, run_id: Any, from_step: Any, workflow_id: Any) -> tuple[RunSpec, str]:
    """The checks of a fork (see `fork_run`) against the database as `source` reads it (the running
    engine, or `engine.Admin` from outside): the forked run's input and the fork's id."""
    _check_run_id("run_id", run_id)
    if workflow_id is not None:
        _check_run_id("workflow_id", workflow_id)
    if isinstance(from_step, bool) or not isinstance(from_step, int) or from_step < 1:
        raise ValidationError("from_step", f"{from_step!r} is not a step number", "give the number of a step of the run (`run_steps`)")
    found = await source.list_workflows(ids=[run_id], name=WORKFLOW)
    if not found:
        raise ValidationError("run_id", f"no run {run_id!r} in this database", "check the id (`timestep workflows list` lists the runs)")
    run = found[0]
    if not run.finished:
        run = await _when_recorded_as_ended(source, run)
    if not run.finished:
        raise ValidationError("run_id", f"run {run_id!r} is {run.status}; a fork goes on from a run that ended", "wait for it to end, or cancel it")
    spec = run.args[0] if run.args and isinstance(run.args[0], RunSpec) else None
    if spec is None:
        raise ValidationError("run_id", f"run {run_id!r} was not started by this version of Timestep", "fork a run of this version")
    if spec.session_id:
        raise ValidationError(
            "run_id", f"run {run_id!r} has session {spec.session_id!r}: a fork would write its turn to that session a second time",
            "fork a run without a session",
        )
    last = max((s.number for s in await source.steps(run_id)), default=0)
    if from_step > last + 1:
        raise ValidationError("from_step", f"run {run_id!r} has steps 1 to {last}", f"give a step from 1 to {last + 1}")
    new_id = workflow_id or f"{run_id[:100]}-fork-{uuid.uuid4().hex[:12]}"
    if await source.status(new_id) is not None:
        raise ValidationError("workflow_id", f"{new_id!r} is the id of a run already", "give the fork an id of its own, or none")
    return spec, new_id


async def apply_queue(spec: RunSpec, queue: str) -> None:
    """What a run queued on `queue` takes from the queue's policy: its token budget (unless the run
    has one), its retry settings (under the run's own), and the queue's token window."""
    limits = await queues.run_limits(queue)
    spec.queue = queue
    spec.pause_checked = True
    spec.token_queue = limits.token_queue
    if spec.max_tokens is None:
        spec.max_tokens = limits.max_tokens
    spec.model_retry = queues.merged_retry(limits.model_retry, spec.model_retry)


async def run_state(run_id: str) -> str | None:
    """The run's status as the database has it (queued, running, completed, failed, cancelled), or
    None when no run has this id. Never recorded as a step of a run that asks."""
    state = await engine.status(run_id)
    return state.status if state is not None else None


async def cancel_run(workflow_id: str) -> None:
    """Cancel a queued or running run, wherever it executes; awaiting its result raises
    RunCancelledError. The one cancel of both ways in (a cancel over the bus calls it too): the
    calls the run waited to have decided leave the approvals inbox (as `cancelled`), a run asleep
    waiting for them is woken so that it ends now (not at its next deadline, up to an hour), and
    where events are published (a process with the bus's event sink) the run's `cancelled` is
    stored before this returns, a queued run's too.

    >>> await cancel_run(handle.workflow_id)
    """
    _check_workflow_id(workflow_id)
    ensure_dbos_launched()
    await engine.cancel(workflow_id)
    await inbox.close_pending(workflow_id, "the run was cancelled")
    try:
        await engine.send(workflow_id, turns.WAKE, DECISION_TOPIC, idempotency_key=f"{workflow_id}.cancel-wake")
    except Exception as exc:  # no such run, or the database is away: nothing waits to be woken
        log.debug("run %s: no wake after its cancel: %s", workflow_id, exc)
    state = await engine.status(workflow_id)
    if state is not None and state.status == "cancelled":  # not a run that had finished
        await say_cancelled(workflow_id)
