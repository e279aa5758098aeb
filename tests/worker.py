"""A separate process for tests that need one: crash recovery and two schedulers.

    python tests/worker.py run|recover|schedule|wait|pay|recover-waiting DB_URL LOG_DIR [SECONDS]

Every model call and tool call appends a line to LOG_DIR/calls.log, so the test
can count what ran in each process. `tool_two` blocks while LOG_DIR/block
exists, which gives the test a moment to SIGKILL the process mid-step.
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
from dbos import DBOS
from agents.testing import ModelStep, ScriptedModel, assistant_message, function_call

agents.set_tracing_disabled(True)

import timestep  # noqa: E402

mode, db_url, log_dir = sys.argv[1], sys.argv[2], Path(sys.argv[3])
LOG = log_dir / "calls.log"


def log(line: str) -> None:
    with LOG.open("a") as f:
        f.write(f"{line} pid={os.getpid()}\n")
        f.flush()
        os.fsync(f.fileno())


@function_tool
def tool_one(x: int) -> str:
    log("tool:one")
    return f"one({x})"


@function_tool
async def tool_two(x: int) -> str:
    log("tool:two:start")
    while (log_dir / "block").exists():
        await asyncio.sleep(0.05)
    log("tool:two:end")
    return f"two({x})"


def respond(call) -> object:
    """Deterministic by the conversation so far: tool one, then tool two, then the answer."""
    outputs = sum(1 for i in call.input if isinstance(i, dict) and i.get("type") == "function_call_output")
    log(f"model:{outputs} run={DBOS.workflow_id}")
    text = next((i["content"] for i in call.input if isinstance(i, dict) and i.get("role") == "user"), "")
    if outputs == 0:
        return [function_call("tool_one", {"x": 1}, call_id="c1")]
    if outputs == 1:
        return [function_call("tool_two", {"x": 2}, call_id="c2")]
    return [assistant_message(f"done: {text}")]


model = ScriptedModel([ModelStep.respond(respond) for _ in range(500)])
agent = timestep.register_agent(Agent(name="crashy", model=model, tools=[tool_one, tool_two]))


@function_tool(needs_approval=True)
async def pay(ctx: agents.RunContextWrapper, amount: int) -> str:
    """Blocks while LOG_DIR/block exists, so the test can kill it after approval, mid-step."""
    log(f"pay:start key={timestep.idempotency_key(ctx)} amount={amount}")
    while (log_dir / "block").exists():
        await asyncio.sleep(0.05)
    log("pay:end")
    return f"paid {amount}"


def respond_pay(call) -> object:
    outputs = [i.get("output") for i in call.input if isinstance(i, dict) and i.get("type") == "function_call_output"]
    if not outputs:
        return [function_call("pay", {"amount": 5}, call_id="p1")]
    return [assistant_message(f"done: {outputs[0]}")]


payer = timestep.register_agent(Agent(
    name="payer", model=ScriptedModel([ModelStep.respond(respond_pay) for _ in range(500)]), tools=[pay]
))


class EventLog:
    """Every run event of this process, one line each, for the test to read."""

    async def emit(self, event) -> None:
        fields = {"type": event.type, "time": event.time.timestamp()}
        if event.type == "interrupted":
            fields["deadline"] = event.approvals[0].deadline
        if event.type == "tool_rejected":
            fields["expired"] = event.expired
        log(f"event {json.dumps(fields)}")


async def main() -> None:
    timestep.configure_dbos(system_database_url=db_url)
    if mode == "run":
        timestep.ensure_dbos_launched()
        result = await timestep.run_agent_workflow(agent, "go", workflow_id="crash-run-1")
        print(json.dumps({"output": result.output}))
    elif mode == "recover":
        timestep.ensure_dbos_launched()  # recovers crash-run-1 on this loop
        result = await timestep.RunHandle("crash-run-1").get_result()
        print(json.dumps({"output": result.output}))
    elif mode in ("wait", "pay"):
        timestep.add_event_sink(EventLog())
        timestep.ensure_dbos_launched()
        if mode == "wait":  # an approval with a deadline, never decided
            result = await timestep.run_agent_workflow(
                payer, "pay", workflow_id="wait-run-1", wait_for_approval=True, approval_timeout_seconds=float(sys.argv[4])
            )
        else:  # approved here at once; the tool then blocks
            running = asyncio.ensure_future(timestep.run_agent_workflow(payer, "pay", workflow_id="wait-run-1", wait_for_approval=True))
            while not await timestep.list_approvals(run_id="wait-run-1"):
                await asyncio.sleep(0.05)
            await timestep.approve_tool_call("wait-run-1", "p1", decided_by="worker")
            result = await running
        print(json.dumps({"output": result.output}))
    elif mode == "recover-waiting":
        timestep.add_event_sink(EventLog())
        log(f"launching at={time.time()}")  # recovery starts no earlier than this
        timestep.ensure_dbos_launched()
        result = await timestep.RunHandle("wait-run-1").get_result()
        print(json.dumps({"output": result.output}))
    elif mode == "schedule":
        seconds = float(sys.argv[4])
        # Created before launch in one process and after launch in the other.
        if os.environ.get("SCHEDULE_AFTER_LAUNCH"):
            timestep.ensure_dbos_launched()
            await timestep.create_scheduled_agent_workflow("* * * * * *", agent, "tick", name="every-second")
        else:
            await timestep.create_scheduled_agent_workflow("* * * * * *", agent, "tick", name="every-second")
            timestep.ensure_dbos_launched()
        log("ready")
        await asyncio.sleep(seconds)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


asyncio.run(main())
os._exit(0)  # DBOS's background threads would otherwise keep a scheduled process alive
