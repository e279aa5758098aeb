"""Instructions per run, counted by valgrind's callgrind: repeatable on a shared, loaded machine,
where CPU seconds are not.

    python bench/instructions.py [--systems c,d] [--runs 60] [--workload W2] [--db-url URL] [--profile DIR]
    python bench/instructions.py --systems s --runs 10 --deltas 200    # W5's shape, per delta

Systems: (a)-(d), (g), (h) as in cases.py, on --workload; (s) streamed runs of --deltas deltas
each (yielded at once, no pacing) through the event sink of `timestep up` to an embedded
nats-server: the instructions of the agent process per delta, the run's own share included.

Each system runs in a process of its own under `valgrind --tool=callgrind` (all threads
counted: DBOS's writes on its threads and the thread hops included). The process sets up,
warms up with 20 runs, then calls `os.getpgrp()` (callgrind zeroes its counters there), runs
--runs runs one after another, and calls `os.getppid()` (callgrind writes the counts there).
Instructions per run = the counts between the two marks / runs. Queue polling is slowed
(TIMESTEP_QUEUE_POLL_SECONDS=30) so that the pollers, which run by the clock and not by the
run, add next to nothing under valgrind's slowdown; DBOS's schedule poller and the cancellation
poll of preemptible steps, which also run by the clock, are made hourly (an idle process's CPU is
measured by hotspots.py instead). What still runs by the clock (threads waking to check for work)
is counted over a 20 s idle window after the runs, and taken off at that rate for the runs' window.
With --profile DIR, the same window is
profiled by cProfile instead, without valgrind (Python functions of the event loop's thread),
its heaviest functions written to DIR.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from timestep.bus.server import EmbeddedNats, free_port  # noqa: E402

ONE = """
import asyncio, cProfile, io, json, os, pstats, sys, time
sys.path.insert(0, {here!r})
import cases

async def streamed(nats_url, deltas):
    # (s): W5's shape through the event sink of `timestep up`: a run streaming `deltas` deltas
    # as fast as the model can yield them, each event published to JetStream.
    import timestep
    from agents import Agent
    from bench_agents import PacedStreamModel
    from timestep.bus.connection import Bus, BusEventSink
    from timestep.durable.events import add_event_sink

    bus = await Bus.connect(nats_url)
    await bus.ensure_streams()
    add_event_sink(BusEventSink(bus))
    agent = timestep.register_agent(Agent(name="instr-stream", model=PacedStreamModel(deltas, 1e9)))

    async def one(i):
        await timestep.run_agent_workflow(agent, "question", stream=True)

    return one


async def main():
    import timestep
    systems, open_peers = cases.local_systems({url!r})
    one = await streamed({nats_url!r}, {deltas}) if {system!r} == "s" else None
    timestep.configure_dbos(system_database_url={url!r})
    # Work DBOS does by the clock, not by the run (the schedule poller, the cancellation poll of
    # preemptible steps) would be counted by how long valgrind's slowdown makes the window:
    # each made hourly here, so that the counts are the runs' own.
    import dbos._core
    from dbos._dbos import _get_dbos_instance
    dbos._core._PREEMPTIBLE_POLL_INTERVAL_SEC = 3600.0
    _get_dbos_instance()._config.setdefault("runtimeConfig", {{}})["scheduler_polling_interval_sec"] = 3600.0
    timestep.ensure_dbos_launched()
    cases.dbos_as_shipped({system!r} in cases.STOCK_DBOS)
    if {system!r} in "gh":
        await open_peers()
    one = one or systems[{system!r}]({workload!r})
    for i in range(20):
        await one(i)
    profile = cProfile.Profile() if {profile!r} else None
    began = time.perf_counter()
    os.getpgrp()
    if profile: profile.enable()
    for i in range({runs}):
        await one(i)
    if profile: profile.disable()
    os.getppid()
    busy = time.perf_counter() - began
    began = time.perf_counter()
    os.getpgrp()
    await asyncio.sleep({idle})
    os.getppid()
    print(json.dumps({{"busy_seconds": busy, "idle_seconds": time.perf_counter() - began}}), flush=True)
    if profile:
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(45)
        out.write("\\n\\n")
        pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(80)
        open({profile!r}, "w").write(out.getvalue())
        profile.dump_stats({profile!r} + ".prof")
    os._exit(0)

asyncio.run(main())
"""


def count(system: str, runs: int, workload: str, db_url: str | None, work: Path, profile: Path | None,
          nats_url: str = "", deltas: int = 0, idle: float = 20.0) -> int:
    url = db_url or f"sqlite:///{work / (system + '.sqlite')}"
    code = ONE.format(here=str(HERE), url=url, system=system, workload=workload, runs=runs, profile=str(profile) if profile else "",
                      nats_url=nats_url, deltas=deltas, idle=0 if profile else idle)
    out = work / f"callgrind.{system}"
    env = {**os.environ, "TIMESTEP_QUEUE_POLL_SECONDS": "30", "TIMESTEP_HOME": str(work / "home"), "PYTHONPATH": str(HERE.parent)}
    command = ["valgrind", "--tool=callgrind", "--zero-before=getpgrp", "--dump-before=getppid",
               f"--callgrind-out-file={out}.%p", sys.executable, "-c", code]
    if profile:  # cProfile changes the counts: profiled runs go without valgrind
        command = [sys.executable, "-c", code]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    if profile:
        return 0
    def counted(part: int) -> int:
        found = sorted(work.glob(f"callgrind.{system}.*.{part}"))
        if not found:
            raise RuntimeError(f"no counts were written for ({system}): {done.stderr[-2000:]}")
        text = found[-1].read_text(errors="replace")
        found[-1].unlink()
        return int(re.search(r"^summary: (\d+)", text, re.M).group(1))

    times = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("{")))
    # What the process does by the clock meanwhile (threads waking up, polls), at the idle rate.
    by_clock = counted(2) / times["idle_seconds"] * times["busy_seconds"]
    return int(counted(1) - by_clock) // runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--systems", default="c,d")
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--workload", default="W2")
    parser.add_argument("--db-url", default=None, help="default: a new SQLite file per system")
    parser.add_argument("--deltas", type=int, default=200, help="(s): deltas per streamed run")
    parser.add_argument("--profile", type=Path, default=None, help="folder for cProfile summaries, one per system")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is missing: apt-get install valgrind")
    with tempfile.TemporaryDirectory(prefix="timestep-instr-") as tmp:
        for system in args.systems.split(","):
            profile = None
            if args.profile:
                args.profile.mkdir(parents=True, exist_ok=True)
                profile = args.profile.resolve() / f"profile-{system}-{'W5' if system == 's' else args.workload}.txt"
            if system != "s":
                per_run = count(system, args.runs, args.workload, args.db_url, Path(tmp), profile)
                print(json.dumps({"system": system, "workload": args.workload, "runs": args.runs, "instructions_per_run": per_run}), flush=True)
                continue
            nats = EmbeddedNats(Path(tmp) / "nats", port=free_port())
            try:
                per_run = count(system, args.runs, "W5", args.db_url, Path(tmp), profile, nats_url=nats.start(), deltas=args.deltas)
            finally:
                nats.stop()
            print(json.dumps({"system": "s", "workload": "W5", "runs": args.runs, "deltas_per_run": args.deltas,
                              "instructions_per_run": per_run, "instructions_per_delta": per_run // max(1, args.deltas)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
