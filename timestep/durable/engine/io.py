"""Blocking calls off the event loop, and a run's own database calls that wait out an outage."""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from dbos import DBOS

from timestep.durable.engine import hooks, lifecycle

log = logging.getLogger("timestep.durable.engine")

T = TypeVar("T")

_io_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="timestep-io")


async def blocking(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a short blocking call (database I/O, DBOS's blocking API) off the event loop.

    Timestep keeps its own small pool: DBOS swaps the loop's default executor and
    shuts it down on destroy, which would break `asyncio.to_thread` after a relaunch.
    Unlike `asyncio.to_thread`, the call does not carry the caller's context, so DBOS never
    takes it for part of a workflow (and never records it as a step).

    Called from inside a run, the call waits out a database outage (see `_OutageWaits`).
    """
    call = functools.partial(fn, *args, **kwargs)
    loop = asyncio.get_running_loop()
    if DBOS.workflow_id is None:
        return await loop.run_in_executor(_io_pool, call)
    waits = _outage_waits
    attempt = 0
    while True:
        try:
            return await loop.run_in_executor(_io_pool, call)
        except Exception as exc:
            if not hooks.transient(exc, lifecycle.is_sqlite()) or waits.over:
                raise
            attempt += 1
            wait = min(0.25 * 2 ** min(attempt, 7), 15.0) * (0.5 + random.random())
            text = str(exc).strip()
            reason = text.splitlines()[0][:300] if text else type(exc).__name__
            log.warning("the database is unavailable (%s); the run waits and tries again in %.1f s (attempt %d)", reason, wait, attempt)
            if await waits.pause(wait):
                raise


class _OutageWaits:
    """A run's own database calls (a queue's pause or token budget, sessions, turns, approvals,
    definitions) are tried again while the database is unreachable, as DBOS tries its own: an
    outage pauses the run instead of failing it. Before, a run whose pause check met the outage
    failed without a `failed` event (test_database_outage_under_load caught it, 1 run in 100).

    The run waits on the event loop between attempts, not in a thread of the pool: eight runs
    sleeping there took every thread, and every other database call of the process waited for the
    outage to end. A stop gives up on the waits once it has cut off the runs (`end`)."""

    def __init__(self) -> None:
        self.over = False
        self._sleeping: set[asyncio.Future[None]] = set()

    async def pause(self, seconds: float) -> bool:
        """Sleep `seconds`; True when a stop gave up meanwhile."""
        if self.over:
            return True
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleeping.add(woken)
        try:
            await asyncio.wait([woken], timeout=seconds)
        finally:
            self._sleeping.discard(woken)
        return self.over

    def end(self) -> None:
        self.over = True
        for woken in list(self._sleeping):
            woken.get_loop().call_soon_threadsafe(_wake_future, woken)


def _wake_future(woken: asyncio.Future[None]) -> None:
    if not woken.done():
        woken.set_result(None)


_outage_waits = _OutageWaits()


def give_up_outage_waits() -> None:
    global _outage_waits
    stale, _outage_waits = _outage_waits, _OutageWaits()
    stale.end()

