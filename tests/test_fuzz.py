"""Fuzzing every subject of the bus contract: bad input gets a clear rejection, no actor fails,
and good traffic beside it runs exactly once with the right output.

Examples come from hypothesis with a fixed seed (`TIMESTEP_FUZZ_SEED`, default below; the
count per subject is `TIMESTEP_FUZZ_EXAMPLES`). Hypothesis does not drive async tests, so each
test draws its batch on a sync function first, then publishes the batch over the real bus and
checks every message. A failure prints the seed and the offending body.

What "a clear rejection" is, per subject (actors/governor.py, agent.py, scheduler.py):

- `runs.submit` (sent as a request): the reply is a `rejected` event whose message starts with
  the field at fault; the request is dead-lettered on `dead.<subject>` with the same message;
  a request that claimed a valid id gets exactly one event, `rejected`, and no workflow.
- `runs.control.<run_id>.<action>` (JetStream, no reply): a dead letter naming the problem.
- `schedules.*`, `queues.*` (request/reply): `{ok: false, error}` naming the field, and a dead letter.

After each batch: no actor handler failed (no retry, no redelivery, no failure logged), nothing
was created for a bad request, and the good requests interleaved with the bad ones completed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import msgspec
import nats
import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from subjects.events import Accepted, Completed, Rejected, Started, decode_event
from subjects.ids import is_valid_run_id
from subjects.messages import DeadLetter, Reply, RunRequest
from timestep import engine

AGENT = "bus-assistant"
SEED = int(os.environ.get("TIMESTEP_FUZZ_SEED", "20261125"))
EXAMPLES = int(os.environ.get("TIMESTEP_FUZZ_EXAMPLES", "120"))
GOOD_EVERY = 12  # one good request among this many bad ones
NAME = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
KEY = re.compile(r"^[^\x00-\x1f\x7f]{1,255}$")
RUN_REQUEST_FIELDS = set(RunRequest.__struct_fields__)

# The actors' threads use `random` while hypothesis generates; that is not the strategies' doing.
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")


def draw(strategy: st.SearchStrategy, n: int = EXAMPLES) -> list[Any]:
    """A reproducible batch of `n` examples (fixed seed, no example database)."""
    out: list[Any] = []

    @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @seed(SEED)
    @given(strategy)
    def collect(example: Any) -> None:
        out.append(example)

    collect()
    print(f"hypothesis seed {SEED}: {len(out)} examples (TIMESTEP_FUZZ_SEED={SEED} reproduces them)")
    return out


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def enc(value: Any) -> bytes:
    return msgspec.json.encode(value)


# --- strategies ---------------------------------------------------------------------

SCALAR = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
JSON = st.recursive(SCALAR, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4), max_leaves=12)
NOT_STRING = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.lists(SCALAR, max_size=3) | st.dictionaries(st.text(max_size=5), SCALAR, max_size=3)
NOT_NULL_NOT_STRING = NOT_STRING.filter(lambda v: v is not None)
#: Strings that hurt as ids: subject syntax, wildcards, whitespace, paths, control characters,
#: unicode that looks like ASCII or flips text, and lengths at and past every limit.
HOSTILE_FIXED = [
    "", "a.b", "*", ">", "a.*", "a.>", ".", "..", "../", "../../etc/passwd", " ", "a b", "\t", "\n", "a\r\nb",
    "\x00", "a\x00b", "\x1b[31mred", "\x7f", "é", "日本語", "\u202eevil", "\ufeff", "ｆｕｌｌ", "$JS.API.>", "_INBOX.x",
    "x" * 101, "x" * 129, "x" * 255, "x" * 256, "x" * 10_000,
]
HOSTILE = st.one_of(st.sampled_from(HOSTILE_FIXED), st.text(max_size=40), st.text(st.characters(codec="utf-8"), min_size=1, max_size=300))
RANDOM_BYTES = st.one_of(st.just(b""), st.binary(max_size=300))
BAD_UTF8 = st.binary(min_size=1, max_size=20).map(lambda junk: b'{"agent": "\xff' + junk + b'", "input": "x"}')
NOT_OBJECT = JSON.filter(lambda v: not isinstance(v, dict)).map(enc)


@dataclass
class Case:
    body: bytes
    field: str | None
    """The field the rejection must name; None for a good request, which must complete."""
    claim: bool = False
    """Give the request a fresh valid `id` (so its rejection is also a `rejected` event)."""
    extra: dict | None = None


def _submit_wrong_types() -> st.SearchStrategy:
    wrong: dict[str, st.SearchStrategy] = {
        "agent": NOT_STRING,
        "input": st.one_of(NOT_STRING.filter(lambda v: not isinstance(v, list)), st.just([]), st.lists(st.integers() | st.text(max_size=3), min_size=1, max_size=3),
                           st.lists(st.dictionaries(st.sampled_from(["role", "content", "type"]), SCALAR, max_size=3), min_size=1, max_size=3)),
        "id": NOT_NULL_NOT_STRING,
        "session_id": NOT_NULL_NOT_STRING,
        "queue": NOT_NULL_NOT_STRING,
        "deduplication_id": NOT_NULL_NOT_STRING,
        "priority": st.one_of(st.text(max_size=5), st.booleans(), st.floats(allow_nan=False, allow_infinity=False),
                              st.integers(max_value=0), st.integers(min_value=2**31 - 1)),
        "timeout_seconds": st.one_of(st.text(max_size=5), st.booleans(), st.floats(max_value=0, allow_nan=False, allow_infinity=False), st.integers(max_value=0), st.lists(SCALAR, max_size=2)),
        "stream": st.one_of(st.none(), st.integers(), st.text(max_size=5), st.floats(allow_nan=False, allow_infinity=False)),
        "metadata": st.one_of(st.text(max_size=5), st.integers(), st.lists(SCALAR, max_size=2),
                              st.dictionaries(st.text(max_size=5), NOT_STRING, min_size=1, max_size=3)),
    }

    def case(pair: tuple[str, Any], claim: bool) -> Case:
        name, value = pair
        body = {"agent": AGENT, "input": "hello", name: value}
        if name == "deduplication_id":
            body["queue"] = "fuzz"
        return Case(enc(body), name, claim=claim and name != "id")

    return st.builds(case, st.sampled_from(sorted(wrong)).flatmap(lambda n: st.tuples(st.just(n), wrong[n])), st.booleans())


def _submit_hostile_id(name: str, value: str, claim: bool = False) -> Case | None:
    body: dict[str, Any] = {"agent": AGENT, "input": "hello", name: value}
    if name == "id":
        return None if is_valid_run_id(value) else Case(enc(body), "id")
    if name == "queue":
        return None if NAME.fullmatch(value) else Case(enc(body), "queue", claim=claim)
    if name == "agent":
        return None if value == AGENT else Case(enc(body), "agent", claim=claim)
    if name == "deduplication_id":
        body["queue"] = "fuzz"
    # session_id and deduplication_id are keys (1-255 characters, no control characters):
    # a request with any such key is good, and must run.
    if not KEY.fullmatch(value):
        return Case(enc(body), name, claim=claim)
    return Case(b"", None, extra={name: value})


ID_FIELDS = ["id", "queue", "agent", "session_id", "deduplication_id"]


def submit_cases() -> list[Case]:
    """Each kind of bad request in its own batch, so none crowds out another."""
    junk_object = st.dictionaries(st.text(max_size=8).filter(lambda k: k not in RUN_REQUEST_FIELDS), JSON, max_size=4)
    unknown_fields = st.dictionaries(st.text(min_size=1, max_size=12).filter(lambda k: k not in RUN_REQUEST_FIELDS), JSON, min_size=1, max_size=4)
    n = EXAMPLES
    cases = [
        *draw(RANDOM_BYTES.map(lambda b: Case(b, "request")), n // 4),
        *draw(BAD_UTF8.map(lambda b: Case(b, "request")), n // 8),
        *draw(NOT_OBJECT.map(lambda b: Case(b, "request")), n // 4),
        *draw(junk_object.map(lambda d: Case(enc(d), "agent")), n // 8),
        *draw(unknown_fields.map(lambda d: Case(b"", None, extra=d)), n // 8),
        *draw(_submit_wrong_types(), n),
        *draw(st.builds(_submit_hostile_id, st.sampled_from(ID_FIELDS), HOSTILE, st.booleans()), n // 2),
    ]
    for f in ("agent", "input"):
        cases.append(Case(enc({"agent": AGENT, "input": "hello"} | {f: None}), f, claim=True))
        cases.append(Case(enc({k: v for k, v in {"agent": AGENT, "input": "hello"}.items() if k != f}), f, claim=True))
    cases += [_submit_hostile_id(name, value, claim=i % 2 == 0) for i, (name, value) in enumerate((n, v) for n in ID_FIELDS for v in HOSTILE_FIXED)]
    # Input is text for the model: NUL, escapes and subject syntax in it are fine.
    cases += [Case(b"", None, extra={"input": text}) for text in ("he\x00llo", "\x1b[31mred", "a.b * > ../", "日本語 \u202eevil")]
    # Past the bounds that keep deadlines and counts inside the database's integer columns.
    cases += [Case(enc({"agent": AGENT, "input": "hello", "timeout_seconds": t}), "timeout_seconds", claim=True) for t in (31_536_001, 1e15, 1e300)]
    # A deduplication id is taken while its run is queued: each good one once.
    seen: set[str] = set()
    unique = []
    for case in cases:
        key = (case.extra or {}).get("deduplication_id") if case is not None and case.field is None else None
        if case is None or key in seen:
            continue
        if key is not None:
            seen.add(key)
        unique.append(case)
    return unique


# --- watching the system ------------------------------------------------------------


class Failures(logging.Handler):
    """Warnings and errors of the actors and the bus: a handler that raised, a retry, a
    restarted mailbox loop, an exception in a request/reply service (reported by nats-py)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.name.startswith("actors") and "fetch failed" not in text or text.startswith("NATS:"):
            self.records.append(f"{record.name}: {text}")


