"""Agents for the bus tests, importable by `timestep up --agents bus_agents` (tests/ on PYTHONPATH).

They use the offline demo model (deterministic rules: it calls the tool the text
names). Tool calls are appended to $TIMESTEP_TEST_LOG, when set, so a test can
count them across processes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import tempfile
import threading

from agents import Agent, Model, ModelProvider, ModelSettings, RunConfig, RunContextWrapper, RunHooks, SQLiteSession, Usage, function_tool
from agents.items import ModelResponse
from agents.testing import assistant_message

from timestep import register_agent

CALLS: list[str] = []


def record(line: str) -> None:
    CALLS.append(line)
    path = os.environ.get("TIMESTEP_TEST_LOG")
    if path:
        with open(path, "a") as f:
            f.write(f"{line} pid={os.getpid()}\n")


@function_tool
def get_weather(city: str) -> str:
    record(f"get_weather:{city}")
    return f"sunny in {city}"


@function_tool
async def think(seconds: float) -> str:
    record(f"think:{seconds}")
    await asyncio.sleep(seconds)
    return f"thought {seconds}"


@function_tool(needs_approval=True)
def send_email(to: str) -> str:
    record(f"send_email:{to}")
    return f"sent to {to}"


register_agent(Agent(name="bus-assistant", tools=[get_weather, think, send_email]))


@function_tool
async def hold(tag: str) -> str:
    """Waits while $TIMESTEP_TEST_LOG.hold exists (a test kills or counts processes meanwhile)."""
    record(f"hold:{tag}:start:{os.environ.get('TIMESTEP_EXECUTOR_ID', 'local')}")
    while os.path.exists(os.environ.get("TIMESTEP_TEST_LOG", "") + ".hold"):
        await asyncio.sleep(0.05)
    record(f"hold:{tag}:end")
    return f"held {tag}"


register_agent(Agent(name="bus-holding", tools=[hold]))


@function_tool
def remember(ctx: RunContextWrapper[dict], fact: str) -> str:
    """Reads and changes the run's context (a request's `context`, a JSON object)."""
    record(f"remember:{fact}")
    ctx.context.setdefault("facts", []).append(fact)
    return f"{ctx.context['user']} remembers {fact}"


register_agent(Agent(name="bus-context", tools=[remember]))


@dataclasses.dataclass
class Customer:
    """The context type of bus-typed-context: a request's `context` object becomes one."""

    user: str
    tier: int = 1
    facts: list[str] = dataclasses.field(default_factory=list)


@function_tool
def note(ctx: RunContextWrapper[Customer], fact: str) -> str:
    record(f"note:{fact}")
    ctx.context.facts.append(fact)
    return f"{ctx.context.user} (tier {ctx.context.tier}) notes {fact}"


register_agent(Agent[Customer](name="bus-typed-context", tools=[note]), context_type=Customer)


class _SettingsModel(Model):
    """Answers with the model name and temperature it was called with."""

    def __init__(self, name: str | None) -> None:
        self.name = name

    async def get_response(self, system_instructions, input, model_settings, *args, **kwargs) -> ModelResponse:
        text = f"{self.name} at {model_settings.temperature}"
        return ModelResponse(output=[assistant_message(text)], usage=Usage(requests=1), response_id=None)

    def stream_response(self, *args, **kwargs):
        raise NotImplementedError


class HouseProvider(ModelProvider):
    """A provider of the deployment's own, with a client (a lock stands in): registered, not stored."""

    def __init__(self) -> None:
        self.client_lock = threading.Lock()

    def get_model(self, model_name: str | None) -> Model:
        return _SettingsModel(model_name)


class Recording(RunHooks):
    async def on_agent_end(self, context, agent, output) -> None:
        record(f"hook:agent_end:{agent.name}:{output}")


register_agent(
    Agent(name="bus-configured"),
    run_config=RunConfig(model_provider=HouseProvider(), model="house-model", model_settings=ModelSettings(temperature=0.4)),
    hooks=Recording(),
)

#: The conversations of `bus-remembering`, kept by the deployment's own SQLite sessions.
SESSIONS_DB = os.path.join(tempfile.gettempdir(), "timestep-bus-sessions.db")
register_agent(Agent(name="bus-remembering"), session_factory=lambda session_id: SQLiteSession(session_id, SESSIONS_DB))
