"""RunConfig and RunHooks, passed as the Agents SDK's docs pass them (`Runner.run(agent, input,
run_config=RunConfig(...), hooks=MyHooks())`), per run or registered with the agent: the model
settings, a model or provider of the user's own (still durable), run-level guardrails as steps,
hooks called; what cannot be stored is refused naming the field. (A SIGKILL variant is in
test_sdk_crash.py.)"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from agents import (
    Agent, GuardrailFunctionOutput, Model, ModelProvider, ModelSettings, RunConfig, RunContextWrapper, RunHooks, TResponseInputItem,
    function_tool, input_guardrail, output_guardrail,
)
from agents.testing import ScriptedModel, assistant_message, function_call

import timestep
from timestep.durable import engine


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def _steps(workflow_id: str) -> list[str]:
    return [s.name for s in await engine.list_steps(workflow_id)]


CHECKED: list[str] = []


@input_guardrail
async def no_swearing(ctx: RunContextWrapper[Any], agent: Agent, input: str | list[TResponseInputItem]) -> GuardrailFunctionOutput:
    CHECKED.append("no_swearing")
    return GuardrailFunctionOutput(output_info=None, tripwire_triggered="darn" in str(input))


@output_guardrail
async def short_answers(ctx: RunContextWrapper[Any], agent: Agent, output: str) -> GuardrailFunctionOutput:
    CHECKED.append("short_answers")
    return GuardrailFunctionOutput(output_info=len(output), tripwire_triggered=len(output) > 100)


class Counting(RunHooks):
    """The SDK's lifecycle hooks, counted."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def on_agent_start(self, context: Any, agent: Agent) -> None:
        self.seen.append(f"agent_start:{agent.name}")

    async def on_tool_end(self, context: Any, agent: Agent, tool: Any, result: str) -> None:
        self.seen.append(f"tool_end:{tool.name}:{result}")

    async def on_agent_end(self, context: Any, agent: Agent, output: Any) -> None:
        self.seen.append(f"agent_end:{output}")


@function_tool
def get_weather(city: str) -> str:
    return f"sunny in {city}"


async def test_a_runs_config_sets_the_model_settings_and_its_guardrails_are_steps(db: str) -> None:
    model = ScriptedModel([[function_call("get_weather", {"city": "Paris"}, call_id="c1")], [assistant_message("Sunny.")]])
    agent = Agent(name=uid("configured"), tools=[get_weather], model=model)
    config = RunConfig(
        model_settings=ModelSettings(temperature=0.2), workflow_name="weather desk",
        input_guardrails=[no_swearing], output_guardrails=[short_answers],
    )
    CHECKED.clear()
    result = await timestep.run_agent_workflow(agent, "Weather in Paris?", run_config=config)
    assert result.output == "Sunny."
    assert [call.model_settings.temperature for call in model.calls] == [0.2, 0.2]
    assert CHECKED == ["no_swearing", "short_answers"]
    assert await _steps(result.workflow_id) == ["guardrail:no_swearing", "model", "tool:get_weather", "model", "guardrail:short_answers"]


async def test_a_model_the_run_config_names_replaces_the_agents_and_its_calls_are_steps(db: str) -> None:
    theirs = ScriptedModel([[assistant_message("from the agent's model")]])
    ours = ScriptedModel([[assistant_message("from the run config's model")]])
    result = await timestep.run_agent_workflow(Agent(name=uid("override"), model=theirs), "hi", run_config=RunConfig(model=ours))
    assert result.output == "from the run config's model"
    assert len(theirs.calls) == 0
    assert await _steps(result.workflow_id) == ["model"]


async def test_hooks_are_called_as_the_sdk_calls_them(db: str) -> None:
    hooks = Counting()
    model = ScriptedModel([[function_call("get_weather", {"city": "Oslo"}, call_id="c1")], [assistant_message("Cold.")]])
    agent = Agent(name=uid("hooked"), tools=[get_weather], model=model)
    await timestep.run_agent_workflow(agent, "Weather in Oslo?", hooks=hooks)
    assert hooks.seen == [f"agent_start:{agent.name}", "tool_end:get_weather:sunny in Oslo", "agent_end:Cold."]


class TemperatureModel(Model):
    """Answers with the temperature it was called with (a model of the user's own provider)."""

    async def get_response(self, system_instructions: Any, input: Any, model_settings: ModelSettings, *args: Any, **kwargs: Any) -> Any:
        from agents.items import ModelResponse
        from agents.usage import Usage

        message = assistant_message(f"temperature {model_settings.temperature}")
        return ModelResponse(output=[message], usage=Usage(requests=1), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError


class OwnProvider(ModelProvider):
    """A provider with a client of its own (a lock here): it cannot be stored, so it is registered."""

    def __init__(self) -> None:
        import threading

        self.client_lock = threading.Lock()
        self.asked: list[str | None] = []

    def get_model(self, model_name: str | None) -> Model:
        self.asked.append(model_name)
        return TemperatureModel()


async def test_a_registered_run_config_and_hooks_are_used_by_every_run_of_the_agent_and_a_runs_own_fields_win(db: str) -> None:
    provider, hooks = OwnProvider(), Counting()
    agent = timestep.register_agent(
        Agent(name=uid("registered")),
        run_config=RunConfig(model_provider=provider, model="house-model", model_settings=ModelSettings(temperature=0.7)),
        hooks=hooks,
    )
    first = await timestep.run_agent_workflow(agent, "hi")
    assert first.output == "temperature 0.7"
    assert provider.asked == ["house-model"]
    assert await _steps(first.workflow_id) == ["model"]  # the user's provider, still durable
    handle = await timestep.queue_agent_workflow(agent, "hi", run_config=RunConfig(model_settings=ModelSettings(temperature=0.1)))
    assert (await handle.get_result()).output == "temperature 0.1"
    assert hooks.seen == [f"agent_start:{agent.name}", "agent_end:temperature 0.7", f"agent_start:{agent.name}", "agent_end:temperature 0.1"]


@pytest.mark.parametrize(("kwargs", "field", "says"), [
    ({"run_config": RunConfig(handoff_input_filter=lambda data: data)}, "run_config.handoff_input_filter", "a function cannot be stored with the run"),
    ({"run_config": RunConfig(model_provider=OwnProvider())}, "run_config.model_provider", "a OwnProvider cannot be stored with the run"),
    ({"run_config": {"model": "gpt-4o"}}, "run_config", "expected an agents.RunConfig, got dict"),
    ({"hooks": object()}, "hooks", "expected an agents.RunHooks, got object"),
])
async def test_what_cannot_be_stored_is_refused_naming_the_field_before_anything_is_written(db: str, kwargs: dict, field: str, says: str) -> None:
    agent = Agent(name=uid("refused"), model=ScriptedModel([[assistant_message("never")]]))
    run_id = uid("cfg")
    with pytest.raises(timestep.ValidationError) as refused:
        await timestep.run_agent_workflow(agent, "hi", workflow_id=run_id, **kwargs)
    assert refused.value.field == field
    assert str(refused.value).startswith(f"{field}: {says}"), str(refused.value)
    assert await engine.status(run_id) is None
