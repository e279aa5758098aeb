"""The approvals inbox through the library: records across runs, filters, decisions (edited
arguments, always, reject), who decided and when, deadlines, and the audit trail; on SQLite and
PostgreSQL (the `db` fixture)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest
from agents import Agent, RunContextWrapper, function_tool
from agents.testing import ModelStep, ScriptedModel, assistant_message, function_call

import timestep
from subjects.events import Interrupted, ToolApproved, ToolOutput, ToolRejected
from timestep.durable import store


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def mail_agent(sent: list[str], calls: list[tuple[str, str]], keys: list[str] | None = None, **register) -> Agent:
    @function_tool(needs_approval=True)
    def send_email(ctx: RunContextWrapper, to: str, subject: str = "hi") -> str:
        sent.append(to)
        if keys is not None:
            keys.append(timestep.idempotency_key(ctx))
        return f"sent {subject!r} to {to}"

    def answer(call) -> object:
        outputs = [i.get("output") for i in call.input if isinstance(i, dict) and i.get("type") == "function_call_output"]
        return [assistant_message("final: " + " | ".join(map(str, outputs)))]

    first = [function_call("send_email", {"to": to}, call_id=cid) for cid, to in calls]
    model = ScriptedModel([first] + [ModelStep.respond(answer) for _ in range(3)])
    return timestep.register_agent(Agent(name=uid("mailer"), model=model, tools=[send_email]), **register)


async def pending_of(run_id: str, count: int = 1, timeout: float = 30) -> list[timestep.ApprovalRecord]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records = await timestep.list_approvals(run_id=run_id)
        if len(records) >= count:
            return records
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} has no {count} pending approvals")


async def test_the_inbox_lists_filters_and_takes_an_edited_approval(db: str) -> None:
    sent: list[str] = []
    agent = mail_agent(sent, [("m1", "bob@example.com")])
    other = mail_agent([], [("m1", "eve@example.com")])
    run_id, other_id = uid("inbox"), uid("inbox")
    events: list = []
    running = asyncio.create_task(timestep.run_agent_workflow(
        agent, "Email Bob", session="s-" + run_id, workflow_id=run_id, wait_for_approval=True, on_event=events.append
    ))
    waiting = asyncio.create_task(timestep.run_agent_workflow(other, "Email Eve", workflow_id=other_id, wait_for_approval=True))
    [record] = await pending_of(run_id)
    await pending_of(other_id)

    assert (record.agent, record.tool, record.call_id, record.status) == (agent.name, "send_email", "m1", "pending")
    assert json.loads(record.arguments) == {"to": "bob@example.com"}
    assert record.session_id == "s-" + run_id and record.deadline is None and record.requested_at <= time.time()
    # Across runs, filtered.
    both = {r.run_id for r in await timestep.list_approvals(tool="send_email")}
    assert {run_id, other_id} <= both
    assert [r.run_id for r in await timestep.list_approvals(agent=other.name)] == [other_id]
    assert await timestep.list_approvals(agent=agent.name, older_than_seconds=3600) == []
    assert [r.run_id for r in await timestep.list_approvals(agent=agent.name, newer_than_seconds=3600)] == [run_id]
    assert await timestep.list_approvals(tool="no_such_tool") == []
    with pytest.raises(timestep.ValidationError, match="^status: "):
        await timestep.list_approvals(status="maybe")

    # A bad edit is refused, naming the field, and the approval stays pending.
    for bad, field in [('{"to": 42, "subject": "x"}', "arguments.to"), ('{"subject": "x"}', "arguments.to"), ("[1]", "arguments"),
                       ("{not json", "arguments"), ('{"to": "a", "subject": "x", "cc": "b"}', "arguments.cc")]:
        with pytest.raises(timestep.ValidationError) as refused:
            await timestep.approve_tool_call(run_id, "m1", arguments=bad, decided_by="ada")
        assert refused.value.field == field, (bad, str(refused.value))
    assert [r.status for r in await timestep.list_approvals(run_id=run_id)] == ["pending"]
    assert sent == []

    edited = '{"to": "bob@corp.example.com", "subject": "edited"}'
    await timestep.approve_tool_call(run_id, "m1", arguments=edited, decided_by="ada")
    result = await asyncio.wait_for(running, 30)
    assert result.status == "completed"
    assert sent == ["bob@corp.example.com"]
    assert "sent 'edited' to bob@corp.example.com" in result.output
    [approved] = [e for e in events if isinstance(e, ToolApproved)]
    assert (approved.call_id, approved.arguments, approved.decided_by) == ("m1", edited, "ada")
    [output] = [e for e in events if isinstance(e, ToolOutput)]
    assert output.arguments == edited  # what the tool really ran with
    with pytest.raises(timestep.ValidationError, match=r"is not waiting for approval of 'm1' \(it was approved\); it waits on no tool call now$"):
        await timestep.approve_tool_call(run_id, "m1")

    # The audit trail keeps it after the run ended.
    [audit] = await timestep.list_approvals("decided", run_id=run_id)
    assert (audit.status, audit.decided_by, audit.approved_arguments) == ("approved", "ada", edited)
    assert audit.requested_at <= audit.decided_at <= time.time()
    assert await timestep.list_approvals(run_id=run_id) == []

    await timestep.reject_tool_call(other_id, "m1", "not Eve", decided_by="bob")
    assert "not Eve" in (await asyncio.wait_for(waiting, 30)).output
    [audit] = await timestep.list_approvals("decided", run_id=other_id)
    assert (audit.status, audit.decided_by, audit.message) == ("rejected", "bob", "not Eve")


async def test_always_approve_and_always_reject_decide_every_call_of_the_tool(db: str) -> None:
    sent: list[str] = []
    agent = mail_agent(sent, [("m1", "a@example.com"), ("m2", "b@example.com")])
    run_id = uid("always")
    events: list = []
    running = asyncio.create_task(timestep.run_agent_workflow(agent, "Email both", workflow_id=run_id, wait_for_approval=True, on_event=events.append))
    await pending_of(run_id, 2)
    await timestep.approve_tool_call(run_id, "m2", always=True, decided_by="ada")
    result = await asyncio.wait_for(running, 30)
    assert sorted(sent) == ["a@example.com", "b@example.com"]
    assert result.status == "completed"
    assert sorted((e.call_id, e.always) for e in events if isinstance(e, ToolApproved)) == [("m1", True), ("m2", True)]
    audit = await timestep.list_approvals("decided", run_id=run_id)
    assert sorted((r.call_id, r.status, r.always, r.decided_by) for r in audit) == [
        ("m1", "approved", True, "ada"), ("m2", "approved", True, "ada")
    ]

    sent.clear()
    agent = mail_agent(sent, [("m1", "a@example.com"), ("m2", "b@example.com")])
    run_id = uid("never")
    running = asyncio.create_task(timestep.run_agent_workflow(agent, "Email both", workflow_id=run_id, wait_for_approval=True))
    await pending_of(run_id, 2)
    await timestep.reject_tool_call(run_id, "m1", "no mail today", always=True, decided_by="ada")
    result = await asyncio.wait_for(running, 30)
    assert sent == [] and result.output.count("no mail today") == 2
    assert sorted(r.status for r in await timestep.list_approvals("decided", run_id=run_id)) == ["rejected", "rejected"]


async def test_an_undecided_call_is_rejected_at_its_deadline(db: str) -> None:
    sent: list[str] = []
    agent = mail_agent(sent, [("m1", "a@example.com")], approval_timeouts={"send_email": 1.0})
    run_id = uid("deadline")
    events: list = []
    started = time.time()
    result = await asyncio.wait_for(
        timestep.run_agent_workflow(agent, "Email", workflow_id=run_id, wait_for_approval=True, on_event=events.append), 30
    )
    assert sent == [] and result.status == "completed" and "deadline" in result.output
    [interrupted] = [e for e in events if isinstance(e, Interrupted)]
    [rejected] = [e for e in events if isinstance(e, ToolRejected)]
    assert interrupted.approvals[0].deadline is not None and interrupted.approvals[0].deadline >= started + 1.0
    assert (rejected.call_id, rejected.expired, rejected.decided_by) == ("m1", True, "deadline")
    [audit] = await timestep.list_approvals("decided", run_id=run_id)
    assert (audit.status, audit.decided_by, audit.decided_at) == ("expired", "deadline", audit.deadline)

    # A run request's deadline overrides the tool's.
    agent = mail_agent(sent, [("m1", "a@example.com")], approval_timeouts={"send_email": 1.0})
    run_id = uid("deadline")
    running = asyncio.create_task(timestep.run_agent_workflow(agent, "Email", workflow_id=run_id, wait_for_approval=True, approval_timeout_seconds=3600))
    [record] = await pending_of(run_id)
    assert record.deadline == pytest.approx(record.requested_at + 3600)
    await timestep.approve_tool_call(run_id, "m1")
    assert isinstance(await asyncio.wait_for(running, 30), timestep.RunResult)


async def test_a_tool_sees_a_stable_idempotency_key(db: str) -> None:
    keys: list[str] = []
    agent = mail_agent([], [("m1", "a@example.com")], keys=keys)
    run_id = uid("key")
    running = asyncio.create_task(timestep.run_agent_workflow(agent, "Email", workflow_id=run_id, wait_for_approval=True))
    await pending_of(run_id)
    await timestep.approve_tool_call(run_id, "m1")
    await asyncio.wait_for(running, 30)
    [key] = keys
    assert key.startswith(f"{run_id}:") and key.endswith(":m1")
    with pytest.raises(RuntimeError, match="only available inside a tool call"):
        timestep.idempotency_key()


async def test_a_replayed_interruption_writes_its_records_once(db: str) -> None:
    """The records are keyed by run and call: the step writing them again (after a crash before
    it was recorded) keeps the first request's time and deadline."""
    from subjects.events import Approval
    from timestep.durable import approvals

    run_id = uid("once")
    calls = [Approval(call_id="c1", tool="t", arguments="{}")]
    first = await approvals.record_requested(run_id, "a", calls, session_id=None, queue="q", metadata={"k": "v"}, timeout_seconds=60)
    await asyncio.sleep(0.01)
    again = await approvals.record_requested(run_id, "a", calls, session_id=None, queue="q", metadata={"k": "v"}, timeout_seconds=60)
    assert first == again
    [record] = await approvals.query_approvals(approvals.ApprovalList(status="all", run_id=run_id))
    assert (record.queue, record.metadata) == ("q", {"k": "v"})

    def count(engine) -> int:
        import sqlalchemy as sa

        with engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(store.approvals).where(store.approvals.c.run_id == run_id)).scalar()

    assert await store.run(count) == 1


