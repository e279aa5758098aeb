"""The scheduler: cron schedules of run requests, created, listed and deleted at run time.

Schedules are rows of the one schedules table (`timestep.durable.ticks`: they survive restarts, are
shared by every scheduler, and are listed with the library's). Each tick of a bus schedule is
published on `<prefix>.runs.submit` as its request with the run id `<name>-<YYYYmmddTHHMMSS>` and that
id as `Nats-Msg-Id`, so two schedulers publishing the same tick make one run: JetStream drops the
repeat, and the run id would absorb it after the duplicate window too. The library's schedules are
fired by the processes that registered their agents. What a tick means (missed ticks are not run
afterwards; a schedule that cannot fire is logged once and skipped) is `ticks.Clock`'s, on both ways.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone

import msgspec

from actors.base import Actor, KnownAgents
from subjects.messages import Reply, Schedule, ScheduleCreate, ScheduleDelete, ScheduleList
from timestep.durable import store, ticks
from timestep.bus.connection import Bus
from timestep.errors import ValidationError
from timestep.bus.intake import Invalid, encode, parse_request
from timestep.durable.ticks import check_crontab, tick_run_id

log = logging.getLogger("actors.scheduler")


def _on_the_bus(row: ticks.Row) -> bool:
    return row.schedule.origin == "bus"


class Scheduler(Actor):
    def __init__(self, bus: Bus) -> None:
        super().__init__(bus)
        self._clock_task: asyncio.Task | None = None
        self._clock = ticks.Clock(log)
        self._agents = KnownAgents(bus)

    async def on_start(self) -> None:
        s = self.bus.subjects
        await self.answer(s.schedules_create, "timestep-scheduler", ScheduleCreate, self._create)
        await self.answer(s.schedules_delete, "timestep-scheduler", ScheduleDelete, self._delete)
        await self.answer(s.schedules_list, "timestep-scheduler", ScheduleList, self._list)
        self._clock_task = asyncio.create_task(self._run_clock(), name="scheduler-clock")

    async def on_stop(self) -> None:
        if self._clock_task is not None:
            self._clock_task.cancel()
            await asyncio.gather(self._clock_task, return_exceptions=True)

    # --- the clock ------------------------------------------------------------------

    async def _run_clock(self) -> None:
        while True:
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("scheduler clock failed; retrying")
                self._clock.reload_soon()
                await asyncio.sleep(1.0)
            await asyncio.sleep(ticks.TICK_SECONDS)

    async def _tick(self) -> None:
        if self._clock.stale():
            self._clock.update(*await store.run(ticks.load))
        current = datetime.now(timezone.utc)
        for row, tick in self._clock.due(current, _on_the_bus):
            name = row.schedule.name
            try:
                await self._fire(row.schedule, tick)
            except Exception as exc:  # this schedule's trouble alone: the others still fire
                self._clock.failed(name, f"its tick failed ({type(exc).__name__}: {exc}); trying again")
                continue
            self._clock.fired(name, tick, current)

    async def _fire(self, schedule: Schedule, tick: datetime) -> None:
        run_id = tick_run_id(schedule.name, tick)
        request = msgspec.structs.replace(schedule.request, id=run_id)
        await self.bus.nc.publish(self.bus.subjects.submit, encode(request), headers={"Nats-Msg-Id": run_id, "Content-Type": "application/json"})
        await self.bus.nc.flush()
        await store.run(lambda db: ticks.mark_fired(db, schedule.name, tick))
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
        await store.run(lambda db: ticks.save(db, ticks.Row(schedule)))
        self._clock.reload_soon()
        return Reply(ok=True, schedule=schedule)

    async def _delete(self, req: ScheduleDelete) -> Reply:
        deleted = await store.run(lambda db: ticks.remove(db, req.name))
        self._clock.reload_soon()
        return Reply(ok=True, deleted=deleted)

    async def _list(self, req: ScheduleList) -> Reply:
        rows, _ = await store.run(ticks.load)
        return Reply(ok=True, schedules=[r.schedule for r in rows])
