"""A run request as it arrives on `<prefix>.runs.submit`: decoded and checked before anything is
written, refused with the field at fault, and given the same run id however often it is published."""

from __future__ import annotations

import pytest

from subjects.ids import is_valid_run_id
from timestep.bus.intake import Invalid, derive_run_id, parse_request

LIMIT = 1_000_000


def test_a_good_request_decodes_with_its_own_id() -> None:
    request, run_id = parse_request(
        b'{"agent": "assistant", "input": "Hi", "id": "order-42", "session_id": "user 7", "queue": "q1", "priority": 3}', None, LIMIT
    )
    assert run_id == "order-42"
    assert (request.agent, request.input, request.session_id, request.queue, request.priority) == ("assistant", "Hi", "user 7", "q1", 3)
    request, _ = parse_request(b'{"agent": "a", "input": "Hi", "priority": 2147483646}', None, LIMIT)
    assert request.priority == 2**31 - 2  # the lowest a run can be given


def test_a_request_without_an_id_is_the_same_run_each_time_it_is_published() -> None:
    body = b'{"agent": "assistant", "input": "Hi"}'
    _, first = parse_request(body, None, LIMIT)
    _, again = parse_request(body, None, LIMIT)
    _, other_text = parse_request(b'{"agent": "assistant", "input": "Hello"}', None, LIMIT)
    assert first == again != other_text
    assert is_valid_run_id(first) and first.startswith("r-")
    # A publisher's Nats-Msg-Id tells two requests with the same bytes apart, and a resend of one from the other.
    _, one = parse_request(body, {"Nats-Msg-Id": "m-1"}, LIMIT)
    _, one_again = parse_request(body, {"Nats-Msg-Id": "m-1"}, LIMIT)
    _, two = parse_request(body, {"Nats-Msg-Id": "m-2"}, LIMIT)
    assert one == one_again != two and one != first
    assert derive_run_id(body, {"Nats-Msg-Id": "m-1"}) == one


def test_input_items_are_accepted_as_a_list() -> None:
    request, _ = parse_request(b'{"agent": "a", "input": [{"role": "user", "content": "Hi"}]}', None, LIMIT)
    assert request.input == [{"role": "user", "content": "Hi"}]


def test_a_request_over_the_size_limit_is_refused_naming_the_size_the_limit_and_the_setting() -> None:
    body = b'{"agent": "assistant", "input": "' + b"x" * 100 + b'"}'
    parse_request(body, None, len(body))  # at the limit: accepted
    with pytest.raises(Invalid) as refused:
        parse_request(body, None, len(body) - 1)
    assert refused.value.field == "request"
    assert refused.value.message == f"is {len(body)} bytes; the limit is {len(body) - 1} (TIMESTEP_MAX_REQUEST_BYTES)"


@pytest.mark.parametrize(
    ("body", "field", "says", "run_id"),
    [
        (b"nope", "request", "is not valid JSON", None),
        (b"[1]", "request", "[1] is a list; expected an object", None),
        (b'{"agent": "a", "input": "\xff"}', "request", "UTF-8", None),
        (b'{"input": "Hi"}', "agent", "is required", None),
        (b'{"agent": "a"}', "input", "is required", None),
        (b'{"agent": "a", "input": "Hi", "id": "a.b"}', "id", "contains '.'", None),
        (b'{"agent": "a", "input": "Hi", "id": "' + b"x" * 129 + b'"}', "id", "", None),
        (b'{"agent": "a", "input": 5, "id": "r1"}', "input", "5 is a whole number", "r1"),
        (b'{"agent": "a", "input": [], "id": "r1"}', "input", "is an empty list", "r1"),
        (b'{"agent": "a", "input": [{"role": "robot", "content": "x"}], "id": "r1"}', "input[0].role", "'robot' is not one of", "r1"),
        (b'{"agent": "a", "input": "Hi", "session_id": "a\\u0000b", "id": "r2"}', "session_id", "control character", "r2"),
        (b'{"agent": "a", "input": "Hi", "priority": 0}', "priority", "0 is not a whole number from 1 to 2147483646", None),
        (b'{"agent": "a", "input": "Hi", "priority": 2147483647}', "priority", "from 1 to 2147483646", None),  # kept for "no priority"
        (b'{"agent": "a", "input": "Hi", "priority": "high"}', "priority", "", None),
        (b'{"agent": "a", "input": "Hi", "timeout_seconds": 31536001}', "timeout_seconds", "at most 31536000", None),
        (b'{"agent": "a", "input": "Hi", "queue": "a.b"}', "queue", "", None),
    ],
)
def test_a_bad_request_is_refused_naming_the_field_and_keeps_the_id_it_claims(body: bytes, field: str, says: str, run_id: str | None) -> None:
    with pytest.raises(Invalid) as refused:
        parse_request(body, None, LIMIT)
    assert refused.value.field == field, refused.value
    assert says in refused.value.message, refused.value.message
    assert str(refused.value).startswith(f"{field}: ")
    # The refusal is published on the run's own subject when the request names a valid id.
    assert refused.value.run_id == run_id
    assert "Expected `" not in refused.value.message  # the contract's words, not msgspec's
