"""The one place Timestep talks to DBOS.

Everything durable goes through this package: configure and launch (`lifecycle`), declare a
workflow, run a step, start, enqueue, look up and cancel workflows, queues and schedules (here),
a graceful stop (`stop`), blocking calls that wait out a database outage (`io`). What crosses the
boundary is Timestep's: `Workflow` and `Step` records with Timestep's status words (`records`),
Timestep's errors. Every private DBOS name and run-time change is in `hooks`, checked at launch
against the installed DBOS; `upstream.md` lists what DBOS's public API would need to drop them.
The rest of Timestep never imports `dbos` (an import-linter contract says so).
"""

from __future__ import annotations

import asyncio
import functools
import math
import sys
import time
from datetime import datetime, timezone
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, TypeVar

from dbos import DBOS, DBOSClient, SetEnqueueOptions, SetWorkflowID, SetWorkflowTimeout
from dbos import error as dbos_error

from timestep.durable.engine import hooks, io, lifecycle, logs, records, runtime, stop
from timestep.durable.engine.hooks import hold_queues_with, wake_queue
from timestep.durable.engine.io import blocking
from timestep.durable.engine.lifecycle import (
    after_launch, configure, current_config, database_url, in_event_loop, is_launched, is_sqlite, launch, on_every_launch, shutdown,
    sqlite_path, use_write_ahead_log,
)
from timestep.durable.engine.logs import WorkflowCancelled
from timestep.durable.engine.records import FINISHED, STATUSES, UNFINISHED, Step, Workflow, run_status
from timestep.durable.engine.serializer import SERIALIZER
from timestep.durable.engine.stop import busy, hurry_stop, steps_cut_off, stop_workflows, stopping
from timestep.errors import DuplicateRunError

__all__ = [
    "FINISHED", "STATUSES", "UNFINISHED", "Admin", "Here", "CancelledInside", "NonExistentWorkflow", "Step", "Workflow",
    "WorkflowCancelled", "after_launch", "apply_schedule", "blocking", "busy", "cancel", "cancel_now", "configure",
    "current_config", "current_step_id", "executors_with_pending_runs", "recover_runs_of", "current_workflow_id", "database_url", "delete_queue", "delete_schedule",
    "enqueue", "enqueue_now", "first_execution", "fork", "hold_queues_with", "hooks", "hurry_stop", "in_event_loop", "io", "is_launched",
    "is_sqlite", "launch", "lifecycle", "limiter_period", "list_schedules", "list_steps", "list_workflows",
    "listen_to_no_queues", "logs", "on_every_launch", "queue_counts", "queue_policy", "recv", "records", "register_queue", "resume",
    "retrieve", "run_status", "runtime", "send", "send_now", "shutdown", "sleep", "sqlite_path", "start", "status", "status_now",
    "step", "steps_cut_off", "stop", "stop_workflows", "stopping", "use_write_ahead_log", "wake_queue", "workflow",
]

T = TypeVar("T")

#: Raised inside a workflow when it is cancelled while running; must never be swallowed.
CancelledInside = dbos_error.DBOSWorkflowCancelledError
NonExistentWorkflow = dbos_error.DBOSNonExistentWorkflowError


