"""One process of measurements, run by `bench/run.py`; prints one JSON line per case.

    python bench/cases.py local --db-url URL --runs N --concurrency 1,32 --workloads W1,W2,W3 --systems a,b,c,d
    python bench/cases.py bus --nats-url URL --runs N --concurrency 1,32 --workloads W1,W2,W3 --systems e,f

Systems: (a) plain Runner.run; (b) DBOSRunner in a DBOS workflow with the tool a step;
(c) a bare DBOS workflow with as many steps as the agent makes model and tool calls;
(d) run_agent_workflow; (e) the bus, direct; (f) the bus through an unthrottled queue;
(g) LangGraph with its checkpointer, durability="sync"; (h) Pydantic AI with DBOSDurability (peers.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import agents  # noqa: E402
from agents import Agent, RunConfig, Runner, function_tool  # noqa: E402

agents.set_tracing_disabled(True)

from bench_agents import WORKLOADS, InstantModel  # noqa: E402
from figures import inflight_figures  # noqa: E402

RUN_CONFIG = RunConfig(tracing_disabled=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def measure(one: Callable[[int], Awaitable[float | None]], runs: int, concurrency: int) -> dict:
    """Run `one(i)` `runs` times with at most `concurrency` at once. `one` returns its own
    latency in seconds, or None to have it timed from the call."""
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def timed(i: int) -> None:
        async with gate:
            started = time.perf_counter()
            own = await one(i)
            latencies.append(own if own is not None else time.perf_counter() - started)

    await one(-1)  # warm up: first-call costs are not what a run costs
    started = time.perf_counter()
    await asyncio.gather(*(timed(i) for i in range(runs)))
    seconds = time.perf_counter() - started
    return {
        "runs": runs,
        "seconds": round(seconds, 4),
        "throughput": round(runs / seconds, 2),
        "p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
    }


def rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


# --- local systems: a, b, c, d ---------------------------------------------------------


def local_systems(db_url: str, delay: float = 0.0) -> tuple[dict[str, Callable[[str], Callable[[int], Awaitable[None]] | None]], Callable]:
    """The systems (a)-(d), (g), (h) by letter, and an async set-up to await after DBOS launched."""
    from dbos import DBOS
    from dbos_openai_agents import DBOSRunner

    import timestep

    @DBOS.step(name="bench.lookup")
    async def lookup_step(q: str) -> str:
        return f"found {q}"

    @function_tool(name_override="lookup")
    async def durable_lookup(q: str) -> str:
        return await lookup_step(q)

    peer_agents = {
        "W1": Agent(name="bench-w1", model=InstantModel(delay)),
        "W2": Agent(name="bench-w2", model=InstantModel(delay), tools=[durable_lookup]),
    }
    peer_agents["W4"] = peer_agents["W2"]  # W4 runs in a process of its own, built with the delay

    @DBOS.workflow(name="bench.dbos_runner")
    async def dbos_runner(workload: str) -> str:
        result = await DBOSRunner.run(peer_agents[workload], "question", run_config=RUN_CONFIG)
        return str(result.final_output)

    @DBOS.step(name="bench.bare_step")
    async def bare_step(i: int) -> int:
        return i

    @DBOS.workflow(name="bench.bare")
    async def bare(steps: int) -> int:
        for i in range(steps):
            await bare_step(i)
        return steps

    def plain(workload: str):
        agent, stream, _ = WORKLOADS[workload]

        async def one(i: int) -> None:
            if stream:
                result = Runner.run_streamed(agent, "question", run_config=RUN_CONFIG)
                async for _ in result.stream_events():
                    pass
            else:
                await Runner.run(agent, "question", run_config=RUN_CONFIG)

        return one

    def peer(workload: str):
        if WORKLOADS[workload][1]:
            return None  # DBOSRunner has no streaming

        async def one(i: int) -> None:
            handle = await DBOS.start_workflow_async(dbos_runner, workload)
            await handle.get_result()

        return one

    def bare_db(workload: str):
        steps = WORKLOADS[workload][2]

        async def one(i: int) -> None:
            handle = await DBOS.start_workflow_async(bare, steps)
            await handle.get_result()

        return one

    def timestep_run(workload: str):
        agent, stream, _ = WORKLOADS[workload]

        async def one(i: int) -> None:
            await timestep.run_agent_workflow(agent, "question", stream=stream)

        return one

    from peers import LangGraphPeer, PydanticAIPeer

    langgraph = LangGraphPeer(db_url, delay=delay)
    pydantic_ai = PydanticAIPeer(lookup_step, delay=delay)

    def peer_run(system: Any):
        def for_workload(workload: str):
            stream = WORKLOADS[workload][1]

            async def one(i: int) -> None:
                await system.run(workload, stream=stream)

            return one

        return for_workload

    return {"a": plain, "b": peer, "c": bare_db, "d": timestep_run, "g": peer_run(langgraph), "h": peer_run(pydantic_ai)}, langgraph.open


#: The systems that run on DBOS as their own users run it. Timestep's launch, which the process shares,
#: puts Timestep's step statements in place of DBOS's (`hooks.prepare_step_statements`): while one of
#: these is measured DBOS's own are back, so a peer is measured as it ships and (c) stays the
#: substrate's floor as DBOS ships it.
STOCK_DBOS = frozenset("bch")


def dbos_as_shipped(stock: bool) -> None:
    """DBOS's own step check and record (`stock`), or Timestep's in their place."""
    from timestep.durable.engine import hooks

    sys_db = hooks.system_database()
    if stock:
        for name in hooks.STEP_METHODS:
            vars(sys_db).pop(name, None)
    else:
        hooks.prepare_step_statements()  # nothing when in place already


async def run_local(args: argparse.Namespace) -> None:
    import timestep

    systems, open_peers = local_systems(args.db_url)
    timestep.configure_dbos(system_database_url=args.db_url)
    timestep.ensure_dbos_launched()
    await open_peers()
    for workload in args.workloads:
        for concurrency in args.concurrency:
            for system in args.systems:
                one = systems[system](workload)
                if one is None:
                    continue
                dbos_as_shipped(system in STOCK_DBOS)
                figures = await measure(one, args.runs, concurrency)
                print(json.dumps({"system": system, "workload": workload, "concurrency": concurrency, **figures, "rss_mb": rss_mb()}), flush=True)


# --- the bus: e, f ----------------------------------------------------------------------


async def run_bus(args: argparse.Namespace) -> None:
    from timestep.client import Client

    client = await Client.connect(args.nats_url)
    bus = client.bus
    await client.configure_queue("bench")  # no limits: measures the queue path itself
    waiting: dict[str, tuple[asyncio.Future, asyncio.Future]] = {}
    head = len(bus.subjects.events("", "").split(".")) - 2  # token index of the run id

    async def on_event(msg) -> None:
        tokens = msg.subject.split(".")
        futures = waiting.get(tokens[head])
        if futures is None:
            return
        kind = tokens[head + 1]
        index = 0 if kind == "started" else 1 if kind in ("completed", "failed", "rejected", "cancelled") else None
        if index is not None and not futures[index].done():
            futures[index].set_result(time.perf_counter())

    sub = await bus.nc.subscribe(bus.subjects.all_events, cb=on_event)
    for workload in args.workloads:
        agent, stream, _ = WORKLOADS[workload]
        for concurrency in args.concurrency:
            for system in args.systems:
                to_started: list[float] = []

                async def one(i: int, queued: bool = system == "f") -> float:
                    run_id = uuid.uuid4().hex
                    loop = asyncio.get_running_loop()
                    futures = (loop.create_future(), loop.create_future())
                    waiting[run_id] = futures
                    body = {"id": run_id, "agent": agent.name, "input": "question", "stream": stream}
                    if queued:
                        body["queue"] = "bench"
                    published = time.perf_counter()
                    await bus.nc.publish(bus.subjects.submit, json.dumps(body).encode(), headers={"Nats-Msg-Id": run_id})
                    started, completed = await asyncio.wait_for(asyncio.gather(*futures), 60)
                    del waiting[run_id]
                    if i >= 0:
                        to_started.append(started - published)
                    return completed - published

                figures = await measure(one, args.runs, concurrency)
                figures["started_p50_ms"] = round(percentile(to_started, 0.5) * 1000, 2)
                figures["started_p99_ms"] = round(percentile(to_started, 0.99) * 1000, 2)
                print(json.dumps({"system": system, "workload": workload, "concurrency": concurrency, **figures, "rss_mb": rss_mb()}), flush=True)
    await sub.unsubscribe()
    await client.close()


# --- agent-shaped load: W4 (runs in flight), W5 (streaming) --------------------------------


def vm_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class PeakRss:
    """This process's peak resident memory while in the block, sampled every 50 ms on a thread
    (a busy event loop does not delay it)."""

    def __enter__(self) -> PeakRss:
        import threading

        self.peak = vm_rss_mb()
        self._stop = threading.Event()

        def sample() -> None:
            while not self._stop.wait(0.05):
                self.peak = max(self.peak, vm_rss_mb())

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, vm_rss_mb())


async def run_inflight(args: argparse.Namespace) -> None:
    """W4 through a library: `args.runs` runs of the W2 shape started at once, each model call
    sleeping `args.delay` s; one system per process, so each has its own memory figures."""
    import timestep

    [system] = args.systems
    systems, open_peers = local_systems(args.db_url, delay=args.delay)
    timestep.configure_dbos(system_database_url=args.db_url)
    timestep.ensure_dbos_launched()
    await open_peers()
    dbos_as_shipped(system in STOCK_DBOS)
    one = systems[system]("W4")
    await one(-1)  # warm up
    base_mb, cpu = vm_rss_mb(), time.process_time()
    with PeakRss() as rss:
        begin = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(args.runs)))
        makespan = time.perf_counter() - begin
    figures = inflight_figures(args.runs, args.delay, makespan, time.process_time() - cpu, base_mb, rss.peak)
    print(json.dumps({"system": system, "workload": "W4", **figures}), flush=True)


async def _run_events(args: argparse.Namespace, on_event: Callable[[str, str, bytes], None]):
    """A client whose core NATS subscription to every run's events calls `on_event(run_id, kind, data)`."""
    from timestep.client import Client

    client = await Client.connect(args.nats_url)
    bus = client.bus
    head = len(bus.subjects.events("", "").split(".")) - 2  # token index of the run id

    async def deliver(msg) -> None:
        tokens = msg.subject.split(".")
        on_event(tokens[head], tokens[head + 1], msg.data)

    sub = await bus.nc.subscribe(bus.subjects.all_events, cb=deliver, pending_msgs_limit=10_000_000, pending_bytes_limit=-1)
    return client, sub


