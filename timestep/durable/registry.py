"""Agents by name. Workflows carry an agent's name (an Agent with tools cannot be
pickled); every process that may run or recover a run registers the same agents
at start-up, before `ensure_dbos_launched()`."""

from __future__ import annotations

import asyncio
import threading

from agents import Agent

from timestep.errors import UnknownAgentError, ValidationError
from timestep.settings import Settings

_agents: dict[str, Agent] = {}
_on_change: dict[str, str] = {}
_lock = threading.Lock()

CHANGE_POLICIES = ("continue", "fail")


def register_agent(agent: Agent, *, on_change: str | None = None) -> Agent:
    """Make `agent` findable by its name in this process (idempotent; re-registering replaces).

    `on_change` says what a run of this agent does when it goes on (recovered, or resumed after
    an approval) under a different definition than the one it started with: "continue" (and an
    `agent_changed` event says what changed) or "fail" (AgentChangedError names it). Default:
    TIMESTEP_ON_AGENT_CHANGE, else "continue".

    >>> register_agent(Agent(name="support", instructions="Help."), on_change="fail")
    """
    if not isinstance(agent, Agent):
        raise ValidationError("agent", f"expected an agents.Agent, got {type(agent).__name__}", "pass Agent(name=..., ...)")
    if not isinstance(agent.name, str) or not agent.name.strip():
        raise ValidationError("agent.name", "is empty", "give the agent a unique name")
    if on_change is not None and on_change not in CHANGE_POLICIES:
        raise ValidationError("on_change", f"{on_change!r} is not 'continue' or 'fail'", "say what a run does when its agent changed since it started")
    with _lock:
        _agents[agent.name] = agent
        if on_change is not None:
            _on_change[agent.name] = on_change
    return agent


def change_policy(name: str) -> str:
    """What a run of agent `name` does when the agent changed since the run started."""
    with _lock:
        policy = _on_change.get(name)
    return policy or Settings.from_env().on_agent_change


def get_agent(name: str) -> Agent:
    """The agent registered as `name`; raises UnknownAgentError naming the registered ones."""
    with _lock:
        agent = _agents.get(name)
        if agent is None:
            raise UnknownAgentError(name, list(_agents))
        return agent


def registered_agents() -> list[str]:
    with _lock:
        return sorted(_agents)


async def wait_for_agent(name: str, timeout: float) -> Agent:
    """Like get_agent, but gives start-up code `timeout` seconds to register it: a run
    recovered at launch may start before the process finished registering its agents."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        with _lock:
            if name in _agents:
                return _agents[name]
        if loop.time() >= deadline:
            return get_agent(name)
        await asyncio.sleep(0.05)
