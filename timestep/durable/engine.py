"""The one place Timestep talks to DBOS.

Everything durable goes through these few functions: configure and launch,
declare a workflow, run a step, start / enqueue / look up workflows, queues,
and schedules. The rest of the package never imports `dbos`, so the engine
can be swapped (or stood in for) without touching the runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import random
import re
import sys
import threading
import time
from datetime import datetime, timezone
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from typing import Any, TypeVar

from dbos import DBOS, DBOSClient, SetEnqueueOptions, SetWorkflowID, SetWorkflowTimeout
from dbos import error as dbos_error
import sqlalchemy as sa

from timestep.errors import ConfigurationError, DuplicateRunError, TimestepError, ValidationError
from timestep.settings import Settings

log = logging.getLogger("timestep.durable.engine")

T = TypeVar("T")

#: Raised by `get_result()` of a workflow that was cancelled (by request or timeout).
WorkflowCancelled = (dbos_error.DBOSAwaitedWorkflowCancelledError, dbos_error.DBOSWorkflowCancelledError)
#: Raised inside a workflow when it is cancelled while running; must never be swallowed.
CancelledInside = dbos_error.DBOSWorkflowCancelledError
NonExistentWorkflow = dbos_error.DBOSNonExistentWorkflowError



class _CancellationInOneLine(logging.Filter):
    """DBOS logs a run cancelled by request or by its timeout as an error, with a traceback of
    about 25 lines and a warning before it; a cancel is no error: one line at INFO says it.
    Every other record, errors with their tracebacks included, passes as it is."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, WorkflowCancelled):
            workflow_id = getattr(exc, "workflow_id", None) or getattr(record, "operationUUID", None) or "?"
            record.msg, record.args = "workflow %s was cancelled (by request or by its timeout)", (workflow_id,)
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info, record.exc_text = None, None
        elif record.levelno == logging.WARNING and "was cancelled during execution" in str(record.msg):
            return False  # the line above follows it
        return True


class _FailedRunInOneLine(logging.Filter):
    """DBOS logs every run that ends in an error with its traceback (about 70 lines for a
    provider's 400, at ERROR whatever the level): one line names the run and the error; the
    traceback only when DBOS logs at DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or isinstance(exc, WorkflowCancelled) or not str(record.msg).startswith("Exception encountered in"):
            return True
        from dbos._context import get_local_dbos_context

        context = get_local_dbos_context()
        run_id = getattr(record, "operationUUID", None) or (context.workflow_id if context is not None else None) or "?"
        detail = str(exc).strip() or "(no message)"
        if not detail.startswith(type(exc).__name__):
            detail = f"{type(exc).__name__}: {detail}"
        if isinstance(exc, TimestepError):  # a failure Timestep names itself (a provider's error, a budget, a timeout)
            record.msg, record.args = "run %s failed: %s", (run_id, detail)
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        else:
            record.msg, record.args = "run %s failed: %s (TIMESTEP_LOG_LEVEL=DEBUG logs its traceback)", (run_id, detail)
        if not logging.getLogger("dbos").isEnabledFor(logging.DEBUG):
            record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


logging.getLogger("dbos").addFilter(_CancellationInOneLine())
logging.getLogger("dbos").addFilter(_FailedRunInOneLine())

_NAME = re.compile(r"^[a-z0-9_-]{3,256}$")
_lock = threading.RLock()
_config: dict[str, Any] | None = None
_launched = False
_after_launch: list[Callable[[], None]] = []


def database_url(explicit: str | None = None, settings: Settings | None = None) -> str:
    """The system database: `explicit`, else PG_CONNECTION_URI, else SQLite in TIMESTEP_HOME."""
    if explicit:
        return explicit
    settings = settings or Settings.from_env()
    if settings.database_url:
        return settings.database_url
    settings.home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{settings.home / 'timestep.sqlite'}"


def configure(name: str = "timestep", system_database_url: str | None = None) -> dict[str, Any]:
    """Create the process's DBOS instance (idempotent). Returns the config in force."""
    global _config
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValidationError("name", f"{name!r} is not a valid application name", "use 3-256 characters of a-z, 0-9, '_' and '-'")
    if system_database_url is not None and not re.match(r"^(sqlite|postgres|postgresql)(\+\w+)?://", system_database_url):
        raise ValidationError(
            "system_database_url",
            f"{_redact(system_database_url)!r} is neither a sqlite:/// nor a postgresql:// URL",
            "pass e.g. 'sqlite:////abs/path/timestep.sqlite' or 'postgresql://user:pass@host:5432/db'",
        )
    settings = Settings.from_env()
    config: dict[str, Any] = {
        "name": name,
        "system_database_url": database_url(system_database_url, settings),
        "application_version": settings.application_version,
        "executor_id": settings.executor_id,
        "max_executor_threads": settings.max_threads,
        "sys_db_pool_size": settings.db_pool_size,
        "scheduler_polling_interval_sec": 1.0,
        "log_level": settings.log_level,
    }
    with _lock:
        if _config is not None:
            if _config == config:
                return _config
            if _launched:
                raise ConfigurationError(
                    f"Timestep is already launched on {_redact(_config['system_database_url'])} as {_config['name']!r}; "
                    "call configure_dbos() with other settings only before ensure_dbos_launched()"
                )
            DBOS.destroy(destroy_registry=False)
        DBOS(config=config)  # type: ignore[arg-type]
        _config = config
        return config


