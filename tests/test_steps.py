"""A run's recorded steps, read back: through the library (`run_steps`), over the bus
(`timestep.runs.steps`, with the Client) and with the command line (`timestep steps`)."""

from __future__ import annotations

import json
import uuid

import pytest
from agents import Agent, function_tool
from agents.testing import ScriptedModel, assistant_message, function_call

import timestep
from timestep.client import RequestRefusedError
from timestep.durable import listing


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def weather_agent(name: str, long_output: bool = False) -> Agent:
    @function_tool
    def get_weather(city: str) -> str:
        return f"sunny in {city}" + ("!" * 5000 if long_output else "")

    model = ScriptedModel([[function_call("get_weather", {"city": "Oslo"}, call_id="c1")], [assistant_message("Sunny.")]])
    return Agent(name=name, tools=[get_weather], model=model)


async def test_a_runs_steps_say_what_each_call_recorded(db: str) -> None:
    """Model calls with their output items and tokens, the tool call with its arguments and output,
    in the run's order, with their times; a long value is cut in the listing and whole by number."""
    result = await timestep.run_agent_workflow(weather_agent(uid("steps"), long_output=True), "Weather in Oslo?")
    steps = await timestep.run_steps(result.workflow_id)
    assert [(s.kind, s.name, s.status) for s in steps] == [
        ("model", "model", "completed"), ("tool", "tool:get_weather", "completed"), ("model", "model", "completed"),
    ]
    assert [s.number for s in steps] == sorted(s.number for s in steps)
    first, tool, last = steps
    assert first.attempt == 1 and first.value["output"][0]["name"] == "get_weather"
    # What each model call was given: the first its whole input, the next only what was added since.
    assert first.value["input"] == [{"role": "user", "content": "Weather in Oslo?"}]
    assert last.cut  # it holds the tool's long output
    [last] = await timestep.run_steps(result.workflow_id, last.number)
    assert "input" not in last.value and [i["type"] for i in last.value["input_since_previous"]] == ["function_call", "function_call_output"]
    # The tool's output as the model was given it (its record names the tool step; the listing puts it back).
    assert last.value["input_since_previous"][1] == {"call_id": "c1", "output": "sunny in Oslo" + "!" * 5000, "type": "function_call_output"}
    assert set(first.value["usage"]) == {"input_tokens", "output_tokens", "total_tokens"}
    assert last.value["output"][0]["content"][0]["text"] == "Sunny."
    assert all(s.started_at and s.ended_at and s.started_at <= s.ended_at for s in steps)
    assert tool.cut and isinstance(tool.value, str) and len(tool.value) == listing.VALUE_LIMIT
    [whole] = await timestep.run_steps(result.workflow_id, tool.number)
    assert not whole.cut and json.loads(whole.value["arguments"]) == {"city": "Oslo"}
    assert whole.value["output"] == "sunny in Oslo" + "!" * 5000
    assert await timestep.run_steps(uid("no-such-run")) is None
    assert await timestep.run_steps(result.workflow_id, 999) == []


async def test_steps_over_the_bus_and_from_the_command_line(client, system) -> None:
    """`Client.steps(run_id)` over `timestep.runs.steps`; an unknown run is refused naming `id`."""
    run = await client.submit("bus-assistant", "get_weather city=Bergen")
    await run.result()
    steps = await client.steps(run.run_id)
    tool = next(s for s in steps if s.kind == "tool")
    assert tool.name == "tool:get_weather" and tool.value["output"] == "sunny in Bergen"
    assert [s.kind for s in steps].count("model") == 2
    [again] = await client.steps(run.run_id, tool.number)
    assert again == tool
    with pytest.raises(RequestRefusedError) as refused:
        await client.steps(uid("nothing"))
    assert refused.value.type == "UnknownRun" and refused.value.error.field == "id"
    with pytest.raises(RequestRefusedError) as refused:
        await client.steps(run.run_id, 999)
    assert refused.value.type == "UnknownStep" and refused.value.error.field == "step"
