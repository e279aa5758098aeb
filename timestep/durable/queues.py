"""Queues that respect LLM rate limits: priority, deduplication, runs per period, concurrency."""

from __future__ import annotations

import math
import threading
import time
from datetime import datetime, timezone

import msgspec
import sqlalchemy as sa

from subjects.ids import NAME_MAX_LENGTH, run_id_problem
from subjects.messages import ModelRetry, QueueStatus
from timestep.durable import engine, store
from timestep.durable.registry import check_model_retry
from timestep.errors import TimestepError, ValidationError
from timestep.settings import current as current_settings

DEFAULT_QUEUE = "default"
DEFAULT_LIMIT = 50
DEFAULT_PERIOD = 60.0
#: Priority given to a run queued without one. DBOS stores "no priority" as 0, which
#: runs before every prioritised run; Timestep puts such runs last instead.
LOWEST_PRIORITY = 2**31 - 1
#: The contract's bounds (subjects.messages: Count, Seconds), which the database's columns hold.
_MOST = 2**31 - 1
_LONGEST_PERIOD = 31_536_000

#: How long this process trusts that a queue it registered still exists. Another process may have
#: deleted it (`delete_queue`), and a run put on a queue that has no row waits for no worker.
KNOWN_SECONDS = 5.0
_known_lock = threading.Lock()


def _known() -> dict[str, float]:
    """Queue name -> when this launch last registered it in its database (monotonic)."""
    return engine.runtime.current().cache("queues.known", dict)


class QueuePolicy(msgspec.Struct, kw_only=True):
    """A queue's admission policy: at most `limit` runs start in any rolling `period` seconds,
    at most `concurrency` run at once, and a run waits to start while the queue's runs used
    `tokens_per_period` model tokens or more in the last `period` seconds."""

    name: str
    limit: int | None = None
    period: float | None = None
    concurrency: int | None = None
    tokens_per_period: int | None = None
    max_tokens_per_run: int | None = None
    """The model-token budget of each run on the queue that sets no `max_tokens` itself."""
    model_retry: ModelRetry | None = None
    """How the queue's runs retry failed model calls (a run's own settings win, field by field)."""


class QueuePause(msgspec.Struct, kw_only=True):
    """A queue admits no run, in any process, until `until` (a Unix time): a run of it met a
    provider's rate limit that named a time to come back."""

    name: str
    until: float
    reason: str


def check_queue_name(name: object, field: str = "queue_name") -> str:
    problem = run_id_problem(name, NAME_MAX_LENGTH)
    if problem is not None:
        raise ValidationError(field, f"{name!r} {problem}" if isinstance(name, str) else problem)
    assert isinstance(name, str)
    if name.startswith("_dbos"):
        raise ValidationError(field, f"{name!r} is reserved", "choose a name that does not start with '_dbos'")
    return name


def stored_priority(priority: int | None) -> int:
    """A run's stored priority (checked by the contract's `Priority`): lower runs first; None runs
    after every prioritised run."""
    return LOWEST_PRIORITY if priority is None else priority


def check_max_tokens(value: object, field: str = "max_tokens") -> int | None:
    _check_count(field, value, "pass the model tokens a run may use, or None for no budget")
    return value  # type: ignore[return-value]


