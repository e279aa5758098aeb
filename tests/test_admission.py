"""The library and the bus admit runs by one set of rules: the same bad option, given to
`run_agent_workflow` / `queue_agent_workflow` in this process and sent by a plain nats-py client
to `<prefix>.runs.submit`, is refused naming the same field (in each one's own name for it) in
the same words."""

from __future__ import annotations

import uuid

import msgspec
import nats
import pytest
from agents import Agent

import timestep
from subjects.messages import Reply

AGENT = Agent(name="admission-agent")
#: The library's argument for a field the contract names differently.
LIBRARY_NAMES = {"session_id": "session", "id": "workflow_id", "queue": "queue_name", "input": "input_items"}
_LONG_INPUT = "x" * 200_001
CONTROL = "expected a string of 1 to 255 characters, no control characters"
SECONDS = "is not a number more than 0 and at most 31536000"

# (field, value, the problem in both ways in, whether run_agent_workflow takes the option too)
SAME_WORDS = [
    ("session_id", "a\x00b", f"'a\\x00b' contains the control character '\\x00'; {CONTROL}", True),
    ("session_id", "", f"'' is empty; {CONTROL}", True),
    ("deduplication_id", "key\x1f", f"'key\\x1f' contains the control character '\\x1f'; {CONTROL}", False),
    ("timeout_seconds", 1e10, f"10000000000.0 {SECONDS}", True),
    ("timeout_seconds", 0, f"0 {SECONDS}", True),
    ("approval_timeout_seconds", 0, f"0 {SECONDS}", True),
    ("priority", 0, "0 is not a whole number from 1 to 2147483646", False),
    ("priority", "high", "'high' is a string; expected a whole number from 1 to 2147483646", False),
    ("max_tokens", 0, "0 is not a whole number from 1 to 2147483647", True),
    ("session_policy", "whatever", "'whatever' is not one of 'enqueue', 'interrupt', 'reject'", True),
    ("stream", "yes", "'yes' is a string; expected true or false", True),
    ("id", "a.b", "'a.b' contains '.'; use only letters, digits, '_' and '-' (at most 128 characters)", True),
    ("queue", "_dbos_mine", "'_dbos_mine' is reserved; choose a name that does not start with '_dbos'", False),
    ("input", _LONG_INPUT, f"{_LONG_INPUT[:60]!r}... is 200001 characters long; expected a string of at most 200000 characters", True),
]


def _library_call(field: str, value: object) -> dict:
    kwargs = {LIBRARY_NAMES.get(field, field): value}
    if field == "approval_timeout_seconds":
        kwargs["wait_for_approval"] = True  # the library takes a deadline only for a run that waits
    return kwargs


@pytest.mark.parametrize(("field", "value", "problem", "direct"), SAME_WORDS, ids=[f"{f}-{i}" for i, (f, *_) in enumerate(SAME_WORDS)])
async def test_the_library_and_the_bus_refuse_the_same_option_in_the_same_words(system, field: str, value: object, problem: str, direct: bool) -> None:
    name = LIBRARY_NAMES.get(field, field)
    kwargs = _library_call(field, value)
    items = kwargs.pop("input_items", "hi")
    calls = [timestep.queue_agent_workflow] + ([timestep.run_agent_workflow] if direct else [])
    for call in calls:
        with pytest.raises(timestep.ValidationError) as refused:
            await call(AGENT, items, **kwargs)
        assert (refused.value.field, str(refused.value)) == (name, f"{name}: {problem}"), call.__name__

    run_id = f"adm-{uuid.uuid4().hex[:12]}"
    body = {"id": run_id, "agent": "bus-assistant", "input": "hi", field: value}
    named = field != "id"  # a bad id names no run whose events could say so
    nc = await nats.connect(system.url)
    try:
        with pytest.raises(nats.js.errors.BadRequestError) as bus:
            await nc.jetstream().publish(system.bus.subjects.submit, msgspec.json.encode(body))
        if named:  # the run's `rejected` event names the field in `field`: no reader splits the message
            rejected = await nc.jetstream().subscribe(system.bus.subjects.events(run_id, "rejected"), ordered_consumer=True)
            event = msgspec.json.decode((await rejected.next_msg(timeout=30)).data)
            assert event["error"] == {"type": "InvalidRequest", "message": f"{field}: {problem}", "field": field}
    finally:
        await nc.close()
    assert bus.value.description == f"{field}: {problem}"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timeout_seconds": float("inf")}, f"timeout_seconds: inf {SECONDS}"),
        ({"priority": b"1"}, "priority: b'1' is bytes; expected a whole number from 1 to 2147483646"),
        ({"priority": object}, "priority: <class 'object'> is type; expected a whole number from 1 to 2147483646"),
        ({"model_retry": {"max_wait_seconds": float("inf")}}, f"model_retry.max_wait_seconds: inf {SECONDS}"),
        ({"model_retry": {"max_attempts": object}}, "model_retry.max_attempts: <class 'object'> is type; expected a whole number from 1 to 2147483647"),
    ],
)
async def test_a_value_json_cannot_carry_is_refused_in_the_same_words(db: str, kwargs: dict, message: str) -> None:
    """Only the library can be given these; it says what the bus says of a value it does not take."""
    with pytest.raises(timestep.ValidationError) as refused:
        await timestep.queue_agent_workflow(AGENT, "hi", **kwargs)
    assert str(refused.value) == message


