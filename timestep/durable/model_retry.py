"""Which failed model calls are worth another attempt, and how long to wait before it.

A failure is turned into a `Failure` inside the attempt's step, at call time (a Retry-After
date is relative to that moment, and the jitter is drawn there), so the record is what a
replay decides from: the same attempts, the same waits."""

from __future__ import annotations

import dataclasses
import email.utils
import functools
import logging
import random
import time
from typing import Any

import openai
import httpx2 as httpx  # the HTTP library of the openai client

from timestep.errors import ModelCallError
from timestep.settings import ModelRetrySettings

log = logging.getLogger("timestep.durable.model_retry")

#: Statuses that say "later may work": request timeout, conflict, rate limit (and every 5xx).
_PASSING = {408, 409, 429}


@dataclasses.dataclass(frozen=True)
class Failure:
    """One failed attempt, as recorded."""

    provider_error: str
    status_code: int | None
    message: str
    retryable: bool
    retry_after: float | None  # seconds the provider asked for, if it did
    jitter: float  # in [0, 1), drawn when the attempt failed
    delay: float | None = None  # the wait before the next attempt, decided in the step; None: no retry
    headers: tuple[tuple[str, str], ...] = ()  # the provider's retry headers, kept for the error

    def error(self, attempts: int) -> ModelCallError:
        return provider_error(self.provider_error, self.status_code, self.message, attempts, self.headers)


def log_retry(run_id: str, attempt: int, failed: Failure, delay: float) -> None:
    """One line per attempt that is retried; the last one's error is the run's (its failure line)."""
    status = f" (HTTP {failed.status_code})" if failed.status_code is not None else ""
    log.warning("run %s: model call attempt %d failed: %s%s: %s; attempt %d in %.3g s",
                run_id, attempt, failed.provider_error, status, failed.message, attempt + 1, delay)


class _SdkErrorToDebug(logging.Filter):
    """The Agents SDK logs a bare "Error getting response" for every failed model call, with no
    run id; Timestep logs each failed attempt itself (above, or as the run's failure), so the
    SDK's line is kept for DEBUG only."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.getMessage().startswith("Error getting response"):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


logging.getLogger("openai.agents").addFilter(_SdkErrorToDebug())


#: Headers kept with a failure: what the SDK's and the application's retry policies read.
_KEPT_HEADERS = ("retry-after", "retry-after-ms", "x-should-retry", "x-request-id")


def provider_error(
    name: str, status_code: int | None, message: str, attempts: int = 1, headers: tuple[tuple[str, str], ...] = ()
) -> ModelCallError:
    """The error a failed model call raises: a `ModelCallError` that is also an instance of the
    provider's class (`openai.RateLimitError`, ...), with its status and retry headers, so callers
    (and the SDK's retry policies) catch and read it as they would the openai client's own."""
    provider = getattr(openai, name, None)
    if not (isinstance(provider, type) and issubclass(provider, openai.APIError)):
        return ModelCallError(name, status_code, message, attempts)
    cls = _both(provider)
    error = cls.__new__(cls)
    ModelCallError.__init__(error, name, status_code, message, attempts)
    request = httpx.Request("POST", "https://model-provider.invalid/")
    error.request, error.message, error.body = request, message, None
    error.code = error.param = error.type = None
    error.headers = headers
    if issubclass(provider, openai.APIStatusError):
        error.response = httpx.Response(status_code or 500, headers=list(headers), request=request)
        error.request_id = error.response.headers.get("x-request-id")
    return error


@functools.cache
def _both(provider: type) -> type:
    def reduce(self: Any) -> tuple:  # recorded by the runtime and raised again on replay
        return (provider_error, (self.provider_error, self.status_code, self.provider_message, self.attempts, self.headers))

    return type(provider.__name__, (ModelCallError, provider), {"__reduce__": reduce, "__module__": __name__})


def failure(exc: Exception) -> Failure | None:
    """The record of a provider error, or None for anything else (raised as it is)."""
    if isinstance(exc, openai.APIStatusError):
        headers = exc.response.headers
        status = exc.status_code
        retryable = status in _PASSING or status >= 500
        should = (headers.get("x-should-retry") or "").strip().lower()
        if should in ("true", "false"):
            retryable = should == "true"
        kept = tuple((k, headers[k]) for k in _KEPT_HEADERS if k in headers)
        return Failure(type(exc).__name__, status, str(exc), retryable, _retry_after(headers), random.random(), headers=kept)
    if isinstance(exc, openai.APIConnectionError):  # timeouts included
        return Failure(type(exc).__name__, None, str(exc), True, None, random.random())
    return None


def _retry_after(headers: Any) -> float | None:
    raw = headers.get("retry-after-ms")
    if raw:
        try:
            return max(float(raw) / 1000, 0.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(float(raw), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def next_wait(failed: Failure, attempt: int, waited: float, policy: ModelRetrySettings) -> float | None:
    """Seconds to wait before attempt `attempt + 1`, or None to give up. `waited`: the waits so far."""
    if not failed.retryable or attempt >= policy.max_attempts:
        return None
    if failed.retry_after is not None:
        delay = failed.retry_after  # the provider knows best; the total bound still applies
    else:
        delay = min(policy.base_seconds * 2 ** (attempt - 1), policy.max_backoff_seconds)
        delay *= 1 - 0.25 * failed.jitter  # spread the clients that failed together
    if waited + delay > policy.max_wait_seconds:
        return None
    return delay