async def _submit_all(client, agent: str, ids: list[str], *, stream: bool) -> None:
    bus = client.bus
    for run_id in ids:
        body = {"id": run_id, "agent": agent, "input": "question", "stream": stream}
        await bus.nc.publish(bus.subjects.submit, json.dumps(body).encode(), headers={"Nats-Msg-Id": run_id})
    await bus.nc.flush()


async def run_inflight_bus(args: argparse.Namespace) -> None:
    """W4 over the bus: publish `args.runs` W4 requests at once, wait until all completed; print
    the makespan (the orchestrator measures the actors' memory and CPU meanwhile)."""
    ids = [uuid.uuid4().hex for _ in range(args.runs)]
    wanted, completed, done = set(ids), set(), asyncio.Event()

    def on_event(run_id: str, kind: str, data: bytes) -> None:
        if run_id in wanted and kind in ("completed", "failed"):
            completed.add(run_id)
            if kind == "failed":
                print(f"run {run_id} failed: {data[:300]!r}", file=sys.stderr)
            if len(completed) == len(wanted):
                done.set()

    client, sub = await _run_events(args, on_event)
    begin = time.perf_counter()
    await _submit_all(client, "bench-w4", ids, stream=False)
    await asyncio.wait_for(done.wait(), 60 + args.runs)
    makespan = time.perf_counter() - begin
    await sub.unsubscribe()
    await client.close()
    print(json.dumps({"runs": args.runs, "makespan_s": round(makespan, 3)}), flush=True)


