"""queue_agent_workflow: priority order, rolling-window rate limits, deduplication, run-time policy."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgspec
import pytest
import sqlalchemy as sa
from agents import Agent, function_tool
from agents.testing import ModelStep, ScriptedModel, assistant_message, function_call

import limit_worker
import timestep
import timestep.durable.queues
from processes import TESTS, process_env, stop, up, wait_printed, wait_printed_async
from timestep.durable import engine


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def recording_agent(started: list[tuple[str, float]], gate: asyncio.Event) -> Agent:
    """Records each run's input text when its first model call starts; 'blocker' waits for `gate`."""

    @function_tool
    async def wait_gate() -> str:
        await gate.wait()
        return "open"

    def respond(call) -> object:
        text = call.input[0]["content"]
        if len(call.input) == 1:
            started.append((text, time.monotonic()))
            if text == "blocker":
                return [function_call("wait_gate", {}, call_id="g1")]
        return [assistant_message(f"done {text}")]

    return Agent(name=uid("queued"), model=ScriptedModel([ModelStep.respond(respond) for _ in range(200)]), tools=[wait_gate])


async def _wait_until(predicate, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def test_lower_priority_runs_first_and_no_priority_runs_last(db: str) -> None:
    queue = uid("prio")
    await timestep.configure_queue(queue, concurrency=1)
    started: list[tuple[str, float]] = []
    gate = asyncio.Event()
    agent = recording_agent(started, gate)
    blocker = await timestep.queue_agent_workflow(agent, "blocker", queue_name=queue, priority=1)
    await _wait_until(lambda: started)

    handles = []
    for text, priority in [("p5", 5), ("none-1", None), ("p1", 1), ("p3", 3), ("none-2", None), ("p2", 2)]:
        handles.append(await timestep.queue_agent_workflow(agent, text, queue_name=queue, priority=priority))
    assert (await handles[0].get_status()).status == "queued"
    gate.set()
    await blocker.get_result()
    for handle in handles:
        assert (await handle.get_result()).status == "completed"
    assert [text for text, _ in started] == ["blocker", "p1", "p2", "p3", "p5", "none-1", "none-2"]


async def test_rate_limit_holds_in_every_rolling_window(db: str) -> None:
    queue, limit, period = uid("rate"), 3, 1.0
    await timestep.configure_queue(queue, limit=limit, period=period)
    started: list[tuple[str, float]] = []
    agent = recording_agent(started, asyncio.Event())
    handles = [await timestep.queue_agent_workflow(agent, f"r{i}", queue_name=queue) for i in range(9)]
    for handle in handles:
        await handle.get_result()

    assert len(started) == 9
    # Admission times by the database clock where DBOS keeps them (PostgreSQL, in milliseconds).
    # On SQLite (whole seconds there) each run's first model call, a few ms after DBOS starts it:
    # 0.2 s of slack keeps that jitter (up to 0.13 s seen on a loaded machine) from counting as a violation.
    admin = engine.Admin(db)
    try:
        rows = await admin.list_workflows(queue=queue, load_input=False, load_output=False)
    finally:
        admin.close()
    admitted = sorted(row.dequeued_at for row in rows if row.dequeued_at)
    if db.startswith("postgres"):
        assert len(admitted) == 9
        times, slack = admitted, 0.0
    else:
        times, slack = sorted(t for _, t in started), 0.2
    busiest = max(sum(1 for u in times if t <= u < t + period - slack) for t in times)
    assert busiest <= limit, f"{busiest} starts inside one {period}s window: {[round(t - times[0], 3) for t in times]}"
    assert times[-1] - times[0] >= 2 * period - 0.1  # 9 runs at 3 per second take at least two more windows


async def test_duplicate_deduplication_id_is_refused_or_returns_the_existing_run(db: str) -> None:
    queue = uid("dedup")
    await timestep.configure_queue(queue, concurrency=1)
    started: list[tuple[str, float]] = []
    gate = asyncio.Event()
    agent = recording_agent(started, gate)
    blocker = await timestep.queue_agent_workflow(agent, "blocker", queue_name=queue)
    first = await timestep.queue_agent_workflow(agent, "report", queue_name=queue, deduplication_id="user-1-report")

    with pytest.raises(timestep.DuplicateRunError, match="deduplication_id: 'user-1-report'"):
        await timestep.queue_agent_workflow(agent, "report", queue_name=queue, deduplication_id="user-1-report")
    same = await timestep.queue_agent_workflow(agent, "report", queue_name=queue, deduplication_id="user-1-report", on_duplicate="return")
    assert same.workflow_id == first.workflow_id

    gate.set()
    await blocker.get_result()
    assert (await first.get_result()).output == "done report"
    again = await timestep.queue_agent_workflow(agent, "report", queue_name=queue, deduplication_id="user-1-report")
    assert again.workflow_id != first.workflow_id
    await again.get_result()
    assert [t for t, _ in started].count("report") == 2


async def test_default_queue_admits_50_per_60_seconds(db: str) -> None:
    agent = recording_agent([], asyncio.Event())
    handle = await timestep.queue_agent_workflow(agent, "hello")
    assert (await handle.get_result()).output == "done hello"
    policy = await engine.blocking(engine.queue_policy, "default")
    assert policy.limiter["limit"] == 50
    assert policy.limiter["period"] == engine.limiter_period(60.0)


async def test_processes_naming_a_new_queue_at_once_all_succeed(db: str) -> None:
    """Several processes (here: threads with their own connections) meeting a queue for the
    first time at the same moment each store the default policy; none fails on the other's row."""
    queue = uid("race")
    policy = timestep.durable.queues.QueuePolicy(name=queue, limit=50, period=60.0)
    barrier = threading.Barrier(8)

    def register(replace: bool) -> None:
        barrier.wait()
        timestep.durable.queues.store_policy(policy, replace=replace)

    with ThreadPoolExecutor(8) as pool:
        results = [pool.submit(register, i % 2 == 0) for i in range(8)]
        for result in results:
            result.result()
    assert await engine.blocking(timestep.durable.queues.stored_policy, queue) == policy


async def test_queue_policy_changes_at_run_time(db: str) -> None:
    queue = uid("policy")
    await timestep.configure_queue(queue, limit=5, period=10)
    await timestep.configure_queue(queue, concurrency=3)
    policy = await engine.blocking(engine.queue_policy, queue)
    assert policy.limiter is None
    assert policy.concurrency == 3


async def test_token_budget_holds_the_next_run_until_the_window_passes(db: str) -> None:
    queue, period = uid("tokens"), 2.0
    await timestep.configure_queue(queue, period=period, tokens_per_period=1)
    started: list[tuple[str, float]] = []
    agent = recording_agent(started, asyncio.Event())
    from agents.usage import Usage

    model = ScriptedModel([ModelStep(output=[assistant_message("used tokens")], usage=Usage(requests=1, input_tokens=5, output_tokens=5, total_tokens=10))])
    spender = Agent(name=uid("spender"), model=model)
    spent = await timestep.queue_agent_workflow(spender, "spend", queue_name=queue)
    spent_at = time.monotonic()
    await spent.get_result()
    status = await timestep.durable.queues.queue_status(queue)
    assert status.tokens_in_window == 10 and status.tokens_per_period == 1

    second = await timestep.queue_agent_workflow(agent, "second", queue_name=queue)
    await second.get_result()
    second_start = dict(started)["second"]
    assert second_start - spent_at >= period - 0.3, "the run started before the token window had passed"


async def test_a_run_queued_here_starts_without_waiting_for_the_next_poll(db: str, env) -> None:
    """Enqueuing brings this process's next poll of the queue forward: on a queue polled every
    30 s, each of three runs queued one after another still starts within seconds."""
    env.set("TIMESTEP_QUEUE_POLL_SECONDS", "30")
    queue = uid("slow-poll")
    await timestep.configure_queue(queue)
    # DBOS starts a worker thread for a new queue within about a second; from then on this
    # process's enqueues wake it. Its first poll comes only after a whole interval (30 s).
    await _wait_until(lambda: queue in engine.runtime.current().wakers, timeout=10)
    started: list[tuple[str, float]] = []
    agent = recording_agent(started, asyncio.Event())
    for text in ("first", "second", "third"):
        handle = await timestep.queue_agent_workflow(agent, text, queue_name=queue)
        result = await asyncio.wait_for(handle.get_result(), 10)
        assert result.output == f"done {text}"


async def test_an_empty_queue_is_not_polled_and_a_run_queued_elsewhere_is_still_found(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """While no run waits on a queue anywhere, its worker skips DBOS's poll (a transaction of a
    dozen statements) for one indexed read. A run queued by another process, which cannot wake
    this one's worker, is still seen by that read at the next interval and starts."""
    queue = uid("empty")
    await timestep.configure_queue(queue)
    await _wait_until(lambda: queue in engine.runtime.current().wakers, timeout=10)
    sys_db = engine.hooks.system_database()
    polls: list[float] = []
    original = sys_db.start_queued_workflows

    def counted(q, *args, **kwargs):
        if q.name == queue:
            polls.append(time.monotonic())
        return original(q, *args, **kwargs)

    monkeypatch.setattr(sys_db, "start_queued_workflows", counted)
    assert not engine.hooks._queued_anywhere(queue)
    await asyncio.sleep(1.0)  # 20 intervals of TIMESTEP_QUEUE_POLL_SECONDS (0.05 s)
    assert polls == [], f"DBOS polled the empty queue {len(polls)} times in 1 s"

    monkeypatch.setattr(engine.hooks, "wake_queue", lambda name: None)  # as if queued by another process
    started: list[tuple[str, float]] = []
    handle = await timestep.queue_agent_workflow(recording_agent(started, asyncio.Event()), "elsewhere", queue_name=queue)
    result = await asyncio.wait_for(handle.get_result(), 10)
    assert result.output == "done elsewhere"
    assert polls, "the run started without a poll of its queue"


# --- a rate limit changed at run time -------------------------------------------


async def _enqueue(queue: str, name: str, *, text: str | None = None, wake: bool = True) -> None:
    await engine.enqueue(
        queue, limit_worker.started, text or name, workflow_id=uid(name), priority=1, deduplication_id=None,
        return_existing=False, timeout_seconds=None, wake=wake,
    )


async def _runs(queue: str) -> list:
    return await engine.list_workflows(queue=queue, load_input=False, load_output=False)


async def _started(queue: str) -> int:
    return sum(1 for run in await _runs(queue) if run.status != "queued")


async def _until_limited_or_all_started(queue: str, limited: Callable[[], int], runs: int) -> None:
    """Until two polls found the rate limit spent (no poll after them can start more), or every
    run started (and nothing is left to poll)."""
    deadline = time.monotonic() + 30
    while limited() < 2 and await _started(queue) < runs:
        if time.monotonic() > deadline:
            raise AssertionError(f"neither two polls held back by the limit nor {runs} starts: {await _runs(queue)}")
        await asyncio.sleep(0.05)


def _counted_by_the_limiter(queue: str) -> list[bool]:
    """Per started run of `queue`: whether DBOS counts it in the rate limit's window."""
    sys_db = engine.hooks.system_database()
    ws = sys_db.tables.workflow_status
    with sys_db.engine.connect() as conn:
        rows = conn.execute(sa.select(ws.c.rate_limited).where(ws.c.queue_name == queue, ws.c.status != "ENQUEUED"))
        return [bool(flag) for (flag,) in rows]


async def _cancel_waiting(queue: str) -> None:
    """Leave no run waiting: the queue would be polled for the rest of the session."""
    for run in await _runs(queue):
        if run.status == "queued":
            await engine.cancel(run.id)


async def _worker_waiting(queue: str) -> None:
    """Until this process's worker of `queue` has read the queue's policy and waits for a poll."""
    await _wait_until(lambda: queue in engine.runtime.current().wakers and engine.runtime.current().wakers[queue]._last_poll > 0, timeout=10)


@pytest.mark.parametrize(
    "before", [{"concurrency": 5}, {"limit": 50, "period": 60, "concurrency": 5}], ids=["set", "tightened"]
)
async def test_a_limit_set_on_an_idle_queue_holds_the_next_burst(db: str, before: dict) -> None:
    """`queues configure rx --concurrency 5` (or a loose limit), then, while no run waits on the
    queue, `--limit 2 --period 60 --concurrency 5`, then six runs at once: two start. Before, the
    worker kept the policy it read before the queue fell idle, started five at once, and stored
    the first as not rate-limited, so it never counted in the window."""
    queue = uid("idle-limit")
    await timestep.configure_queue(queue, **before)
    await _worker_waiting(queue)
    await timestep.configure_queue(queue, limit=2, period=60, concurrency=5)
    limited: list[int] = []
    undo = limit_worker.on_limited(queue, lambda: limited.append(1))
    try:
        await asyncio.gather(*(_enqueue(queue, f"burst-{i}") for i in range(6)))
        await _until_limited_or_all_started(queue, lambda: len(limited), 6)
        assert await _started(queue) == 2
        assert await engine.blocking(_counted_by_the_limiter, queue) == [True, True]
    finally:
        undo()
        await _cancel_waiting(queue)


async def test_a_limit_set_on_a_busy_queue_holds_from_the_next_run(db: str, tmp_path: Path) -> None:
    """Six runs wait behind a running one (concurrency 1); the queue gets `--limit 2 --period 60
    --concurrency 5`: two of the six start in the window (the first run started before the limit)."""
    queue = uid("busy-limit")
    await timestep.configure_queue(queue, concurrency=1)
    gate = tmp_path / "open"
    limited: list[int] = []
    undo = limit_worker.on_limited(queue, lambda: limited.append(1))
    try:
        await _enqueue(queue, "blocker", text=f"wait-for:{gate}")
        await asyncio.gather(*(_enqueue(queue, f"waiting-{i}") for i in range(6)))
        while await _started(queue) < 1:
            await asyncio.sleep(0.02)
        await timestep.configure_queue(queue, limit=2, period=60, concurrency=5)
        gate.touch()
        await _until_limited_or_all_started(queue, lambda: len(limited), 7)
        assert await _started(queue) == 3
    finally:
        gate.touch()
        undo()
        await _cancel_waiting(queue)


@pytest.mark.processes
@pytest.mark.parametrize("busy", [False, True], ids=["idle", "busy"])
async def test_a_limit_set_at_run_time_holds_in_another_process(db: str, busy: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same two cases on a queue another process takes the runs from (this one holds the
    queue): the limit read there is the one just set."""
    queue = uid("other-limit")
    await timestep.configure_queue(queue, concurrency=1 if busy else 5)
    held = threading.Event()
    hold = engine.hooks._queue_hold

    def hold_here(name: str) -> float:
        if name != queue:
            return hold(name) if hold is not None else 0.0
        held.set()
        return 3600.0

    monkeypatch.setattr(engine.hooks, "_queue_hold", hold_here)
    out, gate = tmp_path / "second.out", tmp_path / "open"
    env = process_env(TIMESTEP_EXECUTOR_ID="second", TIMESTEP_HOME=str(tmp_path), TIMESTEP_QUEUE_POLL_SECONDS="0.05")
    second = subprocess.Popen(
        [sys.executable, str(TESTS / "limit_worker.py"), db, queue], env=env, stdout=out.open("w"), stderr=subprocess.STDOUT
    )
    try:
        await _wait_until(held.is_set, timeout=10)
        await wait_printed_async([(second, out)], "ready", timeout=60)
        if busy:
            await _enqueue(queue, "blocker", text=f"wait-for:{gate}", wake=False)
            await asyncio.gather(*(_enqueue(queue, f"waiting-{i}", wake=False) for i in range(6)))
            while await _started(queue) < 1:
                await asyncio.sleep(0.02)
        await timestep.configure_queue(queue, limit=2, period=60, concurrency=5)
        gate.touch()
        if not busy:
            await asyncio.gather(*(_enqueue(queue, f"burst-{i}", wake=False) for i in range(6)))
        await _until_limited_or_all_started(queue, lambda: out.read_text().count("limited"), 7 if busy else 6)
        runs = [run for run in await _runs(queue) if run.status != "queued"]
        assert len(runs) == (3 if busy else 2), out.read_text()[-3000:]
        assert {run.executor_id for run in runs} == {"second"}
    finally:
        gate.touch()
        stop([second])
        monkeypatch.undo()
        await _cancel_waiting(queue)


@pytest.mark.processes
def test_a_limit_set_with_the_cli_on_an_idle_queue_holds_the_next_burst(backend: str, fresh_db_url: str, tmp_path: Path) -> None:
    """As an operator met it: `timestep queues configure rx --concurrency 5`, a run through it, then
    `--limit 2 --period 60 --concurrency 5` while it is idle, then six `timestep run --queue rx` at
    once: two start and finish, four wait for the window (before: five started at once)."""
    env = process_env(TIMESTEP_HOME=str(tmp_path), TIMESTEP_QUEUE_POLL_SECONDS="0.05")
    if backend == "postgres":
        env["PG_CONNECTION_URI"] = fresh_db_url
    out = tmp_path / "up.out"
    proc = up(out, env, "--agents", "bus_agents")
    runs: list[subprocess.Popen] = []
    try:
        wait_printed([(proc, out)])

        def cli(*args: str) -> str:
            done = subprocess.run([sys.executable, "-m", "actors.cli.main", *args], env=env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, (args, done.stdout, done.stderr)
            return done.stdout

        cli("queues", "configure", "rx", "--concurrency", "5")
        cli("run", "bus-assistant", "hello", "--queue", "rx")  # the queue's worker has polled it; now it is idle
        cli("queues", "configure", "rx", "--limit", "2", "--period", "60", "--concurrency", "5")
        command = [sys.executable, "-m", "actors.cli.main", "run", "bus-assistant", "hello", "--queue", "rx"]
        runs = [subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(6)]
        deadline = time.monotonic() + 120
        while sum(1 for run in runs if run.poll() is not None) < 2:
            assert time.monotonic() < deadline, out.read_text()[-3000:]
            time.sleep(0.1)
        [status] = msgspec.json.decode(cli("queues", "status", "rx", "--json"))
        assert (status["admitted_in_window"], status["running"], status["depth"]) == (3, 0, 4), status
        assert sorted(run.poll() for run in runs if run.poll() is not None) == [0, 0]
    finally:
        stop(runs + [proc])


async def test_delete_queue_is_refused_while_runs_wait_or_run_on_it(db: str) -> None:
    queue = uid("gone")
    await timestep.configure_queue(queue, concurrency=1)
    started: list[tuple[str, float]] = []
    gate = asyncio.Event()
    agent = recording_agent(started, gate)
    blocker = await timestep.queue_agent_workflow(agent, "blocker", queue_name=queue)
    waiting = await timestep.queue_agent_workflow(agent, "after", queue_name=queue)
    await _wait_until(lambda: started)
    with pytest.raises(timestep.TimestepError, match=f"queue '{queue}' has 1 run waiting and 1 running"):
        await timestep.delete_queue(queue)
    assert (await waiting.get_status()).status == "queued"  # refused: the queue and its runs are as they were
    gate.set()
    assert (await waiting.get_result()).status == "completed" and (await blocker.get_result()).status == "completed"
    assert await timestep.delete_queue(queue) is True
    assert await engine.blocking(timestep.durable.queues.stored_policy, queue) is None
    assert await timestep.delete_queue(queue) is False
    with pytest.raises(timestep.ValidationError, match="'default' holds the runs that name no queue"):
        await timestep.delete_queue("default")
    # Named again, it is created again with the default policy, and runs what is put on it.
    assert (await (await timestep.queue_agent_workflow(agent, "again", queue_name=queue)).get_result()).status == "completed"
