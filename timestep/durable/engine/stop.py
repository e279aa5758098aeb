"""A graceful stop: the steps under way finish and are recorded, no new one starts, and each run
stops at a step boundary, to resume where it was in the next process of its executor id."""

from __future__ import annotations

import asyncio
import logging
import time

from timestep.durable.engine import hooks, io, lifecycle, logs, runtime

log = logging.getLogger("timestep.durable.engine")

# A workflow cancelled by asyncio (the process stopping) must record nothing on its way
# out: DBOS records most of its calls made inside a workflow (a status read, a sleep, a
# send) as steps, and a call that a replay would not make again fails the recovered run
# ("function X was recorded when Y was expected"). So a stop lets the steps under way
# finish and be recorded, starts no new one, then cancels the executions: each stops at
# a step boundary, stays PENDING in the database, and resumes in the next process of its
# executor id as after a crash, without re-running anything.

#: How many steps under way the last stop cut off. The process's, not the launch's: the threads of
#: the sync tools it cut off go on after the runtime is dropped, and the process's exit asks.
_cut_off = 0


def executing() -> set[asyncio.Task]:
    """The workflow executions running in this process (see `engine.workflow`)."""
    return runtime.current().stop.executing


def stopping() -> bool:
    """True while this process stops its workflows (see `stop_workflows`)."""
    return runtime.current().stop.stopping


class busy:
    """Marks durable work under way (a step, a run's last event) that a stop waits for."""

    async def __aenter__(self) -> None:
        await stop_gate()
        self._state = state = runtime.current().stop
        state.busy += 1

    async def __aexit__(self, *exc: object) -> None:
        state = self._state
        state.busy -= 1
        if state.busy == 0 and state.idle is not None:
            state.idle.set()


async def stop_gate() -> None:
    """While stopping, durable work that has not begun waits here until it is cancelled."""
    if runtime.current().stop.stopping:
        await asyncio.get_running_loop().create_future()


async def stop_workflows(grace_seconds: float) -> int:
    """Stop every workflow executing in this process at a step boundary; returns how many.

    Steps under way get `grace_seconds` to finish (one still running then is cut off and
    runs again on recovery, as after a crash; see `steps_cut_off`); no new step starts. DBOS's
    queue, schedule and recovery threads stop first, so nothing new starts here meanwhile. Runs
    stay PENDING and resume when a process with this executor id launches."""
    global _cut_off
    state = runtime.current().stop
    state.stopping = True
    _cut_off = 0
    try:
        if lifecycle.is_launched():
            hooks.stop_background_threads()
        if state.busy:
            state.idle = asyncio.Event()
            began = time.monotonic()
            try:
                await asyncio.wait_for(state.idle.wait(), grace_seconds)
            except asyncio.TimeoutError:
                pass
            finally:
                state.idle = None
            if state.busy:  # the grace ran out, or a second signal hurried the stop
                _cut_off = state.busy
                log.warning(
                    "stop: %d step(s) still under way after %.1f s are cut off; they run again on recovery",
                    state.busy, time.monotonic() - began,
                )
        tasks = [t for t in state.executing if not t.done()]
        with logs.quiet_cancellation():
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        io.give_up_outage_waits()
        if tasks:
            log.warning("stopped %d run(s) at a step boundary; they resume when this executor id starts again", len(tasks))
        return len(tasks)
    finally:
        state.stopping = False


def steps_cut_off() -> int:
    """How many steps under way the last `stop_workflows` cut off. A step's coroutine is cancelled,
    but a thread cannot be: a plain `def` tool (the Agents SDK runs it in a thread) goes on until
    it returns, unrecorded, and the interpreter waits for it at exit; it runs again on recovery all
    the same. A process that exits after the stop should then exit without waiting (`os._exit`)."""
    return _cut_off


def hurry_stop() -> None:
    """Stop now: the steps under way are cut off (and run again on recovery)."""
    idle = runtime.current().stop.idle
    if idle is not None:
        idle.set()

