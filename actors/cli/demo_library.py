"""The library demo (`timestep demo --library`): durable runs in this process, no NATS,
on the embedded default (SQLite in TIMESTEP_HOME).

Without OPENAI_API_KEY the agent uses the offline demo model (rules, not an LLM),
so the demo runs anywhere; with a key it uses the SDK's OpenAI model.
"""

from __future__ import annotations

import uuid
from subjects.events import RunEvent
from timestep.durable import launch
from timestep.durable.launch import configure_dbos, ensure_dbos_launched
from actors.cli.demo_agents import demo_agent
from timestep.durable.registry import register_agent
from timestep.durable.events import listen
from actors.cli.render import describe
from timestep.durable.queues import configure_queue
from timestep.durable.runs import queue_agent_workflow, run_agent_workflow
from timestep.settings import Settings
from timestep.durable.state_store import RunStateStore


def printer(event: RunEvent) -> None:
    print("    " + describe(event), flush=True)


async def show_steps(workflow_id: str) -> None:
    names = ", ".join(await launch.step_names(workflow_id))
    print(f"    durable steps recorded: {names}")


async def main() -> None:
    settings = Settings.from_env()
    configure_dbos()
    agent = register_agent(demo_agent())
    ensure_dbos_launched()
    where = settings.database_url and "PostgreSQL (PG_CONNECTION_URI)" or f"SQLite at {settings.home / 'timestep.sqlite'}"
    model = "OpenAI (OPENAI_API_KEY)" if settings.openai_api_key_set else "the offline demo model (rules, not an LLM)"
    print(f"Timestep demo: durable agent runs on {where}, model: {model}\n")
    tag = uuid.uuid4().hex[:6]
    session = f"demo-user-{tag}"

    print("1. A run with a tool call; every model and tool call is a durable step")
    run_id = f"demo-weather-{tag}"
    result = await run_agent_workflow(agent, "get_weather city=Paris", session, workflow_id=run_id, on_event=printer)
    print(f"    output: {result.output!r}")
    await show_steps(run_id)

    print("\n2. The same workflow id again returns the stored result and runs nothing")
    again = await run_agent_workflow(agent, "get_weather city=Paris", session, workflow_id=run_id, on_event=printer)
    print(f"    output: {again.output!r} (no events: nothing ran)")

    print("\n3. A tool that needs approval: the run stops and its state is saved")
    result = await run_agent_workflow(agent, "send_email to=ada@example.com subject=Report", session, on_event=printer)
    for approval in result.interruptions:
        print(f"    waiting for approval: {approval.tool}({approval.arguments}) call_id={approval.call_id}")

    print("\n4. Load the saved state, approve, resume (streamed)")
    state = await RunStateStore(agent=agent, session_id=session).load()
    assert state is not None
    for item in state.get_interruptions():
        state.approve(item)
    resumed = await run_agent_workflow(agent, state, session, stream=True, on_event=printer)
    print(f"    output: {resumed.output!r}")
    await show_steps(resumed.workflow_id)

    print("\n5. Queued runs: one at a time on a serial queue, lowest priority number first")
    await configure_queue("demo-serial", concurrency=1)
    order: list[str] = []
    busy = await queue_agent_workflow(agent, "think seconds=0.5", queue_name="demo-serial", priority=1)
    handles = []
    for priority in (3, 1, 2):
        handle = await queue_agent_workflow(agent, f"get_weather city=City{priority}", queue_name="demo-serial", priority=priority)
        listen(handle.workflow_id, lambda e, p=priority: order.append(f"priority {p}") if type(e).__name__ == "Started" else None)
        handles.append(handle)
    print("    queued priorities 3, 1, 2 behind a busy run")
    await busy.get_result()
    for handle in handles:
        await handle.get_result()
    print(f"    start order: {', '.join(order)}")

    print(f"\nConversation memory of {session} lives in the same database; inspect runs with `timestep workflows list`.")
