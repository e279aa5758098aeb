"""Where the time goes: CPU per run of each system, an idle process's CPU, and a py-spy profile
of the actors process and of a `run_agent_workflow` process, summarised by who owns the code.

    python bench/hotspots.py [--backend sqlite|postgres] [--runs 1000] [--concurrency 32] [--out bench/results]

Throughput on a 2-core machine is bound by CPU, so CPU milliseconds per run are the figure
to take out. Part 1 runs (a), (b), (c), (d) on W2 one after another in one process and reads
the process's CPU time (all threads) per run, minus what the process spends idle (queue
polling). Part 2 samples, with `py-spy record --gil` (only the thread holding the GIL: Python
work), the actors of (e) and a (d) process, and attributes each sample to the innermost frame
owned by the Agents SDK, DBOS, Timestep, the actors or nats-py. Writes hotspots-<backend>.md (and the raw
stacks, for flame graphs) to --out. py-spy comes with the bench extra.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import Backend, _start_actors  # noqa: E402

sys.path.insert(0, str(HERE.parent))
from timestep.bus.server import EmbeddedNats, free_port  # noqa: E402

OWNERS = {
    "agents/": "Agents SDK", "dbos/": "DBOS (with SQLAlchemy)", "timestep/": "Timestep", "actors/": "actors",
    "nats/": "nats-py", "asyncio/": "asyncio (the event loop)", "selectors.py": "asyncio (the event loop)",
    "concurrent/futures": "threads (hand-offs)", "cases.py": "benchmark driver", "bench_agents": "benchmark model",
}

CPU_PER_RUN = """
import asyncio, json, os, sys, time
sys.path.insert(0, {here!r})
import cases

async def main():
    import timestep
    systems, open_peers = cases.local_systems({url!r})
    timestep.configure_dbos(system_database_url={url!r})
    timestep.ensure_dbos_launched()
    await open_peers()
    await asyncio.sleep(31)  # past the 30 s in which recovered runs are polled for often
    start, began = time.process_time(), time.perf_counter()
    await asyncio.sleep(5)
    idle = (time.process_time() - start) / (time.perf_counter() - began)
    print(json.dumps({{"system": "idle", "cpu_share": round(idle, 4)}}), flush=True)
    for name in ("a", "b", "c", "d", "g", "h"):
        one = systems[name]("W2")
        cases.dbos_as_shipped(name in cases.STOCK_DBOS)
        for i in range(30):
            await one(i)
        start, began = time.process_time(), time.perf_counter()
        for i in range({runs}):
            await one(i)
        wall, cpu = time.perf_counter() - began, time.process_time() - start
        print(json.dumps({{"system": name, "wall_ms": round(1000 * wall / {runs}, 2), "cpu_ms": round(1000 * cpu / {runs}, 2),
                          "cpu_minus_idle_ms": round(1000 * (cpu - idle * wall) / {runs}, 2)}}), flush=True)
    os._exit(0)