def _check_count(field: str, value: object, fix: str) -> None:
    """A count of the contract (subjects.messages.Count), in the words the bus uses for it."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _MOST):
        raise ValidationError(field, f"{value!r} is not a whole number from 1 to {_MOST}", fix)


def check_policy(
    name: object, limit: object, period: object, concurrency: object, tokens_per_period: object = None,
    max_tokens_per_run: object = None, model_retry: object = None,
) -> QueuePolicy:
    name = check_queue_name(name, "name")
    check_max_tokens(max_tokens_per_run, "max_tokens_per_run")
    retry = check_model_retry(model_retry)
    _check_count("tokens_per_period", tokens_per_period, "pass the model tokens allowed per period")
    if tokens_per_period is not None and period is None:
        raise ValidationError("period", "is missing", "tokens_per_period counts tokens over period seconds: pass period too")
    if (limit is None) != (period is None) and not (limit is None and tokens_per_period is not None):
        missing = "period" if period is None else "limit"
        raise ValidationError(missing, "is missing", "a rate limit needs both limit (runs) and period (seconds)")
    _check_count("limit", limit, "pass the runs allowed per period, e.g. limit=50")
    if period is not None and (isinstance(period, bool) or not isinstance(period, (int, float)) or not 0 < period <= _LONGEST_PERIOD):
        raise ValidationError("period", f"{period!r} is not a number more than 0 and at most {_LONGEST_PERIOD}", "pass seconds, e.g. period=60")
    _check_count("concurrency", concurrency, "pass the most runs at once, or None for no bound")
    return QueuePolicy(
        name=name,
        limit=limit,  # type: ignore[arg-type]
        period=float(period) if period is not None else None,  # type: ignore[arg-type]
        concurrency=concurrency,  # type: ignore[arg-type]
        tokens_per_period=tokens_per_period,  # type: ignore[arg-type]
        max_tokens_per_run=max_tokens_per_run,  # type: ignore[arg-type]
        model_retry=retry,
    )


def _register(policy: QueuePolicy, *, replace: bool) -> None:
    """Blocking. The rate limit and concurrency live in DBOS's queue row; Timestep keeps the
    policy as asked (and the token budget, which DBOS does not know) in its own table."""
    engine.register_queue(
        policy.name,
        limit=policy.limit,
        period=policy.period,
        concurrency=policy.concurrency,
        poll_seconds=current_settings().queue_poll_seconds,
        replace=replace,
    )
    store_policy(policy, replace=replace)
    with _known_lock:
        _known()[policy.name] = time.monotonic()


def store_policy(policy: QueuePolicy, *, replace: bool) -> None:
    """Blocking: keep `policy` (over a stored one only with `replace`). Processes meeting a new
    queue at the same moment all succeed: the insert ignores a row another one just wrote."""
    row = {**msgspec.structs.asdict(policy), "updated_at": time.time()}
    row["model_retry"] = msgspec.json.encode(policy.model_retry).decode() if policy.model_retry else None
    with store.get_engine().begin() as conn:
        store.upsert(conn, store.queue_policies, [row], update=replace)


def stored_policy(name: str) -> QueuePolicy | None:
    """Blocking: the policy of queue `name` as configured, or None."""
    table = store.queue_policies
    with store.get_engine().connect() as conn:
        row = conn.execute(sa.select(table).where(table.c.name == name)).mappings().first()
    if row is None:
        return None
    return QueuePolicy(
        name=row["name"], limit=row["limit"], period=row["period"], concurrency=row["concurrency"],
        tokens_per_period=row["tokens_per_period"], max_tokens_per_run=row["max_tokens_per_run"],
        model_retry=msgspec.json.decode(row["model_retry"], type=ModelRetry) if row["model_retry"] else None,
    )


def queue_names() -> list[str]:
    with store.get_engine().connect() as conn:
        return [r[0] for r in conn.execute(sa.select(store.queue_policies.c.name).order_by(store.queue_policies.c.name))]


async def names() -> list[str]:
    """Every configured queue's name, in order."""
    return await engine.blocking(queue_names)


def wake(name: str) -> None:
    """Bring this process's next poll of queue `name` forward (a run was just queued on it)."""
    engine.wake_queue(name)


def record_tokens(queue: str, tokens: int) -> None:
    """Blocking: count `tokens` of model usage against `queue`'s token budget."""
    with store.get_engine().begin() as conn:
        conn.execute(sa.insert(store.token_usage).values(queue=queue, at=time.time(), tokens=tokens))


def tokens_in_window(queue: str, period: float) -> int:
    """Blocking: tokens the queue's runs used in the last `period` seconds."""
    table = store.token_usage
    with store.get_engine().connect() as conn:
        used = conn.execute(
            sa.select(sa.func.coalesce(sa.func.sum(table.c.tokens), 0)).where(table.c.queue == queue, table.c.at > time.time() - period)
        ).scalar()
    return int(used or 0)


def token_wait_seconds(queue: str) -> float:
    """Blocking: 0 when the queue is within its token budget, else the seconds until enough
    of the window's usage has aged out."""
    policy = stored_policy(queue)
    if policy is None or not policy.tokens_per_period or not policy.period:
        return 0.0
    table = store.token_usage
    now = time.time()
    with store.get_engine().connect() as conn:
        rows = conn.execute(
            sa.select(table.c.at, table.c.tokens).where(table.c.queue == queue, table.c.at > now - policy.period).order_by(table.c.at)
        ).all()
    used = sum(tokens for _, tokens in rows)
    if used < policy.tokens_per_period:
        return 0.0
    # The wait ends when the oldest usage rows have aged out far enough to fit under budget.
    for at, tokens in rows:
        used -= tokens
        if used < policy.tokens_per_period:
            return max(0.0, at + policy.period - now) + 0.01
    return policy.period


