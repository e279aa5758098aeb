"""Cron schedules of agent runs, created, listed and deleted at run time: the library's API over the
one table of schedules (`timestep.durable.ticks`), which lists the bus's schedules too. Each tick runs
once across every process sharing the database (its run id is derived from the schedule and tick)."""

from __future__ import annotations

import hashlib
import re
import time
from datetime import datetime, timezone
from typing import Any

import msgspec
from agents import Agent, RunState

from subjects.ids import NAME_MAX_LENGTH, run_id_problem
from subjects.messages import Schedule
from timestep.durable import admission, engine, registry, store, ticks
from timestep.durable.runs import session_of
from timestep.durable.ticks import HORIZON_YEARS, check_crontab, next_time, tick_run_id
from timestep.errors import ValidationError

__all__ = [
    "HORIZON_YEARS", "ScheduleInfo", "check_crontab", "create_scheduled_agent_workflow", "delete_schedule", "list_schedules",
    "next_time", "tick_run_id",
]

_pending: dict[str, ticks.Row] = {}


class ScheduleInfo(msgspec.Struct, kw_only=True):
    name: str
    crontab: str
    agent: str
    status: str
    """"ACTIVE": in the database, firing (there is no pause); "PENDING_LAUNCH": made in this process
    before launch, stored when it launches."""
    last_fired_at: str | None = None
    """When it last fired, ISO 8601 in UTC; None before its first tick."""
    origin: str = "library"
    """"library" (made here; each tick started by a process that registered the agent) or "bus" (made
    with `timestep schedules create` or `schedules.create`; each tick submitted to the governor)."""


async def create_scheduled_agent_workflow(
    crontab: str,
    agent: Agent,
    input_items: str | list[Any],
    session: Any = None,
    stream: bool = False,
    name: str | None = None,
) -> str:
    """Run `agent` on a cron schedule; returns the schedule's name. Creating a name again replaces it.

    Works before or after launch; 6-field cron takes seconds first.

    >>> await create_scheduled_agent_workflow("0 */6 * * *", agent, "Check the inbox", name="inbox-check")
    """
    crontab = check_crontab(crontab)
    if not isinstance(agent, Agent):
        raise ValidationError("agent", f"expected an agents.Agent, got {type(agent).__name__}", "pass the Agent to run")
    items = admission.library_input(input_items)
    if isinstance(items, RunState):
        raise ValidationError("input_items", "is a RunState", "a schedule starts fresh runs: pass a string or input items")
    session_id, recipe = await session_of(session, agent)  # a session object: made again for each tick (`sessions.recipe`)
    request = admission.run_request(agent.name, items, session_id=session_id, stream=stream)  # as a schedule's request on the bus
    if name is None:
        digest = hashlib.sha256(f"{crontab}|{agent.name}|{items!r}|{session_id}".encode()).hexdigest()[:12]
        name = re.sub(r"[^A-Za-z0-9_-]", "-", agent.name)[:60] + "-" + digest
    problem = run_id_problem(name, NAME_MAX_LENGTH)
    if problem is not None:
        raise ValidationError("name", f"{name!r} {problem}")
    registry.register_agent(agent)
    # Each tick records the agent's definition as it starts; its session turn waits for earlier runs.
    row = ticks.Row(Schedule(name=name, cron=crontab, request=request, created_at=time.time(), origin="library"), recipe)
    if engine.is_launched():
        await store.run(lambda db: ticks.save(db, row))
    else:  # stored in the database the process launches on (configure_dbos may still change it)
        _pending[name] = row
        engine.after_launch(lambda: _pending.pop(name, None) is row and ticks.save(store.get_engine(), row))
    return name


async def list_schedules() -> list[ScheduleInfo]:
    """Every schedule of agent runs in the database: the library's and the bus's."""
    rows, _ = await store.run(ticks.load) if engine.is_launched() else ([], {})
    found = {r.schedule.name: _info(r.schedule) for r in rows}
    found |= {n: msgspec.structs.replace(_info(r.schedule), status="PENDING_LAUNCH") for n, r in _pending.items()}
    return sorted(found.values(), key=lambda s: s.name)


def _info(s: Schedule) -> ScheduleInfo:
    fired = None
    if s.last_fired_at is not None:
        fired = datetime.fromtimestamp(s.last_fired_at, timezone.utc).isoformat()
    return ScheduleInfo(name=s.name, crontab=s.cron, agent=s.request.agent, status="ACTIVE", last_fired_at=fired, origin=s.origin)


async def delete_schedule(name: str) -> bool:
    """Delete schedule `name` (the library's or the bus's); False when there was none. Runs already
    started are not affected."""
    if _pending.pop(name, None) is not None:
        return True
    if not engine.is_launched():
        return False
    return await store.run(lambda db: ticks.remove(db, name))