def workflow(name: str) -> Callable[[Callable[..., Awaitable[T]]], Callable[..., Awaitable[T]]]:
    """Declare a durable workflow under a stable name (a rename would strand in-flight runs).
    Its executions in this process are known to `stop_workflows`."""

    def declare(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        @functools.wraps(fn)
        async def tracked(*args: Any, **kwargs: Any) -> T:
            task = asyncio.current_task()
            executing = stop.executing()
            if task is not None:
                executing.add(task)
            try:
                return await fn(*args, **kwargs)
            finally:
                executing.discard(task)  # type: ignore[arg-type]

        return DBOS.workflow(name=name)(tracked)

    return declare


async def step(name: str, fn: Callable[[], Awaitable[T]], *, preemptible: bool = False) -> T:
    """Run `fn` as one checkpointed step of the current workflow: on replay its recorded
    result (or exception) comes back and `fn` does not run again."""
    async with stop.busy():
        return await DBOS.run_step_async({"name": name, "preemptible": preemptible}, fn)


async def recv(topic: str, timeout_seconds: float) -> Any:
    """Inside a workflow: wait durably for a message sent to this workflow on `topic` (None on timeout)."""
    await stop.stop_gate()
    return await DBOS.recv_async(topic, timeout_seconds=timeout_seconds)


async def send(workflow_id: str, message: Any, topic: str, idempotency_key: str | None = None) -> None:
    """Send `message` to workflow `workflow_id` (it need not be running in this process).
    The same `idempotency_key` twice sends once."""
    await DBOS.send_async(workflow_id, message, topic, idempotency_key=idempotency_key)


async def sleep(seconds: float) -> None:
    """Inside a workflow: a durable sleep (a recovered run sleeps only what is left)."""
    await stop.stop_gate()
    await DBOS.sleep_async(seconds)


def current_step_id() -> int | None:
    """Inside a step: its number in the workflow (the same on every execution)."""
    return DBOS.step_id


def current_workflow_id() -> str:
    workflow_id = DBOS.workflow_id
    if workflow_id is None:
        raise RuntimeError("not inside a Timestep workflow")
    return workflow_id


#: Set while `start` starts a workflow: the task DBOS creates for it copies this context, so
#: the workflow knows it begins fresh (a recovered, resumed or queued one does not know).
_starting: ContextVar[bool] = ContextVar("timestep_starting", default=False)


def first_execution() -> bool:
    """Inside a workflow: True when `start` began it just now in this process (no earlier
    execution of it can exist: an id used before does not execute again)."""
    return _starting.get()


async def start(fn: Callable[..., Awaitable[T]], arg: Any, *, workflow_id: str, timeout_seconds: float | None) -> Any:
    """Start `fn(arg)` as workflow `workflow_id`; an id used before returns the first run's handle."""
    token = _starting.set(True)
    try:
        with SetWorkflowID(workflow_id), SetWorkflowTimeout(timeout_seconds):
            return await DBOS.start_workflow_async(fn, arg)
    finally:
        _starting.reset(token)


async def enqueue(
    queue: str,
    fn: Callable[..., Awaitable[T]],
    arg: Any,
    *,
    workflow_id: str,
    priority: int,
    deduplication_id: str | None,
    return_existing: bool,
    timeout_seconds: float | None,
    wake: bool = True,
) -> Any:
    """Put `fn(arg)` on `queue`; with `wake`, this process polls the queue at once (see `_Waker`)."""
    options = SetEnqueueOptions(
        priority=priority,
        deduplication_id=deduplication_id,
        duplication_policy="return-existing" if return_existing else "reject",
    )
    try:
        with SetWorkflowID(workflow_id), SetWorkflowTimeout(timeout_seconds), options:
            handle = await DBOS.enqueue_workflow_async(queue, fn, arg)
    except dbos_error.DBOSQueueDeduplicatedError:
        raise DuplicateRunError(deduplication_id or "", queue) from None
    if wake:
        hooks.wake_queue(queue)
    return handle


async def retrieve(workflow_id: str) -> Any:
    return await DBOS.retrieve_workflow_async(workflow_id)


async def status(workflow_id: str) -> Workflow | None:
    """The workflow, or None when there is no such workflow. Never recorded as a step, even
    when called from workflow code: DBOS's own status calls are, and one that a replay would
    not make again fails the recovered run."""
    return await blocking(status_now, workflow_id)


async def cancel(workflow_id: str) -> None:
    await DBOS.cancel_workflow_async(workflow_id)


# Blocking forms for code that runs on a thread of `blocking` (no workflow context): nothing they
# do is recorded as a step of the run that calls them, so they may be part of one step's work.


def status_now(workflow_id: str) -> Workflow | None:
    """`status`, blocking."""
    found = hooks.read_status(workflow_id)
    return records.workflow(found) if found is not None else None


def cancel_now(workflow_id: str) -> None:
    """Cancel a workflow, blocking: it stops at its next step boundary."""
    hooks.cancel_now(workflow_id)


def listen_to_no_queues() -> None:
    """Before launch: this process starts no queued workflows (a governor).

    Not even from DBOS's internal queue, which DBOS always polls: DBOS 3.4 recovers a
    restarted process's runs by putting them there, where any process may take them,
    and a governor would execute them without an agent actor's event sink or capacity."""
    DBOS.listen_queues([])
    hooks.take_nothing_from_the_internal_queue()


def send_now(workflow_id: str, message: Any, topic: str, idempotency_key: str | None = None) -> None:
    """`send`, blocking."""
    DBOS.send(workflow_id, message, topic, idempotency_key=idempotency_key)


async def fork(workflow_id: str, start_step: int, new_id: str) -> Any:
    """A new workflow `new_id` with `workflow_id`'s input and its recorded steps before `start_step`,
    executing from that step on (the ones before are replayed from the record). Returns its handle."""
    with SetWorkflowID(new_id):
        handle = await DBOS.fork_workflow_async(workflow_id, start_step)
    hooks.wake_queue(hooks.internal_queue().name)  # a forked run waits on DBOS's internal queue
    return handle


async def resume(workflow_id: str) -> Any:
    handle = await DBOS.resume_workflow_async(workflow_id)
    hooks.wake_queue(hooks.internal_queue().name)  # a resumed run waits on DBOS's internal queue
    return handle


def _filters(
    status: str | None, name: str | None, queue: str | None, ids: list[str] | None, since: float | None,
    limit: int | None, newest_first: bool, load_input: bool, load_output: bool,
) -> dict[str, Any]:
    """DBOS's list filters for Timestep's: `status` in Timestep's words, `since` in epoch seconds."""
    if status is not None and status not in STATUSES:
        raise ValueError(f"status: {status!r} is not one of {', '.join(STATUSES)}")
    filters: dict[str, Any] = {
        "name": name, "queue_name": queue, "workflow_ids": ids, "limit": limit, "sort_desc": newest_first,
        "load_input": load_input, "load_output": load_output,
        "status": records.DBOS_STATUSES[status] if status is not None else None,
        "start_time": datetime.fromtimestamp(since, timezone.utc).isoformat() if since is not None else None,
    }
    return {k: v for k, v in filters.items() if v is not None}


async def list_workflows(
    *, status: str | None = None, name: str | None = None, queue: str | None = None, ids: list[str] | None = None,
    since: float | None = None, limit: int | None = None, newest_first: bool = False, load_input: bool = True,
    load_output: bool = True,
) -> list[Workflow]:
    """Workflows filtered by status (Timestep's words), workflow name, queue, ids and creation time."""
    found = await DBOS.list_workflows_async(**_filters(status, name, queue, ids, since, limit, newest_first, load_input, load_output))
    return [records.workflow(w) for w in found]


async def list_steps(workflow_id: str) -> list[Step]:
    """The workflow's recorded steps, in order."""
    return [records.step(s) for s in await DBOS.list_workflow_steps_async(workflow_id)]


class Here:
    """This process's running engine, read as `Admin` reads it from outside (the same methods)."""

    list_workflows = staticmethod(list_workflows)
    steps = staticmethod(list_steps)
    status = staticmethod(status)


class Admin:
    """Look at and steer workflows from outside: no launch, so nothing is recovered or started
    here (a command-line tool must not take over a running process's runs)."""

    def __init__(self, system_database_url: str | None = None, name: str = "timestep") -> None:
        self.client = DBOSClient(system_database_url=database_url(system_database_url), application_name=name, serializer=SERIALIZER)

    async def list_workflows(
        self, *, status: str | None = None, name: str | None = None, queue: str | None = None, ids: list[str] | None = None,
        since: float | None = None, limit: int | None = None, newest_first: bool = False, load_input: bool = True,
        load_output: bool = True,
    ) -> list[Workflow]:
        found = await self.client.list_workflows_async(**_filters(status, name, queue, ids, since, limit, newest_first, load_input, load_output))
        return [records.workflow(w) for w in found]

    async def status(self, workflow_id: str) -> Workflow | None:
        try:
            return records.workflow(await (await self.client.retrieve_workflow_async(workflow_id)).get_status())
        except NonExistentWorkflow:
            return None

    async def steps(self, workflow_id: str) -> list[Step]:
        return [records.step(s) for s in await self.client.list_workflow_steps_async(workflow_id)]

    async def cancel(self, workflow_id: str) -> None:
        await self.client.cancel_workflow_async(workflow_id)

    async def resume(self, workflow_id: str) -> None:
        await self.client.resume_workflow_async(workflow_id)

    async def fork(self, workflow_id: str, start_step: int, new_id: str) -> None:
        """`fork`, from outside: a process of the deployment that takes runs from DBOS's internal queue runs it."""
        with SetWorkflowID(new_id):
            await self.client.fork_workflow_async(workflow_id, start_step)

    def close(self) -> None:
        self.client.destroy()


# --- queues -------------------------------------------------------------------


def limiter_period(period: float) -> float:
    """The period to hand DBOS so that no rolling window of `period` seconds starts more than `limit`.

    On SQLite before Python 3.12, DBOS reads the database clock in whole seconds
    (`strftime('%s')`) both when it stamps a start and when it counts the window,
    so a window of `period` seconds could hold up to twice the limit. Counting
    over ceil(period) seconds plus a hair covers every start that a true rolling
    window of `period` seconds contains, at the cost of admitting a little less.
    """
    if is_sqlite() and sys.version_info < (3, 12):
        return math.ceil(period) + 0.01
    return period


def register_queue(
    name: str, *, limit: int | None, period: float | None, concurrency: int | None, poll_seconds: float, replace: bool
) -> None:
    """Create queue `name`, or (with `replace`) change its policy. Blocking: call off the event loop."""
    limiter = {"limit": limit, "period": limiter_period(period)} if limit is not None and period is not None else None
    DBOS.register_queue(
        name,
        global_concurrency=concurrency,
        limiter=limiter,  # type: ignore[arg-type]
        polling_interval_sec=poll_seconds,
        on_conflict="always_update" if replace else "never_update",
    )


async def queue_counts(name: str, period: float) -> tuple[int, int, int]:
    """(waiting, running, started in the last `period` seconds) of queue `name`."""
    light = {"queue_name": name, "load_input": False, "load_output": False}
    waiting = await DBOS.list_workflows_async(status=records.DBOS_STATUSES["queued"], **light)
    running = await DBOS.list_workflows_async(status=records.DBOS_STATUSES["running"], **light)
    since = datetime.fromtimestamp(time.time() - period, timezone.utc).isoformat()
    started = await DBOS.list_workflows_async(dequeued_after=since, **light)
    return len(waiting), len(running), len(started)


def queue_policy(name: str) -> Any:
    """The stored policy of queue `name`, or None."""
    return DBOS.retrieve_queue(name)


def delete_queue(name: str) -> None:
    """Delete queue `name`'s row in DBOS: each process's worker of it stops at its next poll. Blocking."""
    DBOS.delete_queue(name)


def executors_with_pending_runs(app_version: str) -> list[str]:
    """The executor ids holding unfinished (PENDING) workflows of `app_version` (blocking)."""
    return hooks.executors_with_pending_runs(app_version)


def recover_runs_of(executor_id: str) -> int:
    """Put a dead executor's unfinished workflows back on their queues, for the processes polling
    them to take over (blocking); returns how many."""
    n = hooks.recover_runs_of(executor_id)
    hooks.wake_queue(hooks.internal_queue().name)
    return n


def enqueue_now(fn: Callable[..., Awaitable[T]], arg: Any, *, workflow_id: str) -> None:
    """From a thread that is no event loop's: put `fn(arg)` on DBOS's internal queue (no limits), as
    DBOS's own scheduler does with a tick; an id used before changes nothing."""
    queue = hooks.internal_queue().name
    with SetWorkflowID(workflow_id):
        DBOS.enqueue_workflow(queue, fn, arg)
    hooks.wake_queue(queue)


# --- schedules (DBOS's: those earlier versions of Timestep made; see `timestep.durable.schedules`) ---


def apply_schedule(name: str, fn: Callable[..., Any], cron: str, context: Any) -> None:
    DBOS.apply_schedules([{"schedule_name": name, "workflow_fn": fn, "schedule": cron, "context": context}])


def list_schedules(workflow_name: str) -> list[Any]:
    return list(DBOS.list_schedules(workflow_name=workflow_name))


def delete_schedule(name: str) -> None:
    DBOS.delete_schedule(name)
