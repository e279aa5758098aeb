"""Conversation memory: Timestep's database session (a `session_id` string is all a run needs), and
the caller's own SDK session objects, made again in a process that recovers their run."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from agents import OpenAIConversationsSession, SQLiteSession

from timestep.durable import registry, store
from timestep.errors import ConfigurationError, ValidationError


class DatabaseSession:
    """An Agents SDK session stored in the same database as DBOS (SQLite or PostgreSQL).

    >>> session = DatabaseSession("user-42")
    >>> await run_agent_workflow(agent, "Hello", session)  # or simply session="user-42"
    """

    session_settings = None

    def __init__(self, session_id: str) -> None:
        if not isinstance(session_id, str) or not session_id:
            raise ValidationError("session_id", f"{session_id!r} is not a non-empty string", "pass a string such as 'user-42'")
        self.session_id = session_id

    async def get_items(self, limit: int | None = None) -> list[Any]:
        table = store.session_items

        def read(engine: sa.Engine) -> list[Any]:
            query = sa.select(table.c.item).where(table.c.session_id == self.session_id)
            if limit is None:
                query = query.order_by(table.c.id)
            else:
                query = query.order_by(table.c.id.desc()).limit(limit)
            with engine.connect() as conn:
                rows = [json.loads(r[0]) for r in conn.execute(query)]
            return rows if limit is None else rows[::-1]

        return await store.run(read)

    async def add_items(self, items: list[Any]) -> None:
        if not items:
            return
        rows = [{"session_id": self.session_id, "item": json.dumps(item, default=_jsonable)} for item in items]

        def write(engine: sa.Engine) -> None:
            with engine.begin() as conn:
                conn.execute(sa.insert(store.session_items), rows)

        await store.run(write)

    async def pop_item(self) -> Any:
        table = store.session_items

        def pop(engine: sa.Engine) -> Any:
            with engine.begin() as conn:
                row = conn.execute(
                    sa.select(table.c.id, table.c.item)
                    .where(table.c.session_id == self.session_id)
                    .order_by(table.c.id.desc())
                    .limit(1)
                ).first()
                if row is None:
                    return None
                conn.execute(sa.delete(table).where(table.c.id == row[0]))
                return json.loads(row[1])

        return await store.run(pop)

    async def clear_session(self) -> None:
        def clear(engine: sa.Engine) -> None:
            with engine.begin() as conn:
                conn.execute(sa.delete(store.session_items).where(store.session_items.c.session_id == self.session_id))

        await store.run(clear)


def _jsonable(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(exclude_unset=True)
    return str(value)


# --- the caller's own session objects, made again in a process that recovers the run ------------

_factories: dict[str, Callable[[str], Any]] = {}
_lock = threading.Lock()


def _kind(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register_session_factory(kind: type, factory: Callable[[str], Any]) -> None:
    """How a process makes a session of class `kind` again from its session id, to go on with a run
    that was given one (a run recovered after a crash, in this process or another). Register it at
    start-up, beside the agents, in every process that may recover such runs.

    >>> register_session_factory(RedisSession, lambda session_id: RedisSession.from_url(session_id, url=REDIS_URL))
    """
    if not isinstance(kind, type):
        raise ValidationError("kind", f"{kind!r} is not a class", "pass the session's class, e.g. SQLiteSession")
    if not callable(factory):
        raise ValidationError("factory", f"{factory!r} is not callable", "pass a function of the session id that returns the session")
    with _lock:
        _factories[_kind(kind)] = factory


def _factory_for(cls: type) -> tuple[str, Callable[[str], Any]] | None:
    with _lock:
        for base in cls.__mro__:
            factory = _factories.get(_kind(base))
            if factory is not None:
                return _kind(base), factory
    return None


async def session_id_of(session: Any) -> Any:
    """The session's id; a session that makes its id on first use (OpenAIConversationsSession()
    creates its conversation then) is asked for its items once, as its docs say, to make it."""
    try:
        return getattr(session, "session_id", None)
    except ValueError:
        await session.get_items(limit=1)
        return getattr(session, "session_id", None)


def recipe(session: Any, agent: str) -> dict[str, Any] | None:
    """What a run stores to make `session` again in a process that recovers it: None for Timestep's
    own database session; ValidationError (naming `session`) for a session nothing can make again,
    saying how to register a way."""
    if isinstance(session, DatabaseSession):
        return None
    cls = type(session)
    found = _factory_for(cls)
    if found is not None:
        return {"kind": found[0]}
    if isinstance(session, SQLiteSession):
        if str(session.db_path) == ":memory:":
            raise ValidationError(
                "session", "is an SQLiteSession in memory: a process that recovers the run after a crash cannot find its items",
                "pass SQLiteSession(session_id, 'conversations.db') (a file), or the session id string for Timestep's database session",
            )
        return {
            "kind": "sqlite", "db_path": str(Path(session.db_path).resolve()),
            "sessions_table": session.sessions_table, "messages_table": session.messages_table,
        }
    if isinstance(session, OpenAIConversationsSession):
        return {"kind": "openai_conversations"}
    if registry.agent_session_factory(agent) is not None:
        return {"kind": "agent"}
    name = cls.__name__
    raise ValidationError(
        "session", f"is a {name}, which a process that recovers the run after a crash cannot make again",
        f"register how at start-up: timestep.register_session_factory({name}, lambda session_id: {name}(session_id, ...)), "
        "or register_agent(agent, session_factory=...), or pass the session id string for Timestep's database session",
    )


def make(session_id: str, agent: str, how: dict[str, Any] | None) -> Any:
    """The session a run with `session_id` uses where the caller's own object is not at hand: as
    `recipe` said to make it, else the agent's registered factory, else Timestep's database session.
    ConfigurationError when this process lacks the factory the run's session needs."""
    kind = (how or {}).get("kind")
    if kind is None:
        factory = registry.agent_session_factory(agent)
        return factory(session_id) if factory is not None else DatabaseSession(session_id)
    if kind == "sqlite":
        return SQLiteSession(session_id, how["db_path"], sessions_table=how["sessions_table"], messages_table=how["messages_table"])
    if kind == "openai_conversations":
        return OpenAIConversationsSession(conversation_id=session_id)
    if kind == "agent":
        factory = registry.agent_session_factory(agent)
        where = f"register_agent(agent, session_factory=...) for agent {agent!r}"
    else:
        with _lock:
            factory = _factories.get(kind)
        where = f"timestep.register_session_factory({kind.rsplit('.', 1)[-1]}, ...)"
    if factory is None:
        raise ConfigurationError(
            f"session {session_id!r} is a {kind.rsplit('.', 1)[-1] if kind != 'agent' else 'session of the agent'}, and this "
            f"process has no way to make it again: call {where} at start-up, before ensure_dbos_launched()"
        )
    return factory(session_id)
