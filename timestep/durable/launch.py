"""configure_dbos() and ensure_dbos_launched(): idempotent, in any order, with or without a running event loop."""

from __future__ import annotations

import logging
from collections.abc import Generator
from typing import Any

from timestep.durable import engine
from timestep.durable import models, runs
from timestep.settings import Settings


class _Done:
    """An already-finished awaitable, so `ensure_dbos_launched()` works with or without `await`."""

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield


def configure_dbos(name: str = "timestep", system_database_url: str | None = None, *, openai_api: str | None = None) -> dict[str, Any]:
    """Choose the database and application name (idempotent; before launch you may change them).

    Database: `system_database_url`, else PG_CONNECTION_URI, else SQLite at
    $TIMESTEP_HOME/timestep.sqlite (default ./.timestep/). The application
    version (TIMESTEP_APP_VERSION) and executor id (TIMESTEP_EXECUTOR_ID) are
    pinned so a restarted process recovers its in-flight runs.

    `openai_api="chat_completions"` calls model names (strings) through the Chat Completions API,
    which Ollama, vLLM and LM Studio speak (the same as TIMESTEP_OPENAI_API; default "responses").

    >>> configure_dbos(system_database_url="postgresql://postgres@127.0.0.1:5432/test")
    """
    logging.getLogger("timestep").setLevel(Settings.from_env().log_level)
    if openai_api is not None:
        models.use_openai_api(openai_api)  # checked first: a bad value changes nothing
    return engine.configure(name=name, system_database_url=system_database_url)


def ensure_dbos_launched() -> _Done:
    """Launch DBOS once and recover this executor's unfinished runs. Register agents first.

    Works called plainly or awaited, inside or outside an event loop:

    >>> register_agent(agent)
    >>> await ensure_dbos_launched()
    """
    runs.ensure_dbos_launched()  # importing runs declared every workflow, so recovery finds them
    return _Done()
