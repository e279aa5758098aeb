"""Runs' own database queries meeting a database outage, for tests/test_faults.py.

    python tests/outage_worker.py DB_URL GATE_DIR [RUNS [stop|recover]]

One run (the default) asks in a step whether its queue is paused, as a queued run does before
its first model call (`runs._wait_out`, the step a run lost this way failed in). The step waits
for GATE_DIR/open before its query, so the test can stop the database after DBOS looked the step
up and before the query runs. Prints `waiting` when the step waits, then `paused seconds: N`.

With RUNS > 1, as many runs make the same query in a step of their own, each after the gate; once
they wait out the outage, one more database call is made from no run (so it is not retried), and
`other call answered` printed when it returns or fails. With `stop`, the process then stops its
runs as `timestep up` does on SIGTERM, prints `stopped N runs` and exits; with `recover`, a later
process of the same executor id finishes them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from pathlib import Path

import timestep
from timestep.durable import engine, queues, runs

db_url, gate = sys.argv[1], Path(sys.argv[2]) / "open"
RUNS = int(sys.argv[3]) if len(sys.argv) > 3 else 1
MODE = sys.argv[4] if len(sys.argv) > 4 else "run"
at_gate = 0


def paused_seconds_after_gate(queue: str) -> float:
    print("waiting", flush=True)
    while not gate.exists():
        time.sleep(0.02)
    return queues.paused_seconds(queue)


@engine.workflow("tests.outage")
async def outage_run(queue: str) -> str:
    await runs._wait_out("queue.pause", paused_seconds_after_gate, queue)
    return await engine.step("after", _answer)


async def _answer() -> str:
    return "paused seconds: 0"


@engine.workflow("tests.outage.crowd")
async def crowd_run(queue: str) -> str:
    async def check() -> float:
        global at_gate
        at_gate += 1
        if at_gate == RUNS:
            print("waiting", flush=True)
        while not gate.exists():  # on the loop: the runs take no thread before their query
            await asyncio.sleep(0.02)
        return await engine.blocking(queues.paused_seconds, queue)

    return f"paused seconds: {await engine.step('queue.pause', check):g}"


class FirstWaits(logging.Handler):
    """Counts the runs that began to wait out the outage (their first attempt's warning)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "the database is unavailable" in message and message.endswith("(attempt 1)"):
            self.count += 1


async def main() -> None:
    timestep.configure_dbos(system_database_url=db_url)
    await timestep.ensure_dbos_launched()
    if RUNS == 1:
        handle = await engine.start(outage_run, "q", workflow_id="outage-1", timeout_seconds=None)
        print(await handle.get_result(), flush=True)
        return
    if MODE == "recover":
        for i in range(RUNS):
            print(await (await engine.retrieve(f"crowd-{i}")).get_result(), flush=True)
        return
    first_waits = FirstWaits()
    logging.getLogger("timestep.durable.engine").addHandler(first_waits)
    handles = [await engine.start(crowd_run, "q", workflow_id=f"crowd-{i}", timeout_seconds=None) for i in range(RUNS)]
    deadline = time.monotonic() + 20
    while first_waits.count < RUNS and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    print(f"{first_waits.count} runs wait out the outage", flush=True)
    try:
        await engine.blocking(queues.paused_seconds, "q")
    except Exception as exc:  # the database is away: an answer all the same
        print(f"other call failed: {type(exc).__name__}", flush=True)
    print("other call answered", flush=True)
    if MODE == "stop":
        print(f"stopped {await engine.stop_workflows(1.0)} runs", flush=True)
        os._exit(0)
    for handle in handles:
        print(await handle.get_result(), flush=True)


asyncio.run(main())
