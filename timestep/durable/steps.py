"""Turn every model call, tool call and session read or write of an agent run into its own durable step.

The Agents SDK's `Runner` drives the run as usual; what it calls is wrapped:

- the model (`DurableModel`): each `get_response` is a step. With `stream=True`
  the step consumes the model's streaming API and hands text deltas to the
  run's listeners as they arrive; the step's result is the final response.
- each function tool: its invocation is a step, emitting `tool_call` and
  `tool_output`. Parallel tool calls pass a turnstile in the order the model
  listed them, so step numbers are the same on replay.
- the session (`DurableSession`): reads and writes are steps, so a replayed run
  neither sees history it wrote itself nor writes it twice.
- each input and output guardrail: its function is a step that records its output
  (input guardrails run before the model: see `_durable_guardrail`).
- a handoff made with `handoff(agent, on_handoff=...)`: the callback is a step.
- MCP servers (`mcp_servers=[...]`): each tool call is a step like a function tool's, and
  the tools a server listed are recorded once per run (`DurableMCPServer`).
- an agent used as a tool (`agent.as_tool(...)`): not one step for the whole sub-run, but the
  sub-agent's model and tool calls, each a step of the same run (not of a child workflow: the run
  keeps one history, one event sequence and one token budget, and a sub-agent needs no
  registration of its own to be recovered). See `_durable_agent_tool` and `_NestedRuns`.

What runs inside a step (a function tool, a guardrail, including a `Runner.run` they make
themselves) is part of that step: it runs again only when the step was cut off.

After a crash the workflow replays: finished steps return their recorded
results without running, and only the step that was in flight runs again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import inspect
import json
import pickle
import time
import weakref
from datetime import timedelta
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any

import msgspec
from agents import Agent, FunctionTool, GuardrailFunctionOutput, Handoff, InputGuardrail, Model, ModelProvider, OpenAIConversationsSession, OutputGuardrail, RunConfig, Usage
from agents import run as agent_run
from agents.run import AgentRunner
from agents.exceptions import ModelBehaviorError, ToolInputGuardrailTripwireTriggered, ToolOutputGuardrailTripwireTriggered
from agents.tool_guardrails import ToolInputGuardrailData, ToolOutputGuardrailData
from agents.mcp import MCPServer
from agents.models.multi_provider import MultiProvider
from agents.items import ModelResponse
from openai.types.responses import ResponseFunctionToolCall

from subjects.events import AgentChanged, Delta, ErrorInfo, LiveText, Retrying, ToolCall, ToolOutput
from timestep.durable import approvals, engine, model_retry, run_context
from timestep.ops import metrics, observe
from timestep.durable.definitions import AgentChange
from timestep.durable.events import dispatch, last_stored, live, live_sinks, now, settle
from timestep.durable.queues import pause_queue, record_tokens
from timestep.durable.sdk_errors import picklable, portable
from timestep.errors import AgentChangedError, BudgetExceeded
from timestep.settings import ModelRetrySettings
from timestep.settings import current as current_settings

Emit = Callable[..., Awaitable[None]]


class Turnstile:
    """Lets concurrent tool calls start their steps one after another, in a fixed order."""

    def __init__(self, ids: list[str]) -> None:
        self._next = dict(zip(ids, ids[1:]))
        self._events = {i: asyncio.Event() for i in ids}
        if ids:
            self._events[ids[0]].set()

    async def wait_for(self, call_id: str) -> None:
        event = self._events.get(call_id)
        if event is not None:
            await event.wait()

    def allow_next_after(self, call_id: str) -> None:
        following = self._next.get(call_id)
        if following is not None:
            self._events[following].set()


_NO_TURNSTILE = Turnstile([])


@dataclasses.dataclass
class StepOutcome:
    """What a step records: its value or its error, how many event numbers it used, and the
    run's `shift` when it ran (see RunRecorder)."""

    value: Any
    error: BaseException | None
    used: int
    shift: int = 0
    definition: str | None = None
    """The digest of the agent definition the run went on under (see `definitions`); None: unchanged."""
    context: bytes | None = None
    """The run's context as the step left it, pickled (runs with a context: see `run_context`)."""
    detail: dict[str, Any] | None = None
    """What a reader of the step wants beside its value: a tool call's arguments (see `listing.run_steps`)."""


_Outcome = StepOutcome  # its name in the records of steps stored before it was renamed (pickles name the class)


#: Events that end a run: one stored before a step of the run runs means the run was resumed.
_ENDINGS = ("cancelled", "failed")


