"""The actor base: ack after handling, retry with backoff, dead letter after max_deliver, and a
failing message never blocks the ones behind it."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator

import msgspec
from nats.js.api import RetentionPolicy, StreamConfig

from actors.base import Actor
from subjects.messages import DeadLetter
from timestep.bus.connection import Bus
from timestep.errors import PermissionDeniedError


class Flaky(Actor):
    """Fails 'poison' always, 'twice' on its first two deliveries, and 'denied' as a publish NATS refuses."""

    max_deliver = 3
    backoff = (0.05, 0.05, 0.05)

    def __init__(self, bus: Bus, stream: str, subject: str) -> None:
        super().__init__(bus)
        self.stream = stream
        self.durable = f"flaky-{uuid.uuid4().hex[:6]}"
        self.subject = subject
        self.seen: list[tuple[str, int]] = []
        self.done: list[str] = []

    async def handle(self, msg) -> None:
        body = msg.data.decode()
        self.seen.append((body, msg.metadata.num_delivered))
        if body == "denied":
            raise PermissionDeniedError(self.bus.subjects.start, "agent")
        if body == "poison" or (body == "twice" and msg.metadata.num_delivered <= 2):
            raise RuntimeError(f"cannot handle {body}")
        self.done.append(body)


@contextlib.asynccontextmanager
async def flaky_on_its_own_stream(nats_server, pull_timeout: float = 1.0) -> AsyncIterator[tuple[Bus, Flaky, str, object]]:
    """(bus, a started Flaky actor, the subject it consumes, a subscription to its dead letters);
    the actor is stopped (in-flight handlers finished) when the block ends."""
    bus = await Bus.connect(nats_server.url)
    await bus.ensure_streams()
    name = f"T{uuid.uuid4().hex[:8]}".upper()
    subject = f"test.{name.lower()}"
    await bus.js.add_stream(StreamConfig(name=name, subjects=[subject], retention=RetentionPolicy.WORK_QUEUE))
    dead = await bus.js.subscribe(bus.subjects.dead(subject), ordered_consumer=True, deliver_policy="new")
    actor = Flaky(bus, name, subject)
    actor.pull_timeout = pull_timeout
    await actor.start()
    try:
        yield bus, actor, subject, dead
    finally:
        await actor.stop()
        await dead.unsubscribe()
        await bus.close()


async def test_a_message_is_handled_when_it_arrives_not_when_the_pull_ends(nats_server) -> None:
    """An idle actor's pull waits up to `pull_timeout` for a message; the message must not wait
    with it. With nats-py's fetch(n > 1), the message sent just after an idle actor took its first
    one waited until the pull ended (up to 1 s, the default pull_timeout, added to a run's start)."""
    async with flaky_on_its_own_stream(nats_server, pull_timeout=2.0) as (bus, actor, subject, _):
        waits = []
        for i in range(12):
            await asyncio.sleep(2.3 if i % 3 == 0 else 0.02)  # an idle actor's pull times out, then it is busy
            sent = time.monotonic()
            await bus.js.publish(subject, f"m{i}".encode())
            while f"m{i}" not in actor.done and time.monotonic() - sent < 10:
                await asyncio.sleep(0.01)
            waits.append(round(time.monotonic() - sent, 2))
        assert max(waits) < 1.0, f"seconds from publish to handled: {waits}"


async def test_retries_then_dead_letters_without_blocking_others(nats_server) -> None:
    async with flaky_on_its_own_stream(nats_server) as (bus, actor, subject, dead):
        for body in ["poison", "a", "twice", "b"]:
            await bus.js.publish(subject, body.encode())
        letter = msgspec.json.decode((await dead.next_msg(timeout=10)).data, type=DeadLetter)
        for _ in range(100):
            if sorted(actor.done) == ["a", "b", "twice"]:
                break
            await asyncio.sleep(0.05)

    assert sorted(actor.done) == ["a", "b", "twice"]
    assert [n for body, n in actor.seen if body == "poison"] == [1, 2, 3]
    assert [n for body, n in actor.seen if body == "twice"] == [1, 2, 3]
    assert letter.subject == subject and letter.data == "poison"
    assert letter.reason == "handling failed 3 times" and letter.error.type == "RuntimeError"
    assert actor.dead_lettered == 1 and actor.redelivered == 4


async def test_a_refused_publish_is_dead_lettered_at_once(nats_server) -> None:
    """Retrying cannot help until the NATS user's permissions change."""
    async with flaky_on_its_own_stream(nats_server) as (bus, actor, subject, dead):
        await bus.js.publish(subject, b"denied")
        letter = msgspec.json.decode((await dead.next_msg(timeout=10)).data, type=DeadLetter)

    assert actor.seen == [("denied", 1)] and actor.dead_lettered == 1 and actor.redelivered == 0
    assert letter.reason == "publish not permitted" and letter.error.type == "PermissionDeniedError"
    assert "give this user publish permission on timestep.runs.start" in letter.error.message


async def test_stop_is_prompt_with_an_open_pull_subscription(nats_server) -> None:
    bus = await Bus.connect(nats_server.url)
    await bus.ensure_streams()
    name = f"T{uuid.uuid4().hex[:8]}".upper()
    await bus.js.add_stream(StreamConfig(name=name, subjects=[f"test.{name.lower()}"]))
    actor = Flaky(bus, name, f"test.{name.lower()}")
    await actor.start()
    await asyncio.sleep(0.3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await actor.stop()
    await bus.close()
    assert loop.time() - started < 5
