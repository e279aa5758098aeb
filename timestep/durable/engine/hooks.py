"""Every private DBOS name Timestep relies on, and every change it makes to DBOS at run time.

DBOS 3.4's public API lacks a few things Timestep needs (`upstream.md` in this folder asks for
them): a wake-up when a run is enqueued, a status read that a workflow does not record as a step,
a claim under the queue policy just read, a way to take nothing from the internal queue. Each is
reached here, and nowhere else, through a private DBOS name. `check()` runs before launch and
names each one that the installed DBOS no longer has, so a DBOS upgrade that moves one fails at
start-up with a sentence, not later with an AttributeError in a queue thread or a run.

>>> check()  # raises ConfigurationError naming what is missing, for the installed DBOS version
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import math
import re
import threading
import time
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import sqlalchemy as sa
from dbos import DBOS

from timestep.durable.engine import runtime
from timestep.errors import ConfigurationError

log = logging.getLogger("timestep.durable.engine")

#: The DBOS release these hooks were written and measured against.
TESTED_DBOS = "3.4"

#: (module, attribute path, what Timestep uses it for): each is looked up by `check()`. An
#: attribute DBOS sets in a constructor is found in the constructor's source.
REQUIRED: tuple[tuple[str, str, str], ...] = (
    ("dbos._dbos", "_get_dbos_instance", "the process's DBOS instance"),
    ("dbos._dbos", "DBOS._sys_db", "the system database DBOS opened"),
    ("dbos._dbos", "DBOS._registry", "the internal queue"),
    ("dbos._dbos", "DBOSRegistry.get_internal_queue", "recovered runs, and a governor that takes none of them"),
    ("dbos._dbos", "DBOS._configure_asyncio_thread_pool", "the event loop's executor after a relaunch"),
    ("dbos._dbos", "DBOS.background_thread_stop_events", "stopping the queue and recovery threads on SIGTERM"),
    ("dbos._dbos", "DBOS._recover_pending_workflows", "taking over the runs of an agent worker no longer started"),
    ("dbos._queue", "queue_worker_thread", "waking a queue's worker when this process enqueues"),
    ("dbos._queue", "Queue._refresh_fields", "claiming queued runs under the policy just read"),
    ("dbos._queue", "Queue.database_backed_queue", "claiming queued runs under the policy just read"),
    ("dbos._queue", "Queue._polling_interval_sec", "polling the internal queue fast while recovered runs arrive"),
    ("dbos._queue", "Queue._worker_concurrency", "a governor that takes no recovered run"),
    ("dbos._sys_db", "queue_from_db_row", "claiming queued runs under the policy just read"),
    ("dbos._sys_db", "SystemDatabase.start_queued_workflows", "claiming queued runs under the policy just read"),
    ("dbos._sys_db", "SystemDatabase.get_queue", "claiming queued runs under the policy just read"),
    ("dbos._sys_db", "SystemDatabase._global", "reading a queue's row"),
    ("dbos._sys_db", "SystemDatabase.tables", "skipping the poll of an empty queue"),
    ("dbos._sys_db", "SystemDatabase.engine", "skipping the poll of an empty queue"),
    ("dbos._sys_db", "SystemDatabase._is_latest_version", "caching the application-version check of each poll"),
    ("dbos._sys_db", "SystemDatabase.cancel_workflows", "cancelling a run from a blocking call"),
    ("dbos._workflow_commands", "get_workflow", "a run's status read that is never recorded as a step"),
    ("dbos._utils", "retriable_postgres_exception", "waiting out a PostgreSQL outage inside a run"),
    ("dbos._utils", "retriable_sqlite_exception", "waiting out a busy SQLite file inside a run"),
    ("dbos._context", "get_local_dbos_context", "naming the run in a failed run's one log line"),
)

#: (module, words, what Timestep's log filter does with them): DBOS's log lines that Timestep
#: shortens. When the words change, the lines come out as DBOS writes them: `check()` warns.
WORDING: tuple[tuple[str, str, str], ...] = (
    ("dbos._core", "Exception encountered in", "a failed run's traceback becomes one line"),
    ("dbos._core", "was cancelled during execution", "a cancelled run's warning is dropped"),
    ("dbos._outcome", "Asyncio task cancelled for workflow or step", "a stop's per-run notices are dropped"),
)


def missing() -> list[str]:
    """The REQUIRED names the installed DBOS lacks, each with what it is for."""
    gone = []
    for module, path, why in REQUIRED:
        try:
            found: Any = importlib.import_module(module)
            for part in path.split("."):
                found = _attribute(found, part)
        except (ImportError, AttributeError, OSError, TypeError):
            gone.append(f"{module}.{path} ({why})")
    return gone


def _attribute(owner: Any, name: str) -> Any:
    """`owner.name`, or, for an attribute a class sets on its instances, the class itself."""
    try:
        return getattr(owner, name)
    except AttributeError:
        if isinstance(owner, type) and re.search(rf"\bself\.{name}\s*[:=]", inspect.getsource(owner.__init__)):
            return owner
        raise


def reworded() -> list[str]:
    """The WORDING the installed DBOS no longer logs."""
    changed = []
    for module, words, why in WORDING:
        try:
            source = inspect.getsource(importlib.import_module(module))
        except (ImportError, OSError, TypeError):
            source = ""
        if words not in source:
            changed.append(f"{module}: {words!r} ({why})")
    return changed


def check() -> None:
    """Raise ConfigurationError naming every hook the installed DBOS no longer has."""
    for changed in reworded():
        log.warning("DBOS %s logs other words than Timestep's log filter knows; its lines come out unshortened: %s", version("dbos"), changed)
    gone = missing()
    if not gone:
        return
    installed = version("dbos")
    raise ConfigurationError(
        f"DBOS {installed} lacks what Timestep relies on (written for DBOS {TESTED_DBOS}): " + "; ".join(gone)
        + f". Install DBOS {TESTED_DBOS} (pip install 'dbos~={TESTED_DBOS}.0'), or a Timestep release that supports DBOS {installed}"
    )


def dbos_instance() -> Any:
    from dbos._dbos import _get_dbos_instance

    return _get_dbos_instance()


def system_database() -> Any:
    return dbos_instance()._sys_db


def internal_queue() -> Any:
    """DBOS's internal queue: where a recovered or resumed run waits for a worker."""
    return dbos_instance()._registry.get_internal_queue()


