"""run_agent_workflow: durable runs, their events, idempotent ids, streaming, sessions, failures."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from agents import Agent, Model, SQLiteSession, function_tool
from agents.testing import ScriptedModel, assistant_message, function_call
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseTextDeltaEvent,
)

import timestep
from subjects.events import Completed, Delta, Failed, Started, ToolCall, ToolOutput
from timestep.durable import engine


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def weather_agent(name: str, calls: list[str]) -> tuple[Agent, ScriptedModel]:
    @function_tool
    def get_weather(city: str) -> str:
        calls.append(city)
        return f"sunny in {city}"

    model = ScriptedModel(
        [
            [function_call("get_weather", {"city": "Paris"}, call_id="c1")],
            [assistant_message("It is sunny in Paris.")],
        ]
    )
    return Agent(name=name, model=model, tools=[get_weather]), model


async def test_run_with_tool_call_completes_with_ordered_events(db: str) -> None:
    calls: list[str] = []
    agent, model = weather_agent(uid("weather"), calls)
    events = []
    result = await timestep.run_agent_workflow(agent, "Weather in Paris?", on_event=events.append)

    assert result.status == "completed"
    assert result.output == "It is sunny in Paris."
    assert result.interruptions == []
    assert result.usage.requests == 2
    assert calls == ["Paris"]
    assert [type(e) for e in events] == [Started, ToolCall, ToolOutput, Completed]
    assert [e.seq for e in events] == [1, 2, 3, 4]
    assert {e.run_id for e in events} == {result.workflow_id}
    assert events[1].tool == "get_weather" and events[1].call_id == "c1" and events[1].arguments == '{"city":"Paris"}'
    assert events[2].output == "sunny in Paris"
    assert events[3].output == "It is sunny in Paris."


async def test_each_model_and_tool_call_is_its_own_step(db: str) -> None:
    agent, _ = weather_agent(uid("steps"), [])
    result = await timestep.run_agent_workflow(agent, "Weather?")
    names = [s.name for s in await engine.list_steps(result.workflow_id)]
    assert names == ["model", "tool:get_weather", "model"]


async def test_same_workflow_id_returns_stored_result_and_runs_nothing(db: str) -> None:
    calls: list[str] = []
    agent, model = weather_agent(uid("idem"), calls)
    workflow_id = uid("idem-run")
    first = await timestep.run_agent_workflow(agent, "Weather?", workflow_id=workflow_id)
    second = await timestep.run_agent_workflow(agent, "Something else entirely", workflow_id=workflow_id)

    assert second == first
    assert calls == ["Paris"]
    assert len(model.calls) == 2


async def test_stream_delivers_text_deltas_in_order_and_a_durable_result(db: str) -> None:
    agent = Agent(name=uid("streamer"), model=ScriptedModel([[assistant_message("one two three four")]]))
    events = []
    result = await timestep.run_agent_workflow(agent, "Count", stream=True, on_event=events.append)

    deltas = [e for e in events if isinstance(e, Delta)]
    assert "".join(d.text for d in deltas) == "one two three four"
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert isinstance(events[-1], Completed)
    assert result.output == "one two three four"
    assert (await timestep.RunHandle(result.workflow_id).get_result()).output == "one two three four"


class WordStreamModel(Model):
    """Streams its answer one word at a time, all at once (no waiting between words)."""

    def __init__(self, text: str) -> None:
        self.words = [w + " " for w in text.split(" ")]
        self.words[-1] = self.words[-1].rstrip()

    async def get_response(self, *args, **kwargs):
        raise NotImplementedError

    async def stream_response(self, *args, **kwargs):
        for word in self.words:
            yield ResponseTextDeltaEvent(type="response.output_text.delta", item_id="m", output_index=0, content_index=0,
                                         delta=word, logprobs=[], sequence_number=0)
        message = ResponseOutputMessage(id="m", type="message", role="assistant", status="completed",
                                        content=[ResponseOutputText(type="output_text", text="".join(self.words), annotations=[], logprobs=[])])
        response = Response(id="r", created_at=0, model="words", object="response", output=[message], tool_choice="auto",
                            tools=[], top_p=None, parallel_tool_calls=False, status="completed")
        yield ResponseCompletedEvent(type="response.completed", response=response, sequence_number=1)


class SlowStore:
    """An event sink whose storing takes a while: `settle(run_id)` sleeps."""

    def __init__(self) -> None:
        self.settled: list[str | None] = []

    async def emit(self, event) -> None:
        pass

    async def settle(self, run_id=None) -> None:
        self.settled.append(run_id)
        await asyncio.sleep(0.02)


async def test_stream_hands_on_each_delta_while_nothing_is_being_stored(db: str) -> None:
    text = "a b c d e f g h"
    agent = Agent(name=uid("words"), model=WordStreamModel(text))
    events = []
    # No sink that stores (in a full run, a bus sink of another test may be installed in this process).
    from timestep.durable import events as event_sinks

    installed = list(event_sinks._sinks)
    event_sinks._sinks.clear()
    try:
        await timestep.run_agent_workflow(agent, "Go", stream=True, on_event=events.append)
    finally:
        event_sinks._sinks.extend(installed)
    assert [e.text for e in events if isinstance(e, Delta)] == ["a ", "b ", "c ", "d ", "e ", "f ", "g ", "h"]


async def test_stream_gathers_deltas_that_come_while_the_last_is_stored(db: str) -> None:
    """A sink that stores slowly: text the model yields meanwhile goes out in the next delta
    event (in order, none lost), and each delta waits for the run's own events only."""
    text = " ".join(f"w{i}" for i in range(40))
    agent = Agent(name=uid("gather"), model=WordStreamModel(text))
    store = SlowStore()
    timestep.add_event_sink(store)
    try:
        events = []
        result = await timestep.run_agent_workflow(agent, "Go", stream=True, on_event=events.append)
    finally:
        timestep.remove_event_sink(store)
    deltas = [e.text for e in events if isinstance(e, Delta)]
    assert "".join(deltas) == text == result.output
    assert deltas[0] == "w0 "  # the first goes out at once, alone
    assert 2 <= len(deltas) < 40
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert set(store.settled) == {result.workflow_id}


