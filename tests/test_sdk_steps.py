"""What of an Agents SDK agent becomes a durable step, each feature written as the SDK's docs write it:
guardrails, handoff callbacks, MCP tools, agents used as tools. (The SIGKILL proofs are in
test_sdk_crash.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from agents import (
    Agent, GuardrailFunctionOutput, RunContextWrapper, TResponseInputItem, function_tool, handoff, input_guardrail, output_guardrail,
)
from agents.mcp import MCPServerStdio, MCPServerStreamableHttp
from agents.testing import ModelStep, ScriptedModel, assistant_message, function_call
from pydantic import BaseModel

import timestep
from timestep.bus.server import free_port
from timestep.durable import engine


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def _steps(workflow_id: str) -> list[str]:
    return [s.name if hasattr(s, "name") else s["function_name"] for s in await engine.list_steps(workflow_id)]


async def test_guardrails_are_steps_and_input_guardrails_run_before_the_model(db: str) -> None:
    ran: list[str] = []

    @input_guardrail
    async def polite(ctx: RunContextWrapper[None], agent: Agent, input: str | list[TResponseInputItem]) -> GuardrailFunctionOutput:
        ran.append("polite")
        return GuardrailFunctionOutput(output_info=None, tripwire_triggered=False)

    @input_guardrail(name="on_topic")
    def topic(ctx: RunContextWrapper[None], agent: Agent, input: str | list[TResponseInputItem]) -> GuardrailFunctionOutput:
        ran.append("on_topic")
        return GuardrailFunctionOutput(output_info={"topic": "weather"}, tripwire_triggered=False)

    @output_guardrail
    async def short(ctx: RunContextWrapper, agent: Agent, output: str) -> GuardrailFunctionOutput:
        ran.append("short")
        return GuardrailFunctionOutput(output_info=len(output), tripwire_triggered=False)

    @function_tool
    def get_weather(city: str) -> str:
        return f"sunny in {city}"

    agent = Agent(
        name=uid("guarded"), tools=[get_weather], input_guardrails=[polite, topic], output_guardrails=[short],
        model=ScriptedModel([[function_call("get_weather", {"city": "Paris"}, call_id="c1")], [assistant_message("Sunny.")]]),
    )
    result = await timestep.run_agent_workflow(agent, "Weather in Paris?")
    assert result.output == "Sunny."
    assert sorted(ran) == ["on_topic", "polite", "short"]
    assert await _steps(result.workflow_id) == [
        "guardrail:polite", "guardrail:on_topic", "model", "tool:get_weather", "model", "guardrail:short",
    ]


class EscalationData(BaseModel):
    reason: str


async def test_an_on_handoff_callback_is_a_step(db: str) -> None:
    reasons: list[str] = []

    async def on_handoff(ctx: RunContextWrapper[None], input_data: EscalationData) -> None:
        reasons.append(input_data.reason)

    escalation = Agent(name=uid("Escalation agent"), model=ScriptedModel([[assistant_message("Escalated.")]]))
    escalate = handoff(agent=escalation, on_handoff=on_handoff, input_type=EscalationData)
    triage = Agent(
        name=uid("triage"), handoffs=[escalate],
        model=ScriptedModel([[function_call(escalate.tool_name, {"reason": "angry"}, call_id="h1")]]),
    )
    result = await timestep.run_agent_workflow(triage, "I want a manager")
    assert result.output == "Escalated." and result.last_agent == escalation.name
    assert reasons == ["angry"]
    assert await _steps(result.workflow_id) == ["model", f"handoff:{escalation.name}", "model"]


@contextlib.asynccontextmanager
async def _calculator(transport: str, log_dir: Path) -> AsyncIterator[Any]:
    """mcp.md: the test server over stdio (MCPServerStdio) or streamable HTTP (MCPServerStreamableHttp)."""
    script = str(Path(__file__).with_name("mcp_server.py"))
    if transport == "stdio":
        async with MCPServerStdio(name="Calculator", params={"command": sys.executable, "args": [script, str(log_dir)]}) as server:
            yield server
        return
    port = free_port()
    process = subprocess.Popen([sys.executable, script, str(log_dir), str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while True:  # up when it accepts a connection
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                assert process.poll() is None, process.stderr.read().decode()[-2000:]
                await asyncio.sleep(0.05)
        async with MCPServerStreamableHttp(name="Calculator", params={"url": f"http://127.0.0.1:{port}/mcp"}) as server:
            yield server
    finally:
        process.kill()
        process.wait()


@pytest.mark.parametrize("transport", ["stdio", "streamable-http"])
async def test_mcp_tool_calls_are_steps_and_the_tool_list_is_recorded_once_per_run(db: str, tmp_path: Path, transport: str) -> None:
    """mcp.md: an MCP server handed to the agent in `mcp_servers`."""
    async with _calculator(transport, tmp_path) as server:
        agent = Agent(
            name=uid("mcp-assistant"), instructions="Use the tools to answer the questions.", mcp_servers=[server],
            model=ScriptedModel([
                [function_call("add", {"a": 2, "b": 3}, call_id="m1")],
                [function_call("add", {"a": 5, "b": 7}, call_id="m2")],
                [assistant_message("2 + 3 + 7 = 12")],
            ]),
        )
        result = await timestep.run_agent_workflow(agent, "What is 2 + 3 + 7?")
    assert result.output == "2 + 3 + 7 = 12"
    assert [line.split(" pid=")[0] for line in (tmp_path / "calls.log").read_text().splitlines()] == ["mcp:add:2+3", "mcp:add:5+7"]
    assert await _steps(result.workflow_id) == ["mcp.list_tools:Calculator", "model", "tool:add", "model", "tool:add", "model"]


async def test_mcp_prompts_and_resources_read_inside_a_run_are_steps(db: str, tmp_path: Path) -> None:
    """mcp.md, prompts and resources: dynamic instructions read a prompt and a resource of the agent's
    MCP server on each turn; each read is a step, so a replay gets what the run got."""
    async def instructions(ctx: Any, agent: Agent) -> str:
        server = agent.mcp_servers[0]
        prompt = await server.get_prompt("style", {"tone": "friendly"})
        units = await server.read_resource("config://units")
        return f"{prompt.messages[0].content.text} Use {units.contents[0].text} units."

    seen: list[str] = []

    def answer(call: Any) -> Any:
        seen.append(call.system_instructions)
        return [assistant_message("12 km")] if len(seen) > 1 else [function_call("add", {"a": 5, "b": 7}, call_id="m1")]

    async with _calculator("stdio", tmp_path) as server:
        agent = Agent(name=uid("mcp-styled"), instructions=instructions, mcp_servers=[server],
                      model=ScriptedModel([ModelStep.respond(answer), ModelStep.respond(answer)]))
        result = await timestep.run_agent_workflow(agent, "How far is 5 + 7 km?")
    assert result.output == "12 km"
    assert seen == ["Answer in a friendly tone. Use metric units."] * 2
    turn = ["mcp.get_prompt:Calculator", "mcp.read_resource:Calculator"]
    assert await _steps(result.workflow_id) == ["mcp.list_tools:Calculator", *turn, "model", "tool:add", *turn, "model"]


async def test_a_sub_agents_model_and_tool_calls_are_steps_of_the_run(db: str) -> None:
    """tools.md, agents as tools: the orchestrator calls a translator agent through `as_tool`."""
    looked_up: list[str] = []

    @function_tool
    def lookup(word: str) -> str:
        """Look a word up in the dictionary."""
        looked_up.append(word)
        return {"hello": "hola"}[word]

    spanish_agent = Agent(
        name=uid("Spanish agent"), instructions="You translate the user's message to Spanish", tools=[lookup],
        model=ScriptedModel([[function_call("lookup", {"word": "hello"}, call_id="l1")], [assistant_message("hola")]]),
    )
    orchestrator_agent = Agent(
        name=uid("orchestrator_agent"),
        instructions="You are a translation agent. You use the tools given to you to translate.",
        tools=[spanish_agent.as_tool(tool_name="translate_to_spanish", tool_description="Translate the user's message to Spanish")],
        model=ScriptedModel([
            [function_call("translate_to_spanish", {"input": "hello"}, call_id="t1")], [assistant_message("In Spanish: hola")],
        ]),
    )
    events: list[Any] = []
    result = await timestep.run_agent_workflow(orchestrator_agent, "Say hello in Spanish", on_event=events.append)
    assert result.output == "In Spanish: hola"
    assert looked_up == ["hello"]
    assert await _steps(result.workflow_id) == [
        "model", "tool:translate_to_spanish", "model", "tool:lookup", "model", "tool:translate_to_spanish.output", "model",
    ]
    assert [(e.type, getattr(e, "call_id", None)) for e in events] == [
        ("started", None), ("tool_call", "t1"), ("tool_call", "l1"), ("tool_output", "l1"), ("tool_output", "t1"), ("completed", None),
    ]
    assert [e.seq for e in events] == [1, 2, 3, 4, 5, 6]
    assert result.usage.requests == 4  # the sub-agent's model calls count in the run's usage


async def test_parallel_calls_around_an_agent_tool_start_in_the_models_order(db: str) -> None:
    """The call after an agent tool starts when the sub-run has finished, so the steps replay in order."""
    ran: list[str] = []

    @function_tool
    def first(x: int) -> str:
        ran.append("first")
        return "1"

    @function_tool
    def last(x: int) -> str:
        ran.append("last")
        return "3"

    helper = Agent(name=uid("helper"), model=ScriptedModel([[assistant_message("2")]]))
    agent = Agent(
        name=uid("parallel"), tools=[first, helper.as_tool(tool_name="ask_helper", tool_description="Ask the helper."), last],
        model=ScriptedModel([
            [
                function_call("first", {"x": 1}, call_id="p1"),
                function_call("ask_helper", {"input": "two?"}, call_id="p2"),
                function_call("last", {"x": 3}, call_id="p3"),
            ],
            [assistant_message("1 2 3")],
        ]),
    )
    result = await timestep.run_agent_workflow(agent, "count")
    assert result.output == "1 2 3" and sorted(ran) == ["first", "last"]
    assert await _steps(result.workflow_id) == [
        "model", "tool:first", "tool:ask_helper", "model", "tool:ask_helper.output", "tool:last", "model",
    ]


async def test_an_agent_tool_that_streams_its_sub_run_stays_one_step(db: str) -> None:
    """`as_tool(on_stream=...)` runs the sub-agent with Runner.run_streamed, which is not made durable
    call by call: the whole tool call is one step, as any function tool's."""
    streamed: list[str] = []

    async def on_stream(event: Any) -> None:
        streamed.append(event["event"].type)

    helper = Agent(name=uid("streaming-helper"), model=ScriptedModel([[assistant_message("2")]]))
    agent = Agent(
        name=uid("streaming-parent"),
        tools=[helper.as_tool(tool_name="ask_helper", tool_description="Ask the helper.", on_stream=on_stream)],
        model=ScriptedModel([[function_call("ask_helper", {"input": "two?"}, call_id="s1")], [assistant_message("two")]]),
    )
    result = await timestep.run_agent_workflow(agent, "count")
    assert result.output == "two" and streamed
    assert await _steps(result.workflow_id) == ["model", "tool:ask_helper", "model"]


