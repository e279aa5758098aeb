"""Cron schedules of agent runs, created, listed and deleted at run time. Each tick runs once
across every process sharing the database (its run id is derived from the schedule and tick)."""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timezone
from typing import Any

import msgspec
from agents import Agent, RunState
from croniter import CroniterBadDateError, croniter

from subjects.ids import NAME_MAX_LENGTH, run_id_problem
from timestep.durable import admission, engine, registry
from timestep.errors import ValidationError
from timestep.durable.runs import SCHEDULED_WORKFLOW as WORKFLOW_NAME
from timestep.durable.runs import scheduled_run, session_of, spec_for, tick_run_id

#: How far ahead a cron's next time is looked for (croniter's own default, named so the error can say it).
HORIZON_YEARS = 50
_pending: dict[str, dict[str, Any]] = {}


class ScheduleInfo(msgspec.Struct, kw_only=True):
    name: str
    crontab: str
    agent: str
    status: str
    last_fired_at: str | None = None


def check_crontab(crontab: object) -> str:
    """5 fields (minute first) or 6 (seconds first), as DBOS reads them."""
    if not isinstance(crontab, str):
        raise ValidationError("crontab", f"{crontab!r} is not a string", "pass e.g. '*/5 * * * *'")
    fields = crontab.split()
    if len(fields) not in (5, 6):
        raise ValidationError("crontab", f"{crontab!r} has {len(fields)} fields", "use 5 fields (minute hour day month weekday) or 6 with seconds first")
    if not croniter.is_valid(crontab, second_at_beginning=len(fields) == 6):
        raise ValidationError("crontab", f"{crontab!r} is not a valid cron expression", "e.g. '0 */6 * * *' (every 6 hours) or '*/10 * * * * *' (every 10 s)")
    try:
        next_time(crontab, datetime.now(timezone.utc))
    except CroniterBadDateError:
        raise ValidationError(
            "crontab",
            f"{crontab!r} never fires: no time in the next {HORIZON_YEARS} years matches it (a day its months do not have, such as 31 February)",
            "use days every chosen month has, or 'L' for the last day of the month",
        ) from None
    return " ".join(fields)


def next_time(crontab: str, after: datetime) -> datetime:
    """The cron's first time after `after`; CroniterBadDateError when none comes within HORIZON_YEARS."""
    six = len(crontab.split()) == 6
    return croniter(crontab, after, second_at_beginning=six, max_years_between_matches=HORIZON_YEARS).get_next(datetime)


def _apply(name: str, crontab: str, context: dict[str, Any]) -> None:
    engine.apply_schedule(name, scheduled_run, crontab, context)


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
    spec = spec_for(request, session_recipe=recipe)
    context = {"name": name, "spec": msgspec.to_builtins(spec)}
    if engine.is_launched():
        await engine.blocking(_apply, name, crontab, context)
    else:
        _pending[name] = {"crontab": crontab, "agent": agent.name}
        engine.after_launch(lambda: (_apply(name, crontab, context), _pending.pop(name, None)))
    return name


async def list_schedules() -> list[ScheduleInfo]:
    """Every schedule of agent runs in the database (and those waiting for launch)."""
    found = [
        ScheduleInfo(name=n, crontab=p["crontab"], agent=p["agent"], status="PENDING_LAUNCH") for n, p in _pending.items()
    ]
    if engine.is_launched():
        rows = await engine.blocking(engine.list_schedules, WORKFLOW_NAME)
        for row in rows:
            context = row.get("context") or {}
            found.append(
                ScheduleInfo(
                    name=row["schedule_name"],
                    crontab=row["schedule"],
                    agent=(context.get("spec") or {}).get("agent", "?"),
                    status=row["status"],
                    last_fired_at=row.get("last_fired_at"),
                )
            )
    return sorted(found, key=lambda s: s.name)


async def delete_schedule(name: str) -> bool:
    """Delete schedule `name`; False when there was none. Runs already started are not affected."""
    if name in _pending:
        _pending.pop(name)
        return True
    if not engine.is_launched():
        return False
    existing = {s.name for s in await list_schedules()}
    if name not in existing:
        return False
    await engine.blocking(engine.delete_schedule, name)
    return True
