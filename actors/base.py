"""The one actor base: a mailbox, a handler, lifecycle hooks, and supervision written once.

Lifecycle::

    actor = MyActor(bus)
    await actor.start()   # on_start(), then the mailbox loop runs as a task
    ...
    await actor.stop()    # stop fetching, finish in-flight messages, on_stop()

- **Mailbox**: a durable JetStream pull consumer (`stream`, `durable`, `subject`)
  with explicit acks. `handle(msg)` must finish the durable hand-off (DBOS holds
  the workflow, JetStream holds the next message) before it returns; the ack
  comes after. A crash in between means a redelivery, which idempotency absorbs.
- **Supervision**: a `handle` that raises is logged and its message redelivered
  after a backoff; after `max_deliver` attempts it is dead-lettered with its
  reason and acknowledged, so it never blocks the messages behind it; one whose
  handler was refused a publish by the NATS server (`PermissionDeniedError`) is
  dead-lettered at once. A crashed mailbox loop is restarted with a fresh
  subscription (which also re-binds the consumer after a server restart). The
  process stays up.
- **Shutdown**: the pull subscription is unsubscribed before the connection
  drains (a drain with an open pull subscription can hang), and in-flight
  handlers get `stop_timeout` seconds to finish.

An actor without a mailbox (`stream = None`) only runs its hooks: the scheduler
serves request/reply subjects and keeps a clock.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from subjects.events import ErrorInfo
from subjects.messages import Reply
from subjects.problems import body_problem
from timestep.ops import metrics
from timestep.durable import registry
from timestep.bus.connection import Bus, Message, PullTimeout
from timestep.errors import PermissionDeniedError, TimestepError, ValidationError, error_info

log = logging.getLogger("actors")


def origin(msg: Message) -> str | None:
    """`<stream>.<sequence>` of a JetStream message: the same for each redelivery."""
    try:
        return f"{msg.metadata.stream}.{msg.metadata.sequence.stream}"
    except Exception:
        return None


class KnownAgents:
    """Which agents a run may name: those registered in this process, or hosted by a live agent
    actor (see `Bus.announce_agents`). The governor checks every request with it, the scheduler
    every new schedule. A failed read of the bus raises (the message is redelivered): only a
    definite "nobody hosts it" refuses."""

    #: How long a "hosted" answer from the bus is kept before it is asked again.
    CACHE_SECONDS = 1.0

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._hosted: dict[str, tuple[str, float]] = {}  # name -> (its hosts' runtime, when read, monotonic)

    async def problem(self, name: str) -> str | None:
        """None when `name` is known; else why not, naming the agents that are."""
        if name in registry.registered_agents() or await self._hosted_runtime(name) is not None:
            return None
        hosted = await self.bus.hosted_agents()
        return f"no agent named {name!r} is hosted by a running agent actor (hosted: {', '.join(hosted) or 'none'})"

    async def runtime(self, name: str) -> str:
        """"typescript" when only TypeScript agent actors host `name` (their direct runs go to
        `<prefix>.runs.start.typescript`), else "python". Asked after `problem` said it is known:
        the answer it read is reused."""
        if name in registry.registered_agents():
            return "python"
        return await self._hosted_runtime(name) or "python"

    async def _hosted_runtime(self, name: str) -> str | None:
        """The runtime of the live hosts of `name` (None: no live process hosts it), read from the bus
        once per CACHE_SECONDS; a "not hosted" is not kept, so a new host counts at once."""
        read = self._hosted.get(name)
        if read is not None and time.monotonic() - read[1] < self.CACHE_SECONDS:
            return read[0]
        runtime = await self.bus.agent_runtime(name)
        if runtime is None:
            self._hosted.pop(name, None)
        else:
            self._hosted[name] = (runtime, time.monotonic())
        return runtime


class Actor:
    stream: str | None = None
    durable: str = ""
    subject: str = ""
    concurrency: int = 32
    max_deliver: int = 10
    backoff: tuple[float, ...] = (0.2, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
    ack_wait: float | None = None
    """Seconds before an unacknowledged message is redelivered (default: TIMESTEP_ACK_WAIT).
    Handlers ack after a short durable hand-off, so this only delays recovery after a crash."""
    stop_timeout: float = 10.0
    pull_timeout: float = 1.0
    """Seconds one pull waits for a message before the loop checks whether it should stop."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.name = type(self).__name__
        self._stopping = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._sub: Any = None
        self._in_flight: set[asyncio.Task] = set()
        self._services: list[Any] = []
        self._background: set[asyncio.Task] = set()
        self._slots = asyncio.Semaphore(self.concurrency)
        self.handled = 0
        self.redelivered = 0
        self.dead_lettered = 0
        self.bound = False  # the mailbox's pull subscription is open (readiness, see actors.health)

    @property
    def alive(self) -> bool:
        """False when the mailbox loop ended for good (liveness: see `actors.health`)."""
        return self._task is None or not self._task.done()

    # --- hooks ------------------------------------------------------------------

    async def on_start(self) -> None:
        """Before the mailbox opens: subscribe services, register, load state."""

    async def on_stop(self) -> None:
        """After the mailbox closed and in-flight messages finished."""

    async def handle(self, msg: Message) -> None:
        """Process one message; raise to have it redelivered later."""
        raise NotImplementedError

    async def on_give_up(self, msg: Message, exc: Exception) -> None:
        """A message is being dead-lettered after its handler failed for good: say so where it
        matters (the governor fails a run it had accepted)."""

    async def ready(self) -> None:
        """Wait until this actor can take one more message."""
        await self._slots.acquire()
        self._slots.release()

    # --- request/reply services ------------------------------------------------------

    async def reply(self, msg: Message, reply: Reply) -> None:
        if msg.reply:
            await msg.respond(msgspec.json.encode(reply))

    async def refuse(self, msg: Message, exc: Exception) -> None:
        """Answer a request with the error, and dead-letter it with the reason."""
        info = error_info(exc)
        await self.reply(msg, Reply(ok=False, error=info))
        await self.bus.dead_letter(msg.subject, msg.data, msg.headers, f"refused: {exc}", info)

    async def serve(self, subject: str, group: str, handler: Any) -> None:
        self._services.append(await self.bus.serve(subject, group, handler))

    def background(self, work: Awaitable[Any], name: str | None = None) -> asyncio.Task:
        """Run `work` as a task the actor owns, kept until it ends and cancelled at stop (a request
        callback hands its database round trips here, so that the subscription's one-at-a-time
        callback is free for the next request)."""
        task = asyncio.ensure_future(work)
        if name:
            task.set_name(name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def answer(
        self, subject: str, group: str, request: type, handler: Callable[[Any], Awaitable[Reply]], *, concurrent: bool = False,
    ) -> None:
        """Serve `subject` with a typed handler: each request's body (empty: `{}`) decoded as
        `request` and given to `handler`, whose Reply is the answer. A body that does not decode
        is refused naming the field; a TimestepError the handler raises is refused as it says
        (both dead-lettered with the reason); anything else is the bus or the database failing for
        now, answered `Unavailable`, "try again", since the request itself was fine. `concurrent`:
        each request is answered in a `background` task, not one after another."""
        name = subject.rsplit(".", 2)[-2:]

        async def serve(msg: Message) -> None:
            if concurrent:
                self.background(respond(msg))
            else:
                await respond(msg)

        async def respond(msg: Message) -> None:
            try:
                req = msgspec.json.decode(msg.data or b"{}", type=request)
            except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                await self.refuse(msg, ValidationError(*body_problem(exc, data=msg.data, type=request)))
                return
            try:
                reply = await handler(req)
            except TimestepError as exc:
                await self.refuse(msg, exc)
                return
            except Exception as exc:
                log.warning("%s: %s: %s; answered 'try again'", ".".join(name), type(exc).__name__, exc)
                message = f"could not answer now ({type(exc).__name__}: {exc}); try again"
                reply = Reply(ok=False, error=ErrorInfo(type="Unavailable", message=message))
            await self.reply(msg, reply)

        await self.serve(subject, group, serve)

    async def _stop_services(self) -> None:
        for sub in self._services:
            try:
                await sub.unsubscribe()
            except Exception:
                pass
        self._services = []

    # --- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        await self.on_start()
        if self.stream is not None:
            self._task = asyncio.create_task(self._supervise(), name=f"{self.name}-mailbox")

    async def stop(self) -> None:
        self._stopping.set()
        await self._stop_services()
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception:
                pass
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=self.stop_timeout)
        for task in list(self._background):  # answers under way: their requester asks again
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.on_stop()

    # --- the mailbox loop -------------------------------------------------------

    async def _supervise(self) -> None:
        while not self._stopping.is_set():
            try:
                await self._loop()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.bound = False
                if self._stopping.is_set():
                    return
                log.exception("%s: mailbox loop crashed; restarting it in 1 s", self.name)
                await asyncio.sleep(1.0)

    async def _loop(self) -> None:
        ack_wait = self.ack_wait or self.bus.settings.ack_wait_seconds
        self._sub = await self.bus.pull(self.stream, self.durable, self.subject, ack_wait=ack_wait)  # type: ignore[arg-type]
        self.bound = True
        errors = 0
        while not self._stopping.is_set():
            await self.ready()
            try:
                # One message per pull: nats-py's fetch(n > 1) can hold a message that arrives
                # during the pull until n have come or the pull ends (up to pull_timeout late).
                messages = await self._sub.fetch(1, timeout=self.pull_timeout)
                errors = 0
            except (PullTimeout, asyncio.TimeoutError):
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                errors += 1
                if errors >= 5:
                    raise  # the supervisor re-creates the subscription
                log.warning("%s: fetch failed (%s: %s); retrying", self.name, type(exc).__name__, exc)
                await asyncio.sleep(min(0.2 * 2**errors, 5))
                continue
            for msg in messages:
                await self._slots.acquire()
                task = asyncio.create_task(self._process(msg))
                self._in_flight.add(task)
                task.add_done_callback(self._in_flight.discard)

    async def _process(self, msg: Message) -> None:
        try:
            if (msg.metadata.num_delivered or 1) > 1:
                metrics.REDELIVERIES.labels(actor=self.name, stream=self.stream or "").inc()
            await self.handle(msg)
            await msg.ack()
            self.handled += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._failed(msg, exc)
        finally:
            self._slots.release()

    async def _failed(self, msg: Message, exc: Exception) -> None:
        attempt = msg.metadata.num_delivered or 1
        refused = isinstance(exc, PermissionDeniedError)  # no retry helps until the user's permissions change
        if refused or attempt >= self.max_deliver:
            reason = "publish not permitted" if refused else f"handling failed {attempt} times"
            log.error("%s: giving up on a message on %s (%s): %s: %s", self.name, msg.subject, reason, type(exc).__name__, exc)
            try:
                await self.on_give_up(msg, exc)
            except Exception:
                log.exception("%s: could not say that a message was given up", self.name)
            try:
                await self.bus.dead_letter(msg.subject, msg.data, msg.headers, reason, exc, origin=origin(msg))
                await msg.term()
                self.dead_lettered += 1
            except Exception:
                log.exception("%s: could not dead-letter; the message will be redelivered", self.name)
            return
        delay = self.backoff[min(attempt - 1, len(self.backoff) - 1)]
        log.warning("%s: handling a message on %s failed (%s: %s); retry %d in %.1f s", self.name, msg.subject, type(exc).__name__, exc, attempt + 1, delay)
        self.redelivered += 1
        try:
            await msg.nak(delay=delay)
        except Exception:
            pass  # the ack deadline redelivers it anyway
