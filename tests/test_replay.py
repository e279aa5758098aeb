"""Replay: recorded runs of an agent run again against the agent as registered now, as a check
before a deploy. Tool calls come from the recording (no tool runs again); the report says which
runs changed and how. The model is the offline one (deterministic rules: it calls the tool the
text names, with the `key=value` pairs its parameters take)."""

from __future__ import annotations

import uuid

import pytest
from agents import Agent, function_tool

import timestep
from timestep.durable.offline_model import OfflineDemoModel


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def forecaster(name: str, ran: list[str], *, units: bool = False, instructions: str = "Be brief.") -> Agent:
    if units:
        @function_tool
        def get_weather(city: str, units: str) -> str:
            ran.append(city)
            return f"sunny in {city}, in {units}"
    else:
        @function_tool
        def get_weather(city: str) -> str:  # type: ignore[misc]
            ran.append(city)
            return f"sunny in {city}"

    return timestep.register_agent(Agent(name=name, instructions=instructions, tools=[get_weather], model=OfflineDemoModel()))


async def recorded_runs(name: str, ran: list[str]) -> tuple[list[str], list[str]]:
    """20 runs of agent `name`: 10 that call the tool, 10 that do not. Their ids: (tool, no tool)."""
    agent = forecaster(name, ran)
    with_tool, without = [], []
    for i in range(10):
        with_tool.append((await timestep.run_agent_workflow(agent, f"get_weather city=C{i} units=celsius")).workflow_id)
        without.append((await timestep.run_agent_workflow(agent, f"hello number {i}")).workflow_id)
    return with_tool, without


async def test_replays_of_recorded_runs_against_the_same_agent_change_nothing_and_run_no_tool(db: str) -> None:
    ran: list[str] = []
    name = uid("forecaster")
    with_tool, without = await recorded_runs(name, ran)
    assert len(ran) == 10
    reports = await timestep.replay_runs(name, runs=20)
    assert sorted(r.run_id for r in reports) == sorted(with_tool + without)
    assert [r.status for r in reports] == ["same"] * 20, [(r.run_id, r.status, r.changes, r.error) for r in reports]
    assert len(ran) == 10  # every tool call was answered from the recording
    one = next(r for r in reports if r.run_id == with_tool[0])
    assert one.output_before == one.output_after == "get_weather returned: sunny in C0"
    assert one.tokens_before > 0 and one.tokens_after > 0


async def test_a_tool_that_takes_another_argument_changes_exactly_the_runs_that_call_it_and_none_of_its_calls_runs(db: str) -> None:
    ran: list[str] = []
    name = uid("forecaster")
    with_tool, without = await recorded_runs(name, ran)
    changed_agent = forecaster(name, ran, units=True)  # the same name: the agent as registered now
    reports = {r.run_id: r for r in await timestep.replay_runs(changed_agent, runs=20)}
    assert sorted(i for i, r in reports.items() if r.status == "changed") == sorted(with_tool)
    assert all(reports[i].status == "same" for i in without)
    first = reports[with_tool[0]]
    assert set(first.changes) == {"output", "tools"}
    assert [(c.tool, c.before, c.after) for c in first.other_arguments] == [
        ("get_weather", '{"city": "C0"}', '{"city": "C0", "units": "celsius"}')
    ]
    assert first.added == [] and first.removed == []
    assert "not in the recording" in first.output_after
    assert len(ran) == 10  # the call with other arguments did not run

    # Named as safe to run again, the tool runs for the calls not in the recording.
    live = await timestep.replay_runs(changed_agent, ids=with_tool[:2], live_tools=["get_weather"])
    assert [r.tool_calls_run for r in live] == [["get_weather"], ["get_weather"]]
    assert [r.output_after for r in live] == ["get_weather returned: sunny in C0, in celsius", "get_weather returned: sunny in C1, in celsius"]
    assert ran[10:] == ["C0", "C1"]


