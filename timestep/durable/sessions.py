"""Conversation memory in Timestep's database: a `session_id` string is all a run needs."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from timestep.durable import store


class DatabaseSession:
    """An Agents SDK session stored in the same database as DBOS (SQLite or PostgreSQL).

    >>> session = DatabaseSession("user-42")
    >>> await run_agent_workflow(agent, "Hello", session)  # or simply session="user-42"
    """

    session_settings = None

    def __init__(self, session_id: str) -> None:
        if not isinstance(session_id, str) or not session_id:
            from timestep.errors import ValidationError

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