def launch() -> None:
    """Launch DBOS once (idempotent). Inside a running event loop, recovered async
    workflows run on that loop. Hooks queued with `after_launch` run right after."""
    global _launched
    with _lock:
        if _launched:
            return
        if _config is None:
            configure()
        settings = Settings.from_env()
        if settings.sqlite_wal and is_sqlite():
            use_write_ahead_log(_config["system_database_url"])
        _poll_internal_queue_fast(settings.queue_poll_seconds)
        _wake_queues_on_enqueue()
        DBOS.launch()
        _cache_version_check()
        _claim_under_the_policy_just_read()
        if in_event_loop():
            _point_loop_at_dbos_pool()
        _launched = True
        hooks = list(_after_launch)
        _after_launch.clear()
    _run_off_loop(hooks)


#: How long after launch DBOS's internal queue is polled every TIMESTEP_QUEUE_POLL_SECONDS.
RECOVERY_WINDOW_SECONDS = 30.0
#: DBOS's own polling interval, which the internal queue returns to after the window.
DBOS_POLL_SECONDS = 1.0
#: How long the answer to "is this process's application version the newest?" is kept.
VERSION_CHECK_SECONDS = 1.0
_relax_timer: threading.Timer | None = None


def _poll_internal_queue_fast(poll_seconds: float) -> None:
    """Runs recovered at launch wait on DBOS's internal queue (see listen_to_no_queues):
    poll it as often as Timestep's own queues while they arrive, then, when only an
    administrator's resume can put a run there, at DBOS's 1 s again. Each poll of an empty
    queue costs about 1 ms of CPU; an idle process should not spend it 20 times a second."""
    global _relax_timer
    queue = _internal_queue()
    queue._polling_interval_sec = poll_seconds

    def relax() -> None:
        queue._polling_interval_sec = max(poll_seconds, DBOS_POLL_SECONDS)

    if _relax_timer is not None:  # a relaunch: its own window starts now
        _relax_timer.cancel()
    _relax_timer = threading.Timer(RECOVERY_WINDOW_SECONDS, relax)
    _relax_timer.daemon = True
    _relax_timer.start()


#: Least time between two polls of one queue that enqueues in this process bring forward.
WAKE_GAP_SECONDS = 0.005
#: Longest single wait of a queue worker, so that DBOS's stop is seen at once, as before.
_WAIT_SLICE_SECONDS = 0.1
_wakers: dict[str, _Waker] = {}