class _Deltas:
    """What one subscriber saw of the W5 deltas (texts `<index>@<time yielded>;`, one or several per
    message): each delay, and per run the count and the pieces out of order."""

    def __init__(self, ids: list[str]) -> None:
        self.last = dict.fromkeys(ids, -1)
        self.received = dict.fromkeys(ids, 0)
        self.delays: list[float] = []
        self.disorder = 0

    def add(self, run_id: str, text: str, at: float) -> None:
        for piece in filter(None, text.split(";")):
            index, _, yielded = piece.partition("@")
            self.delays.append(at - float(yielded))
            if int(index) != self.last[run_id] + 1:
                self.disorder += 1
            self.last[run_id] = int(index)
            self.received[run_id] += 1

    def figures(self, expected_per_run: int, prefix: str = "") -> dict:
        delays = self.delays or [float("nan")]
        return {
            f"{prefix}deltas": sum(self.received.values()),
            f"{prefix}lost": len(self.received) * expected_per_run - sum(min(n, expected_per_run) for n in self.received.values()),
            f"{prefix}out_of_order": self.disorder, f"{prefix}p50_ms": round(percentile(delays, 0.5) * 1000, 2),
            f"{prefix}p99_ms": round(percentile(delays, 0.99) * 1000, 2), f"{prefix}max_ms": round(max(delays) * 1000, 2),
        }


