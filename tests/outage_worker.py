"""A run's own database query meeting a database outage, for tests/test_faults.py.

    python tests/outage_worker.py DB_URL GATE_DIR

A workflow asks in a step whether its queue is paused, as a queued run does before its first
model call (`runs._wait_out`, the step a run lost this way failed in). The step waits for
GATE_DIR/open before its query, so the test can stop the database after DBOS looked the step up
and before the query runs. Prints `waiting` when the step waits, then `paused seconds: N`.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import timestep
from timestep.durable import engine, queues, runs

db_url, gate = sys.argv[1], Path(sys.argv[2]) / "open"


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


async def main() -> None:
    timestep.configure_dbos(system_database_url=db_url)
    await timestep.ensure_dbos_launched()
    handle = await engine.start(outage_run, "q", workflow_id="outage-1", timeout_seconds=None)
    print(await handle.get_result(), flush=True)


asyncio.run(main())
