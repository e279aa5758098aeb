"""Poison messages on the real bus: bounded retries with growing backoff, a dead letter that says
what and why, and no blocking of the messages behind.

`test_actor_base.py` proves the mechanism on a private stream with a handler that raises on
purpose. Here it is the real agent actor of the running system, on the contract's own
`<prefix>.runs.start` stream, failing for real: the message is a run hand-off (what a governor
publishes) whose `timeout_seconds` of 1e300 overflows the database's deadline column, so every
attempt to start the run raises a database error, on SQLite and on PostgreSQL alike. Today's
governors never hand that over (`timeout_seconds` is at most 365 days on the contract); a
governor of an older version, or any other program on the bus, could.

The retry policy is the actor's own `max_deliver` and `backoff`, shortened on the running actor
for the test's duration (nothing else is replaced). Redeliveries are observed from outside, on
the JetStream advisories the server publishes for each negative acknowledgement.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
import uuid

import msgspec
import pytest

from actors.agent import AgentActor
from subjects.events import Completed, Started, decode_event
from subjects.messages import DeadLetter, RunRequest
from subjects.names import WORK_STREAM
from timestep.durable import engine
from timestep.bus.intake import StartRun, encode, to_spec

AGENT = "bus-assistant"
BACKOFF = (0.3, 1.0, 3.0)
MAX_DELIVER = 4


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def hand_off(run_id: str, text: str, timeout_seconds: float | None = None) -> bytes:
    """A run hand-off on `<prefix>.runs.start`, as a governor builds it."""
    request = RunRequest(agent=AGENT, input=text, id=run_id)
    return encode(StartRun(run_id=run_id, timeout_seconds=timeout_seconds, spec=to_spec(request, seq_base=0)))


@pytest.fixture
def agent_actor(system):
    """The running agent actor, with a short retry policy while the test runs."""
    [actor] = [a for a in system.actors if type(a) is AgentActor]
    saved = actor.max_deliver, actor.backoff
    actor.max_deliver, actor.backoff = MAX_DELIVER, BACKOFF
    yield actor
    actor.max_deliver, actor.backoff = saved


async def test_a_poison_hand_off_is_retried_with_backoff_then_dead_lettered_without_blocking(client, system, agent_actor) -> None:
    bus = system.bus
    s = bus.subjects
    naks: list[tuple[float, dict]] = []
    loop = asyncio.get_running_loop()

    async def on_nak(msg) -> None:
        naks.append((loop.time(), msgspec.json.decode(msg.data)))

    advisories = await bus.nc.subscribe(f"$JS.EVENT.ADVISORY.CONSUMER.MSG_NAKED.{WORK_STREAM}.{agent_actor.durable}", cb=on_nak)
    dead = await bus.js.subscribe(s.dead(s.start), ordered_consumer=True, deliver_policy="new")
    events = await bus.js.subscribe(s.all_events, ordered_consumer=True, deliver_policy="new")
    before = agent_actor.redelivered, agent_actor.dead_lettered
    poison_id = uid("poison")
    try:
        published_at = loop.time()
        ack = await bus.js.publish(s.start, hand_off(poison_id, "never runs", timeout_seconds=1e300), headers={"Nats-Msg-Id": poison_id})
        # Good work behind it: hand-offs on the same stream, and requests through the governor.
        good = {uid("behind"): None for _ in range(5)}
        for run_id in good:
            await bus.js.publish(s.start, hand_off(run_id, f"get_weather city={run_id}"), headers={"Nats-Msg-Id": run_id})
        submitted = [await client.submit(AGENT, f"get_weather city={uid('Oslo')}") for _ in range(3)]

        # Every good run completes while the poison is still being retried.
        completed_at: dict[str, float] = {}
        wanted = set(good) | {r.run_id for r in submitted}
        while set(completed_at) != wanted:
            event = decode_event((await events.next_msg(timeout=60)).data)
            if isinstance(event, Completed) and event.run_id in wanted:
                completed_at[event.run_id] = loop.time()
                assert event.output.startswith("get_weather returned: sunny in ")
        all_good_done = max(completed_at.values())

        letter_msg = await dead.next_msg(timeout=60)
        dead_at = loop.time()
        # The actor counts the letter once JetStream acknowledged it and the message is terminated:
        # a moment after the letter reaches this subscriber.
        deadline = loop.time() + 10
        while agent_actor.dead_lettered == before[1] and loop.time() < deadline:
            await asyncio.sleep(0.02)
    finally:
        await advisories.unsubscribe()
        await dead.unsubscribe()

    letter = msgspec.json.decode(letter_msg.data, type=DeadLetter)
    gaps = [later - earlier for (earlier, _), (later, _) in zip([(published_at, {})] + naks, naks)]
    print(f"poison: {len(naks)} failed deliveries; gaps between them {[round(g, 2) for g in gaps[1:]]} s "
          f"(backoff {BACKOFF}); good runs all done {all_good_done - published_at:.2f} s after it, dead letter after {dead_at - published_at:.2f} s: "
          f"{letter.error.type}: {letter.error.message[:120]}")

    # Bounded: exactly MAX_DELIVER attempts, the last one dead-letters instead of retrying.
    assert [a["deliveries"] for _, a in naks] == list(range(1, MAX_DELIVER))
    assert agent_actor.redelivered - before[0] == MAX_DELIVER - 1
    assert agent_actor.dead_lettered - before[1] == 1
    assert all(a["stream_seq"] == ack.seq for _, a in naks)
    # With backoff: each redelivery waited at least its step of the policy, and the steps grow. Timed
    # by the server's own stamps on its NAK advisories (when an advisory reaches this busy test process
    # varies); the last step by the dead letter's stamp.
    stamps = [datetime.fromisoformat(a["timestamp"].replace("Z", "+00:00")).timestamp() for _, a in naks]
    server_gaps = [b - a for a, b in zip(stamps, stamps[1:])] + [letter.time - stamps[-1]]
    for gap, delay in zip(server_gaps, BACKOFF):
        assert gap >= delay * 0.9, (server_gaps, BACKOFF)
    # Never blocking: every good run behind the poison finished before it was given up.
    assert all_good_done < dead_at
    # The dead letter names the original subject, the stream sequence and the error.
    assert letter.subject == s.start
    assert letter_msg.headers["Nats-Msg-Id"] == f"dead.{WORK_STREAM}.{ack.seq}"
    assert letter.reason == f"handling failed {MAX_DELIVER} times"
    assert letter.error.type in ("OverflowError", "DataError"), letter.error  # SQLite's, PostgreSQL's
    assert msgspec.json.decode(letter.data)["run_id"] == poison_id
    # Nothing ran for it, and each good run ran once.
    status = await engine.status(poison_id)
    assert status is None or status.status != "completed"
    await asyncio.sleep(0.5)
    later = []
    while True:
        try:
            later.append(decode_event((await events.next_msg(timeout=0.3)).data))
        except Exception:
            break
    await events.unsubscribe()
    assert not [e for e in later if e.run_id in wanted and isinstance(e, (Started, Completed))]