class _Waker:
    """DBOS's stop event as one queue's worker thread sees it. Its `wait(timeout)`, the pause
    between two polls of the queue, also ends when this process has just enqueued to the queue
    (`wake`), so the run is taken at once instead of at the next poll. Wake-ups that come close
    together bring one poll forward, not one each: a burst of enqueues polls at most every
    WAKE_GAP_SECONDS (DBOS's own interval stays the longest pause)."""

    def __init__(self, stop: threading.Event, queue: str = "", stored_policy: bool = False) -> None:
        self._stop = stop
        self._queue = queue
        self._stored_policy = stored_policy
        self._woken = threading.Event()
        self._last_poll = 0.0

    def wake(self) -> None:
        self._woken.set()

    def is_set(self) -> bool:
        return self._stop.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Until the queue's next poll, which is skipped while no run waits on the queue anywhere:
        one indexed read instead of DBOS's poll of an empty queue (see `_queued_anywhere`)."""
        while True:
            stopped = self._wait_for_poll(timeout)
            if stopped or _queued_anywhere(self._queue, self._stored_policy):
                return stopped

    def _wait_for_poll(self, timeout: float | None) -> bool:
        deadline = time.monotonic() + (timeout if timeout is not None else math.inf)
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if self._woken.wait(min(left, _WAIT_SLICE_SECONDS)):
                self._woken.clear()
                early = self._last_poll + WAKE_GAP_SECONDS - time.monotonic()
                if early > 0:
                    self._stop.wait(min(early, left))
                break
        self._hold()
        self._last_poll = time.monotonic()
        return self._stop.is_set()

    def _hold(self) -> None:
        """Poll no further while the queue is held (see `hold_queues_with`)."""
        held = _queue_hold
        while held is not None and not self._stop.is_set():
            try:
                left = held(self._queue)
            except Exception as exc:  # the database is away: DBOS's own poll will say so
                log.debug("queue %s: reading its hold failed: %s", self._queue, exc)
                return
            if left <= 0:
                return
            self._stop.wait(min(left, 1.0))


_queue_hold: Callable[[str], float] | None = None


_queued_reads: dict[str, Any] = {}
#: Each queue's stored policy as the check before this process's next poll of it read it (see
#: `_claim_under_the_policy_just_read`).
_policies_read: dict[str, Any] = {}


def _queued_anywhere(queue: str, stored_policy: bool = False) -> bool:
    """Whether a run waits on `queue` (an ENQUEUED workflow of it, from any process). DBOS's poll
    of an empty queue is a transaction of a dozen statements built anew (about 1 ms of CPU, with
    the GIL, 20 times a second per queue); this is one indexed read. With nothing enqueued the
    poll could start nothing, so skipping it changes nothing but its cost. Any doubt (an error, a
    sharded database) says yes, and DBOS's own poll runs and reports what is wrong. With
    `stored_policy` (a queue of DBOS's queues table), a yes also reads the queue's row, on the same
    connection, for the claim that follows."""
    _policies_read.pop(queue, None)
    try:
        from dbos._dbos import _get_dbos_instance

        sys_db = _get_dbos_instance()._sys_db
        if getattr(sys_db, "sharded", False):
            return True
        reads = _queued_reads.get(queue)
        if reads is None:
            ws, queues = sys_db.tables.workflow_status, sys_db.tables.queues
            reads = (
                sa.select(sa.literal(1)).select_from(ws).where(ws.c.queue_name == queue, ws.c.status == "ENQUEUED").limit(1),
                sa.select(queues).where(*sys_db._global(queues), queues.c.name == queue),
            )
            _queued_reads[queue] = reads
        with sys_db.engine.connect() as conn:
            if conn.execute(reads[0]).first() is None:
                return False
            if stored_policy:
                row = conn.execute(reads[1]).first()
                if row is not None:
                    from dbos._sys_db import queue_from_db_row

                    _policies_read[queue] = queue_from_db_row(row)
        return True
    except Exception:
        return True


def _claim_under_the_policy_just_read() -> None:
    """DBOS's worker reads its queue's policy at the top of its loop, then pauses until the next
    poll, then claims runs under the policy it read. While the queue is empty the pause lasts
    (see `_Waker.wait`), so that read could be minutes old when a burst ended it: a limit set
    meanwhile was ignored (five of six runs started at once under a new limit of two a minute,
    the first stamped as not rate-limited, so it never counted in the window). Each claim now
    uses the policy read with the check that found the runs, an instant before; a claim no such
    check preceded reads the queue's row itself. The limit a user sets is the next run's."""
    from dbos._dbos import _get_dbos_instance

    sys_db = _get_dbos_instance()._sys_db
    claim = sys_db.start_queued_workflows
    if getattr(claim, "timestep_fresh_policy", False):
        return

    def start_queued_workflows(queue: Any, *args: Any, **kwargs: Any) -> Any:
        if queue.database_backed_queue:
            latest = _policies_read.pop(queue.name, None)
            if latest is None:
                latest = sys_db.get_queue(queue.name)
            if latest is not None:
                queue._refresh_fields(latest)
        return claim(queue, *args, **kwargs)

    start_queued_workflows.timestep_fresh_policy = True  # type: ignore[attr-defined]
    sys_db.start_queued_workflows = start_queued_workflows


