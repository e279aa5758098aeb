"""Bad input gets a clear error naming the field and the fix, and nothing is written."""

from __future__ import annotations

import uuid

import msgspec
import nats
import pytest
from agents import Agent

import timestep
from subjects.messages import DeadLetter, Reply
from timestep.durable import engine

AGENT = Agent(name="validation-agent")


async def _count_workflows() -> int:
    """Runs of this module's agent: the database is shared by the session's other tests, whose
    background work (schedules, queued runs) may add workflows of its own at any moment."""
    runs = await engine.list_workflows(load_output=False)
    return sum(1 for run in runs if any(getattr(arg, "agent", None) == AGENT.name for arg in run.args))


@pytest.mark.parametrize("workflow_id", ["a.b", "*", ">", "has space", "", "x" * 129, "tab\there", "ünï"])
async def test_workflow_id_must_be_a_subject_token(db: str, workflow_id: str) -> None:
    before = await _count_workflows()
    with pytest.raises(timestep.ValidationError, match=r"^workflow_id: .*(letters, digits, '_' and '-'|the limit is 128)") as info:
        await timestep.run_agent_workflow(AGENT, "hi", workflow_id=workflow_id)
    assert info.value.field == "workflow_id"
    with pytest.raises(timestep.ValidationError, match=r"^workflow_id: "):
        await timestep.queue_agent_workflow(AGENT, "hi", workflow_id=workflow_id)
    assert await _count_workflows() == before


@pytest.mark.parametrize(
    ("items", "field"),
    [
        (42, "input_items"),
        ([], "input_items"),
        (["hello"], "input_items[0]"),
        ([{"role": "robot", "content": "x"}], "input_items[0].role"),
        ([{"role": "user"}], "input_items[0].content"),
        ([{"role": "user", "content": [{"text": "no type"}]}], "input_items[0].content[0]"),
        ([{"role": "user", "content": "ok"}, {"type": "function_call_output", "output": "x"}], "input_items[1].call_id"),
        ([{"type": 7}], "input_items[0].type"),
    ],
)
async def test_malformed_input_items_name_the_item(db: str, items: object, field: str) -> None:
    before = await _count_workflows()
    with pytest.raises(timestep.ValidationError) as info:
        await timestep.run_agent_workflow(AGENT, items)  # type: ignore[arg-type]
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
    assert await _count_workflows() == before


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"limit": 0, "period": 60}, "limit"),
        ({"limit": 5}, "period"),
        ({"period": 5}, "limit"),
        ({"limit": 5, "period": -1}, "period"),
        ({"limit": 5, "period": "60"}, "period"),
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": True}, "concurrency"),
        # The contract's bounds, which the database's integer columns hold.
        ({"limit": 2**31, "period": 60}, "limit"),
        ({"concurrency": 2**31}, "concurrency"),
        ({"tokens_per_period": 2**31, "period": 60}, "tokens_per_period"),
        ({"limit": 1, "period": 31_536_001}, "period"),
    ],
)
async def test_invalid_queue_settings(db: str, kwargs: dict, field: str) -> None:
    with pytest.raises(timestep.ValidationError) as info:
        await timestep.configure_queue("settings-check", **kwargs)
    assert info.value.field == field
    assert await engine.blocking(engine.queue_policy, "settings-check") is None


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"priority": 0}, "priority"),
        ({"priority": "high"}, "priority"),
        ({"priority": 2**31}, "priority"),
        ({"queue_name": "a.b"}, "queue_name"),
        ({"queue_name": "_dbos_internal"}, "queue_name"),
        ({"deduplication_id": ""}, "deduplication_id"),
        ({"on_duplicate": "ignore"}, "on_duplicate"),
        ({"timeout_seconds": 0}, "timeout_seconds"),
        ({"stream": "yes"}, "stream"),
        ({"session": 123}, "session"),
    ],
)
async def test_invalid_queue_run_options(db: str, kwargs: dict, field: str) -> None:
    before = await _count_workflows()
    with pytest.raises(timestep.ValidationError) as info:
        await timestep.queue_agent_workflow(AGENT, "hi", **kwargs)
    assert info.value.field == field
    assert await _count_workflows() == before


