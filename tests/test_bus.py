"""The actor system over a real nats-server: the contract, end to end, in one process."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import uuid

import msgspec
import nats
import nats.js.errors
import pytest
from nats.js.errors import NotFoundError
from agents import SQLiteSession

import bus_agents
from processes import process_env
from subjects.events import (
    Accepted,
    Cancelled,
    Completed,
    Delta,
    Interrupted,
    Queued,
    Rejected,
    Started,
    ToolApproved,
    ToolCall,
    ToolOutput,
    ToolRejected,
    decode_submit_answer,
)
from subjects.messages import DeadLetter, Reply, RunRequest, Schedule
from timestep.client import RequestRefusedError, RunRejectedError
from timestep.durable.sessions import DatabaseSession
from timestep.errors import RunCancelledError, TimestepError, ValidationError

AGENT = "bus-assistant"


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def collect(client, run_id: str, timeout: float = 30) -> list:
    async def gather() -> list:
        return [event async for event in client.events(run_id)]

    return await asyncio.wait_for(gather(), timeout)


async def test_submit_to_completed_end_to_end(client) -> None:
    city = uid("Paris")
    run = await client.submit(AGENT, f"get_weather city={city}")
    assert isinstance(run.accepted, Accepted) and run.accepted.run_id == run.run_id
    events = await collect(client, run.run_id)

    assert [type(e) for e in events] == [Accepted, Started, ToolCall, ToolOutput, Completed]
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert events[-1].output == f"get_weather returned: sunny in {city}"
    assert events[-1].usage.requests == 2
    assert bus_agents.CALLS.count(f"get_weather:{city}") == 1


async def test_queued_run_reports_queued_then_runs(client) -> None:
    queue = uid("q")
    run = await client.submit(AGENT, "hello", queue=queue, priority=5)
    events = await collect(client, run.run_id)
    assert [type(e) for e in events] == [Accepted, Queued, Started, Completed]
    assert events[1].queue == queue
    assert [e.seq for e in events] == [1, 2, 3, 4]


async def test_streamed_deltas_arrive_in_order(client) -> None:
    run = await client.submit(AGENT, "one two three four five", stream=True)
    events = await collect(client, run.run_id)
    deltas = [e for e in events if isinstance(e, Delta)]
    # The first model delta goes out alone; those the model yields while it is being stored
    # (this one yields all at once) are gathered into the next events.
    assert len(deltas) >= 2
    assert "".join(d.text for d in deltas) == "You said: one two three four five"
    assert [e.seq for e in events] == sorted(e.seq for e in events)


async def test_live_text_reaches_a_plain_subscriber_before_it_is_stored(client) -> None:
    """A NATS user subscribes to `runs.live.<id>` with a core subscription (any client library) and
    gets each piece of streamed text as the model yields it, in order, the offsets without a gap;
    `Client.live` gives the same pieces and ends with the run. The pieces are not stored: the
    events stream holds the `delta` events only."""
    run_id = uid("live")
    nc = client.bus.nc
    plain: list[dict] = []

    async def on_piece(msg) -> None:
        plain.append(msgspec.json.decode(msg.data))

    sub = await nc.subscribe(f"timestep.runs.live.{run_id}", cb=on_piece)
    await nc.flush()
    pieces = client.live(run_id)
    first = asyncio.ensure_future(pieces.__anext__())  # subscribes before the run starts
    await asyncio.sleep(1)
    await client.submit(AGENT, "one two three four five", stream=True, id=run_id)
    got = [await asyncio.wait_for(first, 30)]
    got += [piece async for piece in pieces]
    events = await collect(client, run_id)
    await sub.unsubscribe()

    text = events[-1].output
    assert text == "You said: one two three four five"
    assert "".join(p.text for p in got) == text
    assert [p.offset for p in got] == [sum(len(q.text) for q in got[:i]) for i in range(len(got))]
    assert len({p.call for p in got}) == 1 and all(p.run_id == run_id for p in got)
    assert len(got) > 1  # one piece per model delta, not gathered
    assert [(p["offset"], p["text"]) for p in plain] == [(p.offset, p.text) for p in got]
    # The stored record: the delta events, same text; nothing on the live subject was stored.
    assert "".join(e.text for e in events if isinstance(e, Delta)) == text
    with pytest.raises(NotFoundError):
        await client.bus.js.get_last_msg("TIMESTEP_EVENTS", f"timestep.runs.live.{run_id}", direct=True)


async def test_late_subscriber_replays_a_runs_history(client) -> None:
    run = await client.submit(AGENT, "get_weather city=Late")
    first = await collect(client, run.run_id)
    await asyncio.sleep(0.2)
    replay = await collect(client, run.run_id)
    assert replay == first
    assert isinstance(replay[-1], Completed)


async def test_republished_request_runs_once(client, system) -> None:
    run_id, city = uid("dup"), uid("Dup")
    body = msgspec.json.encode({"id": run_id, "agent": AGENT, "input": f"get_weather city={city}"})
    nc = system.bus.nc
    subject = system.bus.subjects.submit
    for _ in range(3):  # a retried publish inside the duplicate window
        await nc.publish(subject, body, headers={"Nats-Msg-Id": run_id})
    await collect(client, run_id)
    # The same id again with another Nats-Msg-Id, as after the window: still the same run.
    await nc.publish(subject, body, headers={"Nats-Msg-Id": run_id + "-later"})
    await nc.flush()
    await asyncio.sleep(1.0)
    events = await collect(client, run_id)
    assert sum(isinstance(e, Completed) for e in events) == 1
    assert sum(isinstance(e, Started) for e in events) == 1
    assert bus_agents.CALLS.count(f"get_weather:{city}") == 1


async def test_request_without_id_gets_an_assigned_id_and_a_repeat_is_the_same_run(client, system) -> None:
    body = msgspec.json.encode({"agent": AGENT, "input": f"get_weather city={uid('NoId')}"})
    replies = [decode_submit_answer((await system.bus.nc.request(system.bus.subjects.submit, body, timeout=10)).data) for _ in range(2)]
    assert isinstance(replies[0], Accepted)
    assert replies[0].run_id.startswith("r-") and replies[1].run_id == replies[0].run_id
    events = await collect(client, replies[0].run_id)
    assert sum(isinstance(e, Completed) for e in events) == 1


BAD_REQUESTS = [
    (b'{"agent": "bus-assistant", "input": ', "request: is not valid JSON"),
    (b'{"agent": "bus-assistant", "input": 42}', "input: 42 is a whole number; expected a string of at most 200000 characters or a list of objects"),
    (b'{"agent": "bus-assistant", "input": "hi", "priority": "high"}', "priority: 'high' is a string; expected a whole number from 1 to 2147483646"),
    (b'{"agent": "nobody-here", "input": "hi", "id": "RUNID"}', "agent: no agent named 'nobody-here'"),
    (b'{"agent": "bus-assistant", "input": "hi", "id": "a.b"}', "id: 'a.b' contains '.'; use only letters, digits, '_' and '-'"),
    (b'{"agent": "bus-assistant", "input": "hi", "id": "*"}', "id: '*' contains '*'; use only"),
    (b'{"agent": "bus-assistant", "input": "hi", "id": "has space"}', "id: 'has space' contains ' '; use only"),
    (b'{"agent": "bus-assistant", "input": "hi", "session_id": ""}', "session_id: '' is empty; expected a string of 1 to 255 characters, no control characters"),
    (b'{"agent": "bus-assistant", "input": [{"role": "robot", "content": "x"}]}', "input[0].role: 'robot' is not one of"),
    (b'{"agent": "bus-assistant", "input": "' + b"x" * 300_000 + b'"}', "request: is 300039 bytes; the limit is 262144 (TIMESTEP_MAX_REQUEST_BYTES)"),
]


@pytest.mark.parametrize(("body", "reason"), BAD_REQUESTS, ids=["malformed-json", "wrong-type", "bad-priority", "unknown-agent", "id-dot", "id-star", "id-space", "empty-session", "bad-item", "oversized"])
async def test_bad_requests_are_rejected_and_dead_lettered(client, system, body: bytes, reason: str) -> None:
    body = body.replace(b"RUNID", uid("unknown").encode())
    bus = system.bus
    dead = await bus.js.subscribe(bus.subjects.dead(bus.subjects.submit), ordered_consumer=True, deliver_policy="new")
    try:
        reply = decode_submit_answer((await bus.nc.request(bus.subjects.submit, body, timeout=10)).data)
        assert isinstance(reply, Rejected)
        assert reason in reply.error.message, reply.error.message
        while True:
            letter = msgspec.json.decode((await dead.next_msg(timeout=10)).data, type=DeadLetter)
            if letter.data == body[: len(letter.data)].decode(errors="replace")[:65536] and letter.size == len(body):
                break
        assert letter.subject == bus.subjects.submit
        assert reason in letter.reason
    finally:
        await dead.unsubscribe()
    # The actors are still serving good traffic.
    assert isinstance((await client.submit(AGENT, "still there?")).accepted, Accepted)


async def test_python_client_raises_on_rejection(client) -> None:
    with pytest.raises(RunRejectedError, match="no agent named 'ghost'"):
        await client.submit("ghost", "boo")


async def test_approval_and_rejection_over_the_contract(client) -> None:
    to = uid("ada")
    run = await client.submit(AGENT, f"send_email to={to}")
    async for event in client.events(run.run_id):
        if isinstance(event, Interrupted):
            assert [a.tool for a in event.approvals] == ["send_email"]
            await client.approve(run.run_id, event.approvals[0].call_id)
        if isinstance(event, Completed):
            assert event.output == f"send_email returned: sent to {to}"
            break
    assert bus_agents.CALLS.count(f"send_email:{to}") == 1

    to = uid("bob")
    run = await client.submit(AGENT, f"send_email to={to}")
    async for event in client.events(run.run_id):
        if isinstance(event, Interrupted):
            await client.reject(run.run_id, event.approvals[0].call_id, "not today")
    assert isinstance(event, Completed) and "not today" in event.output
    assert bus_agents.CALLS.count(f"send_email:{to}") == 0
    # The history says the call was rejected, and why; and the approval before it was taken.
    [rejected] = [e for e in await collect(client, run.run_id) if isinstance(e, ToolRejected)]
    assert (rejected.call_id, rejected.tool, rejected.message) == ("call_1", "send_email", "not today")


async def test_approve_reject_and_cancel_are_answered_with_what_happened(client, system) -> None:
    """The client hears whether the run took the command, and raises a typed error when not."""
    with pytest.raises(ValidationError, match=r"^run_id: 'a\.b' contains '\.'") as bad:
        await client.approve("a.b", "call_1")
    assert bad.value.field == "run_id"
    with pytest.raises(ValidationError, match="^call_id: '' is empty; expected a string of 1 to 255 characters"):
        await client.reject(uid("run"), "")

    ghost = uid("ghost")
    for command in (client.approve(ghost, "call_1"), client.reject(ghost, "call_1"), client.cancel(ghost)):
        with pytest.raises(RequestRefusedError, match=f"^run_id: no run '{ghost}'") as refused:
            await command
        assert refused.value.type == "UnknownRun"

    run = await client.submit(AGENT, f"send_email to={uid('cy')}")
    async for event in client.events(run.run_id):
        if isinstance(event, Interrupted):
            break
    with pytest.raises(RequestRefusedError, match="is not waiting for approval of 'call_9'; it waits on 'call_1'") as refused:
        await client.approve(run.run_id, "call_9")
    assert refused.value.type == "NotWaiting"
    await client.approve(run.run_id, "call_1")
    completed = await run.result(timeout=30)
    history = await collect(client, run.run_id)
    assert [type(e) for e in history][2:5] == [Interrupted, ToolApproved, ToolCall]
    for command in (client.approve(run.run_id, "call_1"), client.cancel(run.run_id)):
        with pytest.raises(RequestRefusedError, match=f"run '{run.run_id}' already finished \\(completed\\)") as refused:
            await command
        assert refused.value.type == "AlreadyFinished"
    assert await system.bus.last_event_seq(run.run_id) == completed.seq  # nothing appended by the refusals

    # Any NATS program: a plain request on the command subject gets the Reply.
    slow = await client.submit(AGENT, "think seconds=30")
    async for event in client.events(slow.run_id):
        if isinstance(event, ToolCall):
            break
    answer = await system.bus.nc.request(system.bus.subjects.command(slow.run_id, "cancel"), b"{}", timeout=10)
    assert msgspec.json.decode(answer.data, type=Reply) == Reply(ok=True)
    with pytest.raises(RunCancelledError):
        await slow.result(timeout=10)


async def test_cancel_over_the_contract(client) -> None:
    run = await client.submit(AGENT, "think seconds=30")
    async for event in client.events(run.run_id):
        if isinstance(event, ToolCall):
            await client.cancel(run.run_id)
    assert isinstance(event, Cancelled)
    with pytest.raises(RunCancelledError):
        await run.result(timeout=5)


async def test_a_resumed_cancelled_run_numbers_on_and_followers_see_its_end(client) -> None:
    """Cancelled mid-tool, then resumed: the run's events stay 1, 2, 3, ... (none reused after
    `cancelled`), and a follower from the start reads past `cancelled` to `completed`."""
    from timestep.durable import engine

    run = await client.submit(AGENT, "think seconds=4")
    async for event in client.events(run.run_id):
        if isinstance(event, ToolCall):
            await client.cancel(run.run_id)
    assert isinstance(event, Cancelled)
    await asyncio.sleep(2)  # the executing step sees the cancel (DBOS polls for it) before the resume
    await engine.resume(run.run_id)
    for _ in range(300):
        if (await engine.status(run.run_id)).status == "completed":
            break
        await asyncio.sleep(0.1)
    events = await collect(client, run.run_id)
    kinds = [type(e).__name__ for e in events]
    assert [e.seq for e in events] == list(range(1, len(events) + 1)), list(zip(kinds, [e.seq for e in events]))
    assert kinds[-1] == "Completed" and "Cancelled" in kinds, kinds
    assert kinds.index("Cancelled") < kinds.index("ToolOutput")


async def test_a_stored_control_for_an_unknown_run_is_dead_lettered(client, system) -> None:
    bus = system.bus
    dead = await bus.js.subscribe(bus.subjects.dead(bus.subjects.control("*", "*")), ordered_consumer=True, deliver_policy="new")
    try:
        ghost = uid("ghost")
        await client.approve(ghost, "call_1", wait=False)
        letter = msgspec.json.decode((await dead.next_msg(timeout=10)).data, type=DeadLetter)
        assert letter.subject == bus.subjects.control(ghost, "approve")
        assert f"no run '{ghost}'" in letter.reason
    finally:
        await dead.unsubscribe()


async def test_queues_configure_and_status_over_the_contract(client) -> None:
    name = uid("api")
    status = await client.configure_queue(name, limit=10, period_seconds=60, concurrency=2, tokens_per_period=5000)
    assert (status.limit, status.period_seconds, status.concurrency, status.tokens_per_period) == (10, 60.0, 2, 5000)
    run = await client.submit(AGENT, "hello", queue=name)
    await run.result(timeout=30)
    for _ in range(100):  # `completed` is published just before the workflow records its end
        [status] = await client.queue_status(name)
        if status.running == 0:
            break
        await asyncio.sleep(0.05)
    assert status.depth == 0 and status.running == 0
    assert status.admitted_in_window == 1
    assert status.tokens_in_window > 0
    with pytest.raises(TimestepError, match="limit"):
        await client.configure_queue(name, limit=0, period_seconds=60)
    with pytest.raises(TimestepError, match="period"):
        await client.configure_queue(name, limit=5)


async def test_schedules_over_the_contract(client) -> None:
    name = uid("every-second")
    created = await client.create_schedule(name, "* * * * * *", {"agent": AGENT, "input": "tick"})
    assert created.name == name
    assert name in [s.name for s in await client.list_schedules()]
    completed = None
    async for event in client.events():
        if isinstance(event, Completed) and event.run_id.startswith(name + "-"):
            completed = event
            break
    assert await client.delete_schedule(name) is True
    assert await client.delete_schedule(name) is False
    assert completed.output == "You said: tick"
    await asyncio.sleep(2)  # a tick sent just before the delete still starts a run: not in the next test's time
    with pytest.raises(TimestepError, match="crontab"):
        await client.create_schedule(uid("bad"), "every minute", {"agent": AGENT, "input": "x"})


async def test_the_library_and_the_bus_share_one_list_of_schedules(client) -> None:
    """One table of schedules: a schedule the library made is listed and deleted on the bus (and by
    `timestep schedules`), one made on the bus is listed by the library with when it last fired."""
    import timestep
    from agents import Agent

    on_bus, in_library = uid("from-bus"), uid("from-library")
    agent = Agent(name=uid("yearly"))  # its schedule fires once a year: listed here, never run
    assert await timestep.create_scheduled_agent_workflow("0 0 1 1 *", agent, "happy new year", name=in_library) == in_library
    await client.create_schedule(on_bus, "* * * * * *", {"agent": AGENT, "input": "tick"})
    try:
        listed = {s.name: s for s in await client.list_schedules()}
        assert (listed[in_library].origin, listed[in_library].request.agent, listed[in_library].request.input) == ("library", agent.name, "happy new year")
        assert listed[on_bus].origin == "bus"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            mine = {s.name: s for s in await timestep.list_schedules()}
            if mine[on_bus].last_fired_at is not None:
                break
            await asyncio.sleep(0.2)
        assert (mine[on_bus].origin, mine[on_bus].agent, mine[on_bus].crontab) == ("bus", AGENT, "* * * * * *")
        assert mine[on_bus].last_fired_at is not None and mine[in_library].last_fired_at is None
    finally:
        assert await client.delete_schedule(in_library) is True
        assert await timestep.delete_schedule(on_bus) is True
    assert not {in_library, on_bus} & {s.name for s in await timestep.list_schedules()}
    await asyncio.sleep(2)  # a tick sent just before the delete still starts a run: not in the next test's time


async def test_schedule_whose_cron_never_fires_is_refused(client, system) -> None:
    for never in ["0 0 31 2 *", "0 0 0 31 2 *"]:
        name = uid("never")
        body = msgspec.json.encode({"name": name, "cron": never, "request": {"agent": AGENT, "input": "x"}})
        reply = msgspec.json.decode((await system.bus.nc.request(system.bus.subjects.schedules_create, body, timeout=10)).data, type=Reply)
        assert not reply.ok
        assert reply.error.message.startswith(f"crontab: '{never}' never fires: no time in the next 50 years matches it")
        assert "use days every chosen month has" in reply.error.message
        with pytest.raises(TimestepError, match=r"^crontab: .* never fires"):
            await client.create_schedule(name, never, {"agent": AGENT, "input": "x"})
        assert name not in [s.name for s in await client.list_schedules()]


async def test_schedule_for_an_agent_no_actor_hosts_is_refused(client) -> None:
    ghost, name = uid("ghost"), uid("haunted")
    with pytest.raises(TimestepError) as refused:
        await client.create_schedule(name, "* * * * * *", {"agent": ghost, "input": "boo"})
    # The governor's check and words for a run to that agent.
    assert str(refused.value).startswith(f"request.agent: no agent named '{ghost}' is hosted by a running agent actor (hosted: ")
    assert AGENT in str(refused.value) and "timestep up --agents MODULE" in str(refused.value)
    assert name not in [s.name for s in await client.list_schedules()]


async def test_cli_refuses_a_schedule_that_never_fires_or_names_no_hosted_agent(client, system) -> None:
    async def cli(*args: str) -> tuple[int, str, str]:
        # Awaited, not run: the actors answering it share this event loop.
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "actors.cli.main", *args, env=process_env(NATS_URL=system.url),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        return proc.returncode, out.decode(), err.decode()

    name, ghost = uid("cli-never"), uid("ghost")
    code, out, err = await cli("schedules", "create", name, "0 0 31 2 *", AGENT, "hi")
    assert (code, out) == (2, "")
    assert err.startswith("error: cron: '0 0 31 2 *' never fires: ") and err.count("\n") == 1, err
    code, out, err = await cli("schedules", "create", name, "* * * * *", ghost, "hi")
    assert (code, out) == (2, "")
    assert err.startswith(f"error: agent: no agent named '{ghost}' is hosted by a running agent actor") and err.count("\n") == 1, err
    assert name not in [s.name for s in await client.list_schedules()]


async def test_a_schedule_that_cannot_fire_never_stops_the_others(client, system, caplog: pytest.LogCaptureFixture) -> None:
    """Rows a version without today's checks could store: a cron with no next time, and a request
    that no longer reads. Each is logged once and skipped; the every-second schedule still fires."""
    from timestep.durable import store, ticks as table

    caplog.set_level(logging.INFO, logger="actors.scheduler")
    # Named to sort before the good one: the scheduler goes through its schedules by name.
    never, corrupt, good = uid("0-never"), uid("0-corrupt"), uid("every-second")
    never_fires = Schedule(name=never, cron="0 0 31 2 *", request=RunRequest(agent=AGENT, input="never"), created_at=time.time())
    await store.run(lambda db: table.save(db, table.Row(never_fires)))

    def save_corrupt(db) -> None:
        with db.begin() as conn:
            store.upsert(conn, store.schedules, [{"name": corrupt, "cron": "* * * * * *", "request": "{not json", "created_at": time.time()}])

    await store.run(save_corrupt)
    try:
        await client.create_schedule(good, "* * * * * *", {"agent": AGENT, "input": "tick"})

        async def ticks(wanted: int) -> list[Completed]:
            done = []
            async for event in client.events():
                if isinstance(event, Completed) and event.run_id.startswith(good + "-"):
                    done.append(event)
                    if len(done) == wanted:
                        return done

        # Two ticks: the scheduler went through its schedules several times meanwhile.
        assert [e.output for e in await asyncio.wait_for(ticks(2), 60)] == ["You said: tick"] * 2
    finally:
        for name in (good, never, corrupt):
            assert await client.delete_schedule(name) is True
        await asyncio.sleep(2)  # a tick sent just before the delete still starts a run: not in the next test's time
    logged = [r.getMessage() for r in caplog.records if r.name == "actors.scheduler" and r.levelno == logging.ERROR]
    assert [m for m in logged if m.startswith(f"schedule {never}:")] == [
        f"schedule {never}: skipped: its cron '0 0 31 2 *' cannot fire (failed to find next date); "
        f"delete it (timestep schedules delete {never}) and create it again with a cron that fires"
    ]
    [unreadable] = [m for m in logged if m.startswith(f"schedule {corrupt}:")]
    assert "skipped: its stored request cannot be read" in unreadable and f"timestep schedules delete {corrupt}" in unreadable
    assert not [m for m in logged if "clock failed" in m]


async def test_cancel_of_a_finished_run_leaves_its_history_alone(client, system) -> None:
    bus = system.bus
    run = await client.submit(AGENT, "hello")
    await run.result(timeout=30)
    dead = await bus.js.subscribe(bus.subjects.dead(bus.subjects.control("*", "*")), ordered_consumer=True, deliver_policy="new")
    try:
        await client.cancel(run.run_id, wait=False)
        letter = msgspec.json.decode((await dead.next_msg(timeout=10)).data, type=DeadLetter)
        assert letter.error.type == "AlreadyFinished" and "already finished (completed)" in letter.reason
    finally:
        await dead.unsubscribe()
    events = await collect(client, run.run_id)
    assert [type(e) for e in events] == [Accepted, Started, Completed]
    assert await bus.last_event_seq(run.run_id) == events[-1].seq  # nothing after `completed`


async def test_a_cancel_sent_the_moment_completed_arrives_is_refused(client, system) -> None:
    """`completed` is stored a moment before DBOS records the run's end: a cancel sent as soon as a
    subscriber sees it must still find the run finished, not append `cancelled` after `completed`."""
    bus = system.bus
    dead = await bus.js.subscribe(bus.subjects.dead(bus.subjects.control("*", "*")), ordered_consumer=True, deliver_policy="new")
    finished: dict[str, int] = {}
    try:
        for _ in range(15):
            run = await client.submit(AGENT, "hello")
            async for event in client.events(run.run_id):
                if isinstance(event, Completed):
                    await client.cancel(run.run_id, wait=False)
                    finished[run.run_id] = event.seq
                    break
        letters = [msgspec.json.decode((await dead.next_msg(timeout=10)).data, type=DeadLetter) for _ in finished]
    finally:
        await dead.unsubscribe()
    assert all(letter.error.type == "AlreadyFinished" for letter in letters), [letter.reason for letter in letters]
    for run_id, seq in finished.items():
        assert await bus.last_event_seq(run_id) == seq  # nothing after `completed`


async def test_a_bad_request_naming_an_existing_run_leaves_that_run_alone(client, system, tmp_path) -> None:
    """Seen by a governor on a server of its own, so JetStream's duplicate window (which would drop
    a `rejected` with the run's first seq for two minutes) cannot hide a wrong event."""
    from actors.system import System
    from timestep.bus.server import EmbeddedNats, free_port

    run = await client.submit(AGENT, "hello")
    await run.result(timeout=30)
    with EmbeddedNats(tmp_path / "nats", port=free_port()) as other:
        governor = await System({"governor"}, nats_url=other.url).start()
        try:
            bus = governor.bus
            reply = await bus.request(
                bus.subjects.submit, b'{"id": "%s", "agent": 5, "input": "x"}' % run.run_id.encode(), 10,
                headers={"Nats-Msg-Id": uid("again")},
            )
            rejected = decode_submit_answer(reply)
            assert isinstance(rejected, Rejected) and rejected.error.message.startswith("agent")
            dead = await bus.js.subscribe(bus.subjects.dead(bus.subjects.submit), ordered_consumer=True)
            await dead.next_msg(timeout=10)  # the stream copy was handled
            await dead.unsubscribe()
            assert await bus.last_event_seq(run.run_id) == 0  # no `rejected` for the existing run
        finally:
            await governor.stop()


