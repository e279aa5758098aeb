"""timeout_seconds cancels a run that takes too long, tool call included."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from agents import Agent, function_tool
from agents.testing import ScriptedModel, assistant_message, function_call

import timestep


async def test_timeout_cancels_the_run_and_its_tool(db: str) -> None:
    finished: list[bool] = []

    @function_tool
    async def slow() -> str:
        await asyncio.sleep(30)
        finished.append(True)
        return "late"

    agent = Agent(
        name=f"slow-{uuid.uuid4().hex[:8]}",
        model=ScriptedModel([[function_call("slow", {}, call_id="s1")], [assistant_message("never")]]),
        tools=[slow],
    )
    events = []
    workflow_id = f"timeout-{uuid.uuid4().hex[:8]}"
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(timestep.RunTimeoutError, match="timeout_seconds=1"):
        await timestep.run_agent_workflow(agent, "go", workflow_id=workflow_id, timeout_seconds=1, on_event=events.append)
    assert loop.time() - started < 20
    # The tool step kept two numbers (tool_call, tool_output) and used one: no gap before `cancelled`.
    assert [type(e).__name__ for e in events][-2:] == ["ToolCall", "Cancelled"]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    status = await timestep.RunHandle(workflow_id).get_status()
    assert status.status == "cancelled"
    await asyncio.sleep(0.5)
    assert finished == []
    with pytest.raises(timestep.RunCancelledError):
        await timestep.RunHandle(workflow_id).get_result()
