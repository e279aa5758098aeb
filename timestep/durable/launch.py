"""The process's durable runtime as a process sees it: configure_dbos() and ensure_dbos_launched()
(idempotent, in any order, with or without a running event loop), and what `timestep up` does
around them (a process that takes no queued runs, a graceful stop, a shutdown). Processes use
these, never the engine itself."""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from typing import Any

from timestep.durable import engine
from timestep.settings import Settings
from timestep.settings import current as current_settings

log = logging.getLogger("timestep.durable.launch")


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
    logging.getLogger("timestep").setLevel(current_settings().log_level)
    if openai_api is not None:
        from timestep.durable import models  # the Agents SDK: imported by what runs agents, not by every command

        models.use_openai_api(openai_api)  # checked first: a bad value changes nothing
    return engine.configure(name=name, system_database_url=system_database_url)


def ensure_dbos_launched() -> _Done:
    """Launch DBOS once and recover this executor's unfinished runs. Register agents first.

    Works called plainly or awaited, inside or outside an event loop:

    >>> register_agent(agent)
    >>> await ensure_dbos_launched()
    """
    from timestep.durable import runs

    runs.ensure_dbos_launched()  # importing runs declared every workflow, so recovery finds them
    return _Done()


def is_launched() -> bool:
    return engine.is_launched()


def database_in_use(settings: Settings | None = None) -> str:
    """The system database this process uses (configured), or would use (its settings)."""
    config = engine.current_config()
    return config["system_database_url"] if config else engine.database_url(settings=settings)


def is_configured() -> bool:
    return engine.current_config() is not None


def take_no_queued_runs() -> None:
    """Before launch: this process enqueues but starts no queued run (a governor, a scheduler)."""
    engine.listen_to_no_queues()


async def stop_runs(grace_seconds: float) -> int:
    """Stop every run executing here at a step boundary, the steps under way given `grace_seconds`
    to finish; they resume when this executor id starts again. Returns how many stopped."""
    return await engine.stop_workflows(grace_seconds)


def shutdown() -> None:
    """Stop DBOS in this process (after `stop_runs`). Registered workflows stay registered."""
    engine.shutdown()


def hurry_stop() -> None:
    """During `stop_runs`: stop now; the steps under way are cut off and run again on recovery."""
    engine.hurry_stop()


def steps_cut_off() -> int:
    """How many steps under way the last `stop_runs` cut off (see engine.steps_cut_off)."""
    return engine.steps_cut_off()


async def step_names(run_id: str) -> list[str]:
    """The names of the run's recorded steps, in order."""
    return [s.name for s in await engine.list_steps(run_id)]


async def adopt_runs(executor_ids: Callable[[str], bool]) -> dict[str, int]:
    """After launch: the unfinished runs of each executor id `executor_ids` accepts that no live
    process holds (its lease is free) are recovered by this process's queues; returns how many
    were taken over, by executor id. `timestep up` takes over an agent worker's runs this way when
    `--workers` was lowered, so no run waits for a worker that is never started again."""
    from timestep.ops.lease import ExecutorIdTaken, ExecutorLease

    settings = current_settings()
    adopted: dict[str, int] = {}
    for executor_id in await engine.blocking(engine.executors_with_pending_runs, settings.application_version):
        if executor_id == settings.executor_id or not executor_ids(executor_id):
            continue
        lease = ExecutorLease(executor_id, database_in_use(settings), settings.home)
        try:
            await lease.acquire(wait=False)
        except ExecutorIdTaken:
            continue  # a live process holds it: its runs are its own
        try:
            adopted[executor_id] = await engine.blocking(engine.recover_runs_of, executor_id)
        finally:
            lease.release()
        log.warning("took over %d unfinished run(s) of executor %s, which no process runs now", adopted[executor_id], executor_id)
    return adopted


def admin(system_database_url: str | None = None) -> engine.Admin:
    """Workflows seen and steered from outside, without launching (the `timestep workflows` command)."""
    return engine.Admin(system_database_url)
