"""Runs as the database holds them, for `<prefix>.runs.list` and `<prefix>.runs.get`:

>>> await list_runs(status="failed", agent="assistant", limit=20)
[RunInfo(id='r-1', agent='assistant', status='failed', ...)]
>>> await get_run("r-1")

A run's status comes from its DBOS workflow; a running run with a tool call in the approvals inbox
is `waiting` (for a decision). The inbox's rows are written before `interrupted` is published, so
a caller that saw the event lists the run as waiting.
"""

from __future__ import annotations

from subjects.events import ErrorInfo
from subjects.messages import RunInfo
from timestep.durable import approvals, engine
from timestep.durable.runs import RunResult, RunSpec

WORKFLOW = "timestep.agent_run"
#: Fetched at most when filtering by agent (which DBOS cannot filter on): the newest this many runs.
SCAN_LIMIT = 2000


async def _info(w: engine.Workflow) -> RunInfo:
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
        usage=usage, error=error,
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
    return await _info(found[0]) if found else None