class Watch:
    """Everything one batch needs to check: dead letters and events as they are stored, the
    actors' failure counters and log, and the workflows created meanwhile."""

    def __init__(self, system: Any) -> None:
        self.system = system
        self.bus = system.bus
        self.failures = Failures()
        self.dead: dict[str, list[tuple[str, DeadLetter]]] = {}
        self.events: dict[str, list[Any]] = {}

    async def __aenter__(self) -> Watch:
        for name in ("actors", "timestep.bus"):
            logging.getLogger(name).addHandler(self.failures)
        self.counters = self._counters()
        self.started_at = datetime.now(timezone.utc)
        s = self.bus.subjects
        self._dead_sub = await self.bus.js.subscribe(s.all_dead, ordered_consumer=True, deliver_policy="new", cb=self._on_dead)
        self._events_sub = await self.bus.js.subscribe(s.all_events, ordered_consumer=True, deliver_policy="new", cb=self._on_event)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for name in ("actors", "timestep.bus"):
            logging.getLogger(name).removeHandler(self.failures)
        await self._dead_sub.unsubscribe()
        await self._events_sub.unsubscribe()

    def _counters(self) -> dict[str, tuple[int, int]]:
        return {a.name: (a.redelivered, a.dead_lettered) for a in self.system.actors}

    async def _on_dead(self, msg: Any) -> None:
        letter = msgspec.json.decode(msg.data, type=DeadLetter)
        tag = letter.headers.get("Fuzz-Id")
        if tag is not None:
            self.dead.setdefault(tag, []).append((msg.headers.get("Nats-Msg-Id", ""), letter))

    async def _on_event(self, msg: Any) -> None:
        event = decode_event(msg.data)
        self.events.setdefault(event.run_id, []).append(event)

    async def dead_letters(self, tags: list[str], timeout: float = 60) -> None:
        """Wait until every tagged message has been dead-lettered."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline and any(t not in self.dead for t in tags):
            await asyncio.sleep(0.05)
        missing = [t for t in tags if t not in self.dead]
        assert not missing, f"seed {SEED}: no dead letter for {len(missing)} messages, e.g. {missing[:5]}"

    async def settled(self, seconds: float = 0.5) -> None:
        """Let late duplicates (a second dead letter, an event after `rejected`) arrive."""
        await asyncio.sleep(seconds)

    async def check_actors_healthy(self) -> None:
        assert self.failures.records == [], f"seed {SEED}: actors failed on bad input: {self.failures.records[:5]}"
        assert self._counters() == self.counters, f"seed {SEED}: retries or failure dead letters: {self._counters()} vs {self.counters}"
        for actor in self.system.actors:
            task = actor._task
            assert task is None or not task.done(), f"{actor.name}'s mailbox loop ended"

    async def check_nothing_created_but(self, good: set[str]) -> None:
        """Every run that was accepted or started, and every workflow created during the batch,
        is a good one."""
        accepted = {rid for rid, evs in self.events.items() if any(isinstance(e, (Accepted, Started)) for e in evs)}
        assert accepted <= good, f"seed {SEED}: runs created for bad requests: {sorted(accepted - good)[:5]}"
        workflows = await engine.list_workflows(start_time=self.started_at.isoformat(), load_input=False, load_output=False)
        created = {w.workflow_id for w in workflows}
        assert created <= good, f"seed {SEED}: workflows created for bad requests: {sorted(created - good)[:5]}"


async def gather_bounded(coros: list, width: int = 16) -> list:
    slots = asyncio.Semaphore(width)

    async def one(coro):
        async with slots:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros))


class GoodRuns:
    """Good requests published among the bad ones; each must complete once with its output."""

    def __init__(self, bus: Any) -> None:
        self.bus = bus
        self.expected: dict[str, str] = {}

    async def submit(self, extra: dict | None = None) -> None:
        run_id = uid("good")
        body = {"agent": AGENT, "input": f"get_weather city={run_id}", "id": run_id, **(extra or {})}
        if "deduplication_id" in body:
            body["queue"] = "fuzz"
        reply = decode_event((await self.bus.nc.request(self.bus.subjects.submit, enc(body), timeout=30, headers={"Nats-Msg-Id": run_id})).data)
        assert isinstance(reply, Accepted), f"seed {SEED}: good request {body!r} got {reply!r}"
        text = body["input"]
        self.expected[run_id] = f"You said: {text}" if "input" in (extra or {}) else f"get_weather returned: sunny in {run_id}"

    async def check(self, watch: Watch, timeout: float = 90) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout

        def done(rid: str) -> bool:
            return any(isinstance(e, Completed) for e in watch.events.get(rid, []))

        while loop.time() < deadline and not all(done(r) for r in self.expected):
            await asyncio.sleep(0.05)
        await watch.settled()
        for run_id, output in self.expected.items():
            events = watch.events.get(run_id, [])
            completed = [e for e in events if isinstance(e, Completed)]
            assert len(completed) == 1, f"seed {SEED}: good run {run_id}: {events}"
            assert sum(isinstance(e, Started) for e in events) == 1
            assert completed[0].output == output


async def configure_fuzz_queue(client: Any) -> None:
    await client.configure_queue("fuzz", limit=100_000, period_seconds=1)


# --- runs.submit --------------------------------------------------------------------


async def test_submit_rejects_every_bad_request_and_runs_every_good_one(client, system) -> None:
    await configure_fuzz_queue(client)
    bus = system.bus
    cases = submit_cases()
    # Payloads past TIMESTEP_MAX_REQUEST_BYTES, up to just under the NATS max payload.
    limit, top = bus.settings.max_request_bytes, bus.nc.max_payload - 4096
    for size in (limit + 1, limit + 1000, (limit + top) // 2, top):
        cases.append(Case(b'{"agent": "bus-assistant", "input": "' + b"x" * (size - 38) + b'"}', "request"))
    tag = uid("submit")
    good = GoodRuns(bus)
    async with Watch(system) as watch:
        work, bad = [], []
        for i, case in enumerate(cases):
            if case.field is None:
                work.append(good.submit(case.extra))
                continue
            body = case.body
            claimed = None
            if case.claim:
                claimed = uid("fz")
                body = enc(msgspec.json.decode(body) | {"id": claimed})
            headers = {"Fuzz-Id": f"{tag}-{i}", "Nats-Msg-Id": f"{tag}-{i}"}
            bad.append((f"{tag}-{i}", case, body, claimed))
            work.append(bus.nc.request(bus.subjects.submit, body, timeout=30, headers=headers))
            if i % GOOD_EVERY == 0:
                work.append(good.submit())
        replies = await gather_bounded(work)
        await good.submit()  # right after the batch
        print(f"submit: {len(bad)} bad, {len(good.expected)} good")

        answers = iter(r for r in replies if r is not None)
        for fuzz_id, case, body, claimed in bad:
            reply = decode_event(next(answers).data)
            message = reply.error.message if isinstance(reply, Rejected) else ""
            assert isinstance(reply, Rejected), f"seed {SEED}: {body[:200]!r} was not rejected: {reply!r}"
            assert message.startswith(case.field), f"seed {SEED}: {body[:200]!r}: {message!r} does not name {case.field!r}"
            assert len(message) > len(case.field) + 10, message  # and says what is wrong
            if claimed is not None:
                assert reply.run_id == claimed
        await watch.dead_letters([t for t, *_ in bad])
        await good.check(watch)
        for fuzz_id, case, body, claimed in bad:
            [(letter_id, letter)] = watch.dead[fuzz_id]
            assert letter.subject == bus.subjects.submit
            assert letter.reason.startswith(f"rejected: {case.field}"), letter.reason
            assert letter.error.type == "InvalidRequest" and letter.reason == f"rejected: {letter.error.message}"
            assert letter.size == len(body)
            assert re.fullmatch(r"dead\.TIMESTEP_SUBMIT\.\d+", letter_id), letter_id
            if claimed is not None:
                assert [type(e) for e in watch.events.get(claimed, [])] == [Rejected], f"seed {SEED}: {body[:200]!r}"
        await watch.check_actors_healthy()
        await watch.check_nothing_created_but(set(good.expected))
