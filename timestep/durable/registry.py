"""Agents by name. Workflows carry an agent's name (an Agent with tools cannot be
pickled); every process that may run or recover a run registers the same agents
at start-up, before `ensure_dbos_launched()`."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import msgspec
from agents import Agent, RunConfig, RunHooks
from agents.lifecycle import RunHooksBase

from subjects.messages import ModelRetry
from subjects.problems import convert_problem
from timestep.errors import UnknownAgentError, ValidationError
from timestep.settings import current as current_settings

_agents: dict[str, Agent] = {}
_retries: dict[str, ModelRetry] = {}
_approval_timeouts: dict[str, dict[str, float]] = {}
_on_change: dict[str, str] = {}
_context_types: dict[str, type] = {}
_run_configs: dict[str, RunConfig] = {}
_hooks: dict[str, RunHooks] = {}
_session_factories: dict[str, Any] = {}
_lock = threading.Lock()

CHANGE_POLICIES = ("continue", "fail")


def register_agent(
    agent: Agent,
    *,
    model_retry: ModelRetry | dict | None = None,
    approval_timeouts: dict[str, float] | None = None,
    on_change: str | None = None,
    context_type: type | None = None,
    run_config: Any = None,
    hooks: Any = None,
    session_factory: Any = None,
) -> Agent:
    """Make `agent` findable by its name in this process (idempotent; re-registering replaces).
    `model_retry` sets how its runs retry failed model calls (a queue's or a run's own wins;
    `ModelRetry()` clears it).

    `approval_timeouts` gives tools a deadline for their approvals, in seconds: a call of that
    tool still undecided so long after it was requested is rejected (a run request's
    `approval_timeout_seconds` overrides it).

    `on_change` says what a run of this agent does when it goes on (recovered, or resumed after
    an approval) under a different definition than the one it started with: "continue" (and an
    `agent_changed` event says what changed) or "fail" (AgentChangedError names it). Default:
    TIMESTEP_ON_AGENT_CHANGE, else "continue".

    `context_type` is the type of its runs' context (a dataclass, a msgspec Struct, a pydantic
    model): a request over the bus sends its `context` as a JSON object, which becomes one of these
    before the run starts (or is refused naming the field that does not fit).

    `run_config` (an `agents.RunConfig`) and `hooks` (an `agents.RunHooks`) are used by every run of
    the agent, as `Runner.run(..., run_config=..., hooks=...)` uses them, also after a recovery; a
    run's own (`run_agent_workflow(..., run_config=...)`) fields win over these. Register here what
    cannot be stored with a run: a model provider with its client, functions defined inside others.

    `session_factory` (a function of a session id that returns an Agents SDK session) makes the
    session of each run of the agent given a session id string (`session="user-42"`, a request's
    `session_id` on the bus) instead of Timestep's database session, also after a recovery.

    >>> register_agent(Agent(name="support", instructions="Help.", tools=[refund]), approval_timeouts={"refund": 3600})
    >>> register_agent(Agent(name="support", instructions="Help."), model_retry=ModelRetry(max_attempts=5), on_change="fail")
    """
    retry = check_model_retry(model_retry)
    if not isinstance(agent, Agent):
        raise ValidationError("agent", f"expected an agents.Agent, got {type(agent).__name__}", "pass Agent(name=..., ...)")
    if not isinstance(agent.name, str) or not agent.name.strip():
        raise ValidationError("agent.name", "is empty", "give the agent a unique name")
    timeouts = dict(approval_timeouts or {})
    for tool, seconds in timeouts.items():
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds <= 31_536_000:
            raise ValidationError(
                f"approval_timeouts[{tool!r}]", f"{seconds!r} is not a number of seconds above 0 and at most 365 days", "pass e.g. 3600"
            )
    check_run_options(run_config, hooks)
    if session_factory is not None and not callable(session_factory):
        raise ValidationError("session_factory", f"{session_factory!r} is not callable", "pass a function of the session id that returns the session")
    if context_type is not None and not isinstance(context_type, type):
        raise ValidationError("context_type", f"{context_type!r} is not a class", "pass the class of the runs' context, e.g. a dataclass")
    if on_change is not None and on_change not in CHANGE_POLICIES:
        raise ValidationError("on_change", f"{on_change!r} is not 'continue' or 'fail'", "say what a run does when its agent changed since it started")
    with _lock:
        _agents[agent.name] = agent
        if approval_timeouts is not None or agent.name not in _approval_timeouts:  # the run functions register again without
            _approval_timeouts[agent.name] = {tool: float(seconds) for tool, seconds in timeouts.items()}
        if retry is not None:  # None keeps what was registered (runs register their agent too)
            _retries[agent.name] = retry
        if on_change is not None:
            _on_change[agent.name] = on_change
        if context_type is not None:
            _context_types[agent.name] = context_type
        if run_config is not None:
            _run_configs[agent.name] = run_config
        if hooks is not None:
            _hooks[agent.name] = hooks
        if session_factory is not None:
            _session_factories[agent.name] = session_factory
    return agent


def check_run_options(run_config: Any, hooks: Any) -> None:
    """A RunConfig and RunHooks, or None; ValidationError naming the argument that is not."""
    if run_config is not None and not isinstance(run_config, RunConfig):
        raise ValidationError("run_config", f"expected an agents.RunConfig, got {type(run_config).__name__}", "pass RunConfig(...)")
    if hooks is not None and not isinstance(hooks, RunHooksBase):  # RunHooks is a subscripted generic
        raise ValidationError("hooks", f"expected an agents.RunHooks, got {type(hooks).__name__}", "pass an instance of a RunHooks subclass")


def agent_run_config(name: str) -> RunConfig | None:
    """The RunConfig registered with agent `name`, if any."""
    with _lock:
        return _run_configs.get(name)


def agent_session_factory(name: str) -> Any:
    """The session factory registered with agent `name`, if any."""
    with _lock:
        return _session_factories.get(name)


def agent_hooks(name: str) -> RunHooks | None:
    """The RunHooks registered with agent `name`, if any."""
    with _lock:
        return _hooks.get(name)


def agent_context_type(name: str) -> type | None:
    """The context type registered with agent `name`, if any."""
    with _lock:
        return _context_types.get(name)


def approval_timeouts(name: str) -> dict[str, float]:
    """The per-tool approval deadlines (seconds) `name` was registered with."""
    with _lock:
        return dict(_approval_timeouts.get(name, {}))


def agent_model_retry(name: str) -> ModelRetry | None:
    """The retry settings registered with agent `name`, if any."""
    with _lock:
        return _retries.get(name)


def check_model_retry(value: object, field: str = "model_retry") -> ModelRetry | None:
    """`value` as a checked ModelRetry (a ModelRetry or a dict of its fields), or None."""
    if value is None:
        return None
    raw = msgspec.to_builtins(value) if isinstance(value, ModelRetry) else value
    if isinstance(raw, dict):
        unknown = sorted(set(raw) - set(ModelRetry.__struct_fields__))
        if unknown:
            raise ValidationError(f"{field}.{unknown[0]}", "is not a setting", f"use {', '.join(ModelRetry.__struct_fields__)}")
    try:
        return msgspec.convert(raw, ModelRetry)
    except msgspec.ValidationError as exc:
        at, problem = convert_problem(exc, raw, ModelRetry)
        raise ValidationError(field if at == "request" else f"{field}.{at}", problem) from None


def change_policy(name: str) -> str:
    """What a run of agent `name` does when the agent changed since the run started."""
    with _lock:
        policy = _on_change.get(name)
    return policy or current_settings().on_agent_change


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
