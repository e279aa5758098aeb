"""What crosses the DBOS boundary: a workflow and its steps, in Timestep's words.

DBOS says `ENQUEUED`, `PENDING`, `SUCCESS`, `ERROR`, `CANCELLED`; Timestep says `queued`,
`running`, `completed`, `failed` and `cancelled` (and `runs.list` says `waiting` for a running run
with a tool call in the approvals inbox). This module holds the one mapping; nothing outside the
engine sees DBOS's words or its status objects.

>>> run_status("SUCCESS")
'completed'
>>> DBOS_STATUSES["failed"]
['ERROR', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED']
"""

from __future__ import annotations

import dataclasses
from typing import Any

STATUS = {
    "ENQUEUED": "queued",
    "DELAYED": "queued",
    "PENDING": "running",
    "SUCCESS": "completed",
    "ERROR": "failed",
    "MAX_RECOVERY_ATTEMPTS_EXCEEDED": "failed",
    "CANCELLED": "cancelled",
}
"""DBOS's workflow status -> the run's."""

DBOS_STATUSES: dict[str, list[str]] = {}
"""The run's status -> the DBOS statuses it stands for (to filter DBOS's lists by)."""
for _dbos, _ours in STATUS.items():
    DBOS_STATUSES.setdefault(_ours, []).append(_dbos)

STATUSES = ("queued", "running", "completed", "failed", "cancelled")
FINISHED = ("completed", "failed", "cancelled")
UNFINISHED = ("queued", "running")


def run_status(dbos_status: str) -> str:
    """The run's status for a DBOS workflow status (`running` for one this version does not know)."""
    return STATUS.get(dbos_status, "running")


def _seconds(ms: int | None) -> float | None:
    return ms / 1000 if ms else None


@dataclasses.dataclass(frozen=True)
class Workflow:
    """One workflow as the database holds it. Times are epoch seconds (None when not yet)."""

    id: str
    name: str
    status: str
    """queued, running, completed, failed or cancelled."""
    queue: str | None
    """The queue it was enqueued on; None for a direct start (and DBOS's internal queue)."""
    created_at: float | None
    updated_at: float | None
    completed_at: float | None
    dequeued_at: float | None
    """When a queue's worker took it (None for a direct start)."""
    executor_id: str | None
    recovery_attempts: int | None
    app_version: str | None
    priority: int | None
    deadline: float | None
    timeout_seconds: float | None
    args: tuple[Any, ...] = ()
    output: Any = None
    error: BaseException | None = None
    forked_from: str | None = None
    """The workflow this one was forked from, if it is a fork."""

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


def workflow(w: Any) -> Workflow:
    """A DBOS WorkflowStatus in Timestep's words."""
    queue = w.queue_name if w.queue_name and not w.queue_name.startswith("_dbos") else None
    return Workflow(
        id=w.workflow_id, name=w.name, status=run_status(w.status), queue=queue,
        created_at=_seconds(w.created_at), updated_at=_seconds(w.updated_at), completed_at=_seconds(getattr(w, "completed_at", None)),
        dequeued_at=_seconds(getattr(w, "dequeued_at", None)),
        executor_id=w.executor_id, recovery_attempts=w.recovery_attempts, app_version=w.app_version, priority=w.priority,
        deadline=_seconds(w.workflow_deadline_epoch_ms), timeout_seconds=_seconds(w.workflow_timeout_ms),
        args=tuple((w.input or {}).get("args") or ()), output=w.output, error=w.error,
        forked_from=getattr(w, "forked_from", None),
    )


@dataclasses.dataclass(frozen=True)
class Step:
    """One recorded step of a workflow: its number (the same on every execution), its name, and
    its error when it raised. DBOS's own steps (a durable sleep, a receive) are named without
    DBOS's prefix: `sleep`, `recv`."""

    number: int
    name: str
    error: BaseException | None = None
    output: Any = None
    started_at: float | None = None
    ended_at: float | None = None
    """Epoch seconds (None where DBOS did not record them)."""


def step(s: Any) -> Step:
    name = s["function_name"]
    return Step(
        number=s["function_id"], name=name.removeprefix("DBOS."), error=s.get("error"), output=s.get("output"),
        started_at=_seconds(s.get("started_at_epoch_ms")), ended_at=_seconds(s.get("completed_at_epoch_ms")),
    )