def take_nothing_from_the_internal_queue() -> None:
    """A worker concurrency of 0 makes this process's poller take nothing from DBOS's internal queue."""
    internal_queue()._worker_concurrency = 0


def read_status(workflow_id: str) -> Any:
    """A workflow's status row, blocking, or None. DBOS's public status calls made inside a
    workflow are recorded as its steps; this one never is."""
    from dbos._workflow_commands import get_workflow

    return get_workflow(system_database(), workflow_id, load_input=False, load_output=False)


def cancel_now(workflow_id: str) -> None:
    """Cancel a workflow, blocking: it stops at its next step boundary."""
    system_database().cancel_workflows([workflow_id])


def executors_with_pending_runs(app_version: str) -> list[str]:
    """The executor ids that hold PENDING workflows of this application version (blocking)."""
    sys_db = system_database()
    ws = sys_db.tables.workflow_status
    query = sa.select(ws.c.executor_id).where(ws.c.status == "PENDING", ws.c.application_version == app_version).distinct()
    with sys_db.engine.connect() as conn:
        return [row[0] for row in conn.execute(query) if row[0]]


def recover_runs_of(executor_id: str) -> int:
    """Put the PENDING workflows of a dead executor back on their queues (DBOS's recovery: the
    first process to dequeue one becomes its executor); returns how many (blocking)."""
    return len(DBOS._recover_pending_workflows([executor_id]))


def stop_background_threads() -> None:
    """Stop DBOS's queue, scheduler and recovery threads: nothing new starts in this process."""
    for event in dbos_instance().background_thread_stop_events:
        event.set()


def context_workflow_id() -> str | None:
    """The workflow of the calling thread's DBOS context, if any (for a log line)."""
    from dbos._context import get_local_dbos_context

    context = get_local_dbos_context()
    return context.workflow_id if context is not None else None


def transient(exc: Exception, sqlite: bool) -> bool:
    """DBOS's own rule for which database errors to wait out (a lost or refused connection,
    a server starting up or short of resources, a busy SQLite file)."""
    from dbos._utils import retriable_postgres_exception, retriable_sqlite_exception

    if isinstance(exc, sa.exc.TimeoutError):  # no pooled connection came free
        return True
    return retriable_postgres_exception(exc) or (sqlite and retriable_sqlite_exception(exc))