async def test_replay_leaves_the_recorded_runs_as_they_were_and_refuses_what_it_cannot_do(db: str) -> None:
    ran: list[str] = []
    name = uid("forecaster")
    agent = forecaster(name, ran)
    run = await timestep.run_agent_workflow(agent, "get_weather city=Oslo")
    steps = await timestep.run_steps(run.workflow_id)
    before = await timestep.run_steps(run.workflow_id)
    forecaster(name, ran, instructions="Be loud!")
    [report] = await timestep.replay_runs(name, ids=[run.workflow_id])
    assert report.status == "same"  # the offline model does not read instructions
    assert await timestep.run_steps(run.workflow_id) == before == steps
    with pytest.raises(timestep.ValidationError, match="^live_tools: .* has no tool 'send_email'"):
        await timestep.replay_runs(name, live_tools=["send_email"])
    with pytest.raises(timestep.ValidationError, match="^ids: no completed run"):
        await timestep.replay_runs(name, ids=[uid("nothing")])
    with pytest.raises(timestep.UnknownAgentError):
        await timestep.replay_runs(uid("nobody"))
    from agents import ComputerTool

    class Screen:  # a computer the tool would drive, here and now: a replay cannot answer it from the record
        environment, dimensions = "linux", (800, 600)

    clicker = timestep.register_agent(Agent(name=uid("clicker"), tools=[ComputerTool(computer=Screen())], model=OfflineDemoModel()))
    with pytest.raises(timestep.ValidationError, match=r"^agent: agent '.*' has the tool 'computer_use_preview' \(ComputerTool\), which runs here"):
        await timestep.replay_runs(clicker)


async def test_agents_as_tools_and_handoffs_are_replayed_with_their_tools_answered_from_the_recording(db: str) -> None:
    """An agent used as a tool (`as_tool`) runs its sub-agent in the replay, whose own tool calls are
    answered from the recording; a `handoff(agent, on_handoff=...)` hands off without running its
    callback again. Unchanged, each run is the same, and no tool or callback ran a second time."""
    from agents import handoff
    from agents.testing import ModelStep, ScriptedModel, assistant_message, function_call

    ran: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        ran.append(f"weather:{city}")
        return f"sunny in {city}"

    def outputs(call) -> list:
        return [i["output"] for i in call.input if isinstance(i, dict) and i.get("type") == "function_call_output"]

    def helper_answer(call) -> object:
        return [function_call("get_weather", {"city": "Oslo"}, call_id="h1")] if not outputs(call) else [assistant_message(f"it is {outputs(call)[-1]}")]

    def parent_answer(call) -> object:
        return [function_call("ask_helper", {"input": "Oslo?"}, call_id="p1")] if not outputs(call) else [assistant_message(f"helper says {outputs(call)[-1]}")]

    helper = Agent(name=uid("helper"), tools=[get_weather], model=ScriptedModel([ModelStep.respond(helper_answer) for _ in range(8)]))
    parent = timestep.register_agent(Agent(
        name=uid("parent"), tools=[helper.as_tool(tool_name="ask_helper", tool_description="asks the helper")],
        model=ScriptedModel([ModelStep.respond(parent_answer) for _ in range(8)]),
    ))
    done = await timestep.run_agent_workflow(parent, "Weather?")
    assert done.output == "helper says it is sunny in Oslo" and ran == ["weather:Oslo"]
    [report] = await timestep.replay_runs(parent, ids=[done.workflow_id])
    assert (report.status, report.output_after) == ("same", "helper says it is sunny in Oslo"), report
    assert ran == ["weather:Oslo"]  # the sub-agent ran again; its tool call came from the recording

    def desk_answer(call) -> object:
        weather = [i["output"] for i in call.input if isinstance(i, dict) and i.get("type") == "function_call_output" and i.get("call_id") == "d1"]
        return [function_call("get_weather", {"city": "Rome"}, call_id="d1")] if not weather else [assistant_message(f"desk: {weather[-1]}")]

    desk = Agent(name=uid("desk"), tools=[get_weather], model=ScriptedModel([ModelStep.respond(desk_answer) for _ in range(8)]))

    def on_handoff(ctx) -> None:
        ran.append("handed off")

    to_desk = handoff(desk, on_handoff=on_handoff)
    front = timestep.register_agent(Agent(
        name=uid("front"), handoffs=[to_desk],
        model=ScriptedModel([ModelStep.respond(lambda call: [function_call(to_desk.tool_name, {}, call_id="x1")]) for _ in range(4)]),
    ))
    handed = await timestep.run_agent_workflow(front, "Weather in Rome?")
    assert handed.output == "desk: sunny in Rome" and ran[1:] == ["handed off", "weather:Rome"]
    [report] = await timestep.replay_runs(front, ids=[handed.workflow_id])
    assert (report.status, report.output_after) == ("same", "desk: sunny in Rome"), report
    assert ran[1:] == ["handed off", "weather:Rome"]  # neither the callback nor the tool ran again
