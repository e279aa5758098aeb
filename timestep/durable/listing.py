"""Runs as the database holds them, for `<prefix>.runs.list`, `<prefix>.runs.get` and `<prefix>.runs.steps`:

>>> await list_runs(status="failed", agent="assistant", limit=20)
[RunInfo(id='r-1', agent='assistant', status='failed', ...)]
>>> await get_run("r-1")

A run's status comes from its DBOS workflow; a running run with a tool call in the approvals inbox
is `waiting` (for a decision). The inbox's rows are written before `interrupted` is published, so
a caller that saw the event lists the run as waiting.
"""

from __future__ import annotations

from typing import Any

import msgspec
from agents.items import ModelResponse

from subjects.events import ErrorInfo
from subjects.messages import RunInfo, RunStep
from timestep.durable import approvals, engine, runs
from timestep.durable.model_retry import Failure
from timestep.durable.runs import RunResult, RunSpec
from timestep.durable.steps import StepOutcome, plain

WORKFLOW = runs.WORKFLOW
#: Fetched at most when filtering by agent (which DBOS cannot filter on): the newest this many runs.
SCAN_LIMIT = 2000


async def _info(w: engine.Workflow, with_input: bool = False) -> RunInfo:
    spec = w.args[0] if w.args and isinstance(w.args[0], RunSpec) else None
    status = w.status
    if status == "running" and await approvals.has_pending(w.id):
        status = "waiting"
    created = w.created_at or 0
    updated = w.updated_at or created
    usage = w.output.usage if isinstance(w.output, RunResult) else None
    error = None
    if w.error is not None:
        error = ErrorInfo(type=getattr(w.error, "provider_error", None) or type(w.error).__name__, message=str(w.error))
    return RunInfo(
        id=w.id, agent=spec.agent if spec else "", status=status, created_at=created, updated_at=updated,  # type: ignore[arg-type]
        queue=w.queue, session_id=spec.session_id if spec else None,
        duration_seconds=round(max(0.0, (w.completed_at or updated) - created), 3) if w.finished else None,
        usage=usage, error=error, forked_from=w.forked_from,
        input=plain(spec.input) if with_input and spec is not None and spec.input is not None else None,
    )


async def list_runs(*, status: str | None = None, agent: str | None = None, queue: str | None = None, limit: int = 100) -> list[RunInfo]:
    """The newest runs first, filtered by status, agent and queue."""
    dbos_status = "running" if status == "waiting" else status  # waiting: a running run, told by the inbox
    runs = []
    for w in await engine.list_workflows(name=WORKFLOW, status=dbos_status, queue=queue, limit=SCAN_LIMIT if agent else limit, newest_first=True):
        info = await _info(w)
        if (agent is None or info.agent == agent) and (status is None or info.status == status):
            runs.append(info)
            if len(runs) >= limit:
                break
    return runs


async def get_run(run_id: str) -> RunInfo | None:
    """One run, or None when there is no such run."""
    found = await engine.list_workflows(ids=[run_id], name=WORKFLOW)
    return await _info(found[0], with_input=True) if found else None


# --- a run's steps ---------------------------------------------------------------------------------

#: A listed step's value is cut to this many characters of JSON (`RunStep.cut`).
VALUE_LIMIT = 2000

_KINDS = (
    ("model", "model"), ("tool:", "tool"), ("mcp.", "mcp"), ("guardrail:", "guardrail"), ("handoff:", "handoff"),
    ("session.", "session"), ("sleep", "sleep"), ("recv", "approval"), ("run.interrupted", "approval"), ("decision", "approval"),
)


def _kind(name: str) -> str:
    return next((kind for prefix, kind in _KINDS if name.startswith(prefix)), "run")


def _tool_outputs(recorded: list[engine.Step]) -> dict[int, Any]:
    """Each tool step's output by the step's number, for the model calls' records that name it (`_given`)."""
    return {s.number: s.output.value for s in recorded if s.name.startswith("tool:") and isinstance(s.output, StepOutcome)}


def _given(detail: dict[str, Any] | None, tool_outputs: dict[int, Any]) -> dict[str, Any] | None:
    """A model call's record with each tool output it names by step (`output_step`, see
    `RunRecorder.model_input`) put back in place, as the model was given it."""
    if not detail:
        return detail
    whole = dict(detail)
    for key in ("input", "input_since_previous"):
        if key in whole:
            whole[key] = [
                {**{k: v for k, v in item.items() if k != "output_step"}, "output": tool_outputs[item["output_step"]]}
                if isinstance(item, dict) and item.get("output_step") in tool_outputs else item
                for item in whole[key]
            ]
    return whole


def _step(s: engine.Step, attempt: int | None, tool_outputs: dict[int, Any]) -> RunStep:
    outcome = s.output
    value, error, detail = (outcome.value, outcome.error, outcome.detail) if isinstance(outcome, StepOutcome) else (outcome, s.error, None)
    failure = value if isinstance(value, Failure) else None
    if s.name == "model":
        detail = _given(detail, tool_outputs)
    if isinstance(value, ModelResponse):
        usage = value.usage
        tokens = {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens, "total_tokens": usage.total_tokens}
        value = {**(detail or {}), "output": value.output, "usage": tokens, "response_id": value.response_id}
    elif failure is not None:
        value = {**(detail or {}), "status_code": failure.status_code, "retry_after": failure.retry_after, "wait": failure.delay}
    elif s.name.startswith("tool:") and detail is not None:
        value = {"arguments": detail.get("arguments"), "output": value}
    info = None
    if failure is not None:
        info = ErrorInfo(type=failure.provider_error, message=failure.message)
    elif error is not None:
        info = ErrorInfo(type=getattr(error, "provider_error", None) or type(error).__name__, message=str(error))
    return RunStep(
        number=s.number, kind=_kind(s.name), name=s.name, status="failed" if info is not None else "completed",  # type: ignore[arg-type]
        started_at=s.started_at, ended_at=s.ended_at, attempt=attempt, value=plain(value) if value is not None else None, error=info,
    )


def _cut(step: RunStep) -> RunStep:
    text = msgspec.json.encode(step.value).decode()
    if len(text) <= VALUE_LIMIT:
        return step
    return msgspec.structs.replace(step, value=text[:VALUE_LIMIT], cut=True)


async def run_steps(run_id: str, step: int | None = None) -> list[RunStep] | None:
    """The run's recorded steps, in order, each value cut to VALUE_LIMIT characters of JSON; with
    `step`, only that one, whole. None when there is no such run.

    >>> [(s.number, s.kind, s.name, s.status) for s in await run_steps("r-1")]
    [(1, 'run', 'run.start', 'completed'), (2, 'model', 'model', 'completed'), (3, 'tool', 'tool:get_weather', 'completed'), ...]
    """
    if await engine.status(run_id) is None:
        return None
    recorded = await engine.list_steps(run_id)
    tool_outputs = _tool_outputs(recorded)
    steps: list[RunStep] = []
    failed_before = 0  # failed model attempts since the last model call that answered
    for s in recorded:
        attempt = None
        if s.name == "model":
            attempt = failed_before + 1
        listed = _step(s, attempt, tool_outputs)
        if s.name == "model":
            failed_before = failed_before + 1 if listed.status == "failed" else 0
        if step is None:
            steps.append(_cut(listed))
        elif s.number == step:
            return [listed]
    return steps if step is None else []