# --- queues: polls that start at once, cost little when idle, and claim under a fresh policy ---

RECOVERY_WINDOW_SECONDS = 30.0
#: DBOS's own polling interval, which the internal queue returns to after the window.
DBOS_POLL_SECONDS = 1.0
#: How long the answer to "is this process's application version the newest?" is kept.
VERSION_CHECK_SECONDS = 1.0
_relax_timer: threading.Timer | None = None


def poll_internal_queue_fast(poll_seconds: float) -> None:
    """Runs recovered at launch wait on DBOS's internal queue (see listen_to_no_queues):
    poll it as often as Timestep's own queues while they arrive, then, when only an
    administrator's resume can put a run there, at DBOS's 1 s again. Each poll of an empty
    queue costs about 1 ms of CPU; an idle process should not spend it 20 times a second."""
    global _relax_timer
    queue = internal_queue()
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
#: While no run waits on a queue anywhere, its checks come less and less often, doubling from the queue's
#: polling interval up to this: an idle process spends about a fifth of the CPU (measured: 4.2% of a core
#: idle with every check at 0.05 s). An enqueue in this process still wakes its queue at once; a run
#: another process enqueued after a quiet spell waits at most this long before this one looks.
IDLE_POLL_SECONDS = 0.5
#: Longest single wait of a queue worker, so that DBOS's stop is seen at once, as before.
_WAIT_SLICE_SECONDS = 0.1


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
        one indexed read instead of DBOS's poll of an empty queue (see `_queued_anywhere`), made
        less often while the queue stays empty (IDLE_POLL_SECONDS)."""
        pause = timeout
        while True:
            stopped = self._wait_for_poll(pause)
            if stopped or _queued_anywhere(self._queue, self._stored_policy):
                return stopped
            if pause is not None:
                pause = min(max(pause * 2, WAKE_GAP_SECONDS), max(timeout, IDLE_POLL_SECONDS))

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


def _policies_read() -> dict[str, Any]:
    """Each queue's stored policy as the check before this process's next poll of it read it (see
    `claim_under_the_policy_just_read`)."""
    return runtime.current().cache("hooks.policies_read", dict)


def _queued_reads() -> dict[str, Any]:
    """The two statements of `_queued_anywhere`, per queue, built for this launch's tables."""
    return runtime.current().cache("hooks.queued_reads", dict)


def _queued_anywhere(queue: str, stored_policy: bool = False) -> bool:
    """Whether a run waits on `queue` (an ENQUEUED workflow of it, from any process). DBOS's poll
    of an empty queue is a transaction of a dozen statements built anew (about 1 ms of CPU, with
    the GIL, 20 times a second per queue); this is one indexed read. With nothing enqueued the
    poll could start nothing, so skipping it changes nothing but its cost. Any doubt (an error, a
    sharded database) says yes, and DBOS's own poll runs and reports what is wrong. With
    `stored_policy` (a queue of DBOS's queues table), a yes also reads the queue's row, on the same
    connection, for the claim that follows."""
    policies_read = _policies_read()
    policies_read.pop(queue, None)
    try:
        sys_db = system_database()
        if getattr(sys_db, "sharded", False):
            return True
        reads = _queued_reads().get(queue)
        if reads is None:
            ws, queues = sys_db.tables.workflow_status, sys_db.tables.queues
            reads = (
                sa.select(sa.literal(1)).select_from(ws).where(ws.c.queue_name == queue, ws.c.status == "ENQUEUED").limit(1),
                sa.select(queues).where(*sys_db._global(queues), queues.c.name == queue),
            )
            _queued_reads()[queue] = reads
        with sys_db.engine.connect() as conn:
            if conn.execute(reads[0]).first() is None:
                return False
            if stored_policy:
                row = conn.execute(reads[1]).first()
                if row is not None:
                    from dbos._sys_db import queue_from_db_row

                    policies_read[queue] = queue_from_db_row(row)
        return True
    except Exception:
        return True


