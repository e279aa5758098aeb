"""Interruptions: the state is saved by itself, loaded, approved or rejected, and the run resumes."""

from __future__ import annotations

import uuid

from agents import Agent, function_tool
from agents.testing import ModelStep, ScriptedModel, assistant_message, function_call

import timestep
from subjects.events import Completed, Interrupted, Started, ToolCall, ToolOutput


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def mail_agent(sent: list[str]) -> Agent:
    @function_tool(needs_approval=True)
    def send_email(to: str) -> str:
        sent.append(to)
        return f"sent to {to}"

    def answer(call) -> object:
        last = call.input[-1]
        return [assistant_message(f"final: {last.get('output')}")]

    model = ScriptedModel(
        [[function_call("send_email", {"to": "bob@example.com"}, call_id="m1")]] + [ModelStep.respond(answer) for _ in range(3)]
    )
    return Agent(name=uid("mailer"), model=model, tools=[send_email])


async def test_interrupted_run_saves_state_and_resumes_after_approval(db: str) -> None:
    sent: list[str] = []
    agent = mail_agent(sent)
    session_id = uid("session")
    events = []
    result = await timestep.run_agent_workflow(agent, "Email Bob", session_id, on_event=events.append)

    assert result.status == "interrupted"
    assert [(a.call_id, a.tool, a.arguments) for a in result.interruptions] == [("m1", "send_email", '{"to":"bob@example.com"}')]
    assert [type(e) for e in events] == [Started, Interrupted]
    assert sent == []

    # The seed's flow, as written: the state was saved without being asked.
    state = await timestep.RunStateStore(agent=agent, session_id=session_id).load()
    assert state is not None
    by_workflow = await timestep.RunStateStore(agent=agent, workflow_id=result.workflow_id).load()
    assert [i.call_id for i in by_workflow.get_interruptions()] == ["m1"]
    for item in state.get_interruptions():
        state.approve(item)
    resumed_events = []
    resumed = await timestep.run_agent_workflow(agent, state, session_id, on_event=resumed_events.append)

    assert resumed.status == "completed"
    assert resumed.output == "final: sent to bob@example.com"
    assert sent == ["bob@example.com"]
    assert [type(e) for e in resumed_events] == [Started, ToolCall, ToolOutput, Completed]
    # Consumed: the session no longer has a pending state.
    assert await timestep.RunStateStore(agent=agent, session_id=session_id).load() is None


async def test_rejected_tool_does_not_run_and_the_model_hears_why(db: str) -> None:
    sent: list[str] = []
    agent = mail_agent(sent)
    session_id = uid("session")
    await timestep.run_agent_workflow(agent, "Email Bob", session_id)
    state = await timestep.RunStateStore(agent=agent, session_id=session_id).load()
    for item in state.get_interruptions():
        state.reject(item, rejection_message="not allowed today")
    resumed = await timestep.run_agent_workflow(agent, state, session_id)

    assert sent == []
    assert resumed.status == "completed"
    assert "not allowed today" in resumed.output


async def test_resuming_the_same_decisions_twice_runs_once(db: str) -> None:
    sent: list[str] = []
    agent = mail_agent(sent)
    result = await timestep.run_agent_workflow(agent, "Email Bob")
    store = timestep.RunStateStore(agent=agent, workflow_id=result.workflow_id)
    outcomes = []
    for _ in range(2):
        state = await store.load()
        for item in state.get_interruptions():
            state.approve(item)
        outcomes.append(await timestep.run_agent_workflow(agent, state))
    assert outcomes[0] == outcomes[1]
    assert sent == ["bob@example.com"]


async def test_state_store_save_load_clear(db: str) -> None:
    agent = mail_agent([])
    result = await timestep.run_agent_workflow(agent, "Email Bob")
    source = await timestep.RunStateStore(agent=agent, workflow_id=result.workflow_id).load()
    store = timestep.RunStateStore(agent=agent, session_id=uid("manual"))
    assert await store.load() is None
    await store.save(source)
    loaded = await store.load()
    assert [i.call_id for i in loaded.get_interruptions()] == ["m1"]
    await store.clear()
    assert await store.load() is None
