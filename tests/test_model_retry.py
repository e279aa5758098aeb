"""How long a run waits before it calls the model again, and when it gives up: the provider's
Retry-After is honoured, the waits of a turn stay within their total, the jitter only shortens a
backoff (by at most a quarter), and an error that later will not cure is not retried."""

from __future__ import annotations

import time
from email.utils import formatdate

import openai
import pytest

from timestep.durable import model_retry
from timestep.durable.model_retry import Failure, failure, next_wait
from timestep.settings import ModelRetrySettings

POLICY = ModelRetrySettings(max_attempts=10, max_wait_seconds=600.0, base_seconds=1.0, max_backoff_seconds=60.0)


def failed(*, retryable: bool = True, retry_after: float | None = None, jitter: float = 0.0) -> Failure:
    return Failure("RateLimitError", 429, "slow down", retryable, retry_after, jitter)


def status_error(status: int, headers: dict[str, str] | None = None) -> openai.APIStatusError:
    """The error the openai client raises for an HTTP answer with this status and headers."""
    httpx = model_retry.httpx  # the HTTP library the openai client is built on
    request = httpx.Request("POST", "https://provider.invalid/v1/responses")
    response = httpx.Response(status, headers=headers or {}, request=request)
    client = openai.OpenAI(api_key="unused", base_url="https://provider.invalid/v1")
    return client._make_status_error_from_response(response)


def test_the_providers_retry_after_is_the_wait_whatever_the_backoff_and_jitter_would_say() -> None:
    assert next_wait(failed(retry_after=7.0, jitter=0.99), attempt=1, waited=0.0, policy=POLICY) == 7.0
    # Longer than the longest backoff: the provider still wins, within the total bound.
    assert next_wait(failed(retry_after=120.0), attempt=5, waited=0.0, policy=POLICY) == 120.0


def test_the_waits_of_a_turn_never_add_up_to_more_than_the_total_bound() -> None:
    assert next_wait(failed(retry_after=10.0), attempt=2, waited=590.0, policy=POLICY) == 10.0  # exactly the bound
    assert next_wait(failed(retry_after=10.0), attempt=2, waited=590.5, policy=POLICY) is None
    assert next_wait(failed(retry_after=601.0), attempt=1, waited=0.0, policy=POLICY) is None
    assert next_wait(failed(), attempt=7, waited=599.5, policy=POLICY) is None  # a backoff too


def test_the_backoff_doubles_per_attempt_up_to_the_longest_single_wait() -> None:
    waits = [next_wait(failed(jitter=0.0), attempt=n, waited=0.0, policy=POLICY) for n in range(1, 9)]
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]


@pytest.mark.parametrize("jitter", [0.0, 0.1, 0.5, 0.999999])
def test_the_jitter_shortens_a_backoff_by_at_most_a_quarter(jitter: float) -> None:
    wait = next_wait(failed(jitter=jitter), attempt=3, waited=0.0, policy=POLICY)
    assert wait is not None and 3.0 < wait <= 4.0
    assert wait == pytest.approx(4.0 * (1 - 0.25 * jitter))


def test_clients_that_failed_together_do_not_retry_together() -> None:
    waits = {next_wait(failed(jitter=j / 10), attempt=4, waited=0.0, policy=POLICY) for j in range(10)}
    assert len(waits) == 10


def test_an_error_that_is_not_retryable_or_the_last_attempt_gives_up() -> None:
    assert next_wait(failed(retryable=False), attempt=1, waited=0.0, policy=POLICY) is None
    assert next_wait(failed(retryable=False, retry_after=1.0), attempt=1, waited=0.0, policy=POLICY) is None
    assert next_wait(failed(), attempt=9, waited=0.0, policy=POLICY) is not None
    assert next_wait(failed(), attempt=10, waited=0.0, policy=POLICY) is None
    one_attempt = ModelRetrySettings(max_attempts=1)
    assert next_wait(failed(retry_after=0.0), attempt=1, waited=0.0, policy=one_attempt) is None


@pytest.mark.parametrize(
    ("status", "headers", "retryable", "retry_after"),
    [
        (429, {"retry-after": "7"}, True, 7.0),
        (429, {"retry-after-ms": "1500", "retry-after": "9"}, True, 1.5),  # the finer one wins
        (503, {}, True, None),
        (500, {"x-should-retry": "false"}, False, None),  # the provider says no
        (400, {"x-should-retry": "true"}, True, None),  # ... or yes
        (400, {}, False, None),
        (401, {"retry-after": "5"}, False, 5.0),
        (408, {"retry-after": "soon"}, True, None),  # unreadable: a backoff instead
    ],
)
def test_a_provider_answer_is_recorded_as_retryable_or_not_with_its_retry_after(
    status: int, headers: dict[str, str], retryable: bool, retry_after: float | None
) -> None:
    record = failure(status_error(status, headers))
    assert record is not None
    assert (record.status_code, record.retryable, record.retry_after) == (status, retryable, retry_after)
    assert 0.0 <= record.jitter < 1.0


def test_a_retry_after_date_is_the_time_until_then() -> None:
    record = failure(status_error(429, {"retry-after": formatdate(time.time() + 3600, usegmt=True)}))
    assert record is not None and record.retry_after is not None
    assert 3000 < record.retry_after <= 3600
    past = failure(status_error(429, {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}))
    assert past is not None and past.retry_after == 0.0


def test_no_connection_is_retried_and_other_exceptions_are_not_provider_failures() -> None:
    httpx = model_retry.httpx
    record = failure(openai.APIConnectionError(request=httpx.Request("POST", "https://provider.invalid/")))
    assert record is not None and record.retryable and record.status_code is None
    assert failure(ValueError("a bug in a tool")) is None