def claim_under_the_policy_just_read() -> None:
    """DBOS's worker reads its queue's policy at the top of its loop, then pauses until the next
    poll, then claims runs under the policy it read. While the queue is empty the pause lasts
    (see `_Waker.wait`), so that read could be minutes old when a burst ended it: a limit set
    meanwhile was ignored (five of six runs started at once under a new limit of two a minute,
    the first stamped as not rate-limited, so it never counted in the window). Each claim now
    uses the policy read with the check that found the runs, an instant before; a claim no such
    check preceded reads the queue's row itself. The limit a user sets is the next run's."""
    sys_db = system_database()
    claim = sys_db.start_queued_workflows
    if getattr(claim, "timestep_fresh_policy", False):
        return

    def start_queued_workflows(queue: Any, *args: Any, **kwargs: Any) -> Any:
        if queue.database_backed_queue:
            latest = _policies_read().pop(queue.name, None)
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


def wake_queues_on_enqueue() -> None:
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
        wakers = runtime.current().wakers
        wakers[queue.name] = waker
        try:
            original(waker, dbos, queue)
        finally:
            if wakers.get(queue.name) is waker:
                del wakers[queue.name]

    queue_worker_thread.timestep_waker = True  # type: ignore[attr-defined]
    _queue.queue_worker_thread = queue_worker_thread


def wake_queue(queue: str) -> None:
    """Bring the next poll of `queue` in this process forward (no-op where it is not polled)."""
    waker = runtime.current().wakers.get(queue)
    if waker is not None:
        waker.wake()


def cache_version_check() -> None:
    """DBOS asks, in every poll of every queue, whether this process runs the newest
    application version: a query that is half the CPU of polling an empty queue. The answer
    changes only when a newer version registers (a deploy), so keep it for a second: for
    that second after a deploy, an old-version process may still start version-less runs."""
    sys_db = system_database()
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



def point_loop_at_dbos_pool() -> None:
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


# --- steps: DBOS's step check and step record as statements compiled once ---

#: The DBOS code `prepare_step_statements` stands in for, by a digest of its source: any change to it
#: (a DBOS release) leaves DBOS's own code in place, with a log line.
STEP_SOURCES: tuple[str, ...] = (
    "check_operation_execution", "_check_operation_execution_txn", "record_operation_result",
    "_record_operation_result_txn", "_check_owner_txn", "_wf", "_wf_values", "_child_values", "_key_column",
    "_key_conflict", "_now_ms_sql", "_own_key",
)
STEP_SOURCES_DIGEST = "70d13b37205c73de7903d7659139631b1a4146c76f8d862db60fcee25f9fdaf0"
#: The methods of the launched system database that `prepare_step_statements` replaces.
STEP_METHODS = ("check_operation_execution", "record_operation_result")


@functools.cache
def _step_sources_digest(cls: type) -> str:
    """Read once per process: a class's source does not change while it runs."""
    import hashlib

    digest = hashlib.sha256()
    for name in STEP_SOURCES:
        digest.update(inspect.getsource(getattr(cls, name)).encode())
    return digest.hexdigest()


class _Prepared:
    """One statement compiled once for the system database's dialect and schema, run with
    `exec_driver_sql`, as DBOS 3.4's own `_execute_prepared` runs its workflow-level statements on
    PostgreSQL: the SQL is SQLAlchemy's compilation, each value goes through its type's bind processor,
    the statement's own constants are kept with it. The connection, transaction, pool and error
    wrapping are SQLAlchemy's as before; only building, cache-keying and compiling per call are gone."""

    def __init__(self, sys_db: Any, statement: Any) -> None:
        dialect = sys_db.engine.dialect
        translate = sys_db.engine.get_execution_options().get("schema_translate_map")
        compiled = statement.compile(dialect=dialect, schema_translate_map=translate, render_schema_translate=True)
        self.sql = str(compiled)
        self.positional = bool(compiled.positional)
        names = compiled.bind_names  # each bind parameter -> its name in the SQL
        self.order: list[str] = list(compiled.positiontup) if self.positional else list(dict.fromkeys(names.values()))
        self.processors: dict[str, Callable[[Any], Any]] = {}
        self.constants: dict[str, Any] = {}
        for bind, name in names.items():
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                self.processors[name] = processor
            if not bind.required:
                self.constants[name] = bind.value

    def execute(self, conn: Any, values: dict[str, Any]) -> Any:
        processors = self.processors
        merged = {**self.constants, **values} if self.constants else values
        if self.positional:
            params: Any = tuple(processors[n](merged[n]) if n in processors else merged[n] for n in self.order)
        else:
            params = {n: processors[n](merged[n]) if n in processors else merged[n] for n in self.order}
        return conn.exec_driver_sql(self.sql, params)


