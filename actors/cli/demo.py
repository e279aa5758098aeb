"""The demo behind `timestep demo`: the whole system on the embedded default.

It starts a nats-server and the three actors (agent, governor, scheduler) on SQLite
in TIMESTEP_HOME, then submits runs over the bus as any client would: a direct run
with a tool call, queued runs with priorities, a scheduled run, one that needs an
approval, and a request that is rejected. Every event is printed as it arrives.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sys
import uuid
from pathlib import Path

from subjects.events import Completed, Interrupted, RunEvent, Started
from actors.cli import demo_agents  # noqa: F401  (registers the demo agent)
from timestep.client import Client, RunRejectedError
from actors.cli.render import describe
from timestep.settings import Settings

AGENT = "demo-assistant"


async def _printer(client: Client, seen: list[RunEvent]) -> None:
    async for event in client.events():
        seen.append(event)
        print("    " + describe(event, with_run=True), flush=True)


async def _wait_for(seen: list[RunEvent], predicate, timeout: float = 30.0) -> RunEvent:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        for event in seen:
            if predicate(event):
                return event
        await asyncio.sleep(0.02)
    raise TimeoutError("the demo waited too long for an event")


async def main() -> None:
    from actors.system import System

    settings = Settings.from_env()
    logging.getLogger("timestep.durable.models").setLevel(logging.ERROR)  # the header names the model
    tag = uuid.uuid4().hex[:6]
    async with System() as system:
        where = "PostgreSQL (PG_CONNECTION_URI)" if settings.database_url else f"SQLite at {settings.home / 'timestep.sqlite'}"
        model = "OpenAI (OPENAI_API_KEY)" if settings.openai_api_key_set else "the offline demo model (rules, not an LLM)"
        print(f"Timestep is up: NATS at {system.url} (JetStream store in {settings.home / 'nats'}), {where}")
        print(f"Actors: agent, governor, scheduler in this process; agent {AGENT!r} with {model}.")
        print("Events are printed as they arrive: run id, seq, type, details.\n")
        client = await Client.connect(system.url)
        seen: list[RunEvent] = []
        printer = asyncio.create_task(_printer(client, seen))
        await asyncio.sleep(0.2)
        try:
            print("1. A direct run: publish a request on timestep.runs.submit; the tool call is a durable step")
            run = await client.submit(AGENT, "get_weather city=Paris", id=f"weather-{tag}")
            await run.result(timeout=30)

            print("\n2. Queued runs on a serial queue (concurrency 1): priorities 3, 1, 2 wait behind a busy run")
            await client.configure_queue("demo-serial", concurrency=1)
            busy = await client.submit(AGENT, "think seconds=0.5", id=f"busy-{tag}", queue="demo-serial", priority=1)
            queued = [await client.submit(AGENT, f"get_weather city=City{p}", id=f"prio{p}-{tag}", queue="demo-serial", priority=p) for p in (3, 1, 2)]
            await busy.result(timeout=30)
            for run in queued:
                await run.result(timeout=30)
            order = [e.run_id.split("-")[0] for e in seen if isinstance(e, Started) and e.run_id.startswith("prio")]
            print(f"    start order: {', '.join(order)}")

            print("\n3. A schedule: every 2 seconds (6-field cron, seconds first), deleted after its first run")
            name = f"tick-{tag}"
            await client.create_schedule(name, "*/2 * * * * *", {"agent": AGENT, "input": "get_weather city=Scheduled"})
            done = await _wait_for(seen, lambda e: isinstance(e, Completed) and e.run_id.startswith(name))
            await client.delete_schedule(name)
            print(f"    schedule {name} ran as {done.run_id}; deleted")

            print("\n4. A tool that needs approval: the run waits, durably, in the approvals inbox until decided")
            run = await client.submit(AGENT, "send_email to=ada@example.com subject=Report", id=f"email-{tag}")
            await _wait_for(seen, lambda e: isinstance(e, Interrupted) and e.run_id == run.run_id)
            [pending] = await client.list_approvals(run_id=run.run_id)  # timestep.approvals.list
            print(f"    inbox: {pending.tool} {pending.arguments} waits in run {pending.run_id}")
            edited = '{"to": "ada@example.com", "subject": "Report (reviewed)"}'
            print(f"    approving {pending.call_id} with edited arguments on timestep.runs.command.{run.run_id}.approve")
            await client.approve(run.run_id, pending.call_id, arguments=edited, decided_by="demo")
            await run.result(timeout=30)
            [decided] = await client.list_approvals("decided", run_id=run.run_id)
            print(f"    audit trail: {decided.status} by {decided.decided_by}, ran with {decided.approved_arguments}")

            print("\n5. A bad request is rejected with the field and the fix, and dead-lettered")
            try:
                await client.submit("no-such-agent", "hello", id=f"bad-{tag}")
            except RunRejectedError as exc:
                print(f"    rejected: {exc}")
            await asyncio.sleep(0.3)
        finally:
            printer.cancel()
            await asyncio.gather(printer, return_exceptions=True)
            await client.close()
    timestep = command()
    print(f"\nStopped. Try it yourself: `{timestep} up --agents actors.cli.demo_agents` in one terminal, then")
    print(f"`{timestep} run demo-assistant \"get_weather city=Oslo\"` and `{timestep} events` in another.")
    if timestep != "timestep":
        print(f"(`source {Path(timestep).parent}/activate` puts `timestep` on PATH in this shell.)")


def command() -> str:
    """How to call this installation's `timestep` from here: its bare name when the shell finds
    it, else its path (`./tasks.sh demo` leaves it in .venv/bin, which is not on PATH)."""
    script = Path(sys.executable).parent / "timestep"
    found = shutil.which("timestep")
    if not script.exists() or (found and Path(found).resolve() == script.resolve()):
        return "timestep"
    relative = os.path.relpath(script)
    return str(script) if relative.startswith("..") else relative
