"""Replay: a check before a deploy. Each recorded run of an agent runs again, from its input,
against the agent as registered now, and the two are compared.

A replay is not a run: nothing is written to the database, no event is published, no queue is
used. The model is called afresh (through the configured provider, or `model`), and each tool
call is answered from the recording:

- a call whose tool and arguments match one the run made gets that call's recorded output, and
  the tool does not run (no side effect happens again);
- any other call (new, or with other arguments) does not run either: the model is told the call
  is not in the recording, unless its tool is named in `live_tools` (tools safe to run again).

The report of each run says whether its final output changed, which tool calls were added,
removed or made with other arguments, and its tokens before and after.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import weakref
from collections.abc import Iterable
from typing import Any

from agents import Agent, FunctionTool, Handoff, RunConfig, Runner

from timestep.durable import engine, run_context, steps
from timestep.durable.models import default_model_provider
from timestep.durable.listing import SCAN_LIMIT
from timestep.durable.runs import WORKFLOW, RunResult, RunSpec
from timestep.durable.steps import StepOutcome, plain
from timestep.errors import ValidationError

log = logging.getLogger("timestep.durable.replay")

NOT_RECORDED = "not in the recording: this tool call was not made by the recorded run, so it was not run (replay)"

#: Tools the model provider runs, not this process: a replay leaves them as they are.
HOSTED_TOOLS = {"WebSearchTool", "FileSearchTool", "CodeInterpreterTool", "HostedMCPTool", "ImageGenerationTool", "ToolSearchTool"}

#: What a report may say changed; `allow` takes these.
CHANGES = ("output", "tools")


@dataclasses.dataclass
class ToolCallChange:
    tool: str
    before: str | None
    """The recorded call's arguments (JSON); None for a call the replay added."""
    after: str | None
    """The replayed call's arguments; None for a recorded call the replay did not make."""


