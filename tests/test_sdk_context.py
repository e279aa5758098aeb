"""A run context, passed as the Agents SDK's docs pass it (`Runner.run(agent, input, context=...)`):
tools, guardrails and dynamic instructions see it, their changes reach the caller, an interruption
and its resume keep it, and what cannot be stored is refused before anything is written. (The
SIGKILL proof that a recovered run goes on with the context its finished steps left is in
test_sdk_crash.py.)"""

from __future__ import annotations

import dataclasses
import threading
import uuid

import pytest
from agents import Agent, GuardrailFunctionOutput, RunContextWrapper, TResponseInputItem, function_tool, input_guardrail
from agents.testing import ScriptedModel, assistant_message, function_call

import timestep
from timestep.durable import engine


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclasses.dataclass
class UserInfo:
    """The SDK's context example (context.md), plus what the tools add."""

    name: str
    uid: int
    notes: list[str] = dataclasses.field(default_factory=list)


@function_tool
async def fetch_user_age(wrapper: RunContextWrapper[UserInfo]) -> str:
    """Fetch the age of the user. Call this function to get user's age information."""
    wrapper.context.notes.append("age fetched")
    return f"The user {wrapper.context.name} is 47 years old"


def instructions(wrapper: RunContextWrapper[UserInfo], agent: Agent) -> str:
    return f"The user's name is {wrapper.context.name}. Help them with their questions."


async def test_tools_guardrails_and_instructions_see_the_context_and_the_caller_gets_its_changes(db: str) -> None:
    seen: list[object] = []

    @input_guardrail
    async def known_user(ctx: RunContextWrapper[UserInfo], agent: Agent, input: str | list[TResponseInputItem]) -> GuardrailFunctionOutput:
        seen.append(ctx.context.uid)
        return GuardrailFunctionOutput(output_info=None, tripwire_triggered=ctx.context.uid != 123)

    model = ScriptedModel([[function_call("fetch_user_age", {}, call_id="c1")], [assistant_message("John is 47.")]])
    agent = Agent[UserInfo](name=uid("ages"), instructions=instructions, tools=[fetch_user_age], input_guardrails=[known_user], model=model)
    user_info = UserInfo(name="John", uid=123)

    result = await timestep.run_agent_workflow(agent, "What is the age of the user?", context=user_info)

    assert result.output == "John is 47."
    assert seen == [123]
    assert model.calls[0].system_instructions == "The user's name is John. Help them with their questions."
    assert model.calls[1].input[-1]["output"] == "The user John is 47 years old"
    assert user_info.notes == ["age fetched"]  # the caller's own object, as after Runner.run
    assert result.context is user_info
    # Read back from the database (another process's RunHandle): the context as the run left it.
    again = await timestep.RunHandle(result.workflow_id).get_result()
    assert again.context == UserInfo(name="John", uid=123, notes=["age fetched"])


async def test_a_queued_run_gets_its_context_and_its_handle_gives_the_changes_back(db: str) -> None:
    model = ScriptedModel([[function_call("fetch_user_age", {}, call_id="c1")], [assistant_message("47.")]])
    agent = Agent[UserInfo](name=uid("queued-ages"), tools=[fetch_user_age], model=model)
    user_info = UserInfo(name="Ada", uid=7)
    handle = await timestep.queue_agent_workflow(agent, "Age?", context=user_info)
    result = await handle.get_result()
    assert model.calls[1].input[-1]["output"] == "The user Ada is 47 years old"
    assert user_info.notes == ["age fetched"]
    assert result.context is user_info


async def test_a_dict_context_is_changed_in_place(db: str) -> None:
    @function_tool
    def remember(ctx: RunContextWrapper[dict], fact: str) -> str:
        ctx.context.setdefault("facts", []).append(fact)
        return "noted"

    model = ScriptedModel([[function_call("remember", {"fact": "likes tea"}, call_id="c1")], [assistant_message("Noted.")]])
    context: dict = {"user": "u-1"}
    await timestep.run_agent_workflow(Agent(name=uid("memo"), tools=[remember], model=model), "I like tea", context=context)
    assert context == {"user": "u-1", "facts": ["likes tea"]}


async def test_an_interrupted_run_resumes_with_its_context(db: str) -> None:
    @function_tool(needs_approval=True)
    def refund(ctx: RunContextWrapper[UserInfo], amount: int) -> str:
        ctx.context.notes.append(f"refunded {amount}")
        return f"refunded {amount} to {ctx.context.name}"

    model = ScriptedModel([[function_call("refund", {"amount": 5}, call_id="r1")], [assistant_message("Done.")]])
    agent = Agent[UserInfo](name=uid("refunds"), tools=[refund], model=model)
    session = uid("s")
    first = await timestep.run_agent_workflow(agent, "Refund me", session, context=UserInfo(name="Grace", uid=9, notes=["asked"]))
    assert first.status == "interrupted"
    store = timestep.RunStateStore(agent, session_id=session)
    state = await store.load()
    state.approve(state.get_interruptions()[0])
    # Resumed from the saved state alone, without `context=`: the run's context comes with it.
    resumed = await timestep.run_agent_workflow(agent, state, session)
    assert resumed.output == "Done."
    assert model.calls[1].input[-1]["output"] == "refunded 5 to Grace"
    assert resumed.context == UserInfo(name="Grace", uid=9, notes=["asked", "refunded 5"])


@pytest.mark.parametrize(("context", "says"), [
    ({"lock": threading.Lock()}, "a dict cannot be stored with the run (TypeError: cannot pickle '_thread.lock' object)"),
    (lambda: None, "a function cannot be stored with the run"),
])
async def test_a_context_that_cannot_be_stored_is_refused_before_anything_is_written(db: str, context: object, says: str) -> None:
    agent = Agent(name=uid("refused"), model=ScriptedModel([[assistant_message("never")]]))
    run_id = uid("ctx")
    with pytest.raises(timestep.ValidationError) as refused:
        await timestep.run_agent_workflow(agent, "hi", workflow_id=run_id, context=context)
    assert refused.value.field == "context"
    assert str(refused.value).startswith(f"context: {says}")
    assert "pass what pickle can carry" in str(refused.value)
    assert await engine.status(run_id) is None
    with pytest.raises(timestep.ValidationError, match="^context: "):
        await timestep.queue_agent_workflow(agent, "hi", workflow_id=run_id, context=context)
    assert await engine.status(run_id) is None
