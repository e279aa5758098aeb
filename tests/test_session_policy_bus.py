"""`session_policy` over the bus, sent as any NATS program sends a run request (JetStream publish,
or a request for the answer)."""

from __future__ import annotations

import asyncio
import uuid

import msgspec
import nats.js.errors
import pytest

from subjects.events import Accepted, AgentChanged, Cancelled, Completed, Interrupted, Rejected, ToolCall, decode_submit_answer
from timestep.client import RunRejectedError
from timestep.durable.sessions import DatabaseSession

AGENT = "bus-assistant"


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def collect(client, run_id: str, timeout: float = 60) -> list:
    async def gather() -> list:
        return [event async for event in client.events(run_id)]

    return await asyncio.wait_for(gather(), timeout)


async def first_of(client, run_id: str, kind: type, timeout: float = 30):
    async def find():
        async for event in client.events(run_id):
            if isinstance(event, kind):
                return event
        raise AssertionError(f"run {run_id} ended without {kind.__name__}")

    return await asyncio.wait_for(find(), timeout)


async def publish(system, **request) -> None:
    """The standard JetStream publish of a run request (its answer is the PubAck)."""
    await system.bus.js.publish(system.bus.subjects.submit, msgspec.json.encode({"agent": AGENT, **request}))


def said(items: list[dict]) -> list[str]:
    return [i["content"] if isinstance(i.get("content"), str) else i.get("type", "message") for i in items if i.get("role") == "user"]


async def test_enqueue_over_the_bus_runs_the_second_after_the_first(client, system) -> None:
    session, first, second = uid("s"), uid("first"), uid("second")
    await publish(system, id=first, input="think seconds=1.5", session_id=session)
    await first_of(client, first, ToolCall)
    await publish(system, id=second, input="get_weather city=Rome", session_id=session)
    first_events, second_events = await asyncio.gather(collect(client, first), collect(client, second))

    assert isinstance(first_events[-1], Completed) and isinstance(second_events[-1], Completed)
    items = await DatabaseSession(session).get_items()
    kinds = [i.get("role") or i.get("type") for i in items]
    # user, call, output, answer of the first, then the same of the second: never interleaved
    assert kinds == ["user", "function_call", "function_call_output", "assistant"] * 2
    assert said(items) == ["think seconds=1.5", "get_weather city=Rome"]


async def test_reject_over_the_bus_is_refused_naming_the_running_run(client, system) -> None:
    session, first = uid("s"), uid("first")
    await publish(system, id=first, input="think seconds=1.5", session_id=session)
    await first_of(client, first, ToolCall)

    body = {"agent": AGENT, "id": uid("second"), "input": "get_weather city=Oslo", "session_id": session, "session_policy": "reject"}
    answer = decode_submit_answer((await system.bus.nc.request(system.bus.subjects.submit, msgspec.json.encode(body), timeout=10)).data)
    assert isinstance(answer, Rejected) and answer.error.type == "SessionBusy"
    assert answer.error.message.startswith("session_id:") and first in answer.error.message
    # The JetStream publish of the same kind of request raises with the reason, as for any refused request.
    with pytest.raises(nats.js.errors.APIError, match=first):
        await publish(system, id=uid("third"), input="x", session_id=session, session_policy="reject")
    with pytest.raises(RunRejectedError) as refused:
        await client.submit(AGENT, "y", session_id=session, session_policy="reject")
    assert refused.value.error.type == "SessionBusy"
    await collect(client, first)


# slow: about 15 s; test_session_policy's interrupt of a run waiting for approval and test_bus's cancel over the
# contract are the fast tier's proof.
@pytest.mark.slow
async def test_interrupt_over_the_bus_cancels_a_run_waiting_for_approval(client, system) -> None:
    session, first, second = uid("s"), uid("first"), uid("second")
    await publish(system, id=first, input="send_email to=ada@example.com", session_id=session)
    await first_of(client, first, Interrupted)
    await publish(system, id=second, input="get_weather city=Lima", session_id=session, session_policy="interrupt")
    first_events, second_events = await asyncio.gather(collect(client, first), collect(client, second))

    assert isinstance(first_events[-1], Cancelled)
    assert isinstance(second_events[0], Accepted) and isinstance(second_events[-1], Completed)
    assert not any(isinstance(e, AgentChanged) for e in second_events)
    assert said(await DatabaseSession(session).get_items())[-1] == "get_weather city=Lima"


async def test_enqueue_over_the_bus_waits_behind_a_run_waiting_for_approval(client, system) -> None:
    session, first, second = uid("s"), uid("first"), uid("second")
    await publish(system, id=first, input="send_email to=bob@example.com", session_id=session)
    parked = await first_of(client, first, Interrupted)
    await publish(system, id=second, input="get_weather city=Quito", session_id=session)
    await first_of(client, second, Accepted)
    await asyncio.sleep(1.0)
    assert said(await DatabaseSession(session).get_items()) == ["send_email to=bob@example.com"]
    await client.approve(first, parked.approvals[0].call_id)
    first_events, second_events = await asyncio.gather(collect(client, first), collect(client, second))
    assert isinstance(first_events[-1], Completed) and isinstance(second_events[-1], Completed)
    assert said(await DatabaseSession(session).get_items()) == ["send_email to=bob@example.com", "get_weather city=Quito"]