@dataclasses.dataclass
class ReplayReport:
    """One run, replayed. `status`: `same`, `changed` (`changes` says in what: `output`, `tools`),
    `failed` (the replay raised: `error`) or `skipped` (`error` says why)."""

    run_id: str
    status: str
    changes: list[str] = dataclasses.field(default_factory=list)
    output_before: Any = None
    output_after: Any = None
    added: list[ToolCallChange] = dataclasses.field(default_factory=list)
    removed: list[ToolCallChange] = dataclasses.field(default_factory=list)
    other_arguments: list[ToolCallChange] = dataclasses.field(default_factory=list)
    tool_calls_run: list[str] = dataclasses.field(default_factory=list)
    """Calls the replay ran for real (tools named in `live_tools`)."""
    tokens_before: int = 0
    tokens_after: int = 0
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _canonical(arguments: str) -> str:
    """Arguments as JSON with sorted keys, so that `{"a":1,"b":2}` and `{"b": 2, "a": 1}` match."""
    try:
        return json.dumps(json.loads(arguments), sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        return arguments


@dataclasses.dataclass
class _Recording:
    """The tool calls a run made, in order: (tool, arguments as given, output)."""

    calls: list[tuple[str, str, Any]]
    unused: list[int] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        self.unused = list(range(len(self.calls)))

    def take(self, tool: str, arguments: str) -> tuple[bool, Any]:
        """The recorded output of the first unused call of `tool` with these arguments."""
        wanted = _canonical(arguments)
        for i in self.unused:
            name, given, output = self.calls[i]
            if name == tool and _canonical(given) == wanted:
                self.unused.remove(i)
                return True, output
        return False, None


async def _recorded_calls(source: Any, run_id: str) -> list[tuple[str, str, Any]]:
    calls = []
    for step in await source.steps(run_id):
        outcome = step.output
        if not step.name.startswith("tool:") or not isinstance(outcome, StepOutcome) or outcome.error is not None:
            continue
        arguments = (outcome.detail or {}).get("arguments")
        if isinstance(arguments, str):
            calls.append((step.name.removeprefix("tool:"), arguments, outcome.value))
    return calls


def _agents_of(agent: Agent, found: dict[int, Agent] | None = None) -> list[Agent]:
    """`agent`, the agents it hands off to and those it uses as tools, each once."""
    found = {} if found is None else found
    if id(agent) in found:
        return list(found.values())
    found[id(agent)] = agent
    for h in agent.handoffs:
        target = h if isinstance(h, Agent) else (h._agent_ref() if isinstance(h, Handoff) and h._agent_ref is not None else None)
        if target is not None:
            _agents_of(target, found)
    for t in agent.tools:
        inner = getattr(t, "_agent_instance", None) if getattr(t, "_is_agent_tool", False) else None
        if isinstance(inner, Agent):
            _agents_of(inner, found)
    return list(found.values())


def _replaying(agent: Agent, recording: _Recording, live_tools: set[str], made: list[tuple[str, str, bool]], seen: dict[int, Agent]) -> Agent:
    """The agent with each function tool answered from `recording` (see the module), and the agents
    it hands off to alike. An agent used as a tool (`as_tool`) runs its sub-agent, which the replay's
    runner swaps for its replaying clone (`steps.replaying`), so its tools are answered alike. `made`
    collects every call: (tool, arguments, run for real)."""
    if id(agent) in seen:
        return seen[id(agent)]
    tools: list[Any] = []
    clone = agent.clone(tools=tools)
    seen[id(agent)] = seen[id(clone)] = clone  # a clone handed back (the replay's own Runner.run) stays itself
    for tool in agent.tools:
        live = not isinstance(tool, FunctionTool) or getattr(tool, "_is_agent_tool", False)
        tools.append(tool if live else _replayed_tool(tool, recording, live_tools, made))
    clone.handoffs = [_replayed_handoff(h, recording, live_tools, made, seen) for h in agent.handoffs]
    return clone


def _replayed_handoff(handoff: Any, recording: _Recording, live_tools: set[str], made: list[tuple[str, str, bool]], seen: dict[int, Agent]) -> Any:
    """A handoff to the replaying clone of its agent. A `handoff(agent, on_handoff=...)` hands off
    without running its callback (a replay runs no side effect it recorded); a hand-built Handoff
    whose function chooses the agent runs that function, and hands off to the clone of its choice."""
    if isinstance(handoff, Agent):
        return _replaying(handoff, recording, live_tools, made, seen)
    if not isinstance(handoff, Handoff):
        return handoff
    original = handoff.on_invoke_handoff
    target = handoff._agent_ref() if handoff._agent_ref is not None else None
    if target is None:
        async def choose(*args: Any, **kwargs: Any) -> Agent:
            return _replaying(await original(*args, **kwargs), recording, live_tools, made, seen)

        return dataclasses.replace(handoff, on_invoke_handoff=choose)
    replayed = _replaying(target, recording, live_tools, made, seen)

    async def invoke(*args: Any, **kwargs: Any) -> Agent:
        return replayed

    wrapped = dataclasses.replace(handoff, on_invoke_handoff=invoke)
    object.__setattr__(wrapped, "_agent_ref", weakref.ref(replayed))
    return wrapped


def _replayed_tool(tool: FunctionTool, recording: _Recording, live_tools: set[str], made: list[tuple[str, str, bool]]) -> FunctionTool:
    original = tool.on_invoke_tool

    async def invoke(ctx: Any, arguments: str) -> Any:
        found, output = recording.take(tool.name, arguments)
        live = not found and tool.name in live_tools
        made.append((tool.name, arguments, live))
        if found:
            return output
        return await original(ctx, arguments) if live else NOT_RECORDED

    # The recorded call was decided already, and a call not in the recording does not run: no approval is asked.
    return dataclasses.replace(tool, on_invoke_tool=invoke, needs_approval=False)


def _compare(recorded: list[tuple[str, str, Any]], made: list[tuple[str, str, bool]], report: ReplayReport) -> None:
    before = [(name, _canonical(arguments), arguments) for name, arguments, _ in recorded]
    after = [(name, _canonical(arguments), arguments) for name, arguments, _ in made]
    unmatched_before = list(before)
    unmatched_after = []
    for call in after:
        match = next((b for b in unmatched_before if b[:2] == call[:2]), None)
        if match is not None:
            unmatched_before.remove(match)
        else:
            unmatched_after.append(call)
    for call in unmatched_after:
        other = next((b for b in unmatched_before if b[0] == call[0]), None)
        if other is not None:
            unmatched_before.remove(other)
            report.other_arguments.append(ToolCallChange(call[0], other[2], call[2]))
        else:
            report.added.append(ToolCallChange(call[0], None, call[2]))
    report.removed = [ToolCallChange(name, given, None) for name, _, given in unmatched_before]
    report.tool_calls_run = [name for name, _, live in made if live]


async def replay_run(source: Any, workflow: engine.Workflow, agent: Agent, *, model: str | None = None, live_tools: Iterable[str] = ()) -> ReplayReport:
    """Replay one recorded run (`workflow`, as `source` lists it) against `agent`; see the module."""
    spec = workflow.args[0] if workflow.args and isinstance(workflow.args[0], RunSpec) else None
    result = workflow.output if isinstance(workflow.output, RunResult) else None
    report = ReplayReport(run_id=workflow.id, status="skipped")
    if spec is None or result is None or result.status != "completed":
        report.error = "not a completed run of this version of Timestep"
        return report
    if spec.session_id or spec.state:
        report.error = "its input came with a session's history (or a paused run's state), which a replay does not rebuild"
        return report
    report.output_before = plain(result.output)
    report.tokens_before = result.usage.total_tokens
    recorded = await _recorded_calls(source, workflow.id)
    made: list[tuple[str, str, bool]] = []
    recording, live, seen = _Recording(recorded), set(live_tools), {}
    swap = steps.replaying(lambda a: _replaying(a, recording, live, made, seen))
    context = run_context.unpack(spec.context, workflow.id) if spec.context else None
    try:
        replayed = await Runner.run(
            agent if model is None else agent.clone(model=model), spec.input if spec.input is not None else "",
            context=context, max_turns=spec.max_turns,
            run_config=RunConfig(model_provider=default_model_provider(), tracing_disabled=True),
        )
    except Exception as exc:
        report.status = "failed"
        report.error = f"{type(exc).__name__}: {exc}"
        _compare(recorded, made, report)
        return report
    finally:
        steps.stop_replaying(swap)
    report.output_after = plain(replayed.final_output)
    report.tokens_after = sum(r.usage.total_tokens for r in replayed.raw_responses)
    _compare(recorded, made, report)
    if report.output_after != report.output_before:
        report.changes.append("output")
    if report.added or report.removed or report.other_arguments:
        report.changes.append("tools")
    report.status = "changed" if report.changes else "same"
    return report


async def replay(
    source: Any, agent: Agent, *, limit: int | None = 20, since: float | None = None, ids: list[str] | None = None,
    model: str | None = None, live_tools: Iterable[str] = (),
) -> list[ReplayReport]:
    """Replay the completed runs of `agent` (by its name) that `source` (the running engine, or
    `engine.Admin`) holds: the newest `limit` of them, those created since `since` (epoch seconds),
    or those of `ids` (in that order; else oldest first). See the module for what a replay does and does not do."""
    live = set(live_tools)
    every = _agents_of(agent)
    names = {t.name for a in every for t in a.tools if isinstance(t, FunctionTool)}
    unknown = sorted(live - names)
    if unknown:
        raise ValidationError("live_tools", f"agent {agent.name!r} has no tool {unknown[0]!r}", f"name tools of it: {', '.join(sorted(names))}")
    for one in every:
        if one.mcp_servers:
            raise ValidationError("agent", f"agent {one.name!r} uses MCP servers, whose calls a replay cannot answer from the recording yet", "replay an agent without MCP servers")
        local = next((t for t in one.tools if not isinstance(t, FunctionTool) and type(t).__name__ not in HOSTED_TOOLS), None)
        if local is not None:
            raise ValidationError(
                "agent", f"agent {one.name!r} has the tool {getattr(local, 'name', '?')!r} ({type(local).__name__}), which runs here and "
                "which a replay cannot answer from the recording", "replay an agent whose local tools are function tools",
            )
    # Which agent a run is of is in its input, which DBOS cannot filter on: the newest SCAN_LIMIT runs, as `list_runs` reads them.
    found = await source.list_workflows(
        name=WORKFLOW, status="completed", ids=ids, since=since, newest_first=True, limit=None if ids else SCAN_LIMIT,
    )
    runs = [w for w in found if w.args and isinstance(w.args[0], RunSpec) and w.args[0].agent == agent.name]
    if ids:
        missing = sorted(set(ids) - {w.id for w in runs})
        if missing:
            raise ValidationError("ids", f"no completed run {missing[0]!r} of agent {agent.name!r}", "give ids of completed runs of this agent")
        runs.sort(key=lambda w: ids.index(w.id))  # in the order given
    else:
        runs = runs[:limit] if limit is not None else runs
        runs.sort(key=lambda w: w.created_at or 0)  # oldest first
    return [await replay_run(source, w, agent, model=model, live_tools=live) for w in runs]


async def replay_runs(
    agent: Agent | str, *, runs: int | None = 20, since: float | None = None, ids: list[str] | None = None,
    model: str | None = None, live_tools: Iterable[str] = (),
) -> list[ReplayReport]:
    """Replay recorded runs of `agent` (registered here: the agent, or its name) against the agent
    as registered now: the newest `runs` completed ones, those created since `since` (epoch
    seconds), or those of `ids`. Nothing is written and no recorded tool call runs again (see the
    module); a report per run, oldest first.

    >>> reports = await replay_runs("support", runs=50)
    >>> [r.run_id for r in reports if r.status != "same"]
    """
    from timestep.durable import registry
    from timestep.durable.launch import ensure_dbos_launched

    ensure_dbos_launched()
    registered = registry.get_agent(agent if isinstance(agent, str) else agent.name)
    return await replay(engine.Here(), registered, limit=runs, since=since, ids=ids, model=model, live_tools=live_tools)

