"""Saved run states: where an interrupted run waits for its approvals."""

from __future__ import annotations

import json
import time

import sqlalchemy as sa
from agents import Agent, RunState

from timestep.durable import store
from timestep.errors import ValidationError


def state_keys(session_id: str | None, workflow_id: str | None) -> list[str]:
    keys = []
    if workflow_id:
        keys.append(f"workflow:{workflow_id}")
    if session_id:
        keys.append(f"session:{session_id}")
    return keys


class RunStateStore:
    """Save, load and clear an agent run's `RunState`, keyed by session or workflow, in DBOS's database.

    A run interrupted for approval saves its state here by itself, under its
    workflow id and (when it has one) its session id:

    >>> state = await RunStateStore(agent=agent, session_id="user-42").load()
    >>> for item in state.get_interruptions():
    ...     state.approve(item)
    >>> result = await run_agent_workflow(agent, state, "user-42")
    """

    def __init__(self, agent: Agent, session_id: str | None = None, workflow_id: str | None = None) -> None:
        if not isinstance(agent, Agent):
            raise ValidationError("agent", f"expected an agents.Agent, got {type(agent).__name__}", "pass the agent the state belongs to")
        if session_id is None and workflow_id is None:
            raise ValidationError("session_id", "neither session_id nor workflow_id was given", "pass one of them to say which state to use")
        for field, value in (("session_id", session_id), ("workflow_id", workflow_id)):
            if value is not None and (not isinstance(value, str) or not value):
                raise ValidationError(field, f"{value!r} is not a non-empty string", f"pass {field} as a string")
        self.agent = agent
        self.session_id = session_id
        self.workflow_id = workflow_id
        self._keys = state_keys(session_id, workflow_id)

    async def save(self, state: RunState) -> None:
        """Store `state` (replacing what was saved under the same keys)."""
        await save_serialized(self._keys, self.agent.name, state.to_string())

    async def load(self) -> RunState | None:
        """The saved state, ready to approve or reject and resume; None when nothing is saved."""
        table = store.run_states
        keys = self._keys

        def read(engine: sa.Engine) -> str | None:
            with engine.connect() as conn:
                rows = dict(conn.execute(sa.select(table.c.key, table.c.state).where(table.c.key.in_(keys))).all())
            return next((rows[k] for k in keys if k in rows), None)

        serialized = await store.run(read)
        if serialized is None:
            return None
        serialized, definition = split_definition(serialized)
        state = await RunState.from_string(self.agent, serialized)
        if definition:
            # The resume (`run_agent_workflow(agent, state)`) compares it with the agent it finds.
            state._timestep_definition = definition  # type: ignore[attr-defined]
        return state

    async def clear(self) -> None:
        """Forget the saved state. With a session, the session's turn that the interrupted run
        kept (see `session_policy`) is given up too: the session's waiting runs see it at their
        next look (within a minute)."""
        await clear_keys(self._keys)
        if self.session_id is not None:
            await store.run(lambda _: give_up_held_turn(self.session_id))


#: The key under which a saved state keeps the digest of the agent definition its run started under.
DEFINITION_KEY = "timestep_definition"


def with_definition(serialized: str, definition: str | None) -> str:
    """`serialized` (a RunState's JSON) with the digest of its run's agent definition in it."""
    if not definition:
        return serialized
    data = json.loads(serialized)
    data[DEFINITION_KEY] = definition
    return json.dumps(data)


def split_definition(serialized: str) -> tuple[str, str | None]:
    data = json.loads(serialized)
    definition = data.pop(DEFINITION_KEY, None) if isinstance(data, dict) else None
    return (json.dumps(data) if definition is not None else serialized), definition


def definition_of(state: RunState) -> str | None:
    """The digest a loaded state carries (see `RunStateStore.load`)."""
    return getattr(state, "_timestep_definition", None)


async def save_serialized(keys: list[str], agent_name: str, serialized: str) -> None:
    table = store.run_states
    now = time.time()

    def write(engine: sa.Engine) -> None:
        with engine.begin() as conn:
            store.upsert(conn, table, [{"key": k, "agent": agent_name, "state": serialized, "updated_at": now} for k in keys])

    await store.run(write)


async def clear_keys(keys: list[str]) -> None:
    await store.run(lambda _: clear_keys_now(keys))


def give_up_held_turn(session_id: str) -> None:
    """Drop the session turn a library run kept while it waits for approval (see `turns`)."""
    table = store.session_turns
    with store.get_engine().begin() as conn:
        conn.execute(sa.delete(table).where(table.c.session_id == session_id, table.c.state == "interrupted"))


def clear_keys_now(keys: list[str]) -> None:
    """`clear_keys`, blocking."""
    table = store.run_states
    with store.get_engine().begin() as conn:
        conn.execute(sa.delete(table).where(table.c.key.in_(keys)))