async def test_a_run_cancelled_while_it_waits_ends_and_leaves_the_inbox(db: str) -> None:
    """`cancel_run` of a run waiting for a decision: the caller gets RunCancelledError now (the run
    is woken; it used to sleep on until its next deadline, up to an hour), the run says
    `cancelled`, and its call leaves the inbox for the audit trail as `cancelled`."""
    agent = mail_agent([], [("c1", "zoe@example.com")])
    run_id = uid("gone")
    events: list = []
    running = asyncio.create_task(
        timestep.run_agent_workflow(agent, "Email Zoe", workflow_id=run_id, wait_for_approval=True, on_event=events.append)
    )
    await pending_of(run_id)
    await timestep.cancel_run(run_id)
    with pytest.raises(timestep.RunCancelledError):
        await asyncio.wait_for(running, 60)  # a hang here is the bug (the wait lasted up to an hour)
    [record] = await timestep.list_approvals("all", run_id=run_id)
    assert record.status == "cancelled" and "cancelled" in (record.message or "") and record.decided_at is not None
    assert await timestep.list_approvals(run_id=run_id) == []  # out of the inbox
    assert [r.run_id for r in await timestep.list_approvals("decided", run_id=run_id)] == [run_id]  # in the audit trail


async def test_a_run_is_listed_as_waiting_as_soon_as_interrupted_is_published(db: str) -> None:
    """`interrupted` is published inside the step that records it, before DBOS stores the step: a
    caller that reacts to the event (a TypeScript client listing waiting runs, an operator's script)
    must find the run waiting at once, and running again once decided."""
    from timestep.durable import listing

    agent = mail_agent([], [("c1", "ann@example.com")])
    run_id = uid("listed")
    seen: list[str] = []
    interrupted = asyncio.Event()

    def on_event(event) -> None:
        if isinstance(event, Interrupted):
            interrupted.set()

    running = asyncio.create_task(
        timestep.run_agent_workflow(agent, "Email Ann", workflow_id=run_id, wait_for_approval=True, on_event=on_event)
    )
    await asyncio.wait_for(interrupted.wait(), 30)
    seen.append((await listing.get_run(run_id)).status)
    assert run_id in [r.id for r in await listing.list_runs(status="waiting", limit=1000)]
    await timestep.approve_tool_call(run_id, "c1")
    assert (await asyncio.wait_for(running, 30)).status == "completed"
    seen.append((await listing.get_run(run_id)).status)
    assert seen == ["waiting", "completed"]