async def run_stream(args: argparse.Namespace) -> None:
    """W5: publish `args.runs` streamed bench-w5 runs at once; time every text delta from the
    model yielding it (the time in its text) to this subscriber receiving it, in the stored `delta`
    events and on the live subject; count deltas lost, repeated or out of order."""
    ids = [uuid.uuid4().hex for _ in range(args.runs)]
    wanted = set(ids)
    stored, live = _Deltas(ids), _Deltas(ids)
    completed: set[str] = set()
    done = asyncio.Event()

    def on_event(run_id: str, kind: str, data: bytes) -> None:
        if run_id not in wanted:
            return
        if kind == "delta":
            stored.add(run_id, msgspec_decode(data)["text"], time.time())
        elif kind in ("completed", "failed"):
            completed.add(run_id)
            if len(completed) == len(wanted):
                done.set()

    # The same text as it is yielded: `<prefix>.runs.live.<run_id>`, a core subscription, as a UI would.
    async def on_live(msg) -> None:
        at = time.time()
        piece = msgspec_decode(msg.data)
        if piece["run_id"] in wanted:
            live.add(piece["run_id"], piece["text"], at)

    client, sub = await _run_events(args, on_event)
    live_sub = await client.bus.nc.subscribe(client.bus.subjects.all_live, cb=on_live, pending_msgs_limit=10_000_000, pending_bytes_limit=-1)
    await client.bus.nc.flush()
    begin = time.perf_counter()
    await _submit_all(client, "bench-w5", ids, stream=True)
    await asyncio.wait_for(done.wait(), 120 + args.deltas / args.rate * 10)
    seconds = time.perf_counter() - begin
    await asyncio.sleep(0.5)  # any delta still on its way
    await sub.unsubscribe()
    await live_sub.unsubscribe()
    await client.close()
    print(json.dumps({
        "streams": args.runs, "deltas_per_stream": args.deltas, "rate": args.rate, "seconds": round(seconds, 2),
        **stored.figures(args.deltas), **live.figures(args.deltas, "live_"),
    }), flush=True)


