"""Scale-out on one machine: a three-node NATS cluster, PostgreSQL, and every role twice, as separate
processes, through the loss of a NATS node and of an agent process."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from pathlib import Path

import msgspec
import nats
import psycopg
import pytest

from cluster import NatsCluster, leaders, move_leader
from processes import Deployment
from subjects.names import CONTROL_STREAM, DEAD_STREAM, EVENTS_STREAM, SUBMIT_STREAM, WORK_STREAM
from timestep.client import Client
from timestep.settings import Settings

pytestmark = pytest.mark.processes

AGENT = "bus-assistant"
RUNS = 160  # half direct, half through the rate-limited queue
LIMIT, PERIOD = 10, 1.0  # the queue's rate limit: runs per period, seconds
STREAMS = [SUBMIT_STREAM, WORK_STREAM, CONTROL_STREAM, EVENTS_STREAM, DEAD_STREAM]
AGENTS_KV = "KV_TIMESTEP_AGENTS"
#: Runs of the agent process agent-1 whose tool step DBOS has recorded.
FINISHED_TOOLS = (
    "SELECT s.workflow_uuid FROM dbos.operation_outputs s JOIN dbos.workflow_status w USING (workflow_uuid) "
    "WHERE w.executor_id = 'agent-1' AND s.function_name = 'tool:think' AND s.error IS NULL"
)
CONSUMERS = [(SUBMIT_STREAM, "governor"), (WORK_STREAM, "agent"), (CONTROL_STREAM, "agent-control")]


@pytest.fixture
def pg_url(backend: str, fresh_db_url: str) -> str:
    if backend != "postgres":
        pytest.skip("scale-out needs PostgreSQL: processes share one database, and SQLite is one machine's file")
    # Created up front: six processes starting together would race to create it.
    with psycopg.connect(fresh_db_url.rpartition("/")[0] + "/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{fresh_db_url.rpartition("/")[2]}"')
    return fresh_db_url


@pytest.fixture
async def nats_cluster(tmp_path: Path):
    cluster = NatsCluster(tmp_path / "nats")
    await cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def processes(tmp_path: Path, nats_cluster: NatsCluster, pg_url: str):
    running = Deployment(tmp_path, nats_cluster.url, pg_url, env={"TIMESTEP_STREAM_REPLICAS": "3"})
    yield running
    running.stop()


def run_input(i: int) -> str:
    """Each run calls `think` with its own argument, so the calls log tells runs apart."""
    return f"think seconds=0.3{i:03d}"


def tool_call(i: int) -> str:
    return f"think:{float(f'0.3{i:03d}')}"


def db(url: str, query: str, *args: object) -> list[tuple]:
    for attempt in range(10):
        try:
            with psycopg.connect(url) as conn:
                return conn.execute(query, args or None).fetchall()
        except psycopg.OperationalError:  # "too many clients": the server is shared with other tests
            if attempt == 9:
                raise
            time.sleep(1)
    raise AssertionError("unreachable")


async def accepted(client: Client, run_id: str, wait: float) -> bool:
    """Whether the run's `accepted` event is stored, waiting up to `wait` seconds for it."""
    deadline = time.monotonic() + wait
    while True:
        for kind, ok in (("rejected", False), ("accepted", True)):
            try:
                await client.bus.js.get_last_msg(EVENTS_STREAM, client.subjects.events(run_id, kind), direct=True)
            except Exception:
                continue
            assert ok, f"{run_id} was rejected"
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.25)


async def submit(client: Client, i: int, counts: Counter[str]) -> str:
    """Submit run i until it is accepted. The same id again is the same run, so a request that got
    no answer while a node was down is sent again."""
    run_id = f"scale-{i:03d}"
    for _ in range(20):
        try:
            run = await client.submit(AGENT, run_input(i), id=run_id, queue="limited" if i % 2 else None, reply_timeout=5)
            if run.accepted is not None:
                return run_id
            counts["unanswered"] += 1
        except msgspec.ValidationError:
            # A replicated stream answers a repeated Nats-Msg-Id with its PubAck even with no_ack,
            # and Client.submit takes that for an event. The request is stored either way.
            counts["answered by a PubAck"] += 1
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            counts[type(exc).__name__] += 1
        if await accepted(client, run_id, wait=5):
            return run_id
    raise AssertionError(f"{run_id} was never accepted")