# --- pauses: the fleet backs off together -----------------------------------------

#: How long a process trusts what it last read of the pauses before asking the database again.
PAUSES_FRESH_SECONDS = 0.25
_pauses_lock = threading.Lock()


class _PausesRead:
    """The pauses this launch last read from its database, and when."""

    def __init__(self) -> None:
        self.pauses: dict[str, QueuePause] = {}
        self.read_at = -math.inf


def _pauses() -> _PausesRead:
    return engine.runtime.current().cache("queues.pauses", _PausesRead)


def pause_queue(name: str, until: float, reason: str) -> None:
    """Blocking: queue `name` admits no run, in any process, until `until` (a Unix time). A
    pause that already lasts longer stays as it is."""
    table = store.queue_pauses
    with store.get_engine().begin() as conn:
        current = conn.execute(sa.select(table.c.until).where(table.c.name == name)).scalar()
        if current is not None and current >= until:
            return
        store.upsert(conn, table, [{"name": name, "until": until, "reason": reason}])
    with _pauses_lock:
        _pauses().pauses[name] = QueuePause(name=name, until=until, reason=reason)


def current_pause(name: str) -> QueuePause | None:
    """Blocking: the pause of queue `name` in force now, or None. Reads every queue's pauses from
    the database at most once per PAUSES_FRESH_SECONDS (a queue is polled often)."""
    now = time.time()
    read = _pauses()
    with _pauses_lock:
        fresh = time.monotonic() - read.read_at < PAUSES_FRESH_SECONDS
    if not fresh:
        table = store.queue_pauses
        with store.get_engine().connect() as conn:
            rows = conn.execute(sa.select(table).where(table.c.until > now)).mappings().all()
        with _pauses_lock:
            read.pauses = {r["name"]: QueuePause(name=r["name"], until=r["until"], reason=r["reason"]) for r in rows}
            read.read_at = time.monotonic()
    with _pauses_lock:
        pause = read.pauses.get(name)
    return pause if pause is not None and pause.until > now else None


def paused_seconds(name: str) -> float:
    """Blocking: how long queue `name` stays paused from now, read from the database (no cache)."""
    table = store.queue_pauses
    with store.get_engine().connect() as conn:
        until = conn.execute(sa.select(table.c.until).where(table.c.name == name)).scalar()
    return max(until - time.time(), 0.0) if until is not None else 0.0


def hold_seconds(name: str) -> float:
    """Blocking: how long queue `name` must admit nothing from now (0: admit as usual)."""
    pause = current_pause(name)
    return max(pause.until - time.time(), 0.0) if pause is not None else 0.0


class RunLimits(msgspec.Struct, kw_only=True):
    """What a run queued on a queue takes from the queue's policy when it is queued."""

    token_queue: str | None = None
    """The queue whose token budget the run counts against (the queue, when it has one)."""
    max_tokens: int | None = None
    """The default budget of the queue's runs."""
    model_retry: ModelRetry | None = None


async def run_limits(queue: str) -> RunLimits:
    policy = await engine.blocking(stored_policy, queue)
    if policy is None:
        return RunLimits()
    return RunLimits(
        token_queue=queue if policy.tokens_per_period else None, max_tokens=policy.max_tokens_per_run, model_retry=policy.model_retry
    )


def merged_retry(queue_level: ModelRetry | None, run_level: ModelRetry | None) -> ModelRetry | None:
    """The run's fields over the queue's."""
    if queue_level is None or run_level is None:
        return run_level or queue_level
    fields = {**msgspec.structs.asdict(queue_level), **{k: v for k, v in msgspec.structs.asdict(run_level).items() if v is not None}}
    return ModelRetry(**fields)


