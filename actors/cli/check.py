"""`timestep check`: the subject contract, run against a running deployment, one line per check.

Every check uses run ids of its own (`check-...`), and cleans up after itself: its schedule is
deleted, and its queue, `timestep-check`, keeps the policy a queue named for the first time has."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from subjects.events import Accepted, Cancelled, Completed, Failed, Interrupted, Rejected, RunEvent, decode_event, decode_submit_answer
from subjects.names import SUBMIT_STREAM
from timestep.client import Client, RequestRefusedError, RunRejectedError

QUEUE = "timestep-check"
#: The policy of a queue named for the first time (see subjects/README.md): the check's queue stays as harmless.
QUEUE_LIMIT, QUEUE_PERIOD = 50, 60.0


class CheckFailed(Exception):
    """One check's failure; the message is its reason."""


@dataclass
class Result:
    name: str
    ok: bool
    detail: str

    def line(self, as_json: bool) -> str:
        if as_json:
            return json.dumps({"check": self.name, "ok": self.ok, "detail": self.detail})
        return f"PASS {self.name} ({self.detail})" if self.ok else f"FAIL {self.name}: {self.detail}"


def _describe_end(event: RunEvent | None) -> str:
    if isinstance(event, Rejected):
        return f"rejected: {event.error.message}"
    if isinstance(event, Failed):
        return f"failed: {event.error.type}: {event.error.message}"
    if isinstance(event, Cancelled):
        return "cancelled"
    return f"last event {event.type!r}" if event is not None else "no event"


