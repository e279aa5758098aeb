"""A library process for the session and upgrade tests.

    python tests/session_worker.py chat DB_URL LOG_DIR LABEL SESSION
        one run of LABEL on SESSION; its tool waits while LOG_DIR/block-LABEL exists
    python tests/session_worker.py park|approve DB_URL LOG_DIR VERSION SESSION
        park: run "email" on SESSION until it waits for approval (agent version VERSION);
        approve: load the saved state, approve it, resume it with agent version VERSION

Version v1 of the `mailer` agent has `send_email` (needs approval); v2 has other instructions
and no `send_email`. TIMESTEP_ON_AGENT_CHANGE picks the policy. Lines go to LOG_DIR/log.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import agents
from agents import Agent, function_tool
from agents.testing import ModelStep, ScriptedModel, assistant_message, function_call

agents.set_tracing_disabled(True)

import timestep  # noqa: E402
from subjects.events import encode_event  # noqa: E402

mode, db_url, log_dir = sys.argv[1], sys.argv[2], Path(sys.argv[3])
LOG = log_dir / "log"


def log(line: str) -> None:
    with LOG.open("a") as f:
        f.write(f"{line} pid={os.getpid()}\n")


def _text(item: dict) -> str:
    content = item.get("content")
    return content if isinstance(content, str) else "".join(p.get("text", "") for p in content or [])


@function_tool
async def work(label: str) -> str:
    log(f"tool:{label}:start")
    while (log_dir / f"block-{label}").exists():
        await asyncio.sleep(0.05)
    log(f"tool:{label}:end")
    return f"worked on {label}"


@function_tool(needs_approval=True)
def send_email(to: str) -> str:
    log(f"send_email:{to}")
    return f"sent to {to}"


def respond(call) -> object:
    last = call.input[-1]
    if isinstance(last, dict) and last.get("role") == "user":
        label = _text(last)
        log(f"model:{label}:saw={len(call.input)}")
        if label == "email":
            return [function_call("send_email", {"to": "ada@example.com"}, call_id="m1")]
        return [function_call("work", {"label": label}, call_id=f"c-{label}-{time.time_ns()}")]
    return [assistant_message(f"done: {last.get('output')}")]


model = ScriptedModel([ModelStep.respond(respond) for _ in range(50)])


def mailer(version: str) -> Agent:
    if version == "v1":
        return Agent(name="mailer", instructions="Send what is asked.", model=model, tools=[send_email, work])
    return Agent(name="mailer", instructions="Send nothing; summarise.", model=model, tools=[work])


async def main() -> None:
    timestep.configure_dbos(system_database_url=db_url)
    timestep.ensure_dbos_launched()
    events: list = []
    if mode == "chat":
        label, session = sys.argv[4], sys.argv[5]
        agent = timestep.register_agent(Agent(name="chat", model=model, tools=[work]))
        result = await timestep.run_agent_workflow(agent, label, session)
        log(f"done:{label}")
        print(json.dumps({"output": result.output}))
        return
    version, session = sys.argv[4], sys.argv[5]
    agent = timestep.register_agent(mailer(version))
    if mode == "park":
        result = await timestep.run_agent_workflow(agent, "email", session)
        print(json.dumps({"status": result.status, "workflow_id": result.workflow_id}))
        return
    state = await timestep.RunStateStore(agent=agent, session_id=session).load()
    for item in state.get_interruptions():
        state.approve(item)
    try:
        result = await timestep.run_agent_workflow(agent, state, session, on_event=events.append)
        outcome = {"status": result.status, "output": result.output}
    except timestep.TimestepError as exc:
        outcome = {"error": type(exc).__name__, "message": str(exc)}
    outcome["events"] = [json.loads(encode_event(e)) for e in events]
    print(json.dumps(outcome))


asyncio.run(main())
os._exit(0)