async def queue_status(name: str) -> QueueStatus:
    """Depth, running, starts in the current window, tokens in the current window."""
    policy = await engine.blocking(stored_policy, name)
    if policy is None:
        raise ValidationError("name", f"no queue named {name!r}", "configure it first, or queue a run on it")
    depth, running, admitted = await engine.queue_counts(name, policy.period or 60.0)
    tokens = await engine.blocking(tokens_in_window, name, policy.period) if policy.tokens_per_period and policy.period else 0
    pause = await engine.blocking(current_pause, name)
    return QueueStatus(
        name=name, limit=policy.limit, period_seconds=policy.period, concurrency=policy.concurrency,
        tokens_per_period=policy.tokens_per_period, depth=depth, running=running,
        admitted_in_window=admitted, tokens_in_window=tokens, max_tokens_per_run=policy.max_tokens_per_run,
        model_retry=policy.model_retry,
        paused_until=datetime.fromtimestamp(pause.until, timezone.utc) if pause else None,
        paused_reason=pause.reason if pause else None,
    )


async def configure_queue(
    name: str,
    limit: int | None = None,
    period: float | None = None,
    concurrency: int | None = None,
    *,
    tokens_per_period: int | None = None,
    max_tokens_per_run: int | None = None,
    model_retry: ModelRetry | dict | None = None,
) -> QueuePolicy:
    """Create queue `name` or change its policy, at run time, for every process sharing the database.

    >>> await configure_queue("openai", limit=500, period=60, concurrency=20, tokens_per_period=200_000)

    `max_tokens_per_run` is the token budget of each run on the queue that sets no `max_tokens`;
    `model_retry` how its runs retry failed model calls.
    Before launch, the policy is applied when Timestep launches.
    """
    policy = check_policy(name, limit, period, concurrency, tokens_per_period, max_tokens_per_run, model_retry)
    if engine.is_launched():
        await engine.blocking(_register, policy, replace=True)
    else:
        engine.after_launch(lambda: _register(policy, replace=True))
    return policy


def register_default_queue() -> None:
    """Blocking; runs at launch. Keeps a policy an operator set before."""
    _register(QueuePolicy(name=DEFAULT_QUEUE, limit=DEFAULT_LIMIT, period=DEFAULT_PERIOD), replace=False)


async def ensure_queue(name: str) -> None:
    """A queue named for the first time gets the default policy (50 runs per 60 s) unless one is stored."""
    with _known_lock:
        if time.monotonic() - _known().get(name, -math.inf) < KNOWN_SECONDS:
            return
    await engine.blocking(
        _register, QueuePolicy(name=name, limit=DEFAULT_LIMIT, period=DEFAULT_PERIOD), replace=False
    )


async def delete_queue(name: str) -> bool:
    """Delete queue `name` for every process sharing the database; False when there is none.
    Refused (TimestepError, saying how many) while runs wait or run on it: they would never
    start, or never be recovered. A run that names the queue later creates it again, with the
    default policy.

    >>> await delete_queue("nightly-reports")
    """
    name = check_queue_name(name, "name")
    if name == DEFAULT_QUEUE:
        raise ValidationError("name", "'default' holds the runs that name no queue and cannot be deleted", "change its policy with configure_queue")
    if not engine.is_launched():
        raise TimestepError("delete_queue: Timestep is not launched; call ensure_dbos_launched() first")
    policy = await engine.blocking(stored_policy, name)
    if policy is None:
        return False
    await _refuse_busy(name)
    await engine.blocking(_delete, name)
    try:  # a run queued by another process since the count would wait for no worker: keep the queue
        await _refuse_busy(name)
    except TimestepError:
        await engine.blocking(_register, policy, replace=True)
        raise
    return True


async def _refuse_busy(name: str) -> None:
    waiting, running, _ = await engine.queue_counts(name, 1.0)
    if waiting or running:
        raise TimestepError(
            f"name: queue {name!r} has {waiting} run{'s' * (waiting != 1)} waiting and {running} running; "
            "delete it once they are done, or cancel them first (timestep cancel RUN_ID)"
        )


def _delete(name: str) -> None:
    """Blocking: the queue's row in DBOS (each process's worker of it stops at its next poll) and its policy."""
    engine.delete_queue(name)
    with store.get_engine().begin() as conn:
        conn.execute(sa.delete(store.queue_policies).where(store.queue_policies.c.name == name))
    with _known_lock:
        _known().pop(name, None)


engine.hold_queues_with(hold_seconds)
