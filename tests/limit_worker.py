"""A second process taking runs from a rate-limited queue, for tests/test_queues.py.

    python tests/limit_worker.py DB_URL QUEUE

Declares the workflow the test queues (`started`, imported by the test process too), launches on
DB_URL, prints `ready` once its worker of QUEUE has read the queue's policy and waits for runs,
and prints `limited` each time a poll of QUEUE found the rate limit spent.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from timestep.durable import engine

@engine.workflow("tests.queues.started")
async def started(text: str) -> str:
    """Returns at once; a run whose input is `wait-for:PATH` first waits for the file PATH."""
    if text.startswith("wait-for:"):
        gate = Path(text.removeprefix("wait-for:"))
        while not gate.exists():
            await asyncio.sleep(0.02)
    return text


def on_limited(queue: str, seen: Callable[[], None]) -> Callable[[], None]:
    """Call `seen` each time this process's poll of `queue` finds its rate limit spent; returns the undo."""
    sys_db = engine.hooks.system_database()
    claim = sys_db.start_queued_workflows

    def counted(q: Any, *args: Any, **kwargs: Any) -> Any:
        ids, reason = claim(q, *args, **kwargs)
        if reason == "limiter" and q.name == queue:
            seen()
        return ids, reason

    sys_db.start_queued_workflows = counted
    return lambda: setattr(sys_db, "start_queued_workflows", claim)


async def main(db_url: str, queue: str) -> None:
    import timestep

    timestep.configure_dbos(system_database_url=db_url)
    await timestep.ensure_dbos_launched()
    on_limited(queue, lambda: print("limited", flush=True))
    # Its worker has read the queue's policy once it has waited for a poll.
    while queue not in engine.runtime.current().wakers or engine.runtime.current().wakers[queue]._last_poll == 0:
        await asyncio.sleep(0.02)
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
