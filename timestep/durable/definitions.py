"""What an agent was when a run started: a fingerprint of its definition, kept for upgrades.

A run may wait for approval for days while new code is deployed. Each run records, at its start,
the digest of its agent's definition (name, instructions, model, tools with their parameter
schemas and approval setting, handoffs); the definition itself is stored once per digest in
`timestep_agent_definitions`. When the run goes on (recovered, or resumed after an approval)
under a different definition, its agent's change policy applies (`register_agent(agent,
on_change=...)`, else TIMESTEP_ON_AGENT_CHANGE):

- `continue` (default): the run goes on under the new definition, and its first step that runs
  publishes `agent_changed` naming what changed;
- `fail`: that step fails the run with `AgentChangedError`, naming what changed.

A tool the run's history called but the new definition lacks is kept as a stand-in with the
recorded name and schema, so the history replays as it was; called, it does not run and gives
the model an error that says the tool was removed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from agents import Agent, FunctionTool, Handoff

from timestep.durable import engine, store



def _stored() -> set[str]:
    """The digests of the definitions this launch stored in its database."""
    return engine.runtime.current().cache("definitions.stored", set)


@dataclasses.dataclass
class AgentChange:
    """The agent a run continues under differs from the one it started with."""

    agent: str
    previous: str
    current: str
    changes: list[str]
    policy: str


def describe(agent: Agent) -> dict[str, Any]:
    """The parts of `agent` that a run's history depends on, as JSON data."""
    return _describe(agent, set())


def _describe(agent: Agent, seen: set[int]) -> dict[str, Any]:
    seen = seen | {id(agent)}
    tools: dict[str, Any] = {}
    for tool in agent.tools:
        if isinstance(tool, FunctionTool):
            approval = tool.needs_approval if isinstance(tool.needs_approval, bool) else "callable"
            tools[tool.name] = {
                "kind": "function",
                "description": tool.description,
                "parameters": tool.params_json_schema,
                "strict": tool.strict_json_schema,
                "needs_approval": approval,
            }
        else:
            tools[getattr(tool, "name", type(tool).__name__)] = {"kind": type(tool).__name__}
    handoffs: dict[str, Any] = {}
    for handoff in agent.handoffs:
        if isinstance(handoff, Agent):
            handoffs[handoff.name] = digest(_describe(handoff, seen)) if id(handoff) not in seen else "(cycle)"
        elif isinstance(handoff, Handoff):
            handoffs[handoff.tool_name] = {"agent": handoff.agent_name, "parameters": handoff.input_json_schema}
    return {
        "name": agent.name,
        "instructions": _text_of(agent.instructions),
        "model": _model_name(agent.model),
        "tools": tools,
        "handoffs": handoffs,
    }


def _text_of(instructions: Any) -> Any:
    if instructions is None or isinstance(instructions, str):
        return instructions
    return f"<function {getattr(instructions, '__qualname__', type(instructions).__name__)}>"


def _model_name(model: Any) -> str | None:
    if model is None or isinstance(model, str):
        return model
    inner = getattr(model, "inner", model)  # a durable wrapper names what it wraps
    name = getattr(inner, "model", None)
    return f"{type(inner).__name__}:{name}" if isinstance(name, str) else type(inner).__name__


def digest(definition: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(definition, sort_keys=True, default=str).encode()).hexdigest()[:32]


async def remember_async(definition: dict[str, Any]) -> str:
    """`remember` from the event loop: no trip to a thread when this process stored it already
    (every run after an agent's first)."""
    key = digest(definition)
    if key in _stored():
        return key
    return await engine.blocking(remember, definition)


async def compare_async(agent: Agent, started: str | None, policy: Callable[[], str]) -> tuple[AgentChange | None, Agent]:
    """`compare` from the event loop: no trip to a thread when the agent is as the run started
    and this process stored its definition already (the usual case)."""
    if started is None:
        return None, agent
    if digest(describe(agent)) == started and started in _stored():
        return None, agent
    return await engine.blocking(compare, agent, started, policy)


def remember(definition: dict[str, Any]) -> str:
    """Store `definition` (once per digest and process) and return its digest. Blocking."""
    key = digest(definition)
    if key in _stored():
        return key
    row = {"digest": key, "definition": json.dumps(definition, sort_keys=True, default=str), "created_at": time.time()}
    with store.get_engine().begin() as conn:
        store.upsert(conn, store.agent_definitions, [row], update=False)
    _stored().add(key)
    return key


def load(key: str) -> dict[str, Any] | None:
    """The stored definition of digest `key`. Blocking."""
    table = store.agent_definitions
    with store.get_engine().connect() as conn:
        text = conn.execute(sa.select(table.c.definition).where(table.c.digest == key)).scalar()
    return json.loads(text) if text is not None else None


def differences(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """What changed from `old` to `new`, in words, one item per change."""
    if old is None:
        return ["the definition the run started under is not in this database"]
    found = []
    for part in ("name", "instructions", "model"):
        if old.get(part) != new.get(part):
            found.append(f"{part} changed" if part == "instructions" else f"{part} {old.get(part)!r} -> {new.get(part)!r}")
    for kind, plural in (("tool", "tools"), ("handoff", "handoffs")):
        before, after = old.get(plural) or {}, new.get(plural) or {}
        for name in sorted(before.keys() - after.keys()):
            found.append(f"{kind} {name!r} removed")
        for name in sorted(after.keys() - before.keys()):
            found.append(f"{kind} {name!r} added")
        for name in sorted(before.keys() & after.keys()):
            if before[name] == after[name]:
                continue
            if kind == "tool" and isinstance(before[name], dict) and isinstance(after[name], dict):
                what = [k for k in ("parameters", "description", "needs_approval", "strict", "kind") if before[name].get(k) != after[name].get(k)]
                found.append(f"tool {name!r} {', '.join(what)} changed")
            else:
                found.append(f"{kind} {name!r} changed")
    return found or ["the definition changed"]


def compare(agent: Agent, started: str | None, policy: Callable[[], str]) -> tuple[AgentChange | None, Agent]:
    """(the change since the run started, or None; the agent to run it with). Blocking. `policy`
    gives the agent's change policy (asked only when it changed).

    The agent keeps stand-ins for the function tools it lost, so the run's history replays."""
    if started is None:
        return None, agent
    live = describe(agent)
    current = remember(live)
    if current == started:
        return None, agent
    old = load(started)
    change = AgentChange(agent=agent.name, previous=started, current=current, changes=differences(old, live), policy=policy())
    lost = {name: spec for name, spec in ((old or {}).get("tools") or {}).items() if name not in live["tools"] and spec.get("kind") == "function"}
    if not lost:
        return change, agent
    return change, agent.clone(tools=[*agent.tools, *(_stand_in(agent.name, name, spec) for name, spec in lost.items())])


def _stand_in(agent_name: str, name: str, spec: dict[str, Any]) -> FunctionTool:
    message = (
        f"error: tool {name!r} no longer exists in agent {agent_name!r} (it was removed after this run started); "
        "it did not run"
    )

    async def removed(_ctx: Any, _arguments: str) -> str:
        return message

    return FunctionTool(
        name=name,
        description=spec.get("description") or "",
        params_json_schema=spec.get("parameters") or {"type": "object", "properties": {}},
        on_invoke_tool=removed,
        strict_json_schema=bool(spec.get("strict", True)),
        # A predicate cannot be stored: the call waits for approval again, as a careful default.
        needs_approval=spec.get("needs_approval") is not False,
    )