class RunRecorder:
    """Per-run bookkeeping while the workflow executes.

    `seq` numbers events deterministically: events made by workflow code get the
    next number at once and are delivered by the next step that really runs (so a
    replay does not deliver them again); events made inside a step get numbers from
    the step's own counter, and the step records how many it used.

    A cancelled run that is resumed goes on after its `cancelled` event: the first step
    that really runs in an execution that did not start fresh asks the event sinks for the
    run's last stored event, and when that event ended the run, every later number moves
    past it (`shift`, recorded with each step so that replays number alike). Numbers are
    1, 2, 3, ... per run, none used twice, none skipped.
    """

    def __init__(
        self, run_id: str, *, stream: bool, token_queue: str | None = None, queue: str | None = None, max_tokens: int | None = None,
        model_retry: ModelRetrySettings | None = None,
    ) -> None:
        self.run_id = run_id
        self.stream = stream
        self.token_queue = token_queue
        self.queue = queue
        self.max_tokens = max_tokens
        self.tokens_used = 0
        self.model_retry = model_retry or current_settings().model_retry
        """How this run retries failed model calls (the run's, queue's and agent's settings over the environment's)."""
        self.seq = 0
        self.shift = 0
        self.turnstiles: dict[str, Turnstile] = {}
        """The turnstile each tool call of the last model responses passes, by call id (a sub-agent's
        model call, inside an agent tool, must not replace its parent's)."""
        self.mcp_tools: dict[tuple[str, str], Any] = {}
        """The tools each MCP server listed for each agent, recorded once per run (see `DurableMCPServer`)."""
        self.edited_arguments: dict[str, str] = {}
        """Approved tool calls whose arguments an approver replaced, by call id (set by the
        workflow from the recorded decision, so a replay runs the tool with the same)."""
        self._pending: list[tuple[int, type, dict[str, Any], Any]] = []
        self._aligned = engine.first_execution()  # a fresh start has nothing to move past
        self._done = 0  # numbers used up to the last step that finished
        self._delivered = 0  # the highest number this execution delivered
        self.change: AgentChange | None = None  # the agent differs from the one the run started with
        self.definition: str | None = None  # the definition the run went on under, when it changed
        self.context: Any = None
        """The run's context (`Runner.run(context=...)`); each step records it as the step left it."""
        self._model_input: tuple[Any, list[Any]] | None = None  # the last model call's instructions and input items
        self._tool_outputs: dict[str, tuple[int, str]] = {}
        """Text outputs of the tool steps this execution ran, with each step's number, by call id (see `model_input`)."""
        self.has_context = False

    def model_input(self, args: tuple, kwargs: dict) -> dict[str, Any]:
        """What a model call was given, for its step's record (read by `listing.run_steps`): its input
        items, or only those added since the run's previous model call when it went on from there
        (`input_since_previous`), and its instructions when they changed."""
        instructions = args[0] if args else kwargs.get("system_instructions")
        given = args[1] if len(args) > 1 else kwargs.get("input")
        items = [{"role": "user", "content": given}] if isinstance(given, str) else list(given or [])
        previous = self._model_input
        self._model_input = (instructions, items)
        detail: dict[str, Any] = {}
        if previous is not None and len(items) >= len(previous[1]) and items[: len(previous[1])] == previous[1]:
            detail["input_since_previous"] = items[len(previous[1]):]
        else:
            detail["input"] = items
        if previous is None or instructions != previous[0]:
            detail["instructions"] = instructions
        detail = plain(detail)
        for key in ("input", "input_since_previous"):
            if key in detail:
                detail[key] = [self._by_reference(item) for item in detail[key]]
        return detail

    def tool_ran(self, call_id: str, number: int | None, output: Any) -> None:
        """A tool step ran here and returned `output` (its record holds it)."""
        if number is not None and isinstance(output, str):
            self._tool_outputs[call_id] = (number, output)

    def _by_reference(self, item: Any) -> Any:
        """A tool's output the run recorded in its tool step is not written again in the next model call's
        record: the item names the step (`output_step`) and `listing.run_steps` puts the output back."""
        if isinstance(item, dict) and item.get("type") == "function_call_output" and isinstance(item.get("output"), str):
            known = self._tool_outputs.get(item.get("call_id"))  # type: ignore[arg-type]
            if known is not None and known[1] == item["output"]:
                return {**{k: v for k, v in item.items() if k != "output"}, "output_step": known[0]}
        return item

    def event(self, cls: type, **fields: Any) -> None:
        """Queue an event made by workflow code; the next executed step delivers it."""
        self.seq += 1
        self._pending.append((self.seq, cls, fields, now()))

    async def _deliver(self, number: int, cls: type, fields: dict[str, Any], when: Any = None) -> None:
        self._delivered = max(self._delivered, number)
        await dispatch(cls(run_id=self.run_id, seq=number + self.shift, time=when or now(), **fields))

    async def _align(self, first: int) -> None:
        """Before the first event this execution delivers (numbered `first`): move past an
        ending already stored (the run was cancelled, then resumed)."""
        if self._aligned:
            return
        self._aligned = True
        last = await last_stored(self.run_id)
        if last is not None and last[1] in _ENDINGS and last[0] >= first + self.shift:
            self.shift = last[0] - first + 1

    async def step(
        self,
        name: str,
        fn: Callable[[Emit], Awaitable[Any]],
        *,
        reserve: int | None = None,
        preemptible: bool = False,
        detail: dict[str, Any] | None = None,
    ) -> Any:
        """Run `fn(emit)` as one durable step. `reserve` fixes how many event numbers the
        step may use (needed when steps run concurrently); otherwise it uses what it needs."""
        pending, self._pending = self._pending, []
        base = self.seq
        if reserve is not None:
            self.seq += reserve

        async def body() -> StepOutcome:
            inside = _stepping.set(True)
            try:
                return await run_body()
            finally:
                _stepping.reset(inside)

        async def run_body() -> StepOutcome:
            await self._align(pending[0][0] if pending else base + 1)
            for number, cls, fields, when in pending:
                await self._deliver(number, cls, fields, when)
            counter = base

            async def emit(cls: type, **fields: Any) -> None:
                nonlocal counter
                counter += 1
                await self._deliver(counter, cls, fields)

            try:
                await self._changed(base)
                with _observed(name):
                    value = await fn(emit)
                outcome = StepOutcome(value, None, counter - base, self.shift, self.definition)
            except Exception as exc:  # recorded, then raised again outside the step
                outcome = StepOutcome(None, picklable(exc), counter - base, self.shift, self.definition)
            if self.has_context:
                outcome.context = run_context.snapshot(self.context)
            outcome.detail = detail
            ran[0] = True
            await settle(self.run_id)  # the step's events are stored before the step is
            return outcome

        ran = [False]
        try:
            outcome: StepOutcome = await engine.step(name, body, preemptible=preemptible)
        except BaseException:
            # Cut off (a cancel, a timeout, a stop) and not recorded: the numbers it kept
            # for itself but did not use go to the run's last event instead of leaving a gap.
            self.seq = max(self._done, self._delivered)
            raise
        self.shift = max(self.shift, outcome.shift)
        self.definition = getattr(outcome, "definition", None) or self.definition
        recorded_context = getattr(outcome, "context", None)
        if recorded_context is not None and not ran[0]:  # a replay: the changes the step made to the context
            run_context.restore(self.context, pickle.loads(recorded_context))
        if reserve is None:
            self.seq = base + outcome.used
        self._done = max(self._done, base + outcome.used)
        if outcome.error is not None:
            raise outcome.error
        return outcome.value

    async def _changed(self, base: int) -> None:
        """In the first step that runs under an agent changed since the run started: say so in an
        `agent_changed` event (numbered next; every later number moves up one, as `shift` records),
        or, when the agent's policy is `fail`, fail the step with AgentChangedError (recorded, so a
        replay fails alike). Once per change: the steps after it record the new definition."""
        change = self.change
        if change is None or self.definition == change.current:
            return
        self.definition = change.current
        if change.policy == "fail":
            raise AgentChangedError(change.agent, change.changes)
        self.shift += 1  # the event takes number base + 1 (as numbered before); the step's own events follow it
        await self._deliver(base, AgentChanged, {
            "agent": change.agent, "changes": change.changes, "previous": change.previous, "current": change.current,
        })

    async def finish(self, cls: type, **fields: Any) -> None:
        """Deliver the run's last event (and any still queued) from workflow code, not a step:
        it goes out before DBOS records the workflow's end, so a crash in between replays the
        workflow and delivers it again, with the same `seq`."""
        self.event(cls, **fields)
        pending, self._pending = self._pending, []
        async with engine.busy():  # a stop lets it go out whole
            for number, event_cls, event_fields, when in pending:
                await self._deliver(number, event_cls, event_fields, when)
            await settle(self.run_id)