def hold_queues_with(seconds_left: Callable[[str], float]) -> None:
    """Before each poll of a queue, this process's worker asks `seconds_left(queue)` (blocking)
    and takes no run from the queue while it answers more than 0."""
    global _queue_hold
    _queue_hold = seconds_left


def _wake_queues_on_enqueue() -> None:
    """Give each queue worker thread DBOS starts a `_Waker` for its stop event, so `enqueue`
    in this process can bring the queue's next poll forward (DBOS 3.4 only polls: a queued run
    waited up to TIMESTEP_QUEUE_POLL_SECONDS to start). Relies on DBOS's `queue_thread` looking
    up `queue_worker_thread` when it starts a worker; without that, queues poll as before."""
    from dbos import _queue

    original = _queue.queue_worker_thread
    if getattr(original, "timestep_waker", False):
        return

    def queue_worker_thread(stop_event: threading.Event, dbos: Any, queue: Any) -> None:
        waker = _Waker(stop_event, queue.name, queue.database_backed_queue)
        _wakers[queue.name] = waker
        try:
            original(waker, dbos, queue)
        finally:
            if _wakers.get(queue.name) is waker:
                del _wakers[queue.name]

    queue_worker_thread.timestep_waker = True  # type: ignore[attr-defined]
    _queue.queue_worker_thread = queue_worker_thread


def wake_queue(queue: str) -> None:
    """Bring the next poll of `queue` in this process forward (no-op where it is not polled)."""
    waker = _wakers.get(queue)
    if waker is not None:
        waker.wake()


def _cache_version_check() -> None:
    """DBOS asks, in every poll of every queue, whether this process runs the newest
    application version: a query that is half the CPU of polling an empty queue. The answer
    changes only when a newer version registers (a deploy), so keep it for a second: for
    that second after a deploy, an old-version process may still start version-less runs."""
    from dbos._dbos import _get_dbos_instance

    sys_db = _get_dbos_instance()._sys_db
    ask = sys_db._is_latest_version
    answers: dict[str, tuple[bool, float]] = {}

    def is_latest_version(app_version: str, c: Any = None) -> bool:
        now = time.monotonic()
        known = answers.get(app_version)
        if known is not None and now - known[1] < VERSION_CHECK_SECONDS:
            return known[0]
        answer = ask(app_version, c)
        answers[app_version] = (answer, now)
        return answer

    sys_db._is_latest_version = is_latest_version


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
    try:
        if connection.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                log.warning("SQLite kept journal mode %s for %s (write-ahead log refused)", mode, path)
    finally:
        connection.close()


def _point_loop_at_dbos_pool() -> None:
    """DBOS sets the loop's default executor lazily, on its first async API call, and
    shuts it down on destroy. After a relaunch in the same loop, a scheduled or
    recovered workflow could start before any such call and find the old executor
    shut: set the new one now. (The coroutine has no await; it finishes in one send.)"""
    coro = DBOS._configure_asyncio_thread_pool()
    try:
        coro.send(None)
    except StopIteration:
        return
    coro.close()


def is_launched() -> bool:
    return _launched


def after_launch(hook: Callable[[], None]) -> None:
    """Run `hook` right after `launch()` (used for queues and schedules set up before launch)."""
    with _lock:
        if not _launched:
            _after_launch.append(hook)
            return
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
    """Stop DBOS (tests and clean exits). Registered workflows stay registered."""
    global _config, _launched
    with _lock:
        if _config is not None:
            DBOS.destroy(destroy_registry=False)
            _fresh_default_executor()
        _config = None
        _launched = False


def _fresh_default_executor() -> None:
    """DBOS makes the running loop's default executor a front for its own thread pool, which
    destroy() shuts down: give the loop a working one again, or every later `asyncio.to_thread`
    in it fails ("cannot schedule new futures after shutdown")."""
    if in_event_loop():
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(thread_name_prefix="asyncio"))


def current_config() -> dict[str, Any] | None:
    return _config


def is_sqlite() -> bool:
    return _config is not None and _config["system_database_url"].startswith("sqlite")