asyncio.run(main())
"""


def cpu_per_run(backend: Backend, runs: int) -> list[dict]:
    code = CPU_PER_RUN.format(here=str(HERE), url=backend.url, runs=runs)
    done = subprocess.run([sys.executable, "-c", code], env=backend.env(), capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def _owner(frame: str) -> str | None:
    for key, owner in OWNERS.items():
        if key in frame:
            return owner
    return None


def summarise(raw: Path, top: int = 12) -> dict:
    """Share of GIL-held samples by owner (innermost owned frame), and the heaviest owned functions.
    Samples under an import (the process starting) are left out."""
    total = imports = 0
    owners: collections.Counter[str] = collections.Counter()
    functions: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        if any("importlib" in f for f in frames):
            imports += n
            continue
        total += n
        for frame in reversed(frames):
            owner = _owner(frame)
            if owner is not None:
                owners[owner] += n
                functions[re.sub(r":\d+\)$", ")", frame)] += n
                break
        else:
            owners["other"] += n
    return {
        "samples": total,
        "import_samples": imports,
        "owners": {k: round(v / total, 3) for k, v in owners.most_common()},
        "functions": {k: round(v / total, 3) for k, v in functions.most_common(top)},
    }


def _spy(out: Path) -> tuple[str, ...]:
    """The command that runs a command under py-spy, its samples written to `out`."""
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        raise SystemExit("py-spy is missing: pip install -e '.[bench]'")
    return (spy, "record", "--gil", "--rate", "250", "--format", "raw", "--output", str(out), "--")


def profiles(backend: Backend, runs: int, concurrency: int, out: Path) -> dict:
    nats = EmbeddedNats(backend.workdir / "nats", port=free_port())
    url = nats.start()
    actors_raw = out / f"hotspots-actors-{backend.name}.txt"
    actors = _start_actors(backend, url, backend.workdir / "actors.out", "bench-profile", under=_spy(actors_raw))
    try:
        common = ["--runs", str(runs), "--concurrency", str(concurrency), "--workloads", "W2"]
        subprocess.run([sys.executable, str(HERE / "cases.py"), "bus", *common, "--systems", "e", "--nats-url", url],
                       env=backend.env(), check=True, capture_output=True, timeout=3600)
    finally:
        children = subprocess.run(["pgrep", "-P", str(actors.pid)], capture_output=True, text=True).stdout.split()
        for pid in children:  # the Python process under py-spy: stop it cleanly so py-spy writes its file
            os.kill(int(pid), 15)
        try:
            actors.wait(60)
        except subprocess.TimeoutExpired:
            actors.kill()
        nats.stop()
    local = out / f"hotspots-local-{backend.name}.txt"
    subprocess.run(
        [*_spy(local), sys.executable, str(HERE / "cases.py"), "local", *common, "--systems", "d", "--db-url", backend.url],
        env=backend.env(), check=True, capture_output=True, timeout=3600,
    )
    return {"actors (e)": summarise(actors_raw), "run_agent_workflow (d)": summarise(local)}


def markdown(backend: str, cpu: list[dict], spied: dict, args: argparse.Namespace) -> str:
    lines = [f"Profile on {backend}, W2, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
             f"`python bench/hotspots.py --backend {backend} --runs {args.runs} --concurrency {args.concurrency}`.", ""]
    idle = next(r for r in cpu if r["system"] == "idle")
    lines += [f"CPU per run, concurrency 1 ({args.cpu_runs} runs each); an idle process uses {100 * idle['cpu_share']:.1f}% of a core:", "",
              "| system | wall ms/run | CPU ms/run | CPU ms/run minus idle |", "|---|---|---|---|"]
    lines += [f"| ({r['system']}) | {r['wall_ms']} | {r['cpu_ms']} | {r['cpu_minus_idle_ms']} |" for r in cpu if r["system"] != "idle"]
    for name, summary in spied.items():
        lines += ["", f"{name}, concurrency {args.concurrency}, {summary['samples']} samples with the GIL held "
                  f"(start-up imports left out), by owner of the innermost frame:", ""]
        lines += ["| owner | share |", "|---|---|"] + [f"| {k} | {100 * v:.1f}% |" for k, v in summary["owners"].items()]
        lines += ["", "| heaviest functions | share |", "|---|---|"] + [f"| `{k}` | {100 * v:.1f}% |" for k, v in summary["functions"].items()]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--runs", type=int, default=1000, help="runs profiled per process")
    parser.add_argument("--cpu-runs", type=int, default=400, help="runs per system for CPU per run")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="timestep-profile-") as tmp:
        backend = Backend(args.backend, Path(tmp))
        try:
            cpu = cpu_per_run(backend, args.cpu_runs)
            spied = profiles(backend, args.runs, args.concurrency, args.out)
        finally:
            backend.drop()
    text = markdown(args.backend, cpu, spied, args)
    (args.out / f"hotspots-{args.backend}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
