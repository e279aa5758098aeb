"""The actor system as separate processes (`timestep up --role ...`) sharing one nats-server and one
database: an approval after every process restarted, two governors, two schedulers."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from pathlib import Path

import pytest

from processes import Deployment
from subjects.events import Completed, Interrupted, Started
from timestep.client import Client
from timestep.bus.server import EmbeddedNats, free_port

pytestmark = pytest.mark.processes

AGENT = "bus-assistant"


@pytest.fixture
def cluster(fresh_db_url: str, tmp_path: Path):
    nats = EmbeddedNats(tmp_path / "nats", port=free_port())
    running = Deployment(tmp_path, nats.start(), fresh_db_url)
    yield running
    running.stop()
    nats.stop()


def tool_calls(cluster: Deployment) -> list[str]:
    return [call for call, _ in cluster.calls()]


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_approval_resumes_after_every_process_was_restarted(cluster: Deployment) -> None:
    node = ("agent+governor+scheduler", "node-1")
    cluster.start(node)
    to = uid("ada")
    async with await Client.connect(cluster.nats_url) as client:
        run = await client.submit(AGENT, f"send_email to={to}")
        async for event in client.events(run.run_id):
            if isinstance(event, Interrupted):
                break
        cluster.kill(node)
        cluster.start(node)  # same executor id: takes over its runs
        await client.approve(run.run_id, event.approvals[0].call_id)
        completed = await run.result(timeout=60)
    assert completed.output == f"send_email returned: sent to {to}"
    assert tool_calls(cluster).count(f"send_email:{to}") == 1


async def test_two_governors_hold_priority_and_the_rate_limit(cluster: Deployment) -> None:
    cluster.start("agent", ("governor", "governor-1"), ("governor", "governor-2"))
    async with await Client.connect(cluster.nats_url) as client:
        # Priority: runs that waited together start lowest number first, unprioritised last.
        await client.configure_queue("serial", concurrency=1)
        blocker = await client.submit(AGENT, "think seconds=3", queue="serial", priority=1)
        async for event in client.events(blocker.run_id):
            if isinstance(event, Started):
                break
        waiting = {}
        for priority in (5, None, 3, 1, 4, None, 2):
            run = await client.submit(AGENT, "hello", queue="serial", priority=priority)
            waiting[run.run_id] = priority
        starts = {}
        for run_id in waiting:
            async for event in client.events(run_id):
                if isinstance(event, Started):
                    starts[run_id] = event.time
                if isinstance(event, Completed):
                    break
        order = [waiting[run_id] for run_id in sorted(starts, key=starts.get)]
        assert order[:5] == [1, 2, 3, 4, 5] and order[5:] == [None, None]

        # Rate limit: no rolling window of 1 s starts more than 3, across both governors.
        await client.configure_queue("limited", limit=3, period_seconds=1)
        runs = [await client.submit(AGENT, f"get_weather city=R{i}", queue="limited") for i in range(9)]
        times = []
        for run in runs:
            async for event in client.events(run.run_id):
                if isinstance(event, Started):
                    times.append(event.time.timestamp())
                if isinstance(event, Completed):
                    break
    # Admission times by the database clock where DBOS keeps them (PostgreSQL: milliseconds);
    # else `started` event times, which trail admission by a few ms to, under load, more: 0.1 s slack.
    from timestep.durable.engine import Admin

    admin = Admin(cluster.db_url if not cluster.db_url.startswith("sqlite") else f"sqlite:///{cluster.tmp / 'home' / 'timestep.sqlite'}")
    rows = await admin.list_workflows(queue="limited", load_input=False, load_output=False)
    admin.close()
    admitted = sorted(w.dequeued_at for w in rows if w.dequeued_at)
    if len(admitted) == len(runs):
        times, slack = admitted, 0.0
    else:
        times, slack = sorted(times), 0.1
    busiest = max(sum(1 for u in times if t <= u < t + 1.0 - slack) for t in times)
    assert busiest <= 3, [round(t - times[0], 3) for t in times]
    assert times[-1] - times[0] >= 1.9


async def test_two_schedulers_run_each_tick_once(cluster: Deployment) -> None:
    cluster.start(("agent+governor", "main-1"), ("scheduler", "scheduler-1"), ("scheduler", "scheduler-2"))
    name = uid("tick")
    completed: Counter[str] = Counter()
    async with await Client.connect(cluster.nats_url) as client:

        async def watch() -> None:
            async for event in client.events():
                if isinstance(event, Completed) and event.run_id.startswith(name + "-"):
                    completed[event.run_id] += 1

        watcher = asyncio.create_task(watch())
        await asyncio.sleep(0.3)
        await client.create_schedule(name, "* * * * * *", {"agent": AGENT, "input": f"get_weather city={name}"})
        await asyncio.sleep(4)
        assert await client.delete_schedule(name)
        await asyncio.sleep(1.5)
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    assert len(completed) >= 3, completed
    assert set(completed.values()) == {1}
    assert tool_calls(cluster).count(f"get_weather:{name}") == len(completed)

