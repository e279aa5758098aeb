"""The scheduler: cron schedules of run requests, created, listed and deleted at run time.

Schedules are rows in the database (they survive restarts and are shared by every
scheduler). Each tick of a schedule is published on `<prefix>.runs.submit` as its
request with the run id `<name>-<YYYYmmddTHHMMSS>` and that id as `Nats-Msg-Id`,
so two schedulers publishing the same tick make one run: JetStream drops the
repeat, and the run id would absorb it after the duplicate window too.
Ticks missed while no scheduler was running are not run afterwards.
A schedule that cannot fire (a cron with no next time, a row that cannot be read) is logged
once and skipped; the others go on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone

import msgspec
import sqlalchemy as sa
from croniter import CroniterError

from actors.base import Actor, KnownAgents
from subjects.messages import RunRequest, Reply, Schedule, ScheduleCreate, ScheduleDelete, ScheduleList
from timestep.durable import store
from timestep.bus.connection import Bus
from timestep.errors import ValidationError
from timestep.bus.intake import Invalid, encode, parse_request
from timestep.durable.schedules import check_crontab, next_time, tick_run_id

log = logging.getLogger("actors.scheduler")

TICK_SECONDS = 0.2
RELOAD_SECONDS = 1.0
_RECREATE = "delete it (timestep schedules delete {name}) and create it again"


def _load(db: sa.Engine) -> tuple[list[Schedule], dict[str, str]]:
    """The schedules, and why each row that cannot be read is left out (by name)."""
    with db.connect() as conn:
        rows = conn.execute(sa.select(store.bus_schedules).order_by(store.bus_schedules.c.name)).mappings().all()
    schedules, unreadable = [], {}
    for r in rows:
        try:
            request = msgspec.json.decode(r["request"], type=RunRequest)
            schedules.append(Schedule(name=r["name"], cron=r["cron"], request=request, created_at=r["created_at"]))
        except (msgspec.DecodeError, msgspec.ValidationError, TypeError) as exc:
            unreadable[r["name"]] = f"skipped: its stored request cannot be read ({exc}); {_RECREATE.format(name=r['name'])}"
    return schedules, unreadable


def _save(db: sa.Engine, schedule: Schedule) -> None:
    table = store.bus_schedules
    with db.begin() as conn:
        store.upsert(conn, table, [{"name": schedule.name, "cron": schedule.cron, "request": encode(schedule.request).decode(), "created_at": schedule.created_at}])


def _delete(db: sa.Engine, name: str) -> bool:
    with db.begin() as conn:
        return conn.execute(sa.delete(store.bus_schedules).where(store.bus_schedules.c.name == name)).rowcount > 0


class Scheduler(Actor):
    def __init__(self, bus: Bus) -> None:
        super().__init__(bus)
        self._clock: asyncio.Task | None = None
        self._next: dict[str, tuple[str, datetime | None]] = {}  # name -> (cron, next tick; None: never)
        self._schedules: dict[str, Schedule] = {}
        self._failing: dict[str, str] = {}  # name -> the problem logged for it
        self._agents = KnownAgents(bus)
        self._loaded_at = 0.0

    async def on_start(self) -> None:
        s = self.bus.subjects
        await self.answer(s.schedules_create, "timestep-scheduler", ScheduleCreate, self._create)
        await self.answer(s.schedules_delete, "timestep-scheduler", ScheduleDelete, self._delete)
        await self.answer(s.schedules_list, "timestep-scheduler", ScheduleList, self._list)
        self._clock = asyncio.create_task(self._run_clock(), name="scheduler-clock")

    async def on_stop(self) -> None:
        if self._clock is not None:
            self._clock.cancel()
            await asyncio.gather(self._clock, return_exceptions=True)

    # --- the clock ------------------------------------------------------------------

    async def _run_clock(self) -> None:
        while True:
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("scheduler clock failed; retrying")
                await asyncio.sleep(1.0)
            await asyncio.sleep(TICK_SECONDS)

    async def _tick(self) -> None:
        if time.monotonic() - self._loaded_at > RELOAD_SECONDS:
            schedules, unreadable = await store.run(_load)
            self._schedules = {s.name: s for s in schedules}
            for name, problem in unreadable.items():
                self._failed(name, problem)
            for name in set(self._failing) - set(self._schedules) - set(unreadable):
                del self._failing[name]  # deleted: a new schedule of that name is reported afresh
            self._loaded_at = time.monotonic()
        current = datetime.now(timezone.utc)
        for name, schedule in self._schedules.items():
            try:
                await self._advance(schedule, current)
            except CroniterError as exc:
                self._failed(name, f"skipped: its cron {schedule.cron!r} cannot fire ({exc}); {_RECREATE.format(name=name)} with a cron that fires")
            except Exception as exc:  # this schedule's trouble alone: the others still fire
                self._failed(name, f"its tick failed ({type(exc).__name__}: {exc}); trying again")
        for name in set(self._next) - set(self._schedules):
            del self._next[name]

    async def _advance(self, schedule: Schedule, current: datetime) -> None:
        name, cron = schedule.name, schedule.cron
        known = self._next.get(name)
        if known is None or known[0] != cron:
            self._plan(name, cron, current)
            return
        due = known[1]
        if due is not None and due <= current:
            await self._fire(schedule, due)
            if self._failing.pop(name, None) is not None:
                log.info("schedule %s fires again", name)
            self._plan(name, cron, max(due, current))

    def _plan(self, name: str, cron: str, after: datetime) -> None:
        # Planned as "never" first: a cron with no next time (one stored before creation refused
        # such crons, or a corrupt row) stays skipped until it changes, not retried at every tick.
        self._next[name] = (cron, None)
        self._next[name] = (cron, next_time(cron, after))

    def _failed(self, name: str, problem: str) -> None:
        """Log a schedule's failure once (and again only if it changes), not at every tick."""
        if self._failing.get(name) != problem:
            self._failing[name] = problem
            log.error("schedule %s: %s", name, problem)

    async def _fire(self, schedule: Schedule, tick: datetime) -> None:
        run_id = tick_run_id(schedule.name, tick)
        request = msgspec.structs.replace(schedule.request, id=run_id)
        await self.bus.nc.publish(self.bus.subjects.submit, encode(request), headers={"Nats-Msg-Id": run_id, "Content-Type": "application/json"})
        await self.bus.nc.flush()
        log.info("schedule %s fired run %s", schedule.name, run_id)

    # --- request/reply ----------------------------------------------------------------

    async def _create(self, req: ScheduleCreate) -> Reply:
        cron = check_crontab(req.cron)
        try:  # as the governor will check each tick's request, so no tick is rejected
            parse_request(encode(req.request), None, self.bus.settings.max_request_bytes)
        except Invalid as bad:
            field = "request" if bad.field == "request" else f"request.{bad.field}"
            raise ValidationError(field, bad.message) from None
        problem = await self._agents.problem(req.request.agent)
        if problem is not None:
            raise ValidationError("request.agent", problem, "start an agent actor that hosts it (timestep up --agents MODULE), or name one that is hosted")
        schedule = Schedule(name=req.name, cron=cron, request=msgspec.structs.replace(req.request, id=None), created_at=time.time())
        await store.run(lambda db: _save(db, schedule))
        self._loaded_at = 0.0
        return Reply(ok=True, schedule=schedule)

    async def _delete(self, req: ScheduleDelete) -> Reply:
        deleted = await store.run(lambda db: _delete(db, req.name))
        self._loaded_at = 0.0
        return Reply(ok=True, deleted=deleted)

    async def _list(self, req: ScheduleList) -> Reply:
        schedules, _ = await store.run(_load)
        return Reply(ok=True, schedules=schedules)