def _step_statements(sys_db: Any) -> dict[str, _Prepared]:
    """DBOS 3.4's statements of `_check_operation_execution_txn`, `_check_owner_txn` and
    `_record_operation_result_txn` on an unsharded database, with bind parameters for their values."""
    ws, oo = sys_db.tables.workflow_status, sys_db.tables.operation_outputs

    def bind(table: Any, column: str) -> Any:
        return sa.bindparam(column, type_=table.c[column].type, required=True)

    if sys_db._is_sqlite:
        # A write, so pysqlite opens BEGIN IMMEDIATE here; a SELECT would run in autocommit.
        owner = sa.update(ws).where(ws.c.workflow_uuid == bind(ws, "workflow_uuid")).values(owner_xid=ws.c.owner_xid).returning(ws.c.owner_xid)
    else:
        owner = sa.select(ws.c.owner_xid).where(ws.c.workflow_uuid == bind(ws, "workflow_uuid")).with_for_update(key_share=True)
    columns = (
        "workflow_uuid", "function_id", "function_name", "started_at_epoch_ms", "completed_at_epoch_ms", "output", "error",
        "child_workflow_id", "serialization", "application_name",
    )
    record = (
        sys_db.dialect.insert(oo)
        .values(**{c: bind(oo, c) for c in columns}, retention_timestamp=sys_db._now_ms_sql())
        .on_conflict_do_update(
            index_elements=sys_db._key_conflict("workflow_uuid", "function_id"),
            set_={"completed_at_epoch_ms": oo.c.completed_at_epoch_ms},
        )
        .returning(oo.c.completed_at_epoch_ms)
    )
    return {
        "status": _Prepared(sys_db, sa.select(ws.c.status).where(ws.c.workflow_uuid == bind(ws, "workflow_uuid"))),
        "output": _Prepared(sys_db, sa.select(oo.c.output, oo.c.error, oo.c.function_name, oo.c.child_workflow_id, oo.c.serialization).where(
            oo.c.workflow_uuid == bind(oo, "workflow_uuid"), oo.c.function_id == bind(oo, "function_id"),
        )),
        "owner": _Prepared(sys_db, owner),
        "record": _Prepared(sys_db, record),
    }


def _why_steps_stay_unprepared(sys_db: Any) -> str | None:
    from dbos._sys_db import SystemDatabase

    if not version("dbos").startswith(TESTED_DBOS + "."):
        return f"written for DBOS {TESTED_DBOS}"
    if getattr(sys_db, "sharded", False) or getattr(sys_db, "_is_cockroach", False):
        return "a sharded or CockroachDB system database"
    cls = type(sys_db)
    overridden = [n for n in STEP_SOURCES if getattr(cls, n) is not getattr(SystemDatabase, n)]
    if overridden:
        return f"{cls.__name__} overrides {', '.join(overridden)}"
    if _step_sources_digest(SystemDatabase) != STEP_SOURCES_DIGEST:
        return "DBOS's step check or step record differs from the code these statements copy"
    return None