async def test_the_approvals_inbox_over_the_contract(client, system) -> None:
    """Any NATS program lists pending approvals across runs with a plain request, and approves
    with edited arguments; a bad edit is refused naming the field and the call stays pending."""
    to, other = uid("ada"), uid("eve")
    run = await client.submit(AGENT, f"send_email to={to}", queue=uid("q"), metadata={"ticket": "T-1"})
    second = await client.submit(AGENT, f"send_email to={other}")
    for r in (run, second):
        async for event in client.events(r.run_id):
            if isinstance(event, Interrupted):
                break

    nc, subjects = system.bus.nc, system.bus.subjects
    answer = await nc.request(subjects.approvals_list, b"", timeout=10)
    reply = msgspec.json.decode(answer.data, type=Reply)
    assert reply.ok
    mine = {a.run_id: a for a in reply.approvals}
    assert {run.run_id, second.run_id} <= set(mine)
    record = mine[run.run_id]
    assert (record.agent, record.tool, record.call_id, record.status) == (AGENT, "send_email", "call_1", "pending")
    assert record.metadata == {"ticket": "T-1"} and record.queue is not None
    filtered = msgspec.json.decode((await nc.request(subjects.approvals_list, msgspec.json.encode({"run_id": second.run_id}), timeout=10)).data, type=Reply)
    assert [a.run_id for a in filtered.approvals] == [second.run_id]
    bad = msgspec.json.decode((await nc.request(subjects.approvals_list, b'{"status": "maybe"}', timeout=10)).data, type=Reply)
    assert not bad.ok and bad.error.message.startswith("status: ")
    assert [a.run_id for a in await client.list_approvals(queue=record.queue)] == [run.run_id]

    # A bad edit, by a plain request: refused naming the field; nothing changed.
    body = msgspec.json.encode({"call_id": "call_1", "arguments": '{"to": 7}'})
    refused = msgspec.json.decode((await nc.request(subjects.command(run.run_id, "approve"), body, timeout=10)).data, type=Reply)
    assert not refused.ok and refused.error.type == "InvalidRequest" and refused.error.message.startswith("arguments.to: 7 is not of type 'string'")
    with pytest.raises(RequestRefusedError, match="^arguments: is not valid JSON"):
        await client.approve(run.run_id, "call_1", arguments="{to: ")
    assert [a.status for a in await client.list_approvals(run_id=run.run_id)] == ["pending"]

    edited_to = uid("bob")
    await client.approve(run.run_id, "call_1", arguments=f'{{"to": "{edited_to}"}}', decided_by="ada")
    completed = await run.result(timeout=30)
    assert completed.output == f"send_email returned: sent to {edited_to}"
    assert bus_agents.CALLS.count(f"send_email:{edited_to}") == 1 and bus_agents.CALLS.count(f"send_email:{to}") == 0
    history = await collect(client, run.run_id)
    [approved] = [e for e in history if isinstance(e, ToolApproved)]
    [output] = [e for e in history if isinstance(e, ToolOutput)]
    assert (approved.decided_by, approved.arguments) == ("ada", f'{{"to": "{edited_to}"}}')
    assert output.arguments == f'{{"to": "{edited_to}"}}'

    await client.reject(second.run_id, "call_1", "not Eve", always=True, decided_by="bob")
    await second.result(timeout=30)
    trail = {a.run_id: a for a in await client.list_approvals("decided")}
    assert (trail[run.run_id].status, trail[run.run_id].decided_by, trail[run.run_id].approved_arguments) == (
        "approved", "ada", f'{{"to": "{edited_to}"}}'
    )
    assert (trail[second.run_id].status, trail[second.run_id].always, trail[second.run_id].message) == ("rejected", True, "not Eve")
    assert not {run.run_id, second.run_id} & {a.run_id for a in await client.list_approvals()}


