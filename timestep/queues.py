"""Queues that respect LLM rate limits: priority, deduplication, runs per period, concurrency."""

from __future__ import annotations

import threading

import msgspec

from subjects.ids import run_id_problem
from timestep import engine
from timestep.errors import ValidationError
from timestep.settings import Settings

DEFAULT_QUEUE = "default"
DEFAULT_LIMIT = 50
DEFAULT_PERIOD = 60.0
#: Priority given to a run queued without one. DBOS stores "no priority" as 0, which
#: runs before every prioritised run; Timestep puts such runs last instead.
LOWEST_PRIORITY = 2**31 - 1

_known: set[str] = set()
_known_lock = threading.Lock()


class QueuePolicy(msgspec.Struct, kw_only=True):
    """A queue's admission policy. `limit` runs may start in any rolling `period` seconds."""

    name: str
    limit: int | None = None
    period: float | None = None
    concurrency: int | None = None


def check_queue_name(name: object, field: str = "queue_name") -> str:
    problem = run_id_problem(name)
    if problem is not None:
        raise ValidationError(field, f"{name!r} {problem}", "name queues like run ids: letters, digits, '_' and '-'")
    assert isinstance(name, str)
    if name.startswith("_dbos"):
        raise ValidationError(field, f"{name!r} is reserved", "choose a name that does not start with '_dbos'")
    return name


def check_priority(priority: object) -> int:
    """A run's stored priority: lower runs first; None runs after every prioritised run."""
    if priority is None:
        return LOWEST_PRIORITY
    if isinstance(priority, bool) or not isinstance(priority, int) or not 1 <= priority <= LOWEST_PRIORITY - 1:
        raise ValidationError("priority", f"{priority!r} is not a whole number from 1 to {LOWEST_PRIORITY - 1}", "lower numbers run first; omit it to run after prioritised runs")
    return priority


def check_policy(name: object, limit: object, period: object, concurrency: object) -> QueuePolicy:
    name = check_queue_name(name, "name")
    if (limit is None) != (period is None):
        missing = "period" if period is None else "limit"
        raise ValidationError(missing, "is missing", "a rate limit needs both limit (runs) and period (seconds)")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValidationError("limit", f"{limit!r} is not a whole number of at least 1", "pass the runs allowed per period, e.g. limit=50")
    if period is not None and (isinstance(period, bool) or not isinstance(period, (int, float)) or not period > 0 or period != period):
        raise ValidationError("period", f"{period!r} is not a positive number of seconds", "pass e.g. period=60")
    if concurrency is not None and (isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1):
        raise ValidationError("concurrency", f"{concurrency!r} is not a whole number of at least 1", "pass the most runs at once, or None for no bound")
    return QueuePolicy(
        name=name,
        limit=limit,  # type: ignore[arg-type]
        period=float(period) if period is not None else None,  # type: ignore[arg-type]
        concurrency=concurrency,  # type: ignore[arg-type]
    )


def _register(policy: QueuePolicy, *, replace: bool) -> None:
    engine.register_queue(
        policy.name,
        limit=policy.limit,
        period=policy.period,
        concurrency=policy.concurrency,
        poll_seconds=Settings.from_env().queue_poll_seconds,
        replace=replace,
    )
    with _known_lock:
        _known.add(policy.name)


async def configure_queue(name: str, limit: int | None = None, period: float | None = None, concurrency: int | None = None) -> QueuePolicy:
    """Create queue `name` or change its policy, at run time, for every process sharing the database.

    >>> await configure_queue("openai", limit=500, period=60, concurrency=20)

    Before launch, the policy is applied when Timestep launches.
    """
    policy = check_policy(name, limit, period, concurrency)
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
        if name in _known:
            return
    await engine.blocking(
        _register, QueuePolicy(name=name, limit=DEFAULT_LIMIT, period=DEFAULT_PERIOD), replace=False
    )
