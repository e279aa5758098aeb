"""Faults: actors SIGKILLed at random points, the nats-server restarted, the database stopped.

Each test runs the actor roles as separate `timestep up` processes and a load of `ledger`
runs (tests/fault_agents.py: model, tool, model; each execution in a ledger file), then
checks the promise: every run ends `completed` exactly once (one event, one successful
workflow), and no step that the run kept ran again after it (tests/faults.py check_ledger).

Sizes come from the environment so a soak can run the same code longer
(`./tasks.sh soak`): TIMESTEP_FAULT_RUNS (default 200) and TIMESTEP_FAULT_KILLS (default 4: the agent actor,
the governor, the scheduler, then all three; the soak adds kills of a role drawn at random).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import backends
from faults import ROLES, PrivatePostgres, check_ledger, postgres_binaries_problem
from processes import TESTS, Deployment, process_env, wait_printed_async
from subjects.events import Completed, Failed, Interrupted, RunEvent
from subjects.names import EVENTS_STREAM
from timestep.client import Client
from timestep.durable.engine import Admin
from timestep.bus.server import EmbeddedNats, free_port

pytestmark = pytest.mark.processes

# Many processes on one PostgreSQL: its variant not beside the other such tests (connection slots);
# the SQLite variant, on files of its own, runs beside any test.
ONE_POSTGRES_AT_A_TIME = pytest.mark.parametrize("backend", backends(pytest.mark.xdist_group("processes")), indirect=True)
RUNS = int(os.environ.get("TIMESTEP_FAULT_RUNS", "200"))
# Not asyncio.to_thread: the loop's default executor is DBOS's pool, shut down with an earlier DBOS session.
_threads = ThreadPoolExecutor(4)


def off_loop(fn, *args):
    return asyncio.get_running_loop().run_in_executor(_threads, fn, *args)
KILLS = int(os.environ.get("TIMESTEP_FAULT_KILLS", "4"))


def admin_url(actors: Deployment) -> str:
    return actors.db_url if not actors.db_url.startswith("sqlite") else f"sqlite:///{actors.tmp / 'home' / 'timestep.sqlite'}"


class Watch:
    """Every event on the bus, from the start, counted per run. With `approve`, every tool call
    waiting for approval is approved, as a person would, once."""

    def __init__(self, client: Client, *, approve: bool = False) -> None:
        self.client = client
        self.completed: Counter[str] = Counter()
        self.outputs: dict[str, str] = {}
        self.failed: dict[str, RunEvent] = {}
        self.changed = asyncio.Event()
        self.approve = approve
        self.approved: set[tuple[str, str]] = set()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for event in self.client.events(from_start=True):
            if isinstance(event, Completed):
                self.completed[event.run_id] += 1
                self.outputs[event.run_id] = event.output
                self.changed.set()
            elif isinstance(event, Failed):
                self.failed[event.run_id] = event
            elif isinstance(event, Interrupted) and self.approve:
                for approval in event.approvals:
                    if (event.run_id, approval.call_id) not in self.approved:
                        self.approved.add((event.run_id, approval.call_id))
                        # Stored, not answered: an agent actor acts on it whenever one is up (one
                        # may be stopping right now, and an answered approve would then be refused).
                        await self.client.approve(event.run_id, approval.call_id, wait=False)

    async def until_completed(self, run_ids: set[str], timeout: float, actors: Deployment) -> None:
        deadline = time.monotonic() + timeout
        while not run_ids <= set(self.completed):
            if time.monotonic() > deadline:
                missing = sorted(run_ids - set(self.completed))
                raise AssertionError(f"{len(missing)} runs never completed, e.g. {missing[:5]}; failed: {list(self.failed.items())[:3]}\n{actors.output()}")
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), 1.0)
            except asyncio.TimeoutError:
                pass

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def assert_once(actors: Deployment, watch: Watch, run_ids: set[str]) -> dict[str, object]:
    """Exactly one `completed` per run, one successful workflow per run, and no kept step repeated.

    A run's `completed` is stored before its workflow is recorded as ended, so the workflows are read
    until none of them is still running (at most 30 s), not once. No wait for a late doubled `completed`:
    once every run's workflow is recorded as ended, nothing runs it again (only a recovery of an
    unfinished workflow would), so the `completed` events stored now are all there will be; they are
    counted in the stream, per run."""
    assert not watch.failed, f"runs failed: {list(watch.failed.items())[:3]}"
    admin = Admin(admin_url(actors))
    deadline = time.monotonic() + 30
    try:
        while True:
            rows = await admin.list_workflows(load_input=False, load_output=False)
            runs = [w for w in rows if w.id in run_ids]
            if all(w.finished for w in runs) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
    finally:
        admin.close()
    assert len(runs) == len(run_ids), f"{len(run_ids) - len(runs)} runs have no workflow"
    assert Counter(w.status for w in runs) == Counter({"completed": len(run_ids)})
    client = watch.client
    info = await client.bus.js.stream_info(EVENTS_STREAM, subjects_filter=client.subjects.events("*", "completed"))
    stored = {subject.split(".")[-2]: n for subject, n in (info.state.subjects or {}).items()}
    doubled = {r: n for r, n in stored.items() if r in run_ids and n > 1} | {r: n for r, n in watch.completed.items() if n > 1}
    assert not doubled, f"runs completed more than once: {doubled}"
    assert not run_ids - set(stored), f"runs with no stored `completed`: {sorted(run_ids - set(stored))[:5]}"
    report = check_ledger(actors.ledger, {r: watch.outputs[r] for r in run_ids})
    assert not report.missing, f"kept executions missing from the ledger: {report.missing[:5]}"
    assert not report.repeated_after_recorded, f"steps ran again after they were recorded: {report.repeated_after_recorded[:5]}"
    figures = {
        "runs": len(run_ids), "lost": 0, "doubled": 0, "kills": dict(actors.kills), "executions": report.executions,
        "cut_off_and_rerun": report.cut_off, "finished_unrecorded_and_rerun": report.finished_unrecorded,
    }
    print("figures:", figures)
    return figures


@pytest.fixture
def nats(tmp_path: Path):
    server = EmbeddedNats(tmp_path / "nats", port=free_port())
    server.start()
    yield server
    server.stop()


async def submit_all(client: Client, run_ids: list[str], per_second: float) -> None:
    """Submit at a steady pace, each request in its own task (a request waits while no governor is up)."""
    tasks = []
    for i, run_id in enumerate(run_ids):
        queue = "matrix" if i % 2 else None  # half direct, half through a queue
        tasks.append(asyncio.create_task(client.submit("ledger", f"job {i}", id=run_id, queue=queue, reply_timeout=120)))
        await asyncio.sleep(1 / per_second)
    await asyncio.gather(*tasks)


@ONE_POSTGRES_AT_A_TIME
async def test_crash_matrix(fresh_db_url: str, tmp_path: Path, nats: EmbeddedNats) -> None:
    """SIGKILL the agent actor, the governor and the scheduler, each, then all at once, then at
    random, at random points of RUNS runs (half queued) and a schedule ticking every 2 s."""
    seed = int(os.environ.get("TIMESTEP_FAULT_SEED") or random.randrange(1 << 30))
    print(f"TIMESTEP_FAULT_SEED={seed}")
    rng = random.Random(seed)
    actors = Deployment(tmp_path, nats.url, fresh_db_url, agents="fault_agents")
    actors.start(*ROLES)
    plan: list[tuple[str, ...]] = [("agent",), ("governor",), ("scheduler",), ROLES]
    plan += [rng.choice([("agent",), ("governor",), ("scheduler",), ROLES]) for _ in range(max(0, KILLS - len(plan)))]
    run_ids = [f"m{seed % 10000}-{i}" for i in range(RUNS)]
    try:
        async with await Client.connect(nats.url) as client:
            watch = Watch(client)
            await client.configure_queue("matrix", concurrency=8)
            await client.create_schedule("tick", "*/2 * * * * *", {"agent": "ledger", "input": "tick"})
            seconds = RUNS / 12  # submissions at 12 a second: 17 s for 200
            submitting = asyncio.create_task(submit_all(client, run_ids, RUNS / seconds))
            for roles in plan[:KILLS]:
                await asyncio.sleep(rng.uniform(0.5, seconds / KILLS))
                await off_loop(actors.kill, *roles)
                await off_loop(actors.start, *roles)
            await submitting
            await watch.until_completed(set(run_ids), timeout=180, actors=actors)
            assert await client.delete_schedule("tick")
            await asyncio.sleep(3)  # a tick in flight finishes
            ticks = {r for r in set(watch.completed) | set(watch.failed) if r.startswith("tick-")}
            everything = set(run_ids) | ticks
            await watch.until_completed(everything, timeout=60, actors=actors)
            figures = await assert_once(actors, watch, everything)
            assert len(ticks) >= 5, f"the schedule ran only {len(ticks)} times"
            assert sum(figures["kills"].values()) == sum(len(r) for r in plan[:KILLS])
            await watch.close()
    finally:
        actors.stop()


@ONE_POSTGRES_AT_A_TIME
async def test_graceful_stops(fresh_db_url: str, tmp_path: Path, nats: EmbeddedNats) -> None:
    """SIGTERM (as every deploy sends) and SIGINT (Ctrl-C) to the agent actor, the governor, the
    scheduler, each, then all at once, then at random, under a load that keeps runs inside model
    calls, tools, session steps, approval waits and queue waits. Each process must exit by itself
    with 0; then every run completes once, and, since a graceful stop lets the steps under way
    finish, no step of any run ran twice."""
    seed = int(os.environ.get("TIMESTEP_FAULT_SEED") or random.randrange(1 << 30))
    print(f"TIMESTEP_FAULT_SEED={seed}")
    rng = random.Random(seed)
    actors = Deployment(tmp_path, nats.url, fresh_db_url, agents="fault_agents")
    actors.start(*ROLES)
    stops = max(KILLS, 4)
    plan: list[tuple[str, ...]] = [("agent",), ("governor",), ("scheduler",), ROLES]
    plan += [rng.choice([("agent",), ("agent",), ("governor",), ROLES]) for _ in range(stops - len(plan))]
    runs = max(120, RUNS // 2)
    run_ids = [f"g{seed % 10000}-{i}" for i in range(runs)]
    try:
        async with await Client.connect(nats.url) as client:
            watch = Watch(client, approve=True)
            await client.configure_queue("matrix", concurrency=8)

            async def submit() -> None:
                tasks = []
                for i, run_id in enumerate(run_ids):
                    agent = "ledger-approve" if i % 5 == 4 else "ledger"  # a fifth wait for approval
                    queue = "matrix" if i % 2 else None  # half wait in a queue
                    session = run_id if i % 3 == 0 else None  # a third read and write a session
                    tasks.append(asyncio.create_task(
                        client.submit(agent, f"job {i}", id=run_id, queue=queue, session_id=session, reply_timeout=120)
                    ))
                    await asyncio.sleep(1 / 12)
                await asyncio.gather(*tasks)

            seconds = runs / 12
            submitting = asyncio.create_task(submit())
            for n, roles in enumerate(plan):
                await asyncio.sleep(rng.uniform(0.5, seconds / len(plan)))
                sig = signal.SIGTERM if n % 2 == 0 else signal.SIGINT
                await off_loop(lambda: actors.stop_gracefully(*roles, sig=sig))
                await off_loop(actors.start, *roles)
            await submitting
            await watch.until_completed(set(run_ids), timeout=180, actors=actors)
            figures = await assert_once(actors, watch, set(run_ids))
            assert figures["cut_off_and_rerun"] == 0, f"a graceful stop cut steps off: {figures}"
            assert figures["finished_unrecorded_and_rerun"] == 0, f"a step ran again after a graceful stop: {figures}"
            assert figures["executions"] == 3 * runs
            assert sum(figures["kills"].values()) == sum(len(r) for r in plan)
            await watch.close()
    finally:
        actors.stop()


@ONE_POSTGRES_AT_A_TIME
async def test_nats_restart_under_load(fresh_db_url: str, tmp_path: Path, nats: EmbeddedNats) -> None:
    """The nats-server is SIGKILLed mid-load and restarted on the same store 2 s later. Clients and
    actors reconnect by themselves, pull consumers keep (or re-bind) their subscriptions, every
    request is answered `accepted`, and every run completes once."""
    actors = Deployment(tmp_path, nats.url, fresh_db_url, agents="fault_agents")
    actors.start("agent", "governor")
    runs = max(60, RUNS // 2)
    run_ids = [f"n-{i}" for i in range(runs)]
    try:
        async with await Client.connect(nats.url) as client:
            await client.configure_queue("matrix", concurrency=8)
            submissions = []

            async def submit_all() -> None:
                for i, run_id in enumerate(run_ids):
                    queue = "matrix" if i % 2 else None
                    submissions.append(asyncio.create_task(client.submit("ledger", f"job {i}", id=run_id, queue=queue, reply_timeout=120)))
                    await asyncio.sleep(15 / runs)

            submitting = asyncio.create_task(submit_all())
            await asyncio.sleep(5)
            await off_loop(nats.kill)
            await asyncio.sleep(2)
            await off_loop(nats.start)
            await submitting
            answered = await asyncio.gather(*submissions)
            assert all(s.accepted is not None for s in answered), [s.run_id for s in answered if s.accepted is None][:5]
            watch = Watch(client)  # after the restart: reads every stored event from the start
            await watch.until_completed(set(run_ids), timeout=180, actors=actors)
            await assert_once(actors, watch, set(run_ids))
            await watch.close()
    finally:
        actors.stop()


POSTGRES_BINARIES = postgres_binaries_problem()


@pytest.mark.postgres
@pytest.mark.skipif(POSTGRES_BINARIES is not None, reason=POSTGRES_BINARIES or "")
async def test_database_outage_under_load(tmp_path: Path, nats: EmbeddedNats) -> None:
    """A PostgreSQL server of the test's own is stopped (`immediate`: like a crash) for 10 s in the
    middle of a load and started again. The actors back off and retry; no request is acked before
    it is stored; every run finishes once."""
    pg = PrivatePostgres().init()
    pg.start()
    actors = Deployment(tmp_path, nats.url, pg.url, agents="fault_agents")
    try:
        actors.start("agent", "governor")
        runs = max(60, RUNS // 3)
        run_ids = [f"d-{i}" for i in range(runs)]
        async with await Client.connect(nats.url) as client:
            await client.configure_queue("matrix", concurrency=8)
            submissions = []
            for i, run_id in enumerate(run_ids):
                if i == runs // 3:
                    await off_loop(pg.stop)
                    outage = time.monotonic()
                if i == 2 * runs // 3:
                    await asyncio.sleep(max(0.0, 10 - (time.monotonic() - outage)))
                    await off_loop(pg.start)
                queue = "matrix" if i % 2 else None
                submissions.append(asyncio.create_task(client.submit("ledger", f"job {i}", id=run_id, queue=queue, reply_timeout=120)))
                await asyncio.sleep(10 / runs * 3 / 2)
            answered = await asyncio.gather(*submissions)
            assert all(s.accepted is not None for s in answered), [s.run_id for s in answered if s.accepted is None][:5]
            watch = Watch(client)
            await watch.until_completed(set(run_ids), timeout=180, actors=actors)
            figures = await assert_once(actors, watch, set(run_ids))
            await watch.close()
        retried = actors.output(tail=None).count("handling a message on")
        print("requests handled again after a database error:", retried)
        assert retried > 0, "the outage never reached an actor: the test did not test it"
        assert figures["runs"] == runs
    finally:
        actors.stop()
        pg.remove()


@pytest.mark.postgres
@pytest.mark.skipif(POSTGRES_BINARIES is not None, reason=POSTGRES_BINARIES or "")
async def test_a_runs_own_query_waits_out_a_database_outage(tmp_path: Path) -> None:
    """The database goes away between DBOS looking a step up and the step's own query (here a
    queued run's pause check, where a run of the test above once failed without a `failed`
    event). The query waits until the database is back; the run goes on and finishes."""
    pg = PrivatePostgres().init()
    pg.start()
    out = tmp_path / "worker.out"
    worker = subprocess.Popen(
        [sys.executable, str(TESTS / "outage_worker.py"), pg.url, str(tmp_path)],
        env=process_env(), stdout=out.open("w"), stderr=subprocess.STDOUT,
    )
    try:
        await wait_printed_async([(worker, out)], "waiting", timeout=90)
        await off_loop(pg.stop)
        (tmp_path / "open").touch()
        await asyncio.sleep(3)  # the query meets the refused connection meanwhile
        await off_loop(pg.start)
        code = await off_loop(worker.wait, 120)
        text = out.read_text()
        assert code == 0, text[-3000:]
        assert "the database is unavailable" in text, "the query never met the outage: the test did not test it"
        assert "paused seconds: 0" in text, text[-3000:]
    finally:
        if worker.poll() is None:
            worker.kill()
        pg.remove()


@pytest.mark.postgres
@pytest.mark.skipif(POSTGRES_BINARIES is not None, reason=POSTGRES_BINARIES or "")
async def test_runs_waiting_out_an_outage_leave_the_other_database_calls_alone(tmp_path: Path) -> None:
    """Twelve runs' own queries meet the outage and wait it out; meanwhile another database call of
    the process still gets its answer (here: the refused connection) before the database is back.
    Before, each waiting run slept in one of the eight threads that make every database call of
    the process, so the ninth call of any kind waited for the outage to end."""
    pg = PrivatePostgres().init()
    pg.start()
    out = tmp_path / "worker.out"
    worker = subprocess.Popen(
        [sys.executable, str(TESTS / "outage_worker.py"), pg.url, str(tmp_path), "12"],
        env=process_env(), stdout=out.open("w"), stderr=subprocess.STDOUT,
    )
    try:
        await wait_printed_async([(worker, out)], "waiting", timeout=90)
        await off_loop(pg.stop)
        (tmp_path / "open").touch()
        await wait_printed_async([(worker, out)], "other call answered", timeout=60)
        text = out.read_text()
        assert "12 runs wait out the outage" in text, text[-3000:]
        await off_loop(pg.start)
        code = await off_loop(worker.wait, 120)
        text = out.read_text()
        assert code == 0, text[-3000:]
        assert text.count("paused seconds: 0") == 12, text[-3000:]
    finally:
        if worker.poll() is None:
            worker.kill()
        pg.remove()


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_tool_cut_off_by_a_graceful_stop_runs_once_more_at_most(kind: str, fresh_db_url: str, tmp_path: Path, nats: EmbeddedNats) -> None:
    """SIGTERM to the agent process while a run's tool takes longer than the stop's grace (a plain
    `def` tool, which runs in a thread, or an `async def` one): the process exits by itself with 0
    without waiting for the tool, and after the restart the run completes with the tool run once
    more. Before, the process cut the step off, then waited for the plain `def` tool's thread to
    finish anyway, so its side effect happened in the stopping process and again after the restart."""
    calls = tmp_path / "calls.log"
    env = {"TIMESTEP_STOP_GRACE_SECONDS": "1", "TIMESTEP_TOOL_CALLS": str(calls), "TIMESTEP_TOOL_SECONDS": "20"}
    actors = Deployment(tmp_path, nats.url, fresh_db_url, agents="stop_agents", env=env)
    actors.start("agent", "governor")
    try:
        async with await Client.connect(nats.url) as client:
            watch = Watch(client)
            await client.submit(f"stop-{kind}", "go", id="stopped-1")
            while "start" not in (calls.read_text() if calls.exists() else ""):
                await asyncio.sleep(0.05)
            stopped = actors.procs["agent-1"].pid
            await off_loop(lambda: actors.stop_gracefully("agent", timeout=60))
            await off_loop(actors.start, "agent")
            await watch.until_completed({"stopped-1"}, timeout=120, actors=actors)
            await watch.close()
        lines = [line.split() for line in calls.read_text().splitlines()]
        starts = [int(pid) for phase, pid in lines if phase == "start"]
        ends = [int(pid) for phase, pid in lines if phase == "end"]
        assert len(starts) == 2, f"the tool ran {len(starts)} times: {lines}"
        assert starts[0] == stopped and starts[1] != stopped, lines
        assert stopped not in ends, f"the tool finished in the stopping process and ran again after the restart: {lines}"
        assert ends == [starts[1]], lines
        stop_log = (tmp_path / "agent-1-1.out").read_text()  # executor agent-1, its first start
        assert "1 step(s) still under way after 1.0 s are cut off" in stop_log, stop_log[-3000:]
        assert "exiting without waiting for the 1 step(s) cut off" in stop_log, stop_log[-3000:]
    finally:
        actors.stop()


@pytest.mark.postgres
@pytest.mark.skipif(POSTGRES_BINARIES is not None, reason=POSTGRES_BINARIES or "")
async def test_a_stop_during_an_outage_ends_and_the_runs_resume_after_it(tmp_path: Path) -> None:
    """Twelve runs wait out an outage; the process stops its runs as on SIGTERM: the stop gives up
    on their waits and ends while the database is still away. A process of the same executor id
    started after the outage finishes every run."""
    pg = PrivatePostgres().init()
    pg.start()
    out, again = tmp_path / "worker.out", tmp_path / "again.out"
    command = [sys.executable, str(TESTS / "outage_worker.py"), pg.url, str(tmp_path), "12"]
    worker = subprocess.Popen(command + ["stop"], env=process_env(), stdout=out.open("w"), stderr=subprocess.STDOUT)
    recovering = None
    try:
        await wait_printed_async([(worker, out)], "waiting", timeout=90)
        await off_loop(pg.stop)
        (tmp_path / "open").touch()
        code = await off_loop(worker.wait, 60)
        text = out.read_text()
        assert code == 0 and "stopped 12 runs" in text, text[-3000:]
        await off_loop(pg.start)
        recovering = subprocess.Popen(command + ["recover"], env=process_env(), stdout=again.open("w"), stderr=subprocess.STDOUT)
        code = await off_loop(recovering.wait, 120)
        text = again.read_text()
        assert code == 0, text[-3000:]
        assert text.count("paused seconds: 0") == 12, text[-3000:]
    finally:
        for proc in (worker, recovering):
            if proc is not None and proc.poll() is None:
                proc.kill()
        pg.remove()