# Many processes on one PostgreSQL: not beside the other such tests (connection slots).
@pytest.mark.xdist_group("processes")
async def test_scale_out_survives_a_nats_node_and_an_agent_process(nats_cluster: NatsCluster, processes: Deployment, pg_url: str) -> None:
    """Two agent actors, two governors and two schedulers, as separate processes, on a three-node
    NATS cluster (every stream replicated three times) and one PostgreSQL database. Runs go in,
    half directly and half through a queue limited to 10 per second; in the middle one NATS node
    (the one leading the most streams and consumers, or holding the most actor connections) and
    one agent process are SIGKILLed.

    The agent process is restarted under the same TIMESTEP_EXECUTOR_ID: DBOS recovers a process's
    unfinished runs only when a process with the same executor id launches. Without the restart the
    runs the dead process had started stay PENDING in the database for ever; the other agent
    process does not take them over.

    Asserted: every run completes exactly once (one `completed` event per run id in the events
    stream, one successful workflow per run id in DBOS's workflow_status), no run is lost, a tool
    call the dead process had finished (its step recorded) does not run again, and no rolling
    second admits more than the queue's limit across both governors and agent processes."""
    began = time.monotonic()
    await processes.start_async(
        ("agent", "agent-1"), ("agent", "agent-2"), ("governor", "governor-1"), ("governor", "governor-2"),
        ("scheduler", "scheduler-1"), ("scheduler", "scheduler-2"),
    )
    up = time.monotonic()
    settings = dataclasses.replace(Settings.from_env(), stream_replicas=3)
    client = await Client.connect(nats_cluster.url, settings=settings)
    try:
        for stream in STREAMS:
            assert (await client.bus.js.stream_info(stream)).config.num_replicas == 3, stream
        await client.configure_queue("limited", limit=LIMIT, period_seconds=PERIOD)
        await client.create_schedule("tick", "* * * * * *", {"agent": AGENT, "input": "hello"})

        gate = asyncio.Semaphore(16)
        retries: Counter[str] = Counter()

        async def send(i: int) -> str:
            async with gate:
                return await submit(client, i, retries)

        first = [asyncio.create_task(send(i)) for i in range(RUNS // 2)]
        # Kill once the agent process to be killed has finished some tool steps and is running others.
        victim_pid = processes.procs["agent-1"].pid
        deadline = time.monotonic() + 60
        while len(db(pg_url, FINISHED_TOOLS)) < 3 or sum(1 for _, pid in processes.calls() if pid == victim_pid) < 6:
            assert time.monotonic() < deadline, processes.output()
            await asyncio.sleep(0.1)

        # Kill the events stream's leader: every run publishes there from inside its steps. Not the
        # node holding the agents bucket while it has one replica (timestep/bus/connection.py creates it so):
        # no cluster survives losing that, as a (re)starting agent actor could not announce its agents.
        kv_replicas = (await client.bus.js.stream_info(AGENTS_KV)).config.num_replicas
        if kv_replicas == 1:
            await move_leader(client.bus.nc, EVENTS_STREAM, away_from=(await leaders(client.bus.nc, [AGENTS_KV], []))[AGENTS_KV])
        led = await leaders(client.bus.nc, STREAMS + [AGENTS_KV], CONSUMERS)
        node = led[EVENTS_STREAM]
        actors = {n: [c for c in nats_cluster.connections(n) if c != "timestep-client"] for n in nats_cluster.names}
        print(f"leaders {led}; {AGENTS_KV} replicas {kv_replicas}; actor connections {actors}; killing {node}")
        nats_cluster.kill(node)
        await asyncio.sleep(0.5)
        processes.kill(("agent", "agent-1"))
        # The dead process's runs whose tool step is recorded: those tools must not run again.
        finished_tools = {row[0] for row in db(pg_url, FINISHED_TOOLS)}
        # Restarted once the survivors have elected new leaders: a process that starts during the
        # election fails start-up (Bus.ensure_streams does not retry a JetStream API timeout).
        await nats_cluster.wait_for_leaders(STREAMS + [AGENTS_KV] if kv_replicas > 1 else STREAMS, CONSUMERS)
        restart = asyncio.create_task(processes.start_async(("agent", "agent-1")))
        second = [asyncio.create_task(send(i)) for i in range(RUNS // 2, RUNS)]
        run_ids = await asyncio.gather(*first, *second)
        await restart
        submitted = time.monotonic()

        deadline = time.monotonic() + 180
        while True:
            statuses = dict(db(pg_url, "SELECT workflow_uuid, status FROM dbos.workflow_status WHERE workflow_uuid LIKE 'scale-%'"))
            if sum(1 for s in statuses.values() if s == "SUCCESS") == RUNS:
                break
            assert time.monotonic() < deadline, (Counter(statuses.values()), processes.output())
            await asyncio.sleep(0.5)
        done = time.monotonic()
        assert await client.delete_schedule("tick")
        await asyncio.sleep(3)  # a tick published just before the delete is still on its way to a governor
        while db(pg_url, "SELECT 1 FROM dbos.workflow_status WHERE status IN ('PENDING', 'ENQUEUED')"):
            assert time.monotonic() < deadline, processes.output()
            await asyncio.sleep(0.5)

        info = await client.bus.js.stream_info(EVENTS_STREAM, subjects_filter=client.subjects.events("*", "completed"))
        completed = Counter({subject.split(".")[-2]: n for subject, n in (info.state.subjects or {}).items()})
    finally:
        await client.close()

    workflows = db(pg_url, "SELECT workflow_uuid, status, queue_name, started_at_epoch_ms FROM dbos.workflow_status")
    calls = processes.calls()

    # Every run completed exactly once; none lost.
    assert len(set(run_ids)) == RUNS
    assert {r: completed[r] for r in run_ids if completed[r] != 1} == {}
    runs = {w[0]: w for w in workflows if w[0] in set(run_ids)}
    assert {r: runs.get(r, (r, None))[1] for r in run_ids if runs.get(r, (r, None))[1] != "SUCCESS"} == {}
    # Every scheduler tick that ran, ran once (ticks published while a node was down may be missing).
    ticks = [w for w in workflows if w[0].startswith("tick-")]
    assert ticks and {w[0]: (w[1], completed[w[0]]) for w in ticks if (w[1], completed[w[0]]) != ("SUCCESS", 1)} == {}

    # Tools: each run's ran once, except a call in flight in the killed process, which ran again.
    executions = Counter(call for call, _ in calls)
    by_survivors = Counter(call for call, pid in calls if pid != victim_pid)
    assert [i for i in range(RUNS) if executions[tool_call(i)] == 0] == []
    assert [i for i in range(RUNS) if by_survivors[tool_call(i)] > 1] == []
    repeated = [f"scale-{i:03d}" for i in range(RUNS) if executions[tool_call(i)] > 1]
    assert [r for r in repeated if r in finished_tools] == []
    assert finished_tools, "the killed process had finished no tool step: the check above proved nothing"

    # The rate limit held across processes: admission times by the database clock.
    admitted = sorted(w[3] / 1000 for w in runs.values() if w[2] == "limited")
    assert len(admitted) == RUNS // 2
    busiest = max(sum(1 for u in admitted if t <= u < t + PERIOD) for t in admitted)
    assert busiest <= LIMIT, [round(t - admitted[0], 3) for t in admitted]

    print(
        f"scale-out: {RUNS} runs + {len(ticks)} ticks; killed NATS {node} and agent-1; "
        f"lost 0, doubled 0; {len(repeated)} in-flight tool calls re-ran, {len(finished_tools)} finished ones did not; "
        f"busiest second {busiest}/{LIMIT}; submissions retried {dict(retries)}; up {up - began:.1f} s, submitted {submitted - up:.1f} s, all done {done - up:.1f} s"
    )