async def test_unknown_agent_names_the_registered_ones(db: str) -> None:
    timestep.register_agent(AGENT)
    with pytest.raises(timestep.UnknownAgentError, match=r"^agent: no agent named 'nobody' .*validation-agent.*register_agent"):
        timestep.get_agent("nobody")


async def test_not_an_agent(db: str) -> None:
    with pytest.raises(timestep.ValidationError, match=r"^agent: expected an agents.Agent, got str"):
        await timestep.run_agent_workflow("assistant", "hi")  # type: ignore[arg-type]


def test_configure_dbos_rejects_bad_name_and_url() -> None:
    with pytest.raises(timestep.ValidationError, match=r"^name: "):
        timestep.configure_dbos(name="Bad Name")
    with pytest.raises(timestep.ValidationError, match=r"^system_database_url: 'mysql://u:\*\*\*@h/db'"):
        timestep.configure_dbos(system_database_url="mysql://u:secret@h/db")


def test_state_store_needs_a_key() -> None:
    with pytest.raises(timestep.ValidationError, match=r"^session_id: neither session_id nor workflow_id"):
        timestep.RunStateStore(agent=AGENT)


# --- the same values on the bus -------------------------------------------------------

_MSGSPEC_WORDS = ("Expected `", "Invalid enum", ", got `", "Object missing", "`$.", "regex")
_RUN = {"agent": "bus-assistant", "input": "hello"}
_SCHEDULE = {"name": "yearly", "cron": "0 0 1 1 *", "request": _RUN}
_LONG = "x" * 120
BUS_FIELD_ERRORS = [
    ("submit", _RUN | {"session_policy": "whatever"}, "session_policy: 'whatever' is not one of 'enqueue', 'interrupt', 'reject'"),
    ("submit", _RUN | {"max_tokens": 0}, "max_tokens: 0 is not a whole number from 1 to 2147483647"),
    ("submit", [1, 2], "request: [1,2] is a list; expected an object with agent and input, like {\"agent\": \"assistant\", \"input\": \"Hi\"}"),
    ("submit", _RUN | {"model_retry": {"max_attempts": 0}}, "model_retry.max_attempts: 0 is not a whole number from 1 to 2147483647"),
    ("submit", _RUN | {"timeout_seconds": 1e10}, "timeout_seconds: 10000000000.0 is not a number more than 0 and at most 31536000"),
    ("submit", _RUN | {"approval_timeout_seconds": 0}, "approval_timeout_seconds: 0 is not a number more than 0 and at most 31536000"),
    ("submit", _RUN | {"stream": "yes"}, "stream: 'yes' is a string; expected true or false"),
    ("submit", _RUN | {"metadata": {"team": "a", "cost": 3}}, 'metadata["cost"]: 3 is a whole number; expected a string'),
    ("submit", {"agent": "bus-assistant"}, "input: is required; expected a string of at most 200000 characters or a list of objects"),
    ("submit", _RUN | {"agent": "a\x00b"}, "agent: 'a\\x00b' contains the control character '\\x00'; expected a string of 1 to 255 characters, no control characters"),
    ("submit", _RUN | {"queue": "a.b"}, "queue: 'a.b' contains '.'; use only letters, digits, '_' and '-' (at most 100 characters)"),
    ("submit", _RUN | {"queue": _LONG}, f"queue: {_LONG[:60]!r}... is 120 characters long; the limit is 100"),
    ("queues.configure", {"name": "a.b", "limit": 1, "period_seconds": 1}, "name: 'a.b' contains '.'; use only letters, digits, '_' and '-' (at most 100 characters)"),
    ("queues.configure", {"name": "q", "max_tokens_per_run": 0}, "max_tokens_per_run: 0 is not a whole number from 1 to 2147483647"),
    ("runs.list", {"limit": 0}, "limit: 0 is not a whole number from 1 to 1000"),
    ("runs.list", {"status": "done"}, "status: 'done' is not one of 'cancelled', 'completed', 'failed', 'queued', 'running', 'waiting'"),
    ("approvals.list", {"limit": 0}, "limit: 0 is not a whole number from 1 to 10000"),
    ("approvals.list", {"status": "open"}, "status: 'open' is not one of 'all', 'decided', 'pending'"),
    ("approvals.list", {"older_than_seconds": -1}, "older_than_seconds: -1 is not a number from 0 to 3153600000"),
    ("schedules.create", _SCHEDULE | {"name": _LONG}, f"name: {_LONG[:60]!r}... is 120 characters long; the limit is 100"),
    ("schedules.create", _SCHEDULE | {"request": []}, "request: [] is a list; expected an object with agent and input"),
    ("schedules.create", _SCHEDULE | {"request": _RUN | {"session_policy": "no"}}, "request.session_policy: 'no' is not one of 'enqueue', 'interrupt', 'reject'"),
    ("control.approve", {"call_id": "call_1", "arguments": 5}, "arguments: 5 is a whole number; expected a string of at most 200000 characters"),
    ("control.reject", {"call_id": ""}, "call_id: '' is empty; expected a string of 1 to 255 characters, no control characters"),
]