async def test_a_runs_context_reaches_its_tools_and_completed_carries_it_as_the_run_left_it(client, system) -> None:
    """A NATS user's standard JetStream publish with `context` (a JSON object): the tool reads and
    changes it as ctx.context, and `completed` has it as the run left it; a context that is not an
    object is refused naming the field."""
    user = uid("ada")
    run_id = uid("ctx")
    nc = await nats.connect(system.url)
    try:
        js = nc.jetstream()
        body = {"id": run_id, "agent": "bus-context", "input": "remember fact=tea", "context": {"user": user}}
        ack = await js.publish(system.bus.subjects.submit, msgspec.json.encode(body), headers={"Nats-Msg-Id": run_id})
        assert ack.stream == "TIMESTEP_SUBMIT"
        with pytest.raises(nats.js.errors.BadRequestError) as refused:
            await js.publish(system.bus.subjects.submit, msgspec.json.encode({**body, "id": uid("ctx"), "context": ["tea"]}))
    finally:
        await nc.close()
    assert refused.value.description.startswith("context: "), refused.value.description
    events = await collect(client, run_id)
    assert events[-1].output == f"remember returned: {user} remembers tea"
    assert events[-1].context == {"user": user, "facts": ["tea"]}


async def test_a_requests_context_becomes_the_agents_registered_context_type_or_is_refused_naming_the_field(client, system) -> None:
    """register_agent(agent, context_type=Customer): the JSON object arrives in the tool as a
    Customer; a field that does not fit is refused at the door naming it (`context.tier`)."""
    user = uid("ada")
    run = await client.submit("bus-typed-context", "note fact=tea", context={"user": user, "tier": 2})
    events = await collect(client, run.run_id)
    assert events[-1].output == f"note returned: {user} (tier 2) notes tea"
    assert events[-1].context == {"user": user, "tier": 2, "facts": ["tea"]}
    with pytest.raises(RunRejectedError) as refused:
        await client.submit("bus-typed-context", "note fact=tea", context={"user": user, "tier": "gold"})
    assert refused.value.field == "context.tier"
    assert str(refused.value).startswith("context.tier: "), str(refused.value)
    assert "Customer" in str(refused.value)
    with pytest.raises(RunRejectedError, match="^context.user: "):
        await client.submit("bus-typed-context", "note fact=tea", context={"tier": 2})


