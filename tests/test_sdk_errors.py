"""The Agents SDK's own exceptions reach the caller of `run_agent_workflow` as themselves: on the first
call, when the same workflow_id is awaited again (its error read back from the database), and through
a `RunHandle`; the run's `failed` event names the SDK's class and carries the SDK's message.

Each agent is written the way the SDK's docs write the feature (guardrails.md, running_agents.md,
tools.md); the guardrail functions are local ones, which cannot be pickled, as in most user code."""

from __future__ import annotations

import json
import pickle
import re
import uuid
from typing import Any

import pytest
from agents import (
    Agent,
    GuardrailFunctionOutput,
    InputGuardrailTripwireTriggered,
    MaxTurnsExceeded,
    ModelBehaviorError,
    OutputGuardrailTripwireTriggered,
    RunContextWrapper,
    ToolGuardrailFunctionOutput,
    ToolInputGuardrailTripwireTriggered,
    ToolOutputGuardrailTripwireTriggered,
    TResponseInputItem,
    UserError,
    function_tool,
    input_guardrail,
    output_guardrail,
    tool_input_guardrail,
    tool_output_guardrail,
)
from agents.testing import ModelStep, ScriptedModel, assistant_message, function_call
from pydantic import BaseModel

import timestep
from subjects.events import Failed
from timestep.durable.sdk_errors import picklable


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class MessageOutput(BaseModel):
    response: str


class MathHomeworkOutput(BaseModel):
    is_math_homework: bool
    reasoning: str


async def _fails_alike(agent: Agent, text: str, cls: type[Exception], **options: Any) -> tuple[Exception, Exception, Exception]:
    """Run `agent` and return the error three ways: the first call's, a second call's with the same
    workflow_id, and a RunHandle's; each an instance of `cls`, with the SDK's message; the run's
    `failed` event names `cls`."""
    workflow_id = uid("sdk-error")
    events: list[Any] = []
    with pytest.raises(cls) as first:
        await timestep.run_agent_workflow(agent, text, workflow_id=workflow_id, on_event=events.append, **options)
    with pytest.raises(cls) as again:
        await timestep.run_agent_workflow(agent, "something else", workflow_id=workflow_id, **options)
    with pytest.raises(cls) as handle:
        await timestep.RunHandle(workflow_id).get_result()
    failed = events[-1]
    assert isinstance(failed, Failed)
    assert failed.error.type == cls.__name__
    assert failed.error.message == str(first.value)
    assert type(first.value) is cls and type(again.value) is cls and type(handle.value) is cls
    assert str(again.value) == str(first.value) == str(handle.value)
    return first.value, again.value, handle.value


async def test_an_input_guardrail_tripwire_is_raised_as_itself(db: str) -> None:
    @input_guardrail
    async def math_guardrail(
        ctx: RunContextWrapper[None], agent: Agent, input: str | list[TResponseInputItem]
    ) -> GuardrailFunctionOutput:
        return GuardrailFunctionOutput(
            output_info=MathHomeworkOutput(is_math_homework=True, reasoning="solve for x"),
            tripwire_triggered=True,
        )

    agent = Agent(
        name=uid("customer-support"),
        instructions="You are a customer support agent. You help customers with their questions.",
        input_guardrails=[math_guardrail],
        model=ScriptedModel([[assistant_message("The answer is 4.")]]),
    )
    for error in await _fails_alike(agent, "Hello, can you help me solve for x: 2x + 3 = 11?", InputGuardrailTripwireTriggered):
        result = error.guardrail_result
        assert result.guardrail.get_name() == "math_guardrail"
        assert result.output.tripwire_triggered is True
        assert result.output.output_info == MathHomeworkOutput(is_math_homework=True, reasoning="solve for x")


async def test_an_output_guardrail_tripwire_is_raised_as_itself(db: str) -> None:
    @output_guardrail
    async def math_guardrail(ctx: RunContextWrapper, agent: Agent, output: MessageOutput) -> GuardrailFunctionOutput:
        return GuardrailFunctionOutput(output_info={"checked": output.response}, tripwire_triggered="x =" in output.response)

    agent = Agent(
        name=uid("customer-support-out"),
        instructions="You are a customer support agent. You help customers with their questions.",
        output_guardrails=[math_guardrail],
        output_type=MessageOutput,
        model=ScriptedModel([[assistant_message('{"response": "x = 4"}')]]),
    )
    for error in await _fails_alike(agent, "Hello, can you help me solve for x: 2x + 3 = 11?", OutputGuardrailTripwireTriggered):
        result = error.guardrail_result
        assert result.guardrail.get_name() == "math_guardrail"
        assert result.output.tripwire_triggered is True
        assert result.output.output_info == {"checked": "x = 4"}
        assert result.agent.name == agent.name
        assert result.agent_output.response == "x = 4"