@contextmanager
def _observed(name: str) -> Iterator[None]:
    """Model and tool steps that really run (not replays): a span, and their duration in
    `timestep_step_duration_seconds`. Session steps are bookkeeping and get neither."""
    if name != "model" and not name.startswith("tool:"):
        yield
        return
    started = time.perf_counter()
    try:
        with observe.run_span("timestep.model" if name == "model" else "timestep.tool", step=name):
            yield
    finally:
        ctx = observe.current_run()
        exemplar = {"trace_id": ctx.trace.trace_id} if ctx is not None and ctx.trace is not None else None
        metrics.observe_step(name, time.perf_counter() - started, exemplar)


_current: ContextVar[RunRecorder] = ContextVar("timestep_run_recorder")
_stepping: ContextVar[bool] = ContextVar("timestep_stepping", default=False)
"""True inside a step's body: what runs there is part of the step, not steps of its own."""


def recording(recorder: RunRecorder) -> Token:
    """Make `recorder` the current run's, for the durable wrappers (reset with the token)."""
    if not isinstance(agent_run.get_default_agent_runner(), _NestedRuns):
        agent_run.set_default_agent_runner(_NestedRuns(agent_run.get_default_agent_runner()))
    return _current.set(recorder)


def stop_recording(token: Token) -> None:
    _current.reset(token)


_replay_swap: ContextVar[Callable[[Agent], Agent] | None] = ContextVar("timestep_replay_swap", default=None)


def replaying(swap: Callable[[Agent], Agent]) -> Token:
    """For a replay (`timestep.durable.replay`): every `Runner.run` made in this context, the replay's
    own and an agent tool's sub-run, runs `swap(agent)` instead of its agent (reset with the token)."""
    if not isinstance(agent_run.get_default_agent_runner(), _NestedRuns):
        agent_run.set_default_agent_runner(_NestedRuns(agent_run.get_default_agent_runner()))
    return _replay_swap.set(swap)


def stop_replaying(token: Token) -> None:
    _replay_swap.reset(token)


# --- the model ------------------------------------------------------------------