class Checker:
    def __init__(self, client: Client, agent: str, text: str, timeout: float) -> None:
        self.client = client
        self.bus = client.bus
        self.subjects = client.subjects
        self.agent = agent
        self.text = text
        self.timeout = timeout
        self.token = uuid.uuid4().hex[:8]
        self.completed: dict[str, list[RunEvent]] = {}
        """The events of each run a check saw complete, as they arrived live."""
        self.published: tuple[str, bytes] | None = None

    def new_id(self, way: str) -> str:
        return f"check-{self.token}-{way}"

    def body(self, run_id: str, **fields: Any) -> bytes:
        return json.dumps({"id": run_id, "agent": self.agent, "input": self.text, **fields}).encode()

    async def until_completed(self, run_id: str) -> list[RunEvent]:
        """The run's events from its first until `completed`; CheckFailed for any other end."""
        seen: list[RunEvent] = []

        async def follow() -> None:
            async with contextlib.aclosing(self.client.events(run_id)) as events:
                async for event in events:
                    seen.append(event)
                    if isinstance(event, Interrupted):
                        tools = ", ".join(a.tool for a in event.approvals)
                        with contextlib.suppress(Exception):
                            await self.client.cancel(run_id)  # it would wait for a human forever
                        raise CheckFailed(
                            f"run {run_id} waits for approval of {tools} (cancelled it); pass an --input the agent completes without approval"
                        )

        try:
            await asyncio.wait_for(follow(), self.timeout)
        except asyncio.TimeoutError:
            raise CheckFailed(f"run {run_id} did not end within {self.timeout:g} s ({_describe_end(seen[-1] if seen else None)})") from None
        if not seen or not isinstance(seen[-1], Completed):
            raise CheckFailed(f"run {run_id} did not complete: {_describe_end(seen[-1] if seen else None)}")
        self.completed[run_id] = seen
        return seen

    def a_completed_run(self) -> tuple[str, list[RunEvent]]:
        if not self.completed:
            raise CheckFailed("no run of the checks above completed, so there is none to use")
        return next(iter(self.completed.items()))

    # --- the checks, in order ----------------------------------------------------------

    async def jetstream_publish(self) -> str:
        run_id = self.new_id("js")
        data = self.body(run_id)
        ack = await self.bus.publish_acked(self.subjects.submit, data, self.timeout, headers={"Nats-Msg-Id": run_id})
        if "error" in ack:
            raise CheckFailed(f"refused with JetStream's API error {ack['error']['code']}: {ack['error']['description']}")
        if (ack["stream"], ack["seq"], ack["duplicate"]) != (SUBMIT_STREAM, 1, False):
            raise CheckFailed(f"PubAck {ack}; expected stream {SUBMIT_STREAM!r}, seq 1, no duplicate")
        await self.until_completed(run_id)
        self.published = (run_id, data)
        return f"PubAck stream {ack['stream']} seq {ack['seq']}; run {run_id} completed"

    async def duplicate_publish(self) -> str:
        if self.published is None:
            raise CheckFailed("needs the completed run of jetstream-publish, which failed")
        run_id, data = self.published
        ack = await self.bus.publish_acked(self.subjects.submit, data, self.timeout, headers={"Nats-Msg-Id": run_id})
        if "error" in ack:
            raise CheckFailed(f"the repeat was refused: {ack['error']['description']}")
        if not ack["duplicate"]:
            raise CheckFailed(f"the repeat was answered {ack}, without duplicate: true")
        types = [event["type"] for event in await self.bus.history(run_id)]
        runs = {kind: types.count(kind) for kind in ("accepted", "started", "completed")}
        if set(runs.values()) != {1}:
            raise CheckFailed(f"run {run_id} has {runs} events; a repeat must not run again")
        return f"duplicate: true; run {run_id} ran once"

    async def core_request(self) -> str:
        run_id = self.new_id("req")
        answer = decode_submit_answer(await self.bus.request(self.subjects.submit, self.body(run_id), self.timeout, {"Nats-Msg-Id": run_id}))
        if not isinstance(answer, Accepted):
            raise CheckFailed(f"answered {answer.type}: {answer.error.message}")
        await self.until_completed(run_id)
        return f"answered accepted; run {run_id} completed"

    async def core_publish(self) -> str:
        run_id = self.new_id("pub")
        await self.bus.publish_core(self.subjects.submit, self.body(run_id), headers={"Nats-Msg-Id": run_id})
        await self.until_completed(run_id)
        return f"run {run_id} completed"

    async def events_in_order(self) -> str:
        run_id = self.new_id("events")
        try:
            await self.client.submit(self.agent, self.text, id=run_id, reply_timeout=self.timeout)
        except RunRejectedError as exc:
            raise CheckFailed(f"rejected: {exc}") from None
        events = await self.until_completed(run_id)
        seqs = [event.seq for event in events]
        if seqs != list(range(1, len(events) + 1)) or events[0].type != "accepted":
            raise CheckFailed(f"run {run_id}: events {[(e.seq, e.type) for e in events]}; expected seq 1, 2, 3, ... from accepted")
        return f"{' '.join(event.type for event in events)}"

    async def late_replay(self) -> str:
        run_id, live = self.a_completed_run()
        replayed: list[RunEvent] = []

        async def replay() -> None:
            async with contextlib.aclosing(self.client.events(run_id)) as events:
                async for event in events:
                    replayed.append(event)

        try:
            await asyncio.wait_for(replay(), self.timeout)
        except asyncio.TimeoutError:
            pass
        got, expected = [(e.seq, e.type) for e in replayed], [(e.seq, e.type) for e in live]
        if got != expected:
            raise CheckFailed(f"following finished run {run_id} from its start gave {got}; live it was {expected}")
        return f"{len(replayed)} events of finished run {run_id} replayed"

    async def control(self) -> str:
        run_id, _ = self.a_completed_run()
        unknown = self.new_id("unknown")
        refusals = []
        for target, expected in ((run_id, "AlreadyFinished"), (unknown, "UnknownRun")):
            try:
                await self.client.cancel(target)
            except RequestRefusedError as exc:
                if exc.type != expected:
                    raise CheckFailed(f"cancel of run {target} refused {exc.type} ({exc}); expected {expected}") from None
                refusals.append(expected)
                continue
            raise CheckFailed(f"cancel of run {target} was done; expected it refused {expected}")
        return f"cancel refused: {', '.join(refusals)}"

    async def queues(self) -> str:
        await self.client.configure_queue(QUEUE, limit=QUEUE_LIMIT, period_seconds=QUEUE_PERIOD)
        status = [q for q in await self.client.queue_status(QUEUE) if q.name == QUEUE]
        if not status:
            raise CheckFailed(f"queue {QUEUE!r} configured, but its status does not list it")
        run_id = self.new_id("queue")
        try:
            await self.client.submit(self.agent, self.text, id=run_id, queue=QUEUE, reply_timeout=self.timeout)
        except RunRejectedError as exc:
            raise CheckFailed(f"rejected: {exc}") from None
        events = await self.until_completed(run_id)
        if "queued" not in [event.type for event in events]:
            raise CheckFailed(f"run {run_id} completed without a `queued` event")
        return f"queue {QUEUE}: {status[0].limit}/{status[0].period_seconds:g}s; run {run_id} queued and completed"

    async def schedules(self) -> str:
        name = self.new_id("schedule")
        started: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        async def watch() -> None:
            async with contextlib.aclosing(self.bus.follow(self.subjects.events("*", "started"), from_start=False)) as messages:
                async for msg in messages:
                    event = decode_event(msg.data)
                    if event.run_id.startswith(f"{name}-"):
                        started.set_result(event.run_id)
                        return

        watching = asyncio.ensure_future(watch())
        try:
            await asyncio.sleep(0)  # subscribed before the schedule can fire
            await self.client.create_schedule(name, "* * * * * *", {"agent": self.agent, "input": self.text})
            try:
                run_id = await asyncio.wait_for(asyncio.shield(started), self.timeout)
            except asyncio.TimeoutError:
                raise CheckFailed(f"schedule {name} (every second) started no run within {self.timeout:g} s") from None
        finally:
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self.client.delete_schedule(name)
        if any(s.name == name for s in await self.client.list_schedules()):
            raise CheckFailed(f"schedule {name} is still listed after its delete")
        await self.until_completed(run_id)  # and a tick's run that waits for approval is cancelled
        return f"schedule {name} started run {run_id}, which completed; deleted"

    async def dead_letter(self) -> str:
        run_id = self.new_id("malformed")
        data = json.dumps({"id": run_id, "input": self.text}).encode()  # no agent
        answer = decode_submit_answer(await self.bus.request(self.subjects.submit, data, self.timeout, {"Nats-Msg-Id": run_id}))
        if not isinstance(answer, Rejected):
            raise CheckFailed(f"a request without `agent` was answered {answer.type}")
        if not answer.error.message.startswith("agent:"):
            raise CheckFailed(f"rejected, but the reason does not name the field `agent`: {answer.error.message}")
        dead = f"{self.subjects.prefix}.dead.{self.subjects.submit}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        while not any(run_id in letter.data for letter in await self.bus.dead_letters(100)):
            if loop.time() > deadline:
                raise CheckFailed(f"rejected ({answer.error.message}), but not among the newest dead letters on {dead}")
            await asyncio.sleep(0.2)
        return f"rejected: {answer.error.message}; dead-lettered on {dead}"

    def checks(self) -> list[tuple[str, Callable[[], Awaitable[str]]]]:
        return [
            ("jetstream-publish", self.jetstream_publish),
            ("duplicate-publish", self.duplicate_publish),
            ("core-request", self.core_request),
            ("core-publish", self.core_publish),
            ("events-in-order", self.events_in_order),
            ("late-replay", self.late_replay),
            ("control", self.control),
            ("queues", self.queues),
            ("schedules", self.schedules),
            ("dead-letter", self.dead_letter),
        ]


async def run_check(name: str, check: Callable[[], Awaitable[str]]) -> Result:
    try:
        return Result(name, True, await check())
    except CheckFailed as exc:
        return Result(name, False, str(exc))
    except (TimeoutError, asyncio.TimeoutError) as exc:
        return Result(name, False, str(exc) or "timed out")
    except (RequestRefusedError, RunRejectedError) as exc:
        return Result(name, False, f"refused: {exc}")
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return Result(name, False, f"an answer outside the contract: {exc}")
    except Exception as exc:  # one broken check must not hide the others' results
        return Result(name, False, f"{type(exc).__name__}: {exc}")


async def check(args: argparse.Namespace) -> int:
    """Exit code: 0 when every check passed, 1 otherwise."""
    client = await Client.connect(args.url)
    try:
        checker = Checker(client, args.agent, args.input, args.timeout)
        failed = 0
        for name, step in checker.checks():
            result = await run_check(name, step)
            failed += not result.ok
            print(result.line(args.json), flush=True)
        total = len(checker.checks())
        print(f"timestep check: {total - failed} of {total} passed against agent {args.agent!r}", file=sys.stderr)
        return 1 if failed else 0
    finally:
        await client.close()