def prepare_step_statements() -> None:
    """DBOS checks, before each step, for the step's recorded outcome (two SELECTs in a transaction),
    and records it after (the owner check and an INSERT ... ON CONFLICT ... RETURNING, committed before
    the next step starts). Their SQL is the same on every call, yet DBOS builds the four statements
    anew each time and has SQLAlchemy compute their cache keys before it finds them compiled: measured
    on DBOS 3.4, a third to two thirds of these calls' CPU. Here the same statements, compiled once, run in
    the same transactions, with DBOS's own retry, ownership, cancellation and nondeterminism checks, so
    what each step writes and when it commits are unchanged. Anything else than the DBOS code they copy
    (another release, a sharded database, a subclass that overrides it) keeps DBOS's own, with a log line."""
    sys_db = system_database()
    if vars(sys_db).keys() & set(STEP_METHODS):
        return  # in place already
    try:
        why = _why_steps_stay_unprepared(sys_db)
        statements = _step_statements(sys_db) if why is None else {}
        from dbos._context import current_owner_xid
        from dbos._debug_trigger import DebugTriggers
        from dbos._error import (
            DBOSStepNondeterminismError,
            DBOSUnexpectedStepError,
            DBOSWorkflowCancelledError,
            DBOSWorkflowConflictIDError,
        )
        from dbos._sys_db import WorkflowStatusString, db_retry
    except Exception as exc:  # a name gone, a column renamed: DBOS's own code stays
        why = f"{type(exc).__name__}: {exc}"
    if why is not None:
        log.info("DBOS %s builds its step statements on every call, as without Timestep (%s)", version("dbos"), why)
        return
    status_sql, output_sql, owner_sql, record_sql = (statements[k] for k in ("status", "output", "owner", "record"))
    cancelled = WorkflowStatusString.CANCELLED.value
    step_commit = DebugTriggers.DEBUG_TRIGGER_STEP_COMMIT

    @db_retry(sys_db=sys_db)
    def check_operation_execution(workflow_id: str, function_id: int, function_name: str, *, owner_key: str | None = None) -> Any:
        with sys_db._own_key(workflow_id, key=owner_key), sys_db.engine.begin() as c:
            status_rows = status_sql.execute(c, {"workflow_uuid": workflow_id}).all()
            output_rows = output_sql.execute(c, {"workflow_uuid": workflow_id, "function_id": function_id}).all()
            assert len(status_rows) > 0, f"Error: Workflow {workflow_id} does not exist"
            if status_rows[0][0] == cancelled:
                raise DBOSWorkflowCancelledError(f"Workflow {workflow_id} is cancelled. Aborting function.")
            if not output_rows:
                return None
            output, error, recorded_name, child_workflow_id, serialization = output_rows[0][:5]
            if function_name != recorded_name:
                raise DBOSUnexpectedStepError(
                    workflow_id=workflow_id, step_id=function_id, expected_name=function_name, recorded_name=recorded_name,
                )
            return {"output": output, "error": error, "serialization": serialization, "child_workflow_id": child_workflow_id, "child_shard_key": None}

    def record_once(result: Any, completed_at: int, owner_xid: str | None, owner_key: str | None) -> None:
        workflow_id = result["workflow_uuid"]
        with sys_db._own_key(workflow_id, key=owner_key), sys_db.engine.begin() as c:
            error, output = result["error"], result["output"]
            assert error is None or output is None, "Only one of error or output can be set"
            if owner_xid is None:
                owner_xid = current_owner_xid(workflow_id)
            if owner_xid is not None and owner_sql.execute(c, {"workflow_uuid": workflow_id}).scalar() != owner_xid:
                raise DBOSWorkflowConflictIDError(workflow_id)
            try:
                rows = record_sql.execute(c, {
                    "workflow_uuid": workflow_id, "function_id": result["function_id"], "function_name": result["function_name"],
                    "started_at_epoch_ms": result["started_at_epoch_ms"], "completed_at_epoch_ms": completed_at,
                    "output": output, "error": error, "child_workflow_id": result["child_workflow_id"],
                    "serialization": result["serialization"], "application_name": sys_db.app_name,
                }).fetchall()
                if rows and (rows[0][0] is None or int(rows[0][0]) != completed_at):
                    raise DBOSStepNondeterminismError(workflow_id, result["function_id"])
            except sa.exc.DBAPIError as dbapi_error:
                if sys_db._is_unique_constraint_violation(dbapi_error):
                    raise DBOSStepNondeterminismError(workflow_id, result["function_id"])
                raise
        DebugTriggers.debug_trigger_point(step_commit)

    record_with_retry = db_retry(sys_db=sys_db)(record_once)

    def record_operation_result(
        result: Any, *, completed_at_epoch_ms: int | None = None, owner_xid: str | None = None, owner_key: str | None = None,
    ) -> None:
        completed_at = completed_at_epoch_ms if completed_at_epoch_ms is not None else int(time.time() * 1000)
        record_with_retry(result, completed_at, owner_xid, owner_key)

    sys_db.check_operation_execution = check_operation_execution
    sys_db.record_operation_result = record_operation_result
