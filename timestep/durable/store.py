"""Timestep's own tables, in the same database as DBOS: conversation items, saved run states,
queue policies, token usage, cron schedules, approvals, the turns of each session's runs and the
agent definitions runs started under.

SQLAlchemy Core (already a DBOS dependency) keeps one code path for SQLite and
PostgreSQL. Calls are blocking and short; async callers go through `to_thread`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

import sqlalchemy as sa

from timestep.durable import engine as dbos_engine
from timestep.settings import current as current_settings

T = TypeVar("T")

metadata = sa.MetaData()

session_items = sa.Table(
    "timestep_session_items",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("session_id", sa.String(255), nullable=False, index=True),
    sa.Column("item", sa.Text, nullable=False),
)

run_states = sa.Table(
    "timestep_run_states",
    metadata,
    sa.Column("key", sa.String(300), primary_key=True),
    sa.Column("agent", sa.String(255), nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

queue_policies = sa.Table(
    "timestep_queue_policies",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("limit", sa.Integer, nullable=True),
    sa.Column("period", sa.Float, nullable=True),
    sa.Column("concurrency", sa.Integer, nullable=True),
    sa.Column("tokens_per_period", sa.Integer, nullable=True),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("max_tokens_per_run", sa.Integer, nullable=True),
    sa.Column("model_retry", sa.Text, nullable=True),  # JSON of a ModelRetry
)

queue_pauses = sa.Table(
    "timestep_queue_pauses",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("until", sa.Float, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
)

token_usage = sa.Table(
    "timestep_token_usage",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("queue", sa.String(128), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("tokens", sa.Integer, nullable=False),
    sa.Index("ix_timestep_token_usage_queue_at", "queue", "at"),
)

# The one table of cron schedules, the library's and the bus's (named for the bus, where it began).
schedules = sa.Table(
    "timestep_bus_schedules",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("cron", sa.String(200), nullable=False),
    sa.Column("request", sa.Text, nullable=False),  # JSON of the RunRequest each tick runs
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("origin", sa.String(16), nullable=True),  # "library" (ticks started in process), else the bus's
    sa.Column("session_recipe", sa.Text, nullable=True),  # JSON: how the library's session object is made again
    sa.Column("last_fired_at", sa.Float, nullable=True),
)

approvals = sa.Table(
    "timestep_approvals",
    metadata,
    sa.Column("run_id", sa.String(128), primary_key=True),
    sa.Column("call_id", sa.String(255), primary_key=True),
    sa.Column("agent", sa.String(255), nullable=False),
    sa.Column("tool", sa.String(255), nullable=False),
    sa.Column("arguments", sa.Text, nullable=False),
    sa.Column("session_id", sa.String(255), nullable=True),
    sa.Column("queue", sa.String(128), nullable=True),
    sa.Column("metadata", sa.Text, nullable=True),
    sa.Column("requested_at", sa.Float, nullable=False),
    sa.Column("deadline", sa.Float, nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("decided_at", sa.Float, nullable=True),
    sa.Column("decided_by", sa.String(255), nullable=True),
    sa.Column("message", sa.Text, nullable=True),
    sa.Column("always", sa.Boolean, nullable=False, default=False),
    sa.Column("approved_arguments", sa.Text, nullable=True),
    sa.Index("ix_timestep_approvals_status_requested", "status", "requested_at"),
)

session_turns = sa.Table(
    "timestep_session_turns",
    metadata,
    # The order of arrival: ids are handed out one session at a time (see `turns.join`).
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("session_id", sa.String(255), nullable=False, index=True),
    sa.Column("run_id", sa.String(128), nullable=False, unique=True),
    sa.Column("state", sa.String(16), nullable=False),  # "running", or "interrupted" (a library run that returned for approval)
    sa.Column("created_at", sa.Float, nullable=False),
)

agent_definitions = sa.Table(
    "timestep_agent_definitions",
    metadata,
    sa.Column("digest", sa.String(64), primary_key=True),
    sa.Column("definition", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

_engines: dict[str, sa.Engine] = {}
_lock = threading.Lock()


def _sqlalchemy_url(url: str) -> str:
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def get_engine() -> sa.Engine:
    """The engine for the database DBOS uses (or will use), tables created on first use."""
    config = dbos_engine.current_config()
    url = config["system_database_url"] if config else dbos_engine.database_url()
    with _lock:
        existing = _engines.get(url)
        if existing is not None:
            return existing
        if url.startswith("sqlite"):
            engine = sa.create_engine(url, connect_args={"timeout": 30})
        else:
            # Its share of TIMESTEP_DB_POOL_SIZE (DBOS has the rest), never more: its calls are short.
            size = current_settings().db_pools[1]
            engine = sa.create_engine(_sqlalchemy_url(url), pool_pre_ping=True, pool_size=size, max_overflow=0)
        _create_tables(engine)
        _engines[url] = engine
        return engine


def _create_tables(engine: sa.Engine, attempts: int = 20) -> None:
    """Create Timestep's tables if missing. Several processes starting together race to
    create them; the loser's error ("already exists") clears on the next attempt."""
    for attempt in range(attempts):
        try:
            metadata.create_all(engine)
            _add_new_columns(engine)
            return
        except sa.exc.SQLAlchemyError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


def _add_new_columns(engine: sa.Engine) -> None:
    """Columns added to a table after a database was made (all nullable) are added to it."""
    inspector = sa.inspect(engine)
    for table in metadata.sorted_tables:
        have = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in have:
                kind = column.type.compile(engine.dialect)
                with engine.begin() as conn:
                    conn.execute(sa.text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'))


def upsert(conn: sa.Connection, table: sa.Table, rows: list[dict], *, update: bool = True) -> None:
    """Insert `rows`; a row whose primary key exists is overwritten (`update`) or left as is.
    One statement, so processes writing the same key at once never fail on the unique key."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    statement = insert(table)
    keys = [c.name for c in table.primary_key.columns]
    if update:
        changed = {c.name: statement.excluded[c.name] for c in table.columns if c.name not in keys}
        statement = statement.on_conflict_do_update(index_elements=keys, set_=changed)
    else:
        statement = statement.on_conflict_do_nothing(index_elements=keys)
    conn.execute(statement, rows)


async def run(fn: Callable[[sa.Engine], T]) -> T:
    """Run a short blocking database function off the event loop."""
    return await dbos_engine.blocking(lambda: fn(get_engine()))


def dispose() -> None:
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