async def test_an_agent_name_the_database_cannot_store_is_refused_on_both_ways_in(system) -> None:
    problem = f"'a\\x00b' contains the control character '\\x00'; {CONTROL}"
    with pytest.raises(timestep.ValidationError) as refused:
        await timestep.queue_agent_workflow(Agent(name="a\x00b"), "hi")
    assert str(refused.value) == f"agent: {problem}"
    nc = await nats.connect(system.url)
    try:
        with pytest.raises(nats.js.errors.BadRequestError) as bus:
            await nc.jetstream().publish(system.bus.subjects.submit, msgspec.json.encode({"agent": "a\x00b", "input": "hi"}))
    finally:
        await nc.close()
    assert bus.value.description == f"agent: {problem}"


async def _stored(system, run_id: str) -> list[dict]:
    """Every stored event of the run, read by a plain nats-py consumer."""
    nc = await nats.connect(system.url)
    try:
        sub = await nc.jetstream().subscribe(system.bus.subjects.run_events(run_id), ordered_consumer=True)
        info = await sub.consumer_info()
        return [msgspec.json.decode((await sub.next_msg(timeout=30)).data) for _ in range(info.num_pending + info.delivered.consumer_seq)]
    finally:
        await nc.close()


async def test_a_queued_run_cancelled_through_the_library_says_cancelled_on_the_bus_once(system) -> None:
    """A process that publishes events (it has the bus's event sink) cancels a run that is still
    queued: its followers on the bus see it end, as when the cancel comes over the bus."""
    agent = timestep.get_agent("bus-assistant")
    queue = f"held-{uuid.uuid4().hex[:8]}"
    await timestep.configure_queue(queue, limit=1, period=31_536_000)
    first = await timestep.queue_agent_workflow(agent, "hello", queue_name=queue)
    await first.get_result()  # the queue's one start of the period
    held = await timestep.queue_agent_workflow(agent, "hello", queue_name=queue)
    assert (await held.get_status()).status == "queued"

    nc = await nats.connect(system.url)
    try:
        follower = await nc.jetstream().subscribe(system.bus.subjects.events(held.workflow_id, "cancelled"), ordered_consumer=True)
        await timestep.cancel_run(held.workflow_id)
        event = msgspec.json.decode((await follower.next_msg(timeout=30)).data)
    finally:
        await nc.close()
    assert (event["type"], event["run_id"], event["seq"]) == ("cancelled", held.workflow_id, 1)
    await timestep.cancel_run(held.workflow_id)  # again: the run has said it already
    assert [e["type"] for e in await _stored(system, held.workflow_id)] == ["cancelled"]
    with pytest.raises(timestep.RunCancelledError):
        await held.get_result()


async def test_an_approve_of_a_call_the_run_does_not_wait_on_is_refused_alike_on_both_ways_in(system) -> None:
    """Both decide from the run's approvals record: the library's `approve_tool_call` and an approve
    sent over the bus by a plain nats-py request."""
    run_id = f"adm-{uuid.uuid4().hex[:12]}"
    nc = await nats.connect(system.url)
    try:
        interrupted = await nc.jetstream().subscribe(system.bus.subjects.events(run_id, "interrupted"), ordered_consumer=True)
        body = {"id": run_id, "agent": "bus-assistant", "input": "send_email to=ada@example.com"}
        await nc.jetstream().publish(system.bus.subjects.submit, msgspec.json.encode(body))
        await interrupted.next_msg(timeout=60)
        expected = f"call_id: run {run_id!r} is not waiting for approval of 'call_9'; it waits on 'call_1'"
        with pytest.raises(timestep.ValidationError) as library:
            await timestep.approve_tool_call(run_id, "call_9")
        assert (library.value.field, str(library.value)) == ("call_id", expected)
        answer = await nc.request(system.bus.subjects.command(run_id, "approve"), b'{"call_id": "call_9"}', timeout=30)
        reply = msgspec.json.decode(answer.data, type=Reply)
        assert reply.error is not None and (reply.error.type, reply.error.message, reply.error.field) == ("NotWaiting", expected, "call_id")
        await timestep.cancel_run(run_id)
    finally:
        await nc.close()
