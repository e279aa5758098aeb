"""The process's DBOS: configured once, launched once, shut down for tests and clean exits."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from dbos import DBOS

from timestep.durable.engine import hooks, logs, runtime
from timestep.durable.engine.serializer import SERIALIZER
from timestep.errors import ConfigurationError, ValidationError
from timestep.settings import Settings
from timestep.settings import current as current_settings

log = logging.getLogger("timestep.durable.engine")
logs.install()

_NAME = re.compile(r"^[a-z0-9_-]{3,256}$")
_lock = threading.RLock()
_after_launch: list[Callable[[], None]] = []
_every_launch: list[Callable[[], None]] = []


def database_url(explicit: str | None = None, settings: Settings | None = None) -> str:
    """The system database: `explicit`, else PG_CONNECTION_URI, else SQLite in TIMESTEP_HOME."""
    if explicit:
        return explicit
    settings = settings or current_settings()
    if settings.database_url:
        return settings.database_url
    settings.home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{settings.home / 'timestep.sqlite'}"


def configure(name: str = "timestep", system_database_url: str | None = None) -> dict[str, Any]:
    """Create the process's DBOS instance (idempotent). Returns the config in force."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValidationError("name", f"{name!r} is not a valid application name", "use 3-256 characters of a-z, 0-9, '_' and '-'")
    if system_database_url is not None and not re.match(r"^(sqlite|postgres|postgresql)(\+\w+)?://", system_database_url):
        raise ValidationError(
            "system_database_url",
            f"{redact(system_database_url)!r} is neither a sqlite:/// nor a postgresql:// URL",
            "pass e.g. 'sqlite:////abs/path/timestep.sqlite' or 'postgresql://user:pass@host:5432/db'",
        )
    settings = current_settings()
    config: dict[str, Any] = {
        "name": name,
        "system_database_url": database_url(system_database_url, settings),
        "application_version": settings.application_version,
        "executor_id": settings.executor_id,
        "max_executor_threads": settings.max_threads,
        "sys_db_pool_size": settings.db_pools[0],
        "scheduler_polling_interval_sec": 1.0,
        "log_level": settings.log_level,
        "serializer": SERIALIZER,
    }
    with _lock:
        current = runtime.current()
        if current.config is not None:
            if current.config == config:
                return current.config
            if current.launched:
                raise ConfigurationError(
                    f"Timestep is already launched on {redact(current.config['system_database_url'])} as {current.config['name']!r}; "
                    "call configure_dbos() with other settings only before ensure_dbos_launched()"
                )
            DBOS.destroy(destroy_registry=False)
            runtime.replace()
            current = runtime.current()
        DBOS(config=config)  # type: ignore[arg-type]
        current.config = config
        return config


def launch() -> None:
    """Launch DBOS once (idempotent). Inside a running event loop, recovered async
    workflows run on that loop. Hooks queued with `after_launch` run right after."""
    with _lock:
        current = runtime.current()
        if current.launched:
            return
        if current.config is None:
            configure()
        hooks.check()
        settings = current_settings()
        if settings.sqlite_wal and is_sqlite():
            use_write_ahead_log(current.config["system_database_url"])
        hooks.poll_internal_queue_fast(settings.queue_poll_seconds)
        hooks.wake_queues_on_enqueue()
        DBOS.launch()
        hooks.cache_version_check()
        hooks.claim_under_the_policy_just_read()
        hooks.prepare_step_statements()
        if in_event_loop():
            hooks.point_loop_at_dbos_pool()
        current.launched = True
        waiting = [*_every_launch, *_after_launch]
        _after_launch.clear()
    _run_off_loop(waiting)


def sqlite_path(url: str) -> str | None:
    """The file of a sqlite:/// URL (None for an in-memory database)."""
    path = url.split("://", 1)[1].split("?", 1)[0]
    path = path[1:] if path.startswith("/") else path
    return None if path in ("", ":memory:") else path


def use_write_ahead_log(url: str) -> None:
    """Put the SQLite database in write-ahead-log mode (stored in the file, so every process
    opening it uses it). Readers, such as every queue poller, then no longer block the one
    writer, and a commit appends to one file instead of creating, syncing and deleting a
    rollback journal. Durability is the same: `synchronous` stays FULL, so a committed step
    survives a process crash and a power cut."""
    import sqlite3

    path = sqlite_path(url)
    if path is None:
        return
    connection = sqlite3.connect(path, timeout=30, isolation_level=None)
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                if connection.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                    if mode.lower() != "wal":
                        log.warning("SQLite kept journal mode %s for %s (write-ahead log refused)", mode, path)
                return
            except sqlite3.OperationalError as error:
                # Processes starting together on a new file each ask for the change; SQLite answers "database is
                # locked" at once (no busy wait: waiting could deadlock) to all but one. Ask again: it is done.
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    finally:
        connection.close()


def is_launched() -> bool:
    return runtime.current().launched


def after_launch(hook: Callable[[], None]) -> None:
    """Run `hook` right after `launch()` (used for queues and schedules set up before launch)."""
    with _lock:
        if not runtime.current().launched:
            _after_launch.append(hook)
            return
    _run_off_loop([hook])


def on_every_launch(hook: Callable[[], None]) -> None:
    """Run `hook` after this process's launch, now if it is launched, and after every later launch
    (a process may shut down and launch again)."""
    with _lock:
        _every_launch.append(hook)
        launched = runtime.current().launched
    if launched:
        _run_off_loop([hook])


def _run_off_loop(hooks: list[Callable[[], None]]) -> None:
    """DBOS's blocking calls refuse to run on an event loop's thread; run them on another."""
    if not hooks:
        return
    if not in_event_loop():
        for hook in hooks:
            hook()
        return
    errors: list[BaseException] = []

    def run_all() -> None:
        try:
            for hook in hooks:
                hook()
        except BaseException as exc:  # re-raised on the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=run_all, name="timestep-launch")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def shutdown() -> None:
    """Stop DBOS (tests and clean exits) and drop this launch's runtime: the next launch, on this
    database or another, starts with none of its caches. Registered workflows stay registered."""
    with _lock:
        if runtime.current().config is not None:
            DBOS.destroy(destroy_registry=False)
            _fresh_default_executor()
        runtime.replace().launched = False


def _fresh_default_executor() -> None:
    """DBOS makes the running loop's default executor a front for its own thread pool, which
    destroy() shuts down: give the loop a working one again, or every later `asyncio.to_thread`
    in it fails ("cannot schedule new futures after shutdown")."""
    if in_event_loop():
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(thread_name_prefix="asyncio"))


def current_config() -> dict[str, Any] | None:
    return runtime.current().config


def is_sqlite() -> bool:
    config = runtime.current().config
    return config is not None and config["system_database_url"].startswith("sqlite")


def in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        return False


def redact(url: str) -> str:
    """A database URL with its password hidden."""
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)
