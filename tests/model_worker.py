"""A process whose model calls go over HTTP to the test's provider (OPENAI_BASE_URL), for the
tests that need a second process or a SIGKILL while a run waits to retry.

    python tests/model_worker.py DB_URL run RUN_ID          run one run; print its output
    python tests/model_worker.py DB_URL queue QUEUE RUN_ID  queue one run, print its output, keep polling
"""

from __future__ import annotations

import asyncio
import sys
import time

import agents
from agents import Agent

agents.set_tracing_disabled(True)

import timestep  # noqa: E402

db_url, mode, *rest = sys.argv[1:]
AGENT = Agent(name="paced", model="gpt-test")


async def main() -> None:
    timestep.configure_dbos(system_database_url=db_url)
    timestep.register_agent(AGENT)
    await timestep.ensure_dbos_launched()
    print(f"ready at {time.time()}", flush=True)
    if mode == "run":
        result = await timestep.run_agent_workflow(AGENT, "Hi", workflow_id=rest[0])
        print(f"output: {result.output}", flush=True)
        return
    queue, run_id = rest
    handle = await timestep.queue_agent_workflow(AGENT, "Hi", queue_name=queue, workflow_id=run_id)
    result = await handle.get_result()
    print(f"output: {result.output}", flush=True)
    await asyncio.Event().wait()  # stay up: this process polls the queue too


asyncio.run(main())
