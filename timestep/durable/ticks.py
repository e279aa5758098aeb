"""Cron schedules of runs: the one table that holds every schedule (made by the library or on the
bus), cron expressions, and the clock that says which tick is due. Both ways in use this module, so a
schedule means one thing wherever it was made:

- each tick fires once, its run id derived from the schedule and the tick (`tick_run_id`), so two
  processes firing the same tick make one run;
- a tick missed while nothing was running is not run afterwards (the clock plans from now);
- a schedule that cannot fire (a cron with no next time, a row that cannot be read) is logged once and
  skipped; the others go on.

What differs is who fires a tick. A bus schedule (`origin="bus"`): the scheduler actor, which submits
the tick's request on `runs.submit` (see `actors.scheduler`). A library schedule (`origin="library"`):
every launched process that registered its agent, each with a `Clock` on a thread of its own
(`runs.fire_library_ticks`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import msgspec
import sqlalchemy as sa
from croniter import CroniterBadDateError, CroniterError, croniter

from subjects.messages import RunRequest, Schedule
from timestep.durable import store
from timestep.errors import ValidationError

#: How far ahead a cron's next time is looked for (croniter's own default, named so the error can say it).
HORIZON_YEARS = 50
#: How often a clock looks for due ticks, and how often it reads the table again.
TICK_SECONDS = 0.2
RELOAD_SECONDS = 1.0
_RECREATE = "delete it (timestep schedules delete {name}) and create it again"


# --- crons ------------------------------------------------------------------------


def check_crontab(crontab: object) -> str:
    """5 fields (minute first) or 6 (seconds first)."""
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


def tick_run_id(name: str, scheduled_at: datetime) -> str:
    """The run id of one tick: token-safe, the same in every process."""
    return f"{name}-{scheduled_at.strftime('%Y%m%dT%H%M%S')}"[:128]


# --- the table ----------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """A schedule as stored: the contract's `Schedule`, and how a library schedule's session object
    is made again for each tick (`sessions.recipe`; None for the bus's and for a session id)."""

    schedule: Schedule
    session_recipe: dict[str, Any] | None = None


def load(db: sa.Engine) -> tuple[list[Row], dict[str, str]]:
    """Every schedule, by name, and why each row that cannot be read is left out (by name)."""
    table = store.schedules
    with db.connect() as conn:
        rows = conn.execute(sa.select(table).order_by(table.c.name)).mappings().all()
    found, unreadable = [], {}
    for r in rows:
        try:
            request = msgspec.json.decode(r["request"], type=RunRequest)
            recipe = msgspec.json.decode(r["session_recipe"]) if r["session_recipe"] else None
            schedule = Schedule(
                name=r["name"], cron=r["cron"], request=request, created_at=r["created_at"],
                origin=r["origin"] or "bus", last_fired_at=r["last_fired_at"],
            )
            found.append(Row(schedule, recipe))
        except (msgspec.DecodeError, msgspec.ValidationError, TypeError) as exc:
            unreadable[r["name"]] = f"skipped: its stored request cannot be read ({exc}); {_RECREATE.format(name=r['name'])}"
    return found, unreadable


def save(db: sa.Engine, row: Row) -> None:
    """Create the schedule, or replace the one of that name (whichever way it was made)."""
    s = row.schedule
    values = {
        "name": s.name, "cron": s.cron, "request": msgspec.json.encode(s.request).decode(), "created_at": s.created_at,
        "origin": s.origin, "session_recipe": msgspec.json.encode(row.session_recipe).decode() if row.session_recipe else None,
        "last_fired_at": None,
    }
    with db.begin() as conn:
        store.upsert(conn, store.schedules, [values])


def remove(db: sa.Engine, name: str) -> bool:
    """Delete schedule `name`; False when there was none. Runs already started are not affected."""
    with db.begin() as conn:
        return conn.execute(sa.delete(store.schedules).where(store.schedules.c.name == name)).rowcount > 0


def mark_fired(db: sa.Engine, name: str, at: datetime) -> None:
    table = store.schedules
    with db.begin() as conn:
        conn.execute(sa.update(table).where(table.c.name == name).values(last_fired_at=at.timestamp()))


# --- the clock --------------------------------------------------------------------


class Clock:
    """Which ticks of the schedules it is given are due, planned from when it first saw each one (so
    a tick missed before that is not run). The caller fires each due tick and says how it went:
    `fired` plans the next one; `failed` keeps the tick due, so it is tried again."""

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self.rows: dict[str, Row] = {}
        self._next: dict[str, tuple[str, datetime | None]] = {}  # name -> (cron, next tick; None: never)
        self._failing: dict[str, str] = {}  # name -> the problem logged for it
        self._loaded_at = float("-inf")

    def stale(self) -> bool:
        """Time to read the table again."""
        return time.monotonic() - self._loaded_at > RELOAD_SECONDS

    def reload_soon(self) -> None:
        self._loaded_at = float("-inf")

    def update(self, rows: list[Row], unreadable: dict[str, str]) -> None:
        """The table as just read."""
        self.rows = {r.schedule.name: r for r in rows}
        for name, problem in unreadable.items():
            self.failed(name, problem)
        for name in set(self._failing) - set(self.rows) - set(unreadable):
            del self._failing[name]  # deleted: a new schedule of that name is reported afresh
        for name in set(self._next) - set(self.rows):
            del self._next[name]
        self._loaded_at = time.monotonic()

    def due(self, now: datetime, mine: Callable[[Row], bool]) -> list[tuple[Row, datetime]]:
        """The ticks of the schedules `mine` accepts that are due at `now`, earliest first."""
        found = []
        for name, row in self.rows.items():
            if not mine(row):
                self._next.pop(name, None)  # planned afresh if it becomes this clock's
                continue
            cron = row.schedule.cron
            known = self._next.get(name)
            try:
                if known is None or known[0] != cron:
                    self._plan(name, cron, now)
                elif known[1] is not None and known[1] <= now:
                    found.append((row, known[1]))
            except CroniterError as exc:
                self.failed(name, f"skipped: its cron {cron!r} cannot fire ({exc}); {_RECREATE.format(name=name)} with a cron that fires")
        return sorted(found, key=lambda pair: pair[1])

    def fired(self, name: str, tick: datetime, now: datetime) -> None:
        if self._failing.pop(name, None) is not None:
            self.log.info("schedule %s fires again", name)
        cron = self.rows[name].schedule.cron
        try:
            self._plan(name, cron, max(tick, now))
        except CroniterError as exc:
            self.failed(name, f"skipped: its cron {cron!r} cannot fire ({exc}); {_RECREATE.format(name=name)} with a cron that fires")

    def failed(self, name: str, problem: str) -> None:
        """Log a schedule's failure once (and again only if it changes), not at every tick."""
        if self._failing.get(name) != problem:
            self._failing[name] = problem
            self.log.error("schedule %s: %s", name, problem)

    def _plan(self, name: str, cron: str, after: datetime) -> None:
        # Planned as "never" first: a cron with no next time (one stored before creation refused
        # such crons, or a corrupt row) stays skipped until it changes, not retried at every tick.
        self._next[name] = (cron, None)
        self._next[name] = (cron, next_time(cron, after))