@pytest.mark.parametrize(("where", "body", "message"), BUS_FIELD_ERRORS, ids=[f"{w}-{i}" for i, (w, *_) in enumerate(BUS_FIELD_ERRORS)])
async def test_bus_field_errors_name_the_field_the_value_and_what_is_allowed(system, where: str, body: object, message: str) -> None:
    """A plain nats-py client sends each malformed body as a user's program would: the refusal
    (the reply where there is one) and the dead letter say it in the contract's words."""
    s = system.bus.subjects
    tag = f"v-{uuid.uuid4().hex[:12]}"
    data = msgspec.json.encode(body)
    nc = await nats.connect(system.url)
    dead = await nc.jetstream().subscribe(s.all_dead, ordered_consumer=True, deliver_policy="new")
    try:
        headers = {"Tag": tag}
        if where == "submit":  # the governor answers the publish itself, as JetStream answers a PubAck
            with pytest.raises(nats.js.errors.BadRequestError) as refused:
                await nc.jetstream().publish(s.submit, data, headers=headers)
            assert refused.value.description == message
        elif where.startswith("control."):
            await nc.jetstream().publish(s.control(f"r-{tag}", where.split(".")[1]), data, headers=headers)
        else:
            subject = {"queues.configure": s.queues_configure, "runs.list": s.runs_list, "approvals.list": s.approvals_list, "schedules.create": s.schedules_create}[where]
            reply = msgspec.json.decode((await nc.request(subject, data, timeout=30, headers=headers)).data, type=Reply)
            assert not reply.ok and reply.error is not None and reply.error.message == message
        while True:
            letter = msgspec.json.decode((await dead.next_msg(timeout=30)).data, type=DeadLetter)
            if letter.headers.get("Tag") == tag:
                break
    finally:
        await nc.close()
    assert letter.error.message == message
    assert not any(word in message for word in _MSGSPEC_WORDS), message
    assert "128" not in message or "at most 128" in message  # names and ids keep to one limit each


async def test_the_library_says_the_same_of_the_same_values(db: str) -> None:
    with pytest.raises(timestep.ValidationError) as retry:
        await timestep.run_agent_workflow(AGENT, "hi", model_retry={"max_attempts": 0})
    assert str(retry.value) == "model_retry.max_attempts: 0 is not a whole number from 1 to 2147483647"
    with pytest.raises(timestep.ValidationError) as queue:
        await timestep.configure_queue("a.b", limit=1, period=1)
    assert str(queue.value) == "name: 'a.b' contains '.'; use only letters, digits, '_' and '-' (at most 100 characters)"
    with pytest.raises(timestep.ValidationError) as long_queue:
        await timestep.queue_agent_workflow(AGENT, "hi", queue_name=_LONG)
    assert str(long_queue.value) == f"queue_name: {_LONG[:60]!r}... is 120 characters long; the limit is 100"