async def test_a_tool_guardrails_tripwire_is_raised_as_itself(db: str) -> None:
    """@tool_input_guardrail / @tool_output_guardrail returning raise_exception: the run fails with
    the SDK's ToolInputGuardrailTripwireTriggered (the tool never ran) or
    ToolOutputGuardrailTripwireTriggered, with the guardrail's name and output_info."""
    ran: list[str] = []

    @tool_input_guardrail
    def no_deletes(data):
        return ToolGuardrailFunctionOutput.raise_exception(output_info={"blocked": json.loads(data.context.tool_arguments)})

    @tool_output_guardrail
    def no_passwords(data):
        behavior = ToolGuardrailFunctionOutput.raise_exception if "password" in str(data.output) else ToolGuardrailFunctionOutput.allow
        return behavior(output_info={"seen": str(data.output)})

    @function_tool(tool_input_guardrails=[no_deletes])
    def delete_rows(table: str) -> str:
        ran.append(table)
        return "deleted"

    @function_tool(tool_output_guardrails=[no_passwords])
    def read_config(key: str) -> str:
        ran.append(key)
        return "password=hunter2"

    def calling(name: str, args: dict) -> ScriptedModel:
        return ScriptedModel([[function_call(name, args, call_id="t1")], [assistant_message("done")]])

    agent = Agent(name=uid("dba"), tools=[delete_rows], model=calling("delete_rows", {"table": "users"}))
    for error in await _fails_alike(agent, "clean up", ToolInputGuardrailTripwireTriggered):
        assert error.guardrail.get_name() == "no_deletes"
        assert error.output.output_info == {"blocked": {"table": "users"}}
    assert ran == []
    agent = Agent(name=uid("ops"), tools=[read_config], model=calling("read_config", {"key": "db"}))
    for error in await _fails_alike(agent, "show the config", ToolOutputGuardrailTripwireTriggered):
        assert error.guardrail.get_name() == "no_passwords"
        assert error.output.output_info == {"seen": "password=hunter2"}
    assert ran == ["db"]


async def test_max_turns_exceeded_is_raised_as_itself(db: str) -> None:
    @function_tool
    def get_weather(city: str) -> str:
        """Get the weather for a city."""
        return f"The weather in {city} is sunny"

    model = ScriptedModel([ModelStep.respond(lambda call: [function_call("get_weather", {"city": "Tokyo"}, call_id=f"w{len(call.input)}")]) for _ in range(10)])
    agent = Agent(name=uid("looping"), instructions="Use the tools.", tools=[get_weather], model=model)
    for error in await _fails_alike(agent, "What's the weather in Tokyo?", MaxTurnsExceeded, max_turns=2):
        assert error.message == "Max turns (2) exceeded"


async def test_a_model_behavior_error_is_raised_as_itself(db: str) -> None:
    """The model calls a tool the agent does not have."""
    agent = Agent(
        name=uid("misbehaving"), instructions="Be helpful.",
        model=ScriptedModel([[function_call("launch_rockets", {"count": 3}, call_id="r1")]]),
    )
    for error in await _fails_alike(agent, "Hi", ModelBehaviorError):
        assert re.search("launch_rockets", error.message)


async def test_a_tool_without_a_failure_error_function_raises_a_user_error(db: str) -> None:
    """tools.md: `failure_error_function=None` re-raises the tool's error instead of telling the model."""

    @function_tool(failure_error_function=None)
    def get_user_profile(user_id: str) -> str:
        """Fetch a user's profile."""
        raise ValueError(f"no profile for {user_id}")

    agent = Agent(
        name=uid("profile"), instructions="Look the user up.", tools=[get_user_profile],
        model=ScriptedModel([[function_call("get_user_profile", {"user_id": "u-7"}, call_id="p1")], [assistant_message("done")]]),
    )
    for error in await _fails_alike(agent, "Who am I?", UserError):
        assert error.message == "Error running tool get_user_profile: no profile for u-7"


class LockedOut(Exception):
    """An application's error that holds something pickle cannot carry."""

    def __init__(self, user: str) -> None:
        super().__init__(f"{user} is locked out")
        self.user = user
        self.retry = lambda: None


def test_an_error_that_cannot_be_pickled_keeps_its_class_message_and_what_can_be_carried() -> None:
    error = LockedOut("ada")
    with pytest.raises(Exception):
        pickle.dumps(error)
    copy = pickle.loads(pickle.dumps(picklable(error)))
    assert type(copy) is LockedOut and str(copy) == "ada is locked out" and copy.user == "ada"
    assert isinstance(copy.retry, str)  # the function stayed behind; its repr says what it was


def test_an_error_of_a_class_pickle_cannot_find_becomes_a_runtime_error_naming_it() -> None:
    class Local(Exception):
        pass

    stored = picklable(Local("gone"))
    assert type(stored) is RuntimeError and str(stored) == "Local: gone"