async def test_a_requests_session_id_goes_to_the_session_the_agent_registered(client) -> None:
    """register_agent(agent, session_factory=lambda session_id: SQLiteSession(session_id, path)): runs
    submitted over the bus with a session_id keep their conversation there, turn after turn, not in
    Timestep's database session."""
    session_id = uid("user")
    for text in ("hello", "again"):
        run = await client.submit("bus-remembering", text, session_id=session_id)
        assert isinstance((await collect(client, run.run_id))[-1], Completed)
    items = await SQLiteSession(session_id, bus_agents.SESSIONS_DB).get_items()
    assert [i.get("role") for i in items] == ["user", "assistant", "user", "assistant"]
    assert [i["content"] for i in items if i.get("role") == "user"] == ["hello", "again"]
    assert await DatabaseSession(session_id).get_items() == []


async def test_a_run_config_and_hooks_registered_with_the_agent_hold_for_its_runs_over_the_bus(client) -> None:
    """register_agent(agent, run_config=RunConfig(model_provider=..., model=..., model_settings=...),
    hooks=...): a run submitted over the bus uses the provider of the deployment's own, the model
    name and settings, and calls the hooks."""
    hooked = "hook:agent_end:bus-configured:house-model at 0.4"
    before = bus_agents.CALLS.count(hooked)
    run = await client.submit("bus-configured", "hi")
    events = await collect(client, run.run_id)
    assert events[-1].output == "house-model at 0.4"
    assert bus_agents.CALLS.count(hooked) == before + 1


async def test_a_direct_runs_accepted_is_stored_before_the_run_is_handed_on(client, system, monkeypatch) -> None:
    """The governor stores `accepted` before it hands a direct run to an agent actor, so no event of
    the run (the agent's `started`, wherever it runs) can come before it in the stream."""
    from actors.governor import Governor

    governor = next(a for a in system.actors if isinstance(a, Governor))
    agent = governor.local_agent
    seen: dict[str, bool] = {}
    original = agent.start_run

    async def start_run(start) -> None:
        seen[start.run_id] = await system.bus.stored_event(start.run_id, "accepted") is not None
        await original(start)

    monkeypatch.setattr(agent, "start_run", start_run)
    run = await client.submit("bus-assistant", "get_weather city=Quito")
    await run.result()
    assert seen == {run.run_id: True}