def msgspec_decode(data: bytes) -> dict:
    import msgspec

    return msgspec.json.decode(data)


# --- the governor under a backlog ------------------------------------------------------


def busiest_window(times, period: float) -> int:
    """The most of `times` inside any window [t, t + period)."""
    ordered, busiest, j = sorted(times), 0, 0
    for i, t in enumerate(ordered):
        while j < len(ordered) and ordered[j] < t + period:
            j += 1
        busiest = max(busiest, j - i)
    return busiest


def count_inversions(at: dict[str, float], priority: dict[str, int], gap: float) -> int:
    """Pairs where a lower priority number came more than `gap` seconds after a higher one."""
    order = sorted(at, key=at.get)
    return sum(
        1
        for a, x in enumerate(order)
        for y in order[a + 1:]
        if priority[y] < priority[x] and at[y] - at[x] > gap
    )


async def run_governor(args: argparse.Namespace) -> None:
    """Publish a backlog of requests with random priorities to one rate-limited queue; report the
    most starts in any rolling window and the priority inversions among requests that waited together."""
    import random

    from timestep.client import Client

    client = await Client.connect(args.nats_url)
    bus = client.bus
    queue = f"gov-{uuid.uuid4().hex[:6]}"
    # Hold the queue (one start an hour) until the whole backlog waits in it together.
    await client.configure_queue(queue, limit=1, period_seconds=3600)
    rng = random.Random(7)
    priority: dict[str, int] = {}
    queued: dict[str, float] = {}
    started: dict[str, float] = {}
    done = asyncio.Event()
    all_queued = asyncio.Event()

    async def on_event(msg) -> None:
        event = json.loads(msg.data)
        run_id = event["run_id"]
        if run_id not in priority:
            return
        from datetime import datetime

        at = datetime.fromisoformat(event["time"].replace("Z", "+00:00")).timestamp()
        if event["type"] == "queued":
            queued[run_id] = at
            if len(queued) == len(priority):
                all_queued.set()
        elif event["type"] == "started":
            started[run_id] = at
            if len(started) == len(priority):
                done.set()

    sub = await bus.nc.subscribe(bus.subjects.all_events, cb=on_event)
    # The hold admits one run: a sentinel takes it, so every measured request waits together.
    sentinel = client.submit("bench-w1", "q", queue=queue, priority=1)
    await (await sentinel).result(timeout=120)
    begin = time.perf_counter()
    for _ in range(args.requests):
        run_id = uuid.uuid4().hex
        priority[run_id] = rng.randint(1, 10)
        body = {"id": run_id, "agent": "bench-w1", "input": "q", "queue": queue, "priority": priority[run_id]}
        await bus.nc.publish(bus.subjects.submit, json.dumps(body).encode(), headers={"Nats-Msg-Id": run_id})
    await bus.nc.flush()
    await asyncio.wait_for(all_queued.wait(), 300)
    queued_in = time.perf_counter() - begin
    begin = time.perf_counter()
    await client.configure_queue(queue, limit=args.limit, period_seconds=args.period)
    await asyncio.wait_for(done.wait(), args.requests / args.limit * args.period * 3 + 120)
    drain = time.perf_counter() - begin
    await sub.unsubscribe()
    await client.close()

    busiest = busiest_window(started.values(), args.period)
    # Every request waited together. X before Y is an inversion when Y has the lower number and
    # started more than 0.5 s after X: the runs of one admission batch start within a few
    # hundred ms of each other in any order, and batches are a rate-limit window apart.
    inversions = count_inversions(started, priority, 0.5)

    # The same from the database: the time each run was admitted (DBOS's dequeued_at, by the
    # database clock; whole seconds on SQLite before Python 3.12, milliseconds on PostgreSQL).
    from timestep.durable.engine import Admin

    admin = Admin(args.db_url)
    rows = await admin.list_workflows(queue=queue, load_input=False, load_output=False)
    admin.close()
    claimed = {w.id: w.dequeued_at for w in rows if w.dequeued_at and w.id in priority}
    busiest_db = busiest_window(claimed.values(), args.period)
    inversions_db = count_inversions(claimed, priority, 0.0)
    known = len(claimed) == len(started)  # SQLite before Python 3.12: DBOS keeps no admission time
    print(json.dumps({
        "requests": args.requests, "limit": args.limit, "period": args.period,
        "max_in_window": busiest, "inversions": inversions,
        "max_in_window_db": busiest_db if known else None, "inversions_db": inversions_db if known else None,
        "drain_seconds": round(drain, 2), "queued_seconds": round(queued_in, 2), "rss_mb": rss_mb(),
    }), flush=True)