async def test_session_id_alone_gives_conversation_memory(db: str) -> None:
    session_id = uid("user")
    model = ScriptedModel([[assistant_message("Hi Ada")], [assistant_message("You are Ada")]])
    agent = Agent(name=uid("memory"), model=model)
    await timestep.run_agent_workflow(agent, "I am Ada", session_id)
    await timestep.run_agent_workflow(agent, "Who am I?", session_id)

    second_input = model.calls[1].input
    texts = [i.get("content") if isinstance(i.get("content"), str) else i["content"][0]["text"] for i in second_input]
    assert texts == ["I am Ada", "Hi Ada", "Who am I?"]
    stored = await timestep.DatabaseSession(session_id).get_items()
    assert len(stored) == 4


async def test_any_sdk_session_object_works(db: str, tmp_path) -> None:
    session = SQLiteSession(uid("sdk"), str(tmp_path / "sdk-session.db"))
    agent = Agent(name=uid("sdk-session"), model=ScriptedModel([[assistant_message("noted")]]))
    await timestep.run_agent_workflow(agent, "remember this", session)
    assert [i.get("role") for i in await session.get_items()] == ["user", "assistant"]


async def test_failing_run_raises_and_emits_failed(db: str) -> None:
    agent = Agent(name=uid("broken"), model=ScriptedModel([RuntimeError("model exploded")]))
    events = []
    with pytest.raises(RuntimeError, match="model exploded"):
        await timestep.run_agent_workflow(agent, "hi", on_event=events.append)
    assert [type(e) for e in events] == [Started, Failed]
    assert events[-1].error.type == "RuntimeError" and "model exploded" in events[-1].error.message


async def test_offline_demo_model_calls_a_named_tool(db: str) -> None:
    agent = Agent(name=uid("offline"), tools=[function_tool(lambda city: f"rain in {city}", name_override="get_weather")])
    result = await timestep.run_agent_workflow(agent, "get_weather city=Oslo")
    assert result.output == "get_weather returned: rain in Oslo"


async def test_event_sink_sees_every_event(db: str) -> None:
    seen = []

    class Sink:
        async def emit(self, event) -> None:
            seen.append(event)

    sink = Sink()
    timestep.add_event_sink(sink)
    try:
        agent, _ = weather_agent(uid("sink"), [])
        result = await timestep.run_agent_workflow(agent, "Weather?")
    finally:
        timestep.remove_event_sink(sink)
    mine = [type(e).__name__ for e in seen if e.run_id == result.workflow_id]
    assert mine == ["Started", "ToolCall", "ToolOutput", "Completed"]


@engine.workflow("test.status_inside")
async def _reads_status_then_steps(other: str) -> str:
    before = await engine.status(other)

    async def work() -> str:
        return "done"

    return f"{before.status}:{await engine.step('work', work)}"


async def test_a_status_read_inside_a_workflow_is_not_one_of_its_steps(db: str) -> None:
    """DBOS records its own status calls made inside a workflow as steps; a run that read its
    status only on some paths (a shutdown) then failed on recovery ("DBOS.getStatus was recorded
    when model was expected"). Timestep's status read is never recorded."""
    calls: list[str] = []
    agent, _ = weather_agent(uid("weather"), calls)
    other = (await timestep.run_agent_workflow(agent, "Weather in Paris?")).workflow_id
    wid = uid("status-inside")
    handle = await engine.start(_reads_status_then_steps, other, workflow_id=wid, timeout_seconds=None)
    assert await handle.get_result() == "completed:done"
    assert [s.name for s in await engine.list_steps(wid)] == ["work"]
