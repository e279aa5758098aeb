"""Fork: a new run that goes on from a step of a finished run, with the agent as registered now;
the steps before it come from the record, so nothing before it runs again."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from agents import Agent, function_tool
from agents.testing import ModelStep, ScriptedModel, assistant_message, function_call

import timestep


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def weather_agent(name: str, looked_up: list[str], seen: list[str]) -> Agent:
    @function_tool
    def get_weather(city: str) -> str:
        looked_up.append(city)
        return f"sunny in {city}"

    def answer(call) -> object:
        seen.append(call.system_instructions)
        outputs = [i["output"] for i in call.input if isinstance(i, dict) and i.get("type") == "function_call_output"]
        if not outputs:
            return [function_call("get_weather", {"city": "Oslo"}, call_id="w1")]
        return [assistant_message(f"{call.system_instructions} {outputs[-1]}")]

    model = ScriptedModel([ModelStep.respond(answer) for _ in range(6)])
    return timestep.register_agent(Agent(name=name, instructions="Be brief.", tools=[get_weather], model=model))


async def test_a_fork_goes_on_from_a_step_with_the_agent_changed_since(db: str) -> None:
    """Run: model (calls the tool), tool, model (answers). Change the agent's instructions, fork
    from the last model call: the fork's answer follows the new instructions, and neither the first
    model call nor the tool call is made again."""
    looked_up: list[str] = []
    seen: list[str] = []
    agent = weather_agent(uid("forecaster"), looked_up, seen)
    first = await timestep.run_agent_workflow(agent, "Weather in Oslo?")
    assert first.output == "Be brief. sunny in Oslo"
    steps = await timestep.run_steps(first.workflow_id)
    assert [s.name for s in steps] == ["model", "tool:get_weather", "model"]

    timestep.register_agent(agent.clone(instructions="Be loud!"))
    handle = await timestep.fork_run(first.workflow_id, steps[2].number)
    forked = await asyncio.wait_for(handle.get_result(), 30)
    assert forked.output == "Be loud! sunny in Oslo"
    assert looked_up == ["Oslo"]  # the tool call before the fork point came from the record
    assert seen == ["Be brief.", "Be brief.", "Be loud!"]  # so did the first model call
    forked_steps = await timestep.run_steps(handle.workflow_id)
    assert [s.name for s in forked_steps] == ["model", "tool:get_weather", "model"]
    assert [s.value for s in forked_steps[:2]] == [s.value for s in steps[:2]]
    assert (await timestep.run_steps(first.workflow_id)) == steps  # the run forked is as it was


async def test_a_fork_is_refused_naming_what_does_not_fit(db: str) -> None:
    agent = weather_agent(uid("forecaster"), [], [])
    done = await timestep.run_agent_workflow(agent, "Weather in Oslo?")
    with pytest.raises(timestep.ValidationError, match="^from_step: .* has steps 1 to 3"):
        await timestep.fork_run(done.workflow_id, 9)
    with pytest.raises(timestep.ValidationError, match="^from_step: "):
        await timestep.fork_run(done.workflow_id, 0)
    with pytest.raises(timestep.ValidationError, match="^run_id: no run"):
        await timestep.fork_run(uid("nothing"), 1)
    with pytest.raises(timestep.ValidationError, match="^workflow_id: .* is the id of a run already"):
        await timestep.fork_run(done.workflow_id, 1, workflow_id=done.workflow_id)
    talked = await timestep.run_agent_workflow(weather_agent(uid("chatty"), [], []), "Weather?", uid("session"))
    with pytest.raises(timestep.ValidationError, match="^run_id: .* has session"):
        await timestep.fork_run(talked.workflow_id, 1)


async def test_a_fork_over_the_bus_says_where_it_came_from_and_runs_nothing_before_its_step_again(client, system) -> None:
    """`Client.fork` (`timestep.runs.fork`, the governor): the fork's first event is `forked`
    (numbered 0, naming the run and step), its run record says `forked_from`; with the agent's
    instructions changed since, the fork says so in `agent_changed` and answers by them, and the tool
    call and model call before the fork point are not made again."""
    from subjects.events import AgentChanged, Completed, Forked, ToolCall
    from timestep.client import RequestRefusedError

    looked_up: list[str] = []
    seen: list[str] = []
    agent = weather_agent(uid("forecaster"), looked_up, seen)
    run = await client.submit(agent.name, "Weather in Oslo?")
    assert (await run.result()).output == "Be brief. sunny in Oslo"
    steps = await client.steps(run.run_id)
    assert [s.name for s in steps] == ["model", "tool:get_weather", "model"]

    timestep.register_agent(agent.clone(instructions="Be loud!"))
    fork = await client.fork(run.run_id, steps[2].number)
    assert (fork.forked_from, fork.agent) == (run.run_id, agent.name)
    events = [e async for e in client.events(fork.id)]
    first = events[0]
    assert isinstance(first, Forked) and (first.seq, first.from_run, first.from_step, first.agent) == (0, run.run_id, 3, agent.name)
    assert any(isinstance(e, AgentChanged) and "instructions" in " ".join(e.changes) for e in events)
    assert not any(isinstance(e, ToolCall) for e in events)
    assert isinstance(events[-1], Completed) and events[-1].output == "Be loud! sunny in Oslo"
    assert looked_up == ["Oslo"] and seen == ["Be brief.", "Be brief.", "Be loud!"]
    forked_run = await client.get_run(fork.id)
    assert (forked_run.forked_from, forked_run.input) == (run.run_id, "Weather in Oslo?")  # the input of the run forked

    refusals = [
        ({"run_id": run.run_id, "from_step": 9}, "from_step", "has steps 1 to 3"),
        ({"run_id": uid("nothing"), "from_step": 1}, "id", "no run"),
        ({"run_id": run.run_id, "from_step": 1, "fork_id": fork.id}, "fork_id", "is the id of a run already"),
    ]
    for kwargs, field, words in refusals:
        with pytest.raises(RequestRefusedError) as refused:
            await client.fork(**kwargs)
        assert refused.value.error.field == field and words in str(refused.value), (kwargs, refused.value)


async def test_a_fork_from_a_step_inside_an_agent_used_as_a_tool_goes_on_from_there(db: str) -> None:
    """The SDK's agents as tools (`as_tool`): the sub-agent's calls are steps of the run too, and a
    fork from the sub-agent's second model call takes the parent's first call, the sub-agent's
    first call and its tool call from the record, and makes the rest afresh."""
    looked_up: list[str] = []
    calls: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        looked_up.append(city)
        return f"sunny in {city}"

    def helper_answer(call) -> object:
        calls.append("helper")
        outputs = [i["output"] for i in call.input if isinstance(i, dict) and i.get("type") == "function_call_output"]
        return [function_call("get_weather", {"city": "Oslo"}, call_id="h1")] if not outputs else [assistant_message(f"it is {outputs[-1]}")]

    def parent_answer(call) -> object:
        calls.append("parent")
        outputs = [i["output"] for i in call.input if isinstance(i, dict) and i.get("type") == "function_call_output"]
        return [function_call("ask_helper", {"input": "Oslo?"}, call_id="p1")] if not outputs else [assistant_message(f"helper says {outputs[-1]}")]

    helper = Agent(name=uid("helper"), tools=[get_weather], model=ScriptedModel([ModelStep.respond(helper_answer) for _ in range(6)]))
    parent = timestep.register_agent(Agent(
        name=uid("parent"), tools=[helper.as_tool(tool_name="ask_helper", tool_description="asks the helper")],
        model=ScriptedModel([ModelStep.respond(parent_answer) for _ in range(6)]),
    ))
    done = await timestep.run_agent_workflow(parent, "Weather?")
    assert done.output == "helper says it is sunny in Oslo"
    steps = await timestep.run_steps(done.workflow_id)
    models = [s.number for s in steps if s.kind == "model"]
    assert len(models) == 4 and calls == ["parent", "helper", "helper", "parent"]
    handle = await timestep.fork_run(done.workflow_id, models[2])  # the helper's second model call
    forked = await asyncio.wait_for(handle.get_result(), 30)
    assert forked.output == "helper says it is sunny in Oslo"
    assert looked_up == ["Oslo"]  # the helper's tool call came from the record
    assert calls == ["parent", "helper", "helper", "parent", "helper", "parent"]  # only the calls from the fork point on


async def test_a_nats_user_forks_with_a_plain_request_and_reads_the_reply_as_json(client, system) -> None:
    """What a service in another language sends: a core NATS request with a JSON body on
    `timestep.runs.fork`, answered with the contract's Reply as JSON; a bad body is answered with
    the field at fault, and nothing is forked."""
    import json

    import nats

    run = await client.submit("bus-assistant", "get_weather city=Lima")
    await run.result()
    steps = await client.steps(run.run_id)
    last_model = [s.number for s in steps if s.kind == "model"][-1]
    nc = await nats.connect(system.url)
    try:
        answer = json.loads((await nc.request("timestep.runs.fork", json.dumps({"id": run.run_id, "from_step": last_model}).encode(), timeout=10)).data)
        assert answer["ok"] is True and answer["run"]["forked_from"] == run.run_id and answer["run"]["agent"] == "bus-assistant", answer
        forked = [e async for e in client.events(answer["run"]["id"])]
        assert forked[0].type == "forked" and forked[-1].type == "completed"
        bad = json.loads((await nc.request("timestep.runs.fork", json.dumps({"id": run.run_id, "from_step": "3"}).encode(), timeout=10)).data)
        assert bad["ok"] is False and bad["error"]["field"] == "from_step", bad
    finally:
        await nc.close()
    assert [r.id for r in await client.list_runs(limit=1000) if r.forked_from == run.run_id] == [answer["run"]["id"]]


async def test_a_fork_asked_for_as_soon_as_the_run_says_it_ended_goes_on(db: str) -> None:
    """A run's `completed` event is stored a moment before its workflow is recorded as ended. A
    client that forks as soon as it reads that event (the TypeScript client's `result()` then
    `fork()`) got "run ... is running" when the record came late. Here the record comes 0.5 s late,
    after a sink that stores the events: the fork waits for it and goes on."""
    from timestep.durable.events import ENDINGS

    class LateRecord:
        """Stores the events; the workflow's end is recorded only after `settle`, which lingers
        once the run's last event is stored."""

        def __init__(self) -> None:
            self.last: dict[str, tuple[int, str]] = {}
            self.ended = asyncio.Event()

        async def emit(self, event) -> None:
            kind = type(event).__struct_config__.tag
            self.last[event.run_id] = (event.seq, kind)
            if kind in ENDINGS:
                self.ended.set()

        async def settle(self, run_id: str) -> None:
            if self.last.get(run_id, (0, ""))[1] in ENDINGS:
                await asyncio.sleep(0.5)

        async def last_stored(self, run_id: str):
            return self.last.get(run_id)

    agent = weather_agent(uid("late-record"), [], [])
    sink = LateRecord()
    timestep.add_event_sink(sink)
    try:
        run_id = uid("ending")
        running = asyncio.create_task(timestep.run_agent_workflow(agent, "Weather in Oslo?", workflow_id=run_id))
        await asyncio.wait_for(sink.ended.wait(), 30)
        assert (await timestep.RunHandle(run_id).get_status()).status == "running"  # the moment the race is about
        handle = await timestep.fork_run(run_id, 3)
        forked = await asyncio.wait_for(handle.get_result(), 30)
        assert forked.output == "Be brief. sunny in Oslo"
        await running
    finally:
        timestep.remove_event_sink(sink)
