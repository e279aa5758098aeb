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

from subjects.events import Accepted, Completed, Rejected, Started, decode_event, decode_submit_answer
from subjects.ids import is_valid_run_id
from subjects.messages import Approve, Cancel, DeadLetter, Reject, Reply, RunRequest
from timestep.durable import engine, queues
from timestep.durable.schedules import check_crontab

AGENT = "bus-assistant"
SEED = int(os.environ.get("TIMESTEP_FUZZ_SEED", "20261125"))
EXAMPLES = int(os.environ.get("TIMESTEP_FUZZ_EXAMPLES", "120"))
GOOD_EVERY = 12  # one good request among this many bad ones
NAME = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
KEY = re.compile(r"^[^\x00-\x1f\x7f]{1,255}$")
RUN_REQUEST_FIELDS = set(RunRequest.__struct_fields__)

# slow: hundreds of generated messages per test; the table-driven bad-input tests (test_bus, test_validation,
# test_intake) are the fast tier's proof of the same refusals. The filter: the actors' threads use `random`
# while hypothesis generates; that is not the strategies' doing.
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")]


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
        for name in ("actors", "timestep.bus.connection"):
            logging.getLogger(name).addHandler(self.failures)
        self.counters = self._counters()
        self.started_at = datetime.now(timezone.utc)
        s = self.bus.subjects
        self._dead_sub = await self.bus.js.subscribe(s.all_dead, ordered_consumer=True, deliver_policy="new", cb=self._on_dead)
        self._events_sub = await self.bus.js.subscribe(s.all_events, ordered_consumer=True, deliver_policy="new", cb=self._on_event)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for name in ("actors", "timestep.bus.connection"):
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
        workflows = await engine.list_workflows(since=self.started_at.timestamp(), load_input=False, load_output=False)
        created = {w.id for w in workflows}
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
        reply = decode_submit_answer((await self.bus.nc.request(self.bus.subjects.submit, enc(body), timeout=30, headers={"Nats-Msg-Id": run_id})).data)
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
            reply = decode_submit_answer(next(answers).data)
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


# --- runs.control.<run_id>.<action> -------------------------------------------------

CONTROL_TYPES = {"approve": Approve, "reject": Reject, "cancel": Cancel}


def _control_body(action: str, body: bytes, field: str | None) -> tuple[str, bytes, str | None]:
    """`field` None means: decide with the contract's own type whether the body is valid."""
    if field is None:
        try:
            msgspec.json.decode(body or b"{}", type=CONTROL_TYPES[action])
        except msgspec.ValidationError as exc:  # an object (or nothing) that lacks or mistypes a field
            at = re.search(r"`\$\.(\w+)|required field `(\w+)`", str(exc))
            field = next(g for g in at.groups() if g) if at else "request"
        except (msgspec.DecodeError, UnicodeDecodeError):
            field = "request"
    return action, body, field