# --- a large backlog drained ---------------------------------------------------------------


async def run_backlog(args: argparse.Namespace) -> None:
    """Publish `requests` queued W1 requests as fast as possible (the backlog), then wait until
    every one has completed. The orchestrator samples the actors' memory meanwhile."""
    from timestep.client import Client

    client = await Client.connect(args.nats_url)
    bus = client.bus
    queue = f"backlog-{uuid.uuid4().hex[:6]}"
    await client.configure_queue(queue, limit=1_000_000, period_seconds=1, concurrency=64)
    ids = {uuid.uuid4().hex for _ in range(args.requests)}
    completed: set[str] = set()
    done = asyncio.Event()

    async def on_event(msg) -> None:
        if msg.subject.endswith(".completed"):
            run_id = msg.subject.split(".")[-2]
            if run_id in ids:
                completed.add(run_id)
                if len(completed) == len(ids):
                    done.set()

    sub = await bus.nc.subscribe(bus.subjects.all_events, cb=on_event)
    begin = time.perf_counter()
    for run_id in ids:
        body = {"id": run_id, "agent": "bench-w1", "input": "q", "queue": queue}
        await bus.nc.publish(bus.subjects.submit, json.dumps(body).encode(), headers={"Nats-Msg-Id": run_id})
    await bus.nc.flush()
    published = time.perf_counter() - begin
    print(json.dumps({"published_s": round(published, 2)}), flush=True)
    await asyncio.wait_for(done.wait(), args.requests / 5 + 300)
    drained = time.perf_counter() - begin
    await sub.unsubscribe()
    await client.close()
    print(json.dumps({"requests": args.requests, "published_s": round(published, 2), "drained_s": round(drained, 2),
                      "runs_per_s": round(args.requests / drained, 1)}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["local", "bus", "governor", "backlog", "inflight", "inflight-bus", "stream"])
    parser.add_argument("--delay", type=float, default=1.0, help="W4: seconds each model call sleeps")
    parser.add_argument("--deltas", type=int, default=200, help="W5: deltas per stream")
    parser.add_argument("--rate", type=float, default=50, help="W5: deltas per second")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--period", type=float, default=1.0)
    parser.add_argument("--db-url")
    parser.add_argument("--nats-url")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 32])
    parser.add_argument("--workloads", type=lambda s: s.split(","), default=["W1", "W2", "W3"])
    parser.add_argument("--systems", type=lambda s: s.split(","), default=None)
    args = parser.parse_args()
    if args.mode == "local":
        args.systems = args.systems or ["a", "b", "c", "d", "g", "h"]
        asyncio.run(run_local(args))
    elif args.mode == "bus":
        args.systems = args.systems or ["e", "f"]
        asyncio.run(run_bus(args))
    elif args.mode == "inflight":
        asyncio.run(run_inflight(args))
    elif args.mode == "inflight-bus":
        asyncio.run(run_inflight_bus(args))
    elif args.mode == "stream":
        asyncio.run(run_stream(args))
    elif args.mode == "governor":
        asyncio.run(run_governor(args))
    else:
        asyncio.run(run_backlog(args))
    import os

    os._exit(0)  # DBOS's threads need not be waited for


if __name__ == "__main__":
    main()
