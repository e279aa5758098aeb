"""One conversation, one run at a time: `session_policy` enqueue, reject and interrupt, in the library."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from agents import Agent, function_tool
from agents.testing import ModelStep, ScriptedModel, assistant_message, function_call

import timestep
from subjects.events import Rejected
from timestep.durable.sessions import DatabaseSession
from timestep.errors import RunCancelledError, SessionBusyError


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _text(item: dict) -> str:
    content = item.get("content")
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content or ""


def conversation(gates: dict[str, asyncio.Event], seen: list[tuple[str, int]], *, approval: bool = False) -> Agent:
    """Each user message makes one call of `work` (label = the message), then an answer. `work`
    waits for gates[label] when there is one. `seen` gets (label, items the model saw) per call."""

    @function_tool(needs_approval=approval)
    async def work(label: str) -> str:
        gate = gates.get(label)
        if gate is not None:
            await gate.wait()
        return f"worked on {label}"

    def respond(call) -> object:
        last = call.input[-1]
        if isinstance(last, dict) and last.get("role") == "user":
            label = _text(last)
            seen.append((label, len(call.input)))
            return [function_call("work", {"label": label}, call_id=f"c-{label}")]
        label = str(last.get("output", "")).removeprefix("worked on ")
        return [assistant_message(f"done: {label}")]

    return Agent(name=uid("chat"), model=ScriptedModel([ModelStep.respond(respond) for _ in range(40)]), tools=[work])


async def history(session_id: str) -> list[str]:
    """The stored conversation, one word per item: user:<text>, call, output, answer:<text>."""
    found = []
    for item in await DatabaseSession(session_id).get_items():
        kind = item.get("type")
        if item.get("role") == "user":
            found.append(f"user:{_text(item)}")
        elif kind == "function_call":
            found.append("call")
        elif kind == "function_call_output":
            found.append("output")
        else:
            found.append(f"answer:{_text(item)}")
    return found


async def wait_until(predicate, what: str) -> None:
    for _ in range(1200):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never: {what}")


async def test_enqueue_runs_the_second_message_after_the_first_on_its_history(db: str) -> None:
    gates = {"first": asyncio.Event()}
    seen: list[tuple[str, int]] = []
    agent = conversation(gates, seen)
    session = uid("s")
    first = asyncio.create_task(timestep.run_agent_workflow(agent, "first", session))
    await wait_until(lambda: seen, "the first run's model call")
    second = asyncio.create_task(timestep.run_agent_workflow(agent, "second", session))
    await asyncio.sleep(1.0)  # the second run had time to start, and must be waiting
    assert [label for label, _ in seen] == ["first"]
    gates["first"].set()
    results = await asyncio.gather(first, second)

    assert [r.output for r in results] == ["done: first", "done: second"]
    assert await history(session) == [
        "user:first", "call", "output", "answer:done: first",
        "user:second", "call", "output", "answer:done: second",
    ]
    assert seen == [("first", 1), ("second", 5)]  # the second run saw the whole first turn


async def test_reject_names_the_unfinished_run_and_runs_nothing(db: str) -> None:
    gates = {"first": asyncio.Event()}
    seen: list[tuple[str, int]] = []
    agent = conversation(gates, seen)
    session = uid("s")
    first_id = uid("first")
    first = asyncio.create_task(timestep.run_agent_workflow(agent, "first", session, workflow_id=first_id))
    await wait_until(lambda: seen, "the first run's model call")

    with pytest.raises(SessionBusyError) as refused:
        await timestep.run_agent_workflow(agent, "second", session, session_policy="reject")
    assert refused.value.running_run_id == first_id
    assert first_id in str(refused.value) and str(refused.value).startswith("session_id:")

    gates["first"].set()
    await first
    after = await timestep.run_agent_workflow(agent, "third", session, session_policy="reject")
    assert after.output == "done: third"
    assert [label for label, _ in seen] == ["first", "third"]


async def test_reject_counts_a_run_waiting_for_approval_and_enqueue_waits_for_its_resume(db: str) -> None:
    seen: list[tuple[str, int]] = []
    agent = conversation({}, seen, approval=True)
    session = uid("s")
    parked = await timestep.run_agent_workflow(agent, "first", session)
    assert parked.status == "interrupted"

    with pytest.raises(SessionBusyError) as refused:
        await timestep.run_agent_workflow(agent, "second", session, session_policy="reject")
    assert refused.value.running_run_id == parked.workflow_id

    queued = asyncio.create_task(timestep.run_agent_workflow(agent, "second", session))
    await asyncio.sleep(1.0)
    assert not queued.done() and [label for label, _ in seen] == ["first"]
    state = await timestep.RunStateStore(agent=agent, session_id=session).load()
    for item in state.get_interruptions():
        state.approve(item)
    resumed = await timestep.run_agent_workflow(agent, state, session)
    assert resumed.output == "done: first"
    second = await queued
    assert second.status == "interrupted"  # its own call waits for approval now: its turn came
    assert await history(session) == ["user:first", "call", "output", "answer:done: first", "user:second", "call"]


async def test_interrupt_cancels_the_running_run_and_goes_on_with_the_history_so_far(db: str) -> None:
    gates = {"first": asyncio.Event()}  # never set: the first run is stopped inside its tool
    seen: list[tuple[str, int]] = []
    agent = conversation(gates, seen)
    session = uid("s")
    first = asyncio.create_task(timestep.run_agent_workflow(agent, "first", session))
    await wait_until(lambda: seen, "the first run's model call")
    events: list = []
    second = await timestep.run_agent_workflow(agent, "second", session, session_policy="interrupt", on_event=events.append)

    assert second.output == "done: second"
    with pytest.raises(RunCancelledError):
        await first
    items = await history(session)
    assert items[0] == "user:first" and items[-4:] == ["user:second", "call", "output", "answer:done: second"]
    assert "answer:done: first" not in items


async def test_interrupt_forgets_a_run_waiting_for_approval(db: str) -> None:
    seen: list[tuple[str, int]] = []
    agent = conversation({}, seen, approval=True)
    session = uid("s")
    parked = await timestep.run_agent_workflow(agent, "first", session)
    assert parked.status == "interrupted"
    second = await timestep.run_agent_workflow(agent, "second", session, session_policy="interrupt")
    assert second.status == "interrupted" and second.interruptions[0].call_id == "c-second"
    assert await timestep.RunStateStore(agent=agent, workflow_id=parked.workflow_id).load() is None


async def test_a_bad_policy_is_refused_naming_the_field(db: str) -> None:
    agent = conversation({}, [])
    with pytest.raises(timestep.ValidationError, match="^session_policy: 'later' is not one of 'enqueue', 'interrupt', 'reject'$"):
        await timestep.run_agent_workflow(agent, "x", uid("s"), session_policy="later")


async def test_the_race_lost_by_a_reject_is_refused_by_the_run_itself(db: str) -> None:
    """Both pass the check before either joins: the one that joins second is refused as it joins."""
    gates = {"first": asyncio.Event()}
    seen: list[tuple[str, int]] = []
    agent = conversation(gates, seen)
    session = uid("s")
    first = asyncio.create_task(timestep.run_agent_workflow(agent, "first", session))
    await wait_until(lambda: seen, "the first run's model call")
    from timestep.durable import engine, runs

    spec, wid, timeout = runs._prepare(agent, "second", session, False, None, None, 10, session_policy="reject")
    spec.definition = None
    events: list = []
    stop = timestep.listen(wid, events.append)
    try:
        handle = await engine.start(runs.agent_run, spec, workflow_id=wid, timeout_seconds=None)
        with pytest.raises(SessionBusyError):
            await handle.get_result()
    finally:
        stop()
    assert [type(e) for e in events] == [Rejected] and events[0].error.type == "SessionBusy"
    gates["first"].set()
    await first


async def test_a_queued_run_takes_its_turn_and_records_its_agent_definition_in_steps(db: str) -> None:
    from timestep.durable import engine

    agent = conversation({}, [])
    handle = await timestep.queue_agent_workflow(agent, "queued", uid("s"))
    result = await handle.get_result()
    assert result.output == "done: queued"
    names = [s.name for s in await engine.list_steps(handle.workflow_id)]
    assert names[:2] == ["session.join", "agent.definition"]