def workflow(name: str) -> Callable[[Callable[..., Awaitable[T]]], Callable[..., Awaitable[T]]]:
    """Declare a durable workflow under a stable name (a rename would strand in-flight runs).
    Its executions in this process are known to `stop_workflows`."""

    def declare(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        @functools.wraps(fn)
        async def tracked(*args: Any, **kwargs: Any) -> T:
            task = asyncio.current_task()
            if task is not None:
                _executing.add(task)
            try:
                return await fn(*args, **kwargs)
            finally:
                _executing.discard(task)  # type: ignore[arg-type]

        return DBOS.workflow(name=name)(tracked)

    return declare


async def step(name: str, fn: Callable[[], Awaitable[T]], *, preemptible: bool = False) -> T:
    """Run `fn` as one checkpointed step of the current workflow: on replay its recorded
    result (or exception) comes back and `fn` does not run again."""
    async with busy():
        return await DBOS.run_step_async({"name": name, "preemptible": preemptible}, fn)


async def recv(topic: str, timeout_seconds: float) -> Any:
    """Inside a workflow: wait durably for a message sent to this workflow on `topic` (None on timeout)."""
    await _stop_gate()
    return await DBOS.recv_async(topic, timeout_seconds=timeout_seconds)


# --- graceful stop ---------------------------------------------------------------
#
# A workflow cancelled by asyncio (the process stopping) must record nothing on its way
# out: DBOS records most of its calls made inside a workflow (a status read, a sleep, a
# send) as steps, and a call that a replay would not make again fails the recovered run
# ("function X was recorded when Y was expected"). So a stop lets the steps under way
# finish and be recorded, starts no new one, then cancels the executions: each stops at
# a step boundary, stays PENDING in the database, and resumes in the next process of its
# executor id as after a crash, without re-running anything.

_executing: set[asyncio.Task] = set()
_busy = 0
_idle: asyncio.Event | None = None
_stopping = False
_cut_off = 0


def stopping() -> bool:
    """True while this process stops its workflows (see `stop_workflows`)."""
    return _stopping


class busy:
    """Marks durable work under way (a step, a run's last event) that a stop waits for."""

    async def __aenter__(self) -> None:
        global _busy
        await _stop_gate()
        _busy += 1

    async def __aexit__(self, *exc: object) -> None:
        global _busy
        _busy -= 1
        if _busy == 0 and _idle is not None:
            _idle.set()


async def _stop_gate() -> None:
    """While stopping, durable work that has not begun waits here until it is cancelled."""
    if _stopping:
        await asyncio.get_running_loop().create_future()


async def stop_workflows(grace_seconds: float) -> int:
    """Stop every workflow executing in this process at a step boundary; returns how many.

    Steps under way get `grace_seconds` to finish (one still running then is cut off and
    runs again on recovery, as after a crash; see `steps_cut_off`); no new step starts. DBOS's
    queue, schedule and recovery threads stop first, so nothing new starts here meanwhile. Runs
    stay PENDING and resume when a process with this executor id launches."""
    global _stopping, _idle, _cut_off
    _stopping = True
    _cut_off = 0
    try:
        _stop_background_threads()
        if _busy:
            _idle = asyncio.Event()
            began = time.monotonic()
            try:
                await asyncio.wait_for(_idle.wait(), grace_seconds)
            except asyncio.TimeoutError:
                pass
            finally:
                _idle = None
            if _busy:  # the grace ran out, or a second signal hurried the stop
                _cut_off = _busy
                log.warning(
                    "stop: %d step(s) still under way after %.1f s are cut off; they run again on recovery",
                    _busy, time.monotonic() - began,
                )
        tasks = [t for t in _executing if not t.done()]
        with _quiet_cancellation():
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        _give_up_outage_waits()
        if tasks:
            log.warning("stopped %d run(s) at a step boundary; they resume when this executor id starts again", len(tasks))
        return len(tasks)
    finally:
        _stopping = False


def steps_cut_off() -> int:
    """How many steps under way the last `stop_workflows` cut off. A step's coroutine is cancelled,
    but a thread cannot be: a plain `def` tool (the Agents SDK runs it in a thread) goes on until
    it returns, unrecorded, and the interpreter waits for it at exit; it runs again on recovery all
    the same. A process that exits after the stop should then exit without waiting (`os._exit`)."""
    return _cut_off


def hurry_stop() -> None:
    """Stop now: the steps under way are cut off (and run again on recovery)."""
    if _idle is not None:
        _idle.set()


def _stop_background_threads() -> None:
    if not _launched:
        return
    from dbos._dbos import _get_dbos_instance

    for event in _get_dbos_instance().background_thread_stop_events:
        event.set()


class _DropCancelNotices(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Asyncio task cancelled for workflow or step")


@contextlib.contextmanager
def _quiet_cancellation() -> Iterator[None]:
    """DBOS logs a warning per cancelled workflow and step; a stop says it once itself."""
    dbos_log = logging.getLogger("dbos")
    quiet = _DropCancelNotices()
    dbos_log.addFilter(quiet)
    try:
        yield
    finally:
        dbos_log.removeFilter(quiet)


async def send(workflow_id: str, message: Any, topic: str, idempotency_key: str | None = None) -> None:
    """Send `message` to workflow `workflow_id` (it need not be running in this process).
    The same `idempotency_key` twice sends once."""
    await DBOS.send_async(workflow_id, message, topic, idempotency_key=idempotency_key)


async def sleep(seconds: float) -> None:
    """Inside a workflow: a durable sleep (a recovered run sleeps only what is left)."""
    await _stop_gate()
    await DBOS.sleep_async(seconds)


def _internal_queue() -> Any:
    from dbos._dbos import _get_dbos_instance

    return _get_dbos_instance()._registry.get_internal_queue()


def listen_to_no_queues() -> None:
    """Before launch: this process starts no queued workflows (a governor).

    Not even from DBOS's internal queue, which DBOS always polls: DBOS 3.4 recovers a
    restarted process's runs by putting them there, where any process may take them,
    and a governor would execute them without an agent actor's event sink or capacity.
    A worker concurrency of 0 makes this process's poller take nothing from it."""
    DBOS.listen_queues([])
    _internal_queue()._worker_concurrency = 0


def current_step_id() -> int | None:
    """Inside a step: its number in the workflow (the same on every execution)."""
    return DBOS.step_id


def current_workflow_id() -> str:
    workflow_id = DBOS.workflow_id
    if workflow_id is None:
        raise RuntimeError("not inside a Timestep workflow")
    return workflow_id


#: Set while `start` starts a workflow: the task DBOS creates for it copies this context, so
#: the workflow knows it begins fresh (a recovered, resumed or queued one does not know).
_starting: ContextVar[bool] = ContextVar("timestep_starting", default=False)


def first_execution() -> bool:
    """Inside a workflow: True when `start` began it just now in this process (no earlier
    execution of it can exist: an id used before does not execute again)."""
    return _starting.get()


async def start(fn: Callable[..., Awaitable[T]], arg: Any, *, workflow_id: str, timeout_seconds: float | None) -> Any:
    """Start `fn(arg)` as workflow `workflow_id`; an id used before returns the first run's handle."""
    token = _starting.set(True)
    try:
        with SetWorkflowID(workflow_id), SetWorkflowTimeout(timeout_seconds):
            return await DBOS.start_workflow_async(fn, arg)
    finally:
        _starting.reset(token)


async def enqueue(
    queue: str,
    fn: Callable[..., Awaitable[T]],
    arg: Any,
    *,
    workflow_id: str,
    priority: int,
    deduplication_id: str | None,
    return_existing: bool,
    timeout_seconds: float | None,
    wake: bool = True,
) -> Any:
    """Put `fn(arg)` on `queue`; with `wake`, this process polls the queue at once (see `_Waker`)."""
    options = SetEnqueueOptions(
        priority=priority,
        deduplication_id=deduplication_id,
        duplication_policy="return-existing" if return_existing else "reject",
    )
    try:
        with SetWorkflowID(workflow_id), SetWorkflowTimeout(timeout_seconds), options:
            handle = await DBOS.enqueue_workflow_async(queue, fn, arg)
    except dbos_error.DBOSQueueDeduplicatedError:
        raise DuplicateRunError(deduplication_id or "", queue) from None
    if wake:
        wake_queue(queue)
    return handle


async def retrieve(workflow_id: str) -> Any:
    return await DBOS.retrieve_workflow_async(workflow_id)


async def status(workflow_id: str) -> Any:
    """The workflow's status row, or None when there is no such workflow. Never recorded as a
    step, even when called from workflow code: DBOS's own status calls are, and one that a
    replay would not make again fails the recovered run."""
    from dbos._dbos import _get_dbos_instance
    from dbos._workflow_commands import get_workflow

    sys_db = _get_dbos_instance()._sys_db
    return await blocking(get_workflow, sys_db, workflow_id, load_input=False, load_output=False)


async def cancel(workflow_id: str) -> None:
    await DBOS.cancel_workflow_async(workflow_id)


# Blocking forms for code that runs on a thread of `blocking` (no workflow context): nothing they
# do is recorded as a step of the run that calls them, so they may be part of one step's work.


def status_now(workflow_id: str) -> Any:
    """`status`, blocking."""
    from dbos._dbos import _get_dbos_instance
    from dbos._workflow_commands import get_workflow

    return get_workflow(_get_dbos_instance()._sys_db, workflow_id, load_input=False, load_output=False)


def cancel_now(workflow_id: str) -> None:
    """Cancel a workflow, blocking: it stops at its next step boundary."""
    from dbos._dbos import _get_dbos_instance

    _get_dbos_instance()._sys_db.cancel_workflows([workflow_id])


def send_now(workflow_id: str, message: Any, topic: str, idempotency_key: str | None = None) -> None:
    """`send`, blocking."""
    DBOS.send(workflow_id, message, topic, idempotency_key=idempotency_key)


async def resume(workflow_id: str) -> Any:
    handle = await DBOS.resume_workflow_async(workflow_id)
    wake_queue(_internal_queue().name)  # a resumed run waits on DBOS's internal queue
    return handle


async def list_workflows(**filters: Any) -> list[Any]:
    return await DBOS.list_workflows_async(**filters)


async def list_steps(workflow_id: str) -> list[Any]:
    return await DBOS.list_workflow_steps_async(workflow_id)


class Admin:
    """Look at and steer workflows from outside: no launch, so nothing is recovered or started
    here (a command-line tool must not take over a running process's runs)."""

    def __init__(self, system_database_url: str | None = None, name: str = "timestep") -> None:
        self.client = DBOSClient(system_database_url=database_url(system_database_url), application_name=name)

    async def list_workflows(self, **filters: Any) -> list[Any]:
        return await self.client.list_workflows_async(**filters)

    async def status(self, workflow_id: str) -> Any:
        try:
            return await (await self.client.retrieve_workflow_async(workflow_id)).get_status()
        except NonExistentWorkflow:
            return None

    async def steps(self, workflow_id: str) -> list[Any]:
        return await self.client.list_workflow_steps_async(workflow_id)

    async def cancel(self, workflow_id: str) -> None:
        await self.client.cancel_workflow_async(workflow_id)

    async def resume(self, workflow_id: str) -> None:
        await self.client.resume_workflow_async(workflow_id)

    def close(self) -> None:
        self.client.destroy()


# --- queues -------------------------------------------------------------------


def limiter_period(period: float) -> float:
    """The period to hand DBOS so that no rolling window of `period` seconds starts more than `limit`.

    On SQLite before Python 3.12, DBOS reads the database clock in whole seconds
    (`strftime('%s')`) both when it stamps a start and when it counts the window,
    so a window of `period` seconds could hold up to twice the limit. Counting
    over ceil(period) seconds plus a hair covers every start that a true rolling
    window of `period` seconds contains, at the cost of admitting a little less.
    """
    if is_sqlite() and sys.version_info < (3, 12):
        return math.ceil(period) + 0.01
    return period


def register_queue(
    name: str, *, limit: int | None, period: float | None, concurrency: int | None, poll_seconds: float, replace: bool
) -> None:
    """Create queue `name`, or (with `replace`) change its policy. Blocking: call off the event loop."""
    limiter = {"limit": limit, "period": limiter_period(period)} if limit is not None and period is not None else None
    DBOS.register_queue(
        name,
        global_concurrency=concurrency,
        limiter=limiter,  # type: ignore[arg-type]
        polling_interval_sec=poll_seconds,
        on_conflict="always_update" if replace else "never_update",
    )


async def queue_counts(name: str, period: float) -> tuple[int, int, int]:
    """(waiting, running, started in the last `period` seconds) of queue `name`."""
    light = {"queue_name": name, "load_input": False, "load_output": False}
    waiting = await DBOS.list_workflows_async(status="ENQUEUED", **light)
    running = await DBOS.list_workflows_async(status="PENDING", **light)
    since = datetime.fromtimestamp(time.time() - period, timezone.utc).isoformat()
    started = await DBOS.list_workflows_async(dequeued_after=since, **light)
    return len(waiting), len(running), len(started)


def queue_policy(name: str) -> Any:
    """The stored policy of queue `name`, or None."""
    return DBOS.retrieve_queue(name)


def delete_queue(name: str) -> None:
    """Delete queue `name`'s row in DBOS: each process's worker of it stops at its next poll. Blocking."""
    DBOS.delete_queue(name)


# --- schedules ----------------------------------------------------------------


def apply_schedule(name: str, fn: Callable[..., Any], cron: str, context: Any) -> None:
    DBOS.apply_schedules([{"schedule_name": name, "workflow_fn": fn, "schedule": cron, "context": context}])


def list_schedules(workflow_name: str) -> list[Any]:
    return list(DBOS.list_schedules(workflow_name=workflow_name))


def delete_schedule(name: str) -> None:
    DBOS.delete_schedule(name)


def _redact(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


_io_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="timestep-io")


async def blocking(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a short blocking call (database I/O, DBOS's blocking API) off the event loop.

    Timestep keeps its own small pool: DBOS swaps the loop's default executor and
    shuts it down on destroy, which would break `asyncio.to_thread` after a relaunch.
    Unlike `asyncio.to_thread`, the call does not carry the caller's context, so DBOS never
    takes it for part of a workflow (and never records it as a step).

    Called from inside a run, the call waits out a database outage (see `_OutageWaits`).
    """
    call = functools.partial(fn, *args, **kwargs)
    loop = asyncio.get_running_loop()
    if DBOS.workflow_id is None:
        return await loop.run_in_executor(_io_pool, call)
    waits = _outage_waits
    attempt = 0
    while True:
        try:
            return await loop.run_in_executor(_io_pool, call)
        except Exception as exc:
            if not _transient(exc) or waits.over:
                raise
            attempt += 1
            wait = min(0.25 * 2 ** min(attempt, 7), 15.0) * (0.5 + random.random())
            text = str(exc).strip()
            reason = text.splitlines()[0][:300] if text else type(exc).__name__
            log.warning("the database is unavailable (%s); the run waits and tries again in %.1f s (attempt %d)", reason, wait, attempt)
            if await waits.pause(wait):
                raise


class _OutageWaits:
    """A run's own database calls (a queue's pause or token budget, sessions, turns, approvals,
    definitions) are tried again while the database is unreachable, as DBOS tries its own: an
    outage pauses the run instead of failing it. Before, a run whose pause check met the outage
    failed without a `failed` event (test_database_outage_under_load caught it, 1 run in 100).

    The run waits on the event loop between attempts, not in a thread of the pool: eight runs
    sleeping there took every thread, and every other database call of the process waited for the
    outage to end. A stop gives up on the waits once it has cut off the runs (`end`)."""

    def __init__(self) -> None:
        self.over = False
        self._sleeping: set[asyncio.Future[None]] = set()

    async def pause(self, seconds: float) -> bool:
        """Sleep `seconds`; True when a stop gave up meanwhile."""
        if self.over:
            return True
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleeping.add(woken)
        try:
            await asyncio.wait([woken], timeout=seconds)
        finally:
            self._sleeping.discard(woken)
        return self.over

    def end(self) -> None:
        self.over = True
        for woken in list(self._sleeping):
            woken.get_loop().call_soon_threadsafe(_wake_future, woken)


def _wake_future(woken: asyncio.Future[None]) -> None:
    if not woken.done():
        woken.set_result(None)


_outage_waits = _OutageWaits()


def _transient(exc: Exception) -> bool:
    """DBOS's own rule for which database errors to wait out (a lost or refused connection,
    a server starting up or short of resources, a busy SQLite file)."""
    from dbos._utils import retriable_postgres_exception, retriable_sqlite_exception

    if isinstance(exc, sa.exc.TimeoutError):  # no pooled connection came free
        return True
    return retriable_postgres_exception(exc) or (is_sqlite() and retriable_sqlite_exception(exc))


def _give_up_outage_waits() -> None:
    global _outage_waits
    stale, _outage_waits = _outage_waits, _OutageWaits()
    stale.end()


def in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        return False