def control_body_cases() -> list[tuple[str, bytes, str | None]]:
    """(action, body, the field a rejection names; None when the body is valid)."""
    action = st.sampled_from(sorted(CONTROL_TYPES))
    call_action = st.sampled_from(["approve", "reject"])
    wrong = st.one_of(
        st.tuples(call_action, NOT_STRING.map(lambda v: {"call_id": v}), st.just("call_id")),
        st.tuples(call_action, st.builds(lambda v: {"call_id": "call_1", "always": v}, NOT_STRING.filter(lambda v: not isinstance(v, bool))), st.just("always")).filter(lambda t: t[0] == "approve"),
        st.tuples(st.just("reject"), st.builds(lambda v: {"call_id": "call_1", "message": v}, NOT_NULL_NOT_STRING), st.just("message")),
        st.tuples(call_action, st.dictionaries(st.text(max_size=6).filter(lambda k: k != "call_id"), JSON, max_size=3), st.just("call_id")),
        st.tuples(call_action, HOSTILE.map(lambda v: {"call_id": v}), st.just("call_id")).map(lambda t: t if not KEY.fullmatch(t[1]["call_id"]) else (t[0], t[1], None)),
        st.tuples(action, st.dictionaries(st.text(min_size=1, max_size=8).filter(lambda k: k not in ("call_id", "always", "message")), JSON, max_size=3)
                  .map(lambda d: d | {"call_id": "call_1"}), st.none()),
    )
    n = EXAMPLES
    cases = [
        *draw(st.builds(_control_body, action, RANDOM_BYTES | BAD_UTF8, st.none()), n // 3),
        *draw(st.builds(_control_body, action, NOT_OBJECT, st.just("request")), n // 3),
        *draw(wrong.map(lambda t: (t[0], enc(t[1]), t[2])), n),
        ("reject", enc({"call_id": "call_1", "message": "m" * 10_001}), "message"),
    ]
    return cases


SUBJECT_SAFE = st.text(st.characters(codec="utf-8", exclude_characters="."), min_size=1, max_size=60).filter(lambda t: not any(c.isspace() for c in t))


async def test_control_subjects_dead_letter_every_bad_message(client, system) -> None:
    bus = system.bus
    s = bus.subjects
    done = await client.submit(AGENT, "get_weather city=Control")
    await done.result(timeout=60)
    ghost = uid("ghost")
    bodies = control_body_cases()
    # Hostile tokens where the run id and the action go; they reach the actor as a subject.
    run_tokens = ["*", ">", "é", "\x01", "\x7f", "日本語", "a%b", "$JS", "x" * 129, "x" * 3000, *draw(SUBJECT_SAFE, EXAMPLES // 2)]
    action_tokens = ["approvex", "APPROVE", "*", ">", "é", "\x01"]
    raw = await nats.connect(system.url)
    js = raw.jetstream()
    tag = uid("control")
    expected: dict[str, tuple[str, str, str]] = {}  # fuzz id -> (subject, error type, message start)
    work = []
    good = GoodRuns(bus)

    def send(subject: str, body: bytes, kind: str, start: str) -> None:
        fuzz_id = f"{tag}-{len(expected)}"
        expected[fuzz_id] = (subject, kind, start)
        work.append(js.publish(subject, body, headers={"Fuzz-Id": fuzz_id}, timeout=30))
        if len(expected) % GOOD_EVERY == 0:
            work.append(good.submit())

    for i, (action, body, field) in enumerate(bodies):
        if field is None:
            send(s.control(ghost, action), body, "UnknownRun", f"run_id: no run '{ghost}'")
        else:
            # Bad bodies go to the completed run too: the body is checked before the run.
            target = done.run_id if i % 3 == 0 else ghost
            send(s.control(target, action), body, "InvalidRequest", f"{field}: ")
    for token in run_tokens:
        if is_valid_run_id(token):
            send(s.control(token, "cancel"), b"{}", "UnknownRun", f"run_id: no run '{token}'")
        else:
            send(s.control(token, "cancel"), b"{}", "InvalidSubject", f"run_id: {token!r}")
    for token in action_tokens:
        send(s.control(ghost, token), enc({"call_id": "call_1"}), "InvalidSubject", repr(s.control(ghost, token)))
    send(s.control("a.b", "approve"), enc({"call_id": "call_1"}), "InvalidSubject", repr(s.control("a.b", "approve")))
    try:
        async with Watch(system) as watch:
            await gather_bounded(work)
            await good.submit()
            # Subjects NATS itself refuses never reach an actor: whitespace, an empty token, a
            # token past the 4 KB protocol line (the server drops that connection).
            for subject in (s.control(" ", "cancel"), s.control("a b", "cancel"), s.control("", "cancel"), s.control(ghost, ""), s.control("x" * 10_000, "cancel")):
                conn = await nats.connect(system.url, max_reconnect_attempts=0, error_cb=_ignore)
                try:
                    await conn.publish(subject, b"{}", headers={"Fuzz-Id": f"{tag}-never"})
                    await conn.flush(timeout=2)
                except Exception:
                    pass
                finally:
                    await conn.close()
            print(f"control: {len(expected)} bad, {len(good.expected)} good")
            await watch.dead_letters(list(expected))
            await good.check(watch)
            for fuzz_id, (subject, kind, start) in expected.items():
                [(letter_id, letter)] = watch.dead[fuzz_id]
                assert letter.subject == subject
                assert letter.error.type == kind and letter.error.message.startswith(start), f"seed {SEED}: {subject!r} {letter.data!r}: {letter.error}"
                if kind != "UnknownRun":  # and says what is wrong
                    assert len(letter.error.message) > len(start) + 5, letter.error.message
                assert re.fullmatch(r"dead\.TIMESTEP_CONTROL\.\d+", letter_id), letter_id
            assert f"{tag}-never" not in watch.dead
            assert watch.events.get(done.run_id, []) == []  # the completed run got no new event
            await watch.check_actors_healthy()
            await watch.check_nothing_created_but(set(good.expected))
    finally:
        await raw.close()


async def _ignore(exc: Exception) -> None:
    pass


# --- schedules.* and queues.* (request/reply) ------------------------------------------


def _wrong(fields: dict[str, st.SearchStrategy], base: dict) -> st.SearchStrategy:
    return st.sampled_from(sorted(fields)).flatmap(lambda f: fields[f].map(lambda v: (enc(base | {f: v}), f)))


def admin_cases(s: Any) -> list[tuple[str, bytes, str | None]]:
    """(subject, body, the field a refusal names; None when the request is good)."""
    request = {"agent": AGENT, "input": "tick"}
    not_name = HOSTILE.filter(lambda v: not NAME.fullmatch(v))
    RUN_STATUSES = ("queued", "running", "waiting", "completed", "failed", "cancelled")
    # Invalid UTF-8 inside `name`: in a field the type does not have, msgspec skips it unread.
    bad_utf8 = BAD_UTF8.map(lambda b: b.replace(b'"agent"', b'"name"'))
    not_object_or_bytes = st.one_of(RANDOM_BYTES.filter(lambda b: b.strip() not in (b"", b"{}")), bad_utf8, NOT_OBJECT)
    n = EXAMPLES // 2

    def bad_cron(value: str) -> bool:
        try:
            check_crontab(value)
            return False
        except ValueError:
            return True

    create = [(s.schedules_create, body, field) for body, field in [
        *draw(not_object_or_bytes.map(lambda b: (b, "request")), n // 2),
        *draw(_wrong({
            "name": NOT_STRING | not_name, "cron": NOT_STRING | HOSTILE.filter(bad_cron) | st.text(max_size=30).filter(bad_cron),
            "request": NOT_STRING, "request.agent": NOT_STRING, "request.input": NOT_STRING.filter(lambda v: not isinstance(v, list)),
        }, {"name": "fuzz-schedule", "cron": "0 0 1 1 *", "request": request}).map(_nest), n),
        (enc({"cron": "0 0 1 1 *", "request": request}), "name"),
        (enc({"name": "x", "request": request}), "cron"),
        (enc({"name": "x", "cron": "0 0 1 1 *"}), "request"),
        # What the governor would reject at every tick is refused up front.
        (enc({"name": "x", "cron": "0 0 1 1 *", "request": request | {"input": [{"role": "robot", "content": "x"}]}}), "request.input[0].role"),
        (enc({"name": "x", "cron": "0 0 1 1 *", "request": request | {"input": [{"role": "user", "content": "x" * 1000}] * 300}}), "request"),
        (enc({"name": "x", "cron": "0 0 1 1 *", "request": request | {"session_id": "\x00"}}), "request.session_id"),
    ]]
    delete = [(s.schedules_delete, body, field) for body, field in [
        *draw(not_object_or_bytes.map(lambda b: (b, "request")), n // 2),
        *draw(st.one_of(NOT_STRING, not_name).map(lambda v: (enc({"name": v}), "name")), n // 2),
        (b"{}", "name"),
        (enc({"name": uid("absent")}), None),
    ]]
    listing = [(s.schedules_list, body, field) for body, field in [
        *draw(not_object_or_bytes.filter(lambda b: not b.startswith(b'{"name"')).map(lambda b: (b, "request")), n // 2),
        (b"", None), (b"{}", None), (enc({"unknown": [1, {"x": None}]}), None),
    ]]
    count_bad = st.one_of(st.integers(max_value=0), st.integers(min_value=2**31), st.text(max_size=4), st.booleans(), st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: f != int(f)))
    seconds_bad = st.one_of(st.floats(max_value=0, allow_nan=False, allow_infinity=False), st.floats(min_value=31_536_001, allow_infinity=False), st.text(max_size=4), st.booleans())
    configure = [(s.queues_configure, body, field) for body, field in [
        *draw(not_object_or_bytes.map(lambda b: (b, "request")), n // 2),
        *draw(_wrong({"name": NOT_STRING | not_name, "limit": count_bad, "period_seconds": seconds_bad, "concurrency": count_bad, "tokens_per_period": count_bad},
                     {"name": "fuzz-queue", "limit": 10, "period_seconds": 60}), n),
        (b"{}", "name"),
        (enc({"name": "fuzz-queue", "limit": 10}), "period_seconds"),
        (enc({"name": "fuzz-queue", "period_seconds": 10}), "limit"),
        (enc({"name": "fuzz-queue", "tokens_per_period": 10}), "period_seconds"),
        (enc({"name": "fuzz-queue", "limit": 2**40, "period_seconds": 1}), "limit"),
        (enc({"name": "fuzz-queue", "limit": 1, "period_seconds": 1e300}), "period_seconds"),
    ]]
    status = [(s.queues_status, body, field) for body, field in [
        *draw(not_object_or_bytes.map(lambda b: (b, "request")), n // 2),
        *draw(st.one_of(NOT_NULL_NOT_STRING, not_name).map(lambda v: (enc({"name": v}), "name")), n // 2),
        (enc({"name": uid("absent")}), "name"),
        (b"", None), (enc({"name": "fuzz"}), None),
    ]]
    runs = [(s.runs_list, body, field) for body, field in [
        *draw(not_object_or_bytes.filter(lambda b: not b.lstrip().startswith(b"{")).map(lambda b: (b, "request")), n // 2),
        *draw(st.one_of(NOT_NULL_NOT_STRING, st.text(max_size=10).filter(lambda v: v not in RUN_STATUSES)).map(lambda v: (enc({"status": v}), "status")), n // 4),
        *draw(st.one_of(st.integers(max_value=0), st.integers(min_value=1001), st.text(max_size=4)).map(lambda v: (enc({"limit": v}), "limit")), n // 4),
        (enc({"agent": 5}), "agent"), (enc({"queue": "a.b"}), "queue"),
        (b"", None), (b"{}", None), (enc({"status": "waiting", "limit": 5}), None),
    ]]
    runs += [(s.runs_get, body, field) for body, field in [
        *draw(not_object_or_bytes.filter(lambda b: not b.lstrip().startswith(b'{')).map(lambda b: (b, "request")), n // 4),
        *draw(HOSTILE.filter(lambda v: not is_valid_run_id(v)).map(lambda v: (enc({"id": v}), "id")), n // 4),
        (b"{}", "id"),
    ]]
    return create + delete + listing + configure + status + runs


def _nest(pair: tuple[bytes, str]) -> tuple[bytes, str]:
    """`request.agent` in a flat body becomes a field of the nested request."""
    body, field = pair
    data = msgspec.json.decode(body)
    if field.startswith("request."):
        data["request"] = data["request"] | {field.split(".", 1)[1]: data.pop(field)}
    return enc(data), field


async def test_admin_subjects_refuse_every_bad_request(client, system) -> None:
    await configure_fuzz_queue(client)
    bus = system.bus
    cases = admin_cases(bus.subjects)
    schedules_before = {x.name for x in await client.list_schedules()}
    queues_before = set(await engine.blocking(queues.queue_names))
    tag = uid("admin")
    good = GoodRuns(bus)
    good_schedules, good_queues = [], []
    work = []
    for i, (subject, body, _) in enumerate(cases):
        work.append(bus.nc.request(subject, body, timeout=30, headers={"Fuzz-Id": f"{tag}-{i}"}))
        if i % GOOD_EVERY == 0:
            work.append(good.submit())
        if i % (4 * GOOD_EVERY) == 0:
            good_schedules.append(uid("yearly"))
            work.append(client.create_schedule(good_schedules[-1], "0 0 1 1 *", {"agent": AGENT, "input": "tick"}))
            good_queues.append(uid("fuzzq"))
            work.append(client.configure_queue(good_queues[-1], limit=5, period_seconds=60))
    async with Watch(system) as watch:
        clock = asyncio.get_running_loop().time()
        results = await gather_bounded(work)
        await good.submit()
        print(f"admin: published in {asyncio.get_running_loop().time() - clock:.1f} s; {len(cases)} requests, {len(good.expected)} good runs, {len(good_schedules)} good schedules and queues")
        replies = [msgspec.json.decode(r.data, type=Reply) for r in results if hasattr(r, "data")]
        refused = []
        for i, ((subject, body, field), reply) in enumerate(zip(cases, replies)):
            where = f"seed {SEED}: {subject} {body[:200]!r}"
            if field is None:
                assert reply.ok, f"{where}: {reply.error}"
                continue
            assert not reply.ok and reply.error is not None, f"{where} was not refused"
            assert reply.error.message.startswith(field), f"{where}: {reply.error.message!r} does not name {field!r}"
            assert len(reply.error.message) > len(field) + 10
            refused.append((f"{tag}-{i}", subject, reply.error.message))
        await watch.dead_letters([t for t, *_ in refused])
        await good.check(watch)
        for fuzz_id, subject, message in refused:
            [(_, letter)] = watch.dead[fuzz_id]
            assert letter.subject == subject and letter.reason == f"refused: {message}"
        await watch.check_actors_healthy()
        await watch.check_nothing_created_but(set(good.expected))
    schedules_after = {x.name for x in await client.list_schedules()}
    queues_after = set(await engine.blocking(queues.queue_names))
    for name in good_schedules:
        await client.delete_schedule(name)
    assert schedules_after == schedules_before | set(good_schedules)
    assert queues_after == queues_before | set(good_queues)