async def test_a_streamed_run_streams_its_sub_agents_text_too(db: str) -> None:
    helper = Agent(name=uid("stream-helper"), model=ScriptedModel([[assistant_message("deux")]]))
    agent = Agent(
        name=uid("stream-parent"), tools=[helper.as_tool(tool_name="ask_helper", tool_description="Ask the helper.")],
        model=ScriptedModel([[function_call("ask_helper", {"input": "two?"}, call_id="s1")], [assistant_message("two is deux")]]),
    )
    events: list[Any] = []
    result = await timestep.run_agent_workflow(agent, "count", stream=True, on_event=events.append)
    assert result.output == "two is deux"
    assert "".join(e.text for e in events if e.type == "delta") == "deuxtwo is deux"
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


async def test_an_agent_tool_approved_with_edited_arguments_runs_its_sub_agent_on_them(db: str) -> None:
    """as_tool(needs_approval=True): the run waits for the decision; the sub-agent gets the edited input."""
    heard: list[str] = []

    def translate(call: Any) -> Any:
        text = next(i["content"] for i in call.input if isinstance(i, dict) and i.get("role") == "user")
        heard.append(text)
        return [assistant_message({"goodbye": "adios"}.get(text, "?"))]

    spanish_agent = Agent(name=uid("Spanish agent"), model=ScriptedModel([ModelStep.respond(translate)]))
    orchestrator = Agent(
        name=uid("orchestrator"),
        tools=[spanish_agent.as_tool(tool_name="translate_to_spanish", tool_description="Translate to Spanish", needs_approval=True)],
        model=ScriptedModel([
            [function_call("translate_to_spanish", {"input": "hello"}, call_id="t1")],
            ModelStep.respond(lambda call: [assistant_message(f"got {[i['output'] for i in call.input if i.get('type') == 'function_call_output']}")]),
        ]),
    )
    run_id = uid("edited-agent-tool")
    running = asyncio.create_task(timestep.run_agent_workflow(orchestrator, "Say hello", workflow_id=run_id, wait_for_approval=True))
    while not await timestep.list_approvals(run_id=run_id):
        await asyncio.sleep(0.05)
    await timestep.approve_tool_call(run_id, "t1", arguments='{"input": "goodbye"}', decided_by="ada")
    result = await asyncio.wait_for(running, 60)
    assert heard == ["goodbye"]
    assert result.output == "got ['adios']"