async def test_the_model_is_told_the_arguments_an_approver_set(db: str) -> None:
    """An edited approval changes what the model sees of its own call: the next model turn's
    history holds the function call with the approver's arguments (not the ones the model first
    wrote), beside their output; the tool runs with them once."""
    sent: list[str] = []
    seen: list[list[dict]] = []

    @function_tool(needs_approval=True)
    def send_email(to: str, subject: str = "hi") -> str:
        sent.append(to)
        return f"sent {subject!r} to {to}"

    def answer(call) -> object:
        seen.append([i for i in call.input if isinstance(i, dict) and i.get("type") == "function_call"])
        return [assistant_message("done")]

    model = ScriptedModel([[function_call("send_email", {"to": "bob@example.com"}, call_id="m1")], ModelStep.respond(answer)])
    agent = timestep.register_agent(Agent(name=uid("mailer"), model=model, tools=[send_email]))
    run_id = uid("edited")
    running = asyncio.create_task(timestep.run_agent_workflow(agent, "Email Bob", workflow_id=run_id, wait_for_approval=True))
    await pending_of(run_id)
    edited = '{"to": "bob@corp.example.com", "subject": "edited"}'
    await timestep.approve_tool_call(run_id, "m1", arguments=edited)
    assert (await asyncio.wait_for(running, 30)).output == "done"
    assert sent == ["bob@corp.example.com"]
    [[told]] = seen
    assert (told["call_id"], json.loads(told["arguments"])) == ("m1", json.loads(edited))