class DurableModel(Model):
    """A model whose every call is one durable step of the current run."""

    def __init__(self, inner: Model) -> None:
        self.inner = inner

    async def get_response(self, *args: Any, **kwargs: Any) -> ModelResponse:
        recorder = _current.get()
        streaming = recorder.stream
        token_queue = recorder.token_queue
        policy = recorder.model_retry
        if _sdk_retries(args, kwargs):
            # The application asked the SDK to retry (ModelSettings.retry): it does, each of its
            # attempts a durable call of this model that fails with the provider's error class.
            policy = dataclasses.replace(policy, max_attempts=1)
        attempt, waited = 1, 0.0

        async def call(emit: Emit) -> ModelResponse | model_retry.Failure:
            try:
                if streaming:
                    response = await _consume_stream(self.inner, args, kwargs, emit, functools.partial(settle, recorder.run_id), recorder.run_id)
                else:
                    response = await self.inner.get_response(*args, **kwargs)
            except Exception as exc:
                failed = model_retry.failure(exc)
                if failed is None:
                    raise
                # Decided inside the step, so the `retrying` event is stored with it and a
                # replay takes the same decision from the record.
                delay = model_retry.next_wait(failed, attempt, waited, policy)
                await _tell_the_queue(recorder, failed)
                if delay is not None:
                    await emit(
                        Retrying,
                        attempt=attempt,
                        delay_seconds=round(delay, 3),
                        retry_at=now() + timedelta(seconds=delay),
                        error=ErrorInfo(type=failed.provider_error, message=failed.message),
                        status_code=failed.status_code,
                    )
                    model_retry.log_retry(recorder.run_id, attempt, failed, delay)
                return dataclasses.replace(failed, delay=delay)
            if token_queue and response.usage.total_tokens:
                await engine.blocking(record_tokens, token_queue, response.usage.total_tokens)
            return response

        # Each attempt is its own step and records its failure as a value, so the decision to
        # retry is made here from the record: a replay makes the same attempts and waits.
        detail = recorder.model_input(args, kwargs)
        while True:
            outcome = await recorder.step("model", call, preemptible=True, detail=detail)
            if not isinstance(outcome, model_retry.Failure):
                break
            # (a failure recorded before the decision was recorded with it: decide now, as then)
            delay = outcome.delay if "delay" in vars(outcome) else model_retry.next_wait(outcome, attempt, waited, policy)
            if delay is None:
                raise outcome.error(attempt)
            await engine.sleep(delay)  # durable: after a crash only what is left is waited
            attempt, waited = attempt + 1, waited + delay
        response: ModelResponse = outcome
        # The budget counts recorded responses only, so it holds the same after recovery.
        recorder.tokens_used += response.usage.total_tokens or 0
        if recorder.max_tokens is not None and recorder.tokens_used > recorder.max_tokens:
            raise BudgetExceeded(recorder.tokens_used, recorder.max_tokens)
        ids = [item.call_id for item in response.output if isinstance(item, ResponseFunctionToolCall)]
        turnstile = Turnstile(ids)
        recorder.turnstiles.update(dict.fromkeys(ids, turnstile))
        return response

    def stream_response(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("Timestep streams inside the durable model step; run with stream=True instead of Runner.run_streamed")

    def get_retry_advice(self, request: Any) -> Any:
        return self.inner.get_retry_advice(request)

    async def close(self) -> None:
        await self.inner.close()


def _sdk_retries(args: tuple, kwargs: dict) -> bool:
    """Whether the call's ModelSettings turn the SDK's own runner-managed retries on."""
    settings = kwargs.get("model_settings", args[2] if len(args) > 2 else None)
    retry = getattr(settings, "retry", None)
    return retry is not None and (getattr(retry, "max_retries", None) or getattr(retry, "policy", None)) is not None


async def _tell_the_queue(recorder: RunRecorder, failed: model_retry.Failure) -> None:
    """A rate limit with a time to come back, met by a queued run: its queue admits no new run,
    in any process, until then (see `queues.pause_queue`)."""
    if recorder.queue and failed.status_code == 429 and failed.retry_after:
        reason = f"{failed.provider_error} (HTTP 429) in run {recorder.run_id}: the provider asked to wait {failed.retry_after:g} s"
        await engine.blocking(pause_queue, recorder.queue, time.time() + failed.retry_after, reason)


async def _consume_stream(
    inner: Model, args: tuple, kwargs: dict, emit: Emit, stored: Callable[[], Awaitable[None]], run_id: str,
) -> ModelResponse:
    """Drive the model's streaming API, emitting its text deltas in order; return the final response.

    The model is read on a task of its own, so it never waits for storage. Each model delta is
    handed on at once as its own `delta` event, except while the run's previous one is being
    stored (`stored`: the event sinks settled for the run): text arriving meanwhile is gathered
    into the next event, sent as soon as that one is stored. So while storage keeps up, one
    model delta is one event; when it does not (many streams, each event a synced JetStream
    write), events carry more text each instead of the streams falling behind.

    Sinks with a `live` method (the bus: `<prefix>.runs.live.<run_id>`) get each model delta
    as the model yields it, not stored, so a subscriber sees text without waiting on storage."""
    loop = asyncio.get_running_loop()
    pieces: list[str] = []
    sinks = live_sinks()
    call = engine.current_step_id() or 0
    offset = 0
    done_items: list[Any] = []
    completed: list[Any] = []
    wake: list[asyncio.Future] = []

    def nudge() -> None:
        if wake and not wake[0].done():
            wake[0].set_result(None)

    async def read() -> None:
        nonlocal offset
        try:
            async for event in inner.stream_response(*args, **kwargs):
                kind = getattr(event, "type", None)
                if kind == "response.output_text.delta":
                    if sinks:
                        await live(sinks, LiveText(run_id=run_id, call=call, offset=offset, text=event.delta, time=now()))
                        offset += len(event.delta)
                    pieces.append(event.delta)
                    if wake and not wake[0].done():  # the run is not storing a delta: it takes this one now
                        nudge()
                        await asyncio.sleep(0)
                elif kind == "response.output_item.done":
                    done_items.append(event.item)
                elif kind == "response.completed":
                    completed.append(event.response)
                elif kind in ("response.failed", "response.incomplete", "error", "response.error"):
                    raise ModelBehaviorError(f"model stream ended with {kind}")
        finally:
            nudge()

    reader = asyncio.ensure_future(read())
    try:
        while True:
            if pieces:
                text = "".join(pieces)
                pieces.clear()
                await emit(Delta, text=text)
                await stored()
            elif reader.done():
                break
            else:
                wake[:] = [loop.create_future()]
                await wake[0]
        reader.result()  # the model's error, if it failed
    finally:
        if not reader.done():
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
    final = completed[-1] if completed else None
    if final is None:
        raise ModelBehaviorError("model stream ended without a response.completed event")
    usage = Usage(requests=1)
    if final.usage is not None:
        usage = Usage(
            requests=1,
            input_tokens=final.usage.input_tokens,
            output_tokens=final.usage.output_tokens,
            total_tokens=final.usage.total_tokens,
            input_tokens_details=final.usage.input_tokens_details,
            output_tokens_details=final.usage.output_tokens_details,
        )
    return ModelResponse(
        output=list(final.output) or done_items,
        usage=usage,
        response_id=final.id,
        request_id=getattr(final, "_request_id", None),
    )


class DurableModelProvider(ModelProvider):
    """Resolves model names with `base` and wraps what it returns in `DurableModel`."""

    def __init__(self, base: ModelProvider) -> None:
        self.base = base

    def get_model(self, model_name: str | None) -> Model:
        return DurableModel(self.base.get_model(model_name))


# --- tools and agents -------------------------------------------------------------


def plain(value: Any) -> Any:
    """`value` as JSON types, so that recording it can never fail: pydantic models dumped,
    dataclasses as their fields, anything else by its repr."""
    def fallback(obj: Any) -> Any:
        dump = getattr(obj, "model_dump", None)
        if callable(dump):
            return dump(exclude_none=True, mode="json")
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
        if isinstance(obj, BaseException):
            return f"{type(obj).__name__}: {obj}"
        return repr(obj)

    return msgspec.json.decode(msgspec.json.encode(value, enc_hook=fallback))


def _as_text(output: Any) -> str:
    if isinstance(output, str):
        return output
    try:
        return json.dumps(output, default=str)
    except Exception:
        return str(output)


def _durable_tool(tool: FunctionTool) -> FunctionTool:
    """The tool with each call one step, `tool:<name>`, that records its output. The tool's own
    guardrails (`tool_input_guardrails`, `tool_output_guardrails`) run inside that step, as the SDK
    runs them around the call: a call that finished does not check again after a crash, and calls
    made at once stay in the order their steps were numbered."""
    original = tool.on_invoke_tool
    checks_in = list(tool.tool_input_guardrails or [])
    checks_out = list(tool.tool_output_guardrails or [])

    async def call(ctx: Any, arguments: str) -> Any:
        refused = await _tool_checks(checks_in, ToolInputGuardrailData(context=ctx, agent=ctx.agent), ToolInputGuardrailTripwireTriggered)
        if refused is not None:
            return refused
        output = await original(ctx, arguments)
        refused = await _tool_checks(
            checks_out, ToolOutputGuardrailData(context=ctx, agent=ctx.agent, output=output), ToolOutputGuardrailTripwireTriggered,
        )
        return output if refused is None else refused

    async def invoke(ctx: Any, arguments: str) -> Any:
        recorder = _current.get()
        call_id = ctx.tool_call_id
        arguments = recorder.edited_arguments.pop(call_id, arguments)
        turnstile = recorder.turnstiles.pop(call_id, _NO_TURNSTILE)
        await turnstile.wait_for(call_id)
        turnstile.allow_next_after(call_id)

        async def run(emit: Emit) -> Any:
            await emit(ToolCall, tool=tool.name, call_id=call_id, arguments=arguments)
            # The same key each time this call runs: the step's place in the run is fixed.
            token = approvals.set_idempotency_key(f"{recorder.run_id}:{engine.current_step_id()}:{call_id}")
            try:
                output = await call(ctx, arguments)
            finally:
                approvals.reset_idempotency_key(token)
            await emit(ToolOutput, call_id=call_id, output=_as_text(output), arguments=arguments)
            recorder.tool_ran(call_id, engine.current_step_id(), output)
            return output

        return await recorder.step(f"tool:{tool.name}", run, reserve=2, preemptible=True, detail={"arguments": arguments})

    return dataclasses.replace(tool, on_invoke_tool=invoke, tool_input_guardrails=None, tool_output_guardrails=None)


async def _tool_checks(guardrails: list[Any], data: Any, tripwire: type) -> str | None:
    """Run a tool's guardrails in order, as the SDK does: the message of the first that rejects
    the content (what the model is told instead), the SDK's tripwire error for one that raises."""
    for guardrail in guardrails:
        output = await guardrail.run(data)
        behavior = output.behavior["type"]
        if behavior == "raise_exception":
            raise tripwire(guardrail=guardrail, output=output)
        if behavior == "reject_content":
            return output.behavior["message"]
    return None


def durable_run_config(user: RunConfig | None, provider: ModelProvider, tracing_disabled: bool) -> RunConfig:
    """The RunConfig a durable run runs with: the user's (a run's own or its agent's registered one)
    with Timestep's durable provider in place of the SDK's default one (a provider of the user's own
    wrapped, so its models' calls are steps too), a Model object it names made durable, and its
    run-level guardrails made steps as an agent's are."""
    if user is None:
        return RunConfig(model_provider=provider, tracing_disabled=tracing_disabled)
    changes: dict[str, Any] = {
        "tracing_disabled": user.tracing_disabled or tracing_disabled,
        "input_guardrails": [_durable_guardrail(g) for g in user.input_guardrails or []],
        "output_guardrails": [_durable_guardrail(g) for g in user.output_guardrails or []],
        "model_provider": provider if type(user.model_provider) is MultiProvider else DurableModelProvider(user.model_provider),
    }
    if isinstance(user.model, Model) and not isinstance(user.model, DurableModel):
        changes["model"] = DurableModel(user.model)
    return dataclasses.replace(user, **changes)


def _durable_guardrail(guardrail: InputGuardrail | OutputGuardrail) -> InputGuardrail | OutputGuardrail:
    """The guardrail with its function run as one step, `guardrail:<name>`, whose output is recorded:
    a guardrail that finished does not run again, and a replay trips (or passes) as the run did. An
    LLM guardrail's model call (a `Runner.run` inside the function) is part of that step.

    Input guardrails run before the model (`run_in_parallel=False`): run beside the model call, the
    order in which their steps and the model's start would depend on timing, and a replay must meet
    them in the order they were recorded. A tripped guardrail then also spends no model call."""
    original = guardrail.guardrail_function
    name = guardrail.get_name()

    async def check(ctx: Any, agent: Any, data: Any) -> GuardrailFunctionOutput:
        async def run(emit: Emit) -> GuardrailFunctionOutput:
            output = original(ctx, agent, data)
            if inspect.isawaitable(output):
                output = await output
            return portable(output)

        # No events, so guardrails that run together number none: reserve nothing.
        return await _current.get().step(f"guardrail:{name}", run, reserve=0, preemptible=True)

    changes: dict[str, Any] = {"guardrail_function": check, "name": name}
    if isinstance(guardrail, InputGuardrail):
        changes["run_in_parallel"] = False
    return dataclasses.replace(guardrail, **changes)


_wrapped: dict[int, tuple[weakref.ref, Agent]] = {}
_clones: dict[int, weakref.ref] = {}


def _durable_function_tool(tool: FunctionTool) -> FunctionTool:
    if getattr(tool, "_is_agent_tool", False) and not _streams_its_sub_run(tool):
        return _durable_agent_tool(tool)
    return _durable_tool(tool)


def _streams_its_sub_run(tool: FunctionTool) -> bool:
    """Whether an agent tool streams its sub-run (`as_tool(on_stream=...)`), read from the SDK's
    function behind it; True when that cannot be told. Such a tool stays one step: a streamed
    sub-run (`Runner.run_streamed`) is not made durable call by call."""
    impl = getattr(tool.on_invoke_tool, "_invoke_tool_impl", None)
    code = getattr(impl, "__code__", None)
    if code is None or "on_stream" not in code.co_freevars:
        return True
    return impl.__closure__[code.co_freevars.index("on_stream")].cell_contents is not None


def _durable_agent_tool(tool: FunctionTool) -> FunctionTool:
    """An agent used as a tool (`agent.as_tool(...)`): the sub-agent's model calls and tool calls are
    steps of the same run, like the parent's, not one step for the whole sub-run; so after a crash
    inside the sub-agent, only its call in flight runs again. Two small steps around it carry the
    parent's `tool_call` and `tool_output` events. The tool's calls run one after another, in the
    order the model listed them (a sub-run's steps interleaved with another call's would not replay
    in the same order); see `_NestedRuns` for how the sub-run becomes durable."""
    original = tool.on_invoke_tool

    async def invoke(ctx: Any, arguments: str) -> Any:
        recorder = _current.get()
        call_id = ctx.tool_call_id
        arguments = recorder.edited_arguments.pop(call_id, arguments)
        turnstile = recorder.turnstiles.pop(call_id, _NO_TURNSTILE)
        await turnstile.wait_for(call_id)
        try:
            async def called(emit: Emit) -> None:
                await emit(ToolCall, tool=tool.name, call_id=call_id, arguments=arguments)

            await recorder.step(f"tool:{tool.name}", called, reserve=1)
            output = await original(ctx, arguments)  # Runner.run of the sub-agent, made durable by _NestedRuns

            async def returned(emit: Emit) -> None:
                await emit(ToolOutput, call_id=call_id, output=_as_text(output), arguments=arguments)

            await recorder.step(f"tool:{tool.name}.output", returned, reserve=1)
            return output
        finally:
            turnstile.allow_next_after(call_id)

    return dataclasses.replace(tool, on_invoke_tool=invoke)


class _NestedRuns(AgentRunner):
    """The SDK's default runner, with one change: a `Runner.run` made inside a durable run, outside
    any step (an agent tool's sub-run, a hook's), runs a durable clone of its agent under a durable
    model provider, so its model and tool calls are steps of the run. Inside a step (a function
    tool's or a guardrail's own `Runner.run`) the sub-run is part of that step and is left as it is;
    outside a durable run nothing changes."""

    def __init__(self, inner: AgentRunner) -> None:
        self.inner = inner

    async def run(self, starting_agent: Agent, input: Any, **kwargs: Any) -> Any:
        swap = _replay_swap.get()
        if swap is not None:  # a replay: no recorder is current, so nothing below applies
            starting_agent = swap(starting_agent)
        if _current.get(None) is not None and not _stepping.get():
            starting_agent = wrap_agent(starting_agent)
            kwargs["run_config"] = _durable_config(kwargs.get("run_config"))
        return await self.inner.run(starting_agent, input, **kwargs)

    def run_sync(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner.run_sync(*args, **kwargs)

    def run_streamed(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner.run_streamed(*args, **kwargs)


def _durable_config(config: RunConfig | dict | None) -> RunConfig | dict | None:
    """A sub-run's config with its model provider (and a model object it names) made durable."""
    if not isinstance(config, RunConfig):
        return config  # none: the SDK's default provider; the run's own config reaches agent tools via their context
    changes: dict[str, Any] = {}
    if not isinstance(config.model_provider, DurableModelProvider):
        changes["model_provider"] = DurableModelProvider(config.model_provider)
    if isinstance(config.model, Model) and not isinstance(config.model, DurableModel):
        changes["model"] = DurableModel(config.model)
    return dataclasses.replace(config, **changes) if changes else config


def wrap_agent(agent: Agent) -> Agent:
    """A clone of `agent` (and of the agents it hands off to) whose model and tools are
    durable steps of whichever run is current. Made once per agent object, and forgotten
    with it, so agents made per request do not pile up."""
    made = _clones.get(id(agent))
    if made is not None and made() is agent:  # durable already
        return agent
    cached = _wrapped.get(id(agent))
    if cached is not None and cached[0]() is agent:
        return cached[1]
    clone = _wrap(agent, {})
    _wrapped[id(agent)] = (weakref.ref(agent), clone)
    weakref.finalize(agent, _wrapped.pop, id(agent), None)
    return clone


def _wrap(agent: Agent, memo: dict[int, Agent]) -> Agent:
    if id(agent) in memo:
        return memo[id(agent)]
    changes: dict[str, Any] = {
        "tools": [_durable_function_tool(t) if isinstance(t, FunctionTool) else t for t in agent.tools],
        "input_guardrails": [_durable_guardrail(g) for g in agent.input_guardrails],
        "output_guardrails": [_durable_guardrail(g) for g in agent.output_guardrails],
    }
    if isinstance(agent.model, Model) and not isinstance(agent.model, DurableModel):
        changes["model"] = DurableModel(agent.model)
    if agent.mcp_servers:
        changes["mcp_servers"] = [DurableMCPServer(s) for s in agent.mcp_servers]
    clone = agent.clone(**changes)
    if agent.mcp_servers:
        # The SDK makes a function tool of each listed MCP tool, each turn: they are wrapped as they come.
        clone.get_mcp_tools = functools.partial(_durable_mcp_tools, clone)  # type: ignore[method-assign]
    memo[id(agent)] = clone
    _clones[id(clone)] = weakref.ref(clone)
    weakref.finalize(clone, _clones.pop, id(clone), None)
    clone.handoffs = [_wrap_handoff(h, memo) for h in agent.handoffs]
    return clone


def _wrap_handoff(handoff: Agent | Handoff, memo: dict[int, Agent]) -> Agent | Handoff:
    if isinstance(handoff, Agent):
        return _wrap(handoff, memo)
    original = handoff.on_invoke_handoff
    target = handoff._agent_ref() if handoff._agent_ref is not None else None
    if target is None:  # a Handoff built by hand: its function chooses the agent as it runs
        async def choose(*args: Any, **kwargs: Any) -> Agent:
            return wrap_agent(await original(*args, **kwargs))

        return dataclasses.replace(handoff, on_invoke_handoff=choose)
    durable_target = _wrap(target, memo)

    async def invoke(*args: Any, **kwargs: Any) -> Agent:
        # `handoff(agent, on_handoff=...)` always hands off to `agent`: the step runs the callback
        # (and the SDK's check of the model's arguments) once; a replay needs only the agent.
        async def run(emit: Emit) -> None:
            await original(*args, **kwargs)

        await _current.get().step(f"handoff:{handoff.agent_name}", run, reserve=0, preemptible=True)
        return durable_target

    wrapped = dataclasses.replace(handoff, on_invoke_handoff=invoke)
    object.__setattr__(wrapped, "_agent_ref", weakref.ref(durable_target))  # as `handoff()` sets it
    return wrapped


# --- MCP servers ------------------------------------------------------------------


async def _durable_mcp_tools(agent: Agent, run_context: Any) -> list[Any]:
    """The agent's MCP tools as the SDK makes them, each call a step like a function tool's
    (`tool:<name>`, with its events): the SDK's `call_tool` runs inside it."""
    tools = await Agent.get_mcp_tools(agent, run_context)
    return [_durable_tool(t) if isinstance(t, FunctionTool) else t for t in tools]


class DurableMCPServer(MCPServer):
    """An MCP server (stdio, SSE or streamable HTTP) whose tool list is recorded once per run.

    The first time a run asks the server for an agent's tools, the answer is a step,
    `mcp.list_tools:<server>`; the run's later turns, and a replay, get the tools it recorded, so a
    replayed run sees the tools it saw even when the server changed since. Calls go to the server
    (from inside each tool call's step). Prompts and resources asked for inside the run (a dynamic
    instructions function reading `agent.mcp_servers[0].get_prompt(...)`) are steps too."""

    def __init__(self, inner: MCPServer) -> None:  # not MCPServer.__init__: its settings are the inner server's
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet (a copy being made)
            raise AttributeError(name)
        return getattr(self.inner, name)

    @property
    def name(self) -> str:
        return self.inner.name

    async def connect(self) -> None:
        await self.inner.connect()

    async def cleanup(self) -> None:
        await self.inner.cleanup()

    async def list_tools(self, run_context: Any = None, agent: Any = None) -> list[Any]:
        recorder = _current.get(None)
        if recorder is None:
            return await self.inner.list_tools(run_context, agent)
        key = (self.inner.name, getattr(agent, "name", ""))
        if key not in recorder.mcp_tools:
            recorder.mcp_tools[key] = await recorder.step(
                f"mcp.list_tools:{self.inner.name}", lambda _: self.inner.list_tools(run_context, agent), reserve=0,
            )
        return list(recorder.mcp_tools[key])

    async def call_tool(self, tool_name: str, arguments: dict[str, Any] | None, meta: dict[str, Any] | None = None) -> Any:
        return await self.inner.call_tool(tool_name, arguments, meta=meta)

    async def _asked(self, what: str, ask: Callable[[], Awaitable[Any]]) -> Any:
        """The server's answer; inside a run (not inside another step: a tool's own calls are part
        of its step) a step, `mcp.<what>:<server>`, so a replay gets what the run got."""
        recorder = _current.get(None)
        if recorder is None or _stepping.get():
            return await ask()
        return await recorder.step(f"mcp.{what}:{self.inner.name}", lambda _: ask(), reserve=0)

    async def list_prompts(self) -> Any:
        return await self._asked("list_prompts", self.inner.list_prompts)

    async def get_prompt(self, name: str, arguments: dict[str, Any] | None = None) -> Any:
        return await self._asked("get_prompt", lambda: self.inner.get_prompt(name, arguments))

    async def list_resources(self, cursor: str | None = None) -> Any:
        return await self._asked("list_resources", lambda: self.inner.list_resources(cursor))

    async def list_resource_templates(self, cursor: str | None = None) -> Any:
        return await self._asked("list_resource_templates", lambda: self.inner.list_resource_templates(cursor))

    async def read_resource(self, uri: str) -> Any:
        return await self._asked("read_resource", lambda: self.inner.read_resource(uri))


# --- sessions ---------------------------------------------------------------------


class DurableSession:
    """Any SDK session, with each read and write a durable step (made by `durable_session`)."""

    def __init__(self, inner: Any, recorder: RunRecorder) -> None:
        self.inner = inner
        self.recorder = recorder
        self.session_id = inner.session_id
        self.session_settings = getattr(inner, "session_settings", None)
        self._ignore_ids_for_matching = getattr(inner, "_ignore_ids_for_matching", False)

    async def get_items(self, limit: int | None = None) -> list[Any]:
        return await self.recorder.step("session.get_items", lambda _: self.inner.get_items(limit))

    async def add_items(self, items: list[Any]) -> None:
        await self.recorder.step("session.add_items", lambda _: self.inner.add_items(items))

    async def pop_item(self) -> Any:
        return await self.recorder.step("session.pop_item", lambda _: self.inner.pop_item())

    async def clear_session(self) -> None:
        await self.recorder.step("session.clear", lambda _: self.inner.clear_session())


class _DurableConversation(DurableSession, OpenAIConversationsSession):
    """An OpenAIConversationsSession made durable, still one for the SDK, which writes a
    conversation's items in the shape the Conversations API takes (`isinstance`). Its own
    __init__ is not called: every read and write goes to the session it wraps."""


def durable_session(inner: Any, recorder: RunRecorder) -> DurableSession:
    """`inner`, each read and write a step of the run `recorder` records."""
    if isinstance(inner, OpenAIConversationsSession):
        return _DurableConversation(inner, recorder)
    return DurableSession(inner, recorder)
