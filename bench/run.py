"""Timestep's benchmark: the same workloads on every system, side by side, in one run.

    python bench/run.py [--runs 200] [--rounds 3] [--backends sqlite,postgres] [--concurrency 1,32]
                        [--workloads W1,W2,W3,W4,W5,scale,storage] [--w4-runs 1000] [--w5-streams 100,500]
                        [--storage-calls 10,40,160] [--out bench/results]

W1-W3 measure throughput and latency of instant runs on every system. W4 starts 1,000 runs of
the W2 shape at once with a model that sleeps 1 s per call (what one process holds in flight,
at what memory and CPU per run); W5 streams text deltas from hundreds of runs at once to a NATS
subscriber (delay, loss, order, CPU per delta); scale compares one agent process with two; storage
counts the bytes a run with 10, 40 and 160 tool calls of 1 KB output stores, beside LangGraph's
checkpointer (bench/storage.py).

Each backend gets a fresh database. Systems (a)-(d), (g), (h) run in one process per backend,
(e)-(f) publish from one process to actors (`timestep up`) in another. The runs of each
case are split over rounds, and every round runs every system: a machine whose speed
drifts (a shared one does, by 2x within an hour) then moves all systems of a round alike,
and each ratio is taken within a round. Writes
results.json, results.md and chart.png to --out and prints the Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(HERE))

from figures import inflight_figures  # noqa: E402
from peers import versions  # noqa: E402
from timestep.bus.server import EmbeddedNats, free_port  # noqa: E402

SYSTEMS = {
    "a": "Runner.run (no durability)",
    "b": "DBOSRunner (dbos-openai-agents)",
    "c": "bare DBOS workflow",
    "d": "run_agent_workflow",
    "e": "bus, direct",
    "f": "bus, queued",
    "g": "LangGraph + its checkpointer (durability=sync)",
    "h": "Pydantic AI + DBOS (DBOSDurability)",
}
PEERS = ("b", "g", "h")  # the durable agent runners a user would pick instead
PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"


def _pg_base() -> str:
    return os.environ.get("PG_CONNECTION_URI") or PG_DEFAULT


def _pg_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(_pg_base(), autocommit=True, connect_timeout=3) as conn:
        conn.execute(sql)


class Backend:
    def __init__(self, name: str, workdir: Path) -> None:
        self.name = name
        self.workdir = workdir
        self.db_name = f"timestep_bench_{uuid.uuid4().hex[:8]}"
        if name == "sqlite":
            self.url = f"sqlite:///{workdir / 'bench.sqlite'}"
        else:
            _pg_admin(f'CREATE DATABASE "{self.db_name}"')
            self.url = _pg_base().rpartition("/")[0] + "/" + self.db_name

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PG_CONNECTION_URI", "OPENAI_API_KEY", "NATS_URL")}
        env.update(TIMESTEP_HOME=str(self.workdir / "home"), PYTHONPATH=os.pathsep.join([str(HERE), str(ROOT)]), **extra)
        if self.name == "postgres":
            env["PG_CONNECTION_URI"] = self.url
        return env

    def drop(self) -> None:
        if self.name == "postgres":
            _pg_admin(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')


def _cases(mode: str, backend: Backend, args: argparse.Namespace, **extra: str) -> list[dict]:
    cmd = [
        sys.executable, str(HERE / "cases.py"), mode, "--runs", str(args.runs),
        "--concurrency", ",".join(map(str, args.concurrency)), "--workloads", ",".join(args.workloads),
    ]
    for key, value in extra.items():
        cmd += [f"--{key.replace('_', '-')}", value]
    done = subprocess.run(cmd, env=backend.env(), capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} cases failed on {backend.name}:\n{done.stderr[-4000:]}")
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    for row in rows:
        row["backend"] = backend.name
    return rows


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _bus_cases(backend: Backend, args: argparse.Namespace, *, governor: bool = True) -> tuple[list[dict], dict]:
    nats = EmbeddedNats(backend.workdir / "nats", port=free_port())
    url = nats.start()
    started = time.perf_counter()
    actors = _start_actors(backend, url, backend.workdir / "actors.out", executor="bench-actors")
    try:
        up_seconds = time.perf_counter() - started
        rows = _cases("bus", backend, args, nats_url=url)
        extra = {"actors_rss_mb": _peak_rss_mb(actors.pid), "up_seconds": round(up_seconds, 2)}
        if governor and args.governor_requests:
            [governor] = _cases(
                "governor", backend, args, nats_url=url, db_url=backend.url, requests=str(args.governor_requests),
                limit=str(args.governor_limit), period="1",
            )
            extra["governor"] = governor
        for row in rows:
            row["actors_rss_mb"] = extra["actors_rss_mb"]
        return rows, extra
    finally:
        _stop(actors)
        nats.stop()


def _start_actors(
    backend: Backend, url: str, out: Path, executor: str = "bench-recovery", *, standby: bool = False,
    under: tuple[str, ...] = (), roles: tuple[str, ...] = (), workers: int = 1, **env: str,
) -> subprocess.Popen:
    """`timestep up` with the bench agents (only `roles`, if given; run `under` a command such as a
    profiler, if given); returns once it is up (a standby: once it waits)."""
    proc = subprocess.Popen(
        [*under, sys.executable, "-m", "actors.cli.main", "up", "--agents", "bench_agents", *(["--standby"] if standby else []),
         *(arg for role in roles for arg in ("--role", role)), "--workers", str(workers)],
        env=backend.env(NATS_URL=url, TIMESTEP_EXECUTOR_ID=executor, **env), stdout=out.open("w"), stderr=subprocess.STDOUT,
    )
    deadline = time.perf_counter() + 120
    while ("standby for executor id" if standby else "timestep up:") not in out.read_text():
        if proc.poll() is not None or time.perf_counter() > deadline:
            raise RuntimeError(f"actors did not start: {out.read_text()[-3000:]}")
        time.sleep(0.01)
    return proc


def _recovery(backend: Backend, runs: int, standby: bool = False) -> dict:
    """SIGKILL the actors while `runs` runs are inside a tool call; restart them (same executor id)
    and time until every run has completed. With `standby`, a `timestep up --standby` waits
    beside them and takes over instead of a restart."""
    import asyncio

    from subjects.events import Completed, ToolCall
    from timestep.client import Client

    nats = EmbeddedNats(backend.workdir / "nats-recovery", port=free_port())
    url = nats.start()
    tag = "standby" if standby else "restart"
    first = _start_actors(backend, url, backend.workdir / f"recovery-{tag}-1.out", BENCH_HOLD="1")
    second = _start_actors(backend, url, backend.workdir / f"recovery-{tag}-2.out", standby=True) if standby else None

    async def measure() -> dict:
        nonlocal second
        client = await Client.connect(url)
        in_tool: set[str] = set()
        completed: set[str] = set()
        all_in_tool, all_done = asyncio.Event(), asyncio.Event()

        async def watch() -> None:
            async for event in client.events():
                if isinstance(event, ToolCall):
                    in_tool.add(event.run_id)
                    if len(in_tool) == runs:
                        all_in_tool.set()
                if isinstance(event, Completed):
                    completed.add(event.run_id)
                    if len(completed) == runs:
                        all_done.set()

        watcher = asyncio.create_task(watch())
        await asyncio.sleep(0.3)
        for _ in range(runs):
            await client.submit("bench-hold", "q")
        await asyncio.wait_for(all_in_tool.wait(), 120)
        first.send_signal(signal.SIGKILL)
        first.wait()
        restarted = time.perf_counter()
        if not standby:
            second = await asyncio.to_thread(_start_actors, backend, url, backend.workdir / f"recovery-{tag}-2.out")
        else:
            while "timestep up:" not in (backend.workdir / f"recovery-{tag}-2.out").read_text():
                await asyncio.sleep(0.01)
        up = time.perf_counter()
        await asyncio.wait_for(all_done.wait(), 300)
        done = time.perf_counter()
        watcher.cancel()
        await client.close()
        return {
            "runs": runs, "restart_to_up_s": round(up - restarted, 2),
            "up_to_all_completed_s": round(done - up, 2), "restart_to_all_completed_s": round(done - restarted, 2),
        }

    try:
        return asyncio.run(measure())
    finally:
        _stop(first)
        _stop(second)
        nats.stop()


def _combine(rounds: list[list[dict]]) -> list[dict]:
    """One row per case: the median over rounds of throughput and latencies (each round's p99
    is its own), the highest RSS, and the per-round throughputs."""
    cases: dict[tuple, list[dict]] = {}
    for rows in rounds:
        for row in rows:
            cases.setdefault((row["backend"], row["workload"], row["concurrency"], row["system"]), []).append(row)
    combined = []
    for key, rows in cases.items():
        row = dict(rows[0])
        for field in ("throughput", "p50_ms", "p99_ms", "started_p50_ms", "started_p99_ms"):
            if field in row:
                row[field] = round(statistics.median([r[field] for r in rows]), 2)
        for field in ("rss_mb", "actors_rss_mb"):
            if field in row:
                row[field] = max(r[field] for r in rows)
        row["runs"] = sum(r["runs"] for r in rows)
        row["round_throughputs"] = [r["throughput"] for r in rows]
        combined.append(row)
    return combined


def _round_ratios(rounds: list[list[dict]]) -> list[dict]:
    """Each ratio computed within each round (the systems ran side by side, minutes apart at
    most), then the median over rounds and the lowest and highest."""
    per_round = [_ratios(rows) for rows in rounds]
    out = []
    for index, first in enumerate(per_round[0]):
        same = [r[index] for r in per_round]
        entry = {k: first[k] for k in ("backend", "workload", "concurrency")}
        for key in ("d_vs_b", "d_vs_c", "d_vs_g", "d_vs_h", "d_vs_best_peer", "e_vs_d", "f_vs_d", "e_minus_d_p50_ms"):
            values = [r[key] for r in same if r.get(key) is not None]
            entry[key] = round(statistics.median(values), 2) if values else None
            if values and len(values) > 1:
                entry[key + "_range"] = [min(values), max(values)]
        out.append(entry)
    return out


def _ratios(rows: list[dict]) -> list[dict]:
    """Throughput ratios of (d) to (b) and (c), and of (e) to (d), per backend, workload, concurrency."""
    table: dict[tuple, dict[str, dict]] = {}
    for row in rows:
        table.setdefault((row["backend"], row["workload"], row["concurrency"]), {})[row["system"]] = row
    out = []
    for (backend, workload, concurrency), by in sorted(table.items()):
        def ratio(x: str, y: str) -> float | None:
            if x in by and y in by and by[y]["throughput"]:
                return round(by[x]["throughput"] / by[y]["throughput"], 2)
            return None

        entry = {
            "backend": backend, "workload": workload, "concurrency": concurrency,
            "d_vs_b": ratio("d", "b"), "d_vs_c": ratio("d", "c"), "d_vs_g": ratio("d", "g"), "d_vs_h": ratio("d", "h"),
            "e_vs_d": ratio("e", "d"), "f_vs_d": ratio("f", "d"),
        }
        peers = [p for p in PEERS if p in by]
        if "d" in by and peers:
            best = max(peers, key=lambda p: by[p]["throughput"])
            entry["d_vs_best_peer"] = ratio("d", best)
        if "e" in by and "d" in by:
            entry["e_minus_d_p50_ms"] = round(by["e"]["p50_ms"] - by["d"]["p50_ms"], 2)
        out.append(entry)
    return out


def _markdown(rows: list[dict], ratios: list[dict], meta: dict) -> str:
    rounds = meta.get("rounds", 1)
    lines = [
        (f"Runs per case: {meta['runs']}" if rows else "W1-W3 not run")
        + (f", in {rounds} rounds (each round runs every system once; figures are medians over rounds, ratios"
           " are taken within each round, then the median and, in brackets, the lowest and highest)" if rounds > 1 else "")
        + f"; machine: {meta['machine']}; {meta['when']}.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items()) + ".",
        "",
        "| backend | workload | conc. | system | runs/s | p50 ms | p99 ms | publish→started p50 ms | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["backend"], r["workload"], r["concurrency"], r["system"])):
        started = r.get("started_p50_ms", "")
        rss = r["rss_mb"] if "actors_rss_mb" not in r else f"{r['rss_mb']} + actors {r['actors_rss_mb']}"
        lines.append(
            f"| {r['backend']} | {r['workload']} | {r['concurrency']} | ({r['system']}) {SYSTEMS[r['system']]} | "
            f"{r['throughput']} | {r['p50_ms']} | {r['p99_ms']} | {started} | {rss} |"
        )
    if not rows and not any(meta.get("bus", {}).values()):  # only W4, W5, scale, storage
        return "\n".join(lines[:4]) + "\n"
    lines += ["", "| backend | workload | conc. | (d)/(b) | (d)/(g) | (d)/(h) | (d)/best peer | (d)/(c) | (e)/(d) | (f)/(d) | (e)−(d) p50 ms |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    def cell(r: dict, key: str) -> str:
        if r.get(key) is None:
            return "-"
        low_high = r.get(key + "_range")
        return f"{r[key]} ({low_high[0]} to {low_high[1]})" if low_high else str(r[key])

    for r in ratios:
        lines.append(
            f"| {r['backend']} | {r['workload']} | {r['concurrency']} | {cell(r, 'd_vs_b')} | {cell(r, 'd_vs_g')} | "
            f"{cell(r, 'd_vs_h')} | {cell(r, 'd_vs_best_peer')} | {cell(r, 'd_vs_c')} | "
            f"{cell(r, 'e_vs_d')} | {cell(r, 'f_vs_d')} | {cell(r, 'e_minus_d_p50_ms')} |"
        )
    governed = {b: e["governor"] for b, e in meta.get("bus", {}).items() if "governor" in e}
    if governed:
        lines += ["", "Governor under a backlog (one queue, random priorities 1-10, all waiting together before the limit opens;",
                  "admission times from the database, and `started` event times, which trail them by up to a few hundred ms):", "",
                  "| backend | requests | limit per 1 s | most admitted in a rolling 1 s (database) | inversions (database) | most `started` in 1 s | inversions by `started` (> 0.5 s apart) | drained in s |",
                  "|---|---|---|---|---|---|---|---|"]
        for backend, g in governed.items():
            lines.append(
                f"| {backend} | {g['requests']} | {g['limit']} | {g['max_in_window_db'] if g['max_in_window_db'] is not None else 'n/a'} | "
                f"{g['inversions_db'] if g['inversions_db'] is not None else 'n/a'} | "
                f"{g['max_in_window']} | {g['inversions']} | {g['drain_seconds']} |"
            )
    for backend, extra in meta.get("bus", {}).items():
        if "up_seconds" in extra:
            lines.append(f"\n`timestep up` start-up ({backend}): {extra['up_seconds']} s")
        if "backlog" in extra:
            lines.append(_backlog_line(backend, extra["backlog"]))
        if "recovery" in extra:
            r = extra["recovery"]
            lines.append(
                f"\nRecovery ({backend}): {r['runs']} runs in a tool call, actors SIGKILLed and restarted: "
                f"{r['restart_to_up_s']} s to start, then {r['up_to_all_completed_s']} s until all completed "
                f"({r['restart_to_all_completed_s']} s in all)"
            )
        if "recovery_standby" in extra:
            r = extra["recovery_standby"]
            lines.append(
                f"\nRecovery by a standby ({backend}): {r['runs']} runs in a tool call, actors SIGKILLed, `timestep up --standby` "
                f"beside them: {r['restart_to_up_s']} s to take over and launch, then {r['up_to_all_completed_s']} s until all "
                f"completed ({r['restart_to_all_completed_s']} s in all)"
            )
    return "\n".join(lines) + "\n"


def _backlog_line(backend: str, b: dict) -> str:
    return (
        f"\nBacklog ({backend}): {b['requests']} queued W1 requests published in {b['published_s']} s, all completed after "
        f"{b['drained_s']} s ({b['runs_per_s']} runs/s); actors' RSS {b['rss_after_warmup_mb']} MB after a 500-run warm-up, "
        f"peak {b['rss_peak_mb']} MB, {b['rss_after_mb']} MB after: growth {b['rss_growth_mb']} MB"
    )


def _chart(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({(r["backend"], r["workload"], r["concurrency"]) for r in rows})
    systems = [s for s in SYSTEMS if any(r["system"] == s for r in rows)]
    fig, ax = plt.subplots(figsize=(max(8, len(groups) * 1.4), 5))
    width = 0.8 / max(1, len(systems))
    for index, system in enumerate(systems):
        values = [next((r["throughput"] for r in rows if (r["backend"], r["workload"], r["concurrency"]) == g and r["system"] == system), 0) for g in groups]
        ax.bar([i + index * width for i in range(len(groups))], values, width, label=f"({system}) {SYSTEMS[system]}")
    ax.set_xticks([i + width * (len(systems) - 1) / 2 for i in range(len(groups))])
    ax.set_xticklabels([f"{b}\n{w} c={c}" for b, w, c in groups], fontsize=8)
    ax.set_ylabel("runs per second")
    ax.set_yscale("log")
    ax.set_title("Throughput by system (log scale)")
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _backlog(backend: Backend, requests: int) -> dict:
    """Actors warmed up by 500 runs (fewer for a smaller backlog), then a backlog of `requests` queued runs published at once and
    drained; the actors' resident memory sampled every 0.2 s: growth = peak during the backlog
    minus the level after the warm-up."""
    nats = EmbeddedNats(backend.workdir / "nats-backlog", port=free_port())
    url = nats.start()
    actors = _start_actors(backend, url, backend.workdir / "backlog.out", executor="bench-backlog")
    try:
        warm = argparse.Namespace(runs=min(500, requests), concurrency=[32], workloads=["W1"])
        _cases("bus", backend, warm, nats_url=url, systems="f")
        baseline = _rss_mb(actors.pid)
        cmd = [sys.executable, str(HERE / "cases.py"), "backlog", "--requests", str(requests), "--nats-url", url]
        proc = subprocess.Popen(cmd, env=backend.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        samples = []
        while proc.poll() is None:
            samples.append(_rss_mb(actors.pid))
            time.sleep(0.2)
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"backlog failed on {backend.name}:\n{err[-4000:]}")
        result = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
        after = _rss_mb(actors.pid)
        result.update(
            rss_after_warmup_mb=baseline, rss_peak_mb=max(samples, default=baseline), rss_after_mb=after,
            rss_growth_mb=round(max(samples, default=baseline) - baseline, 1),
        )
        return result
    finally:
        _stop(actors)
        nats.stop()


# --- agent-shaped load: W4 (in flight), W5 (streaming), scale-out --------------------------

LOAD = ("W4", "W5", "scale", "storage")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list[int]:
    """`pid` and its children (a `timestep up --workers N`: the workers it started)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rpartition(")")[2].split()[1]) == pid:
                children.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return [pid, *children]


def _tree_sum(pid: int, read: Callable[[int], float]) -> float:
    """`read` summed over `pid` and its children alive now (workers run as long as the `timestep up` that started them)."""
    total = 0.0
    for one in _tree(pid):
        try:
            total += read(one)
        except OSError:
            continue
    return total


def _tree_cpu_seconds(pid: int) -> float:
    return _tree_sum(pid, _cpu_seconds)


def _tree_rss_mb(pid: int) -> float:
    return round(_tree_sum(pid, _rss_mb), 1)


def _json_lines(cmd: list[str], backend: Backend, env: dict[str, str], sample: Callable[[], None] | None = None) -> list[dict]:
    """Run a measuring process; call `sample` every 0.1 s while it runs; its JSON lines."""
    proc = subprocess.Popen(cmd, env=backend.env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while proc.poll() is None:
        if sample is not None:
            sample()
        time.sleep(0.1)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[2]} failed on {backend.name}:\n{err[-4000:]}")
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def _inflight(backend: Backend, args: argparse.Namespace) -> list[dict]:
    """W4: `--w4-runs` runs of the W2 shape at once, each model call sleeping `--w4-delay` s: (e)
    through the bus to one `timestep up` (the actors' memory sampled, their CPU read from /proc),
    and each library system in a process of its own (which measures itself)."""
    delay, runs = args.w4_delay, args.w4_runs
    env = {"BENCH_MODEL_DELAY": str(delay)}
    rows = []
    for system in args.w4_systems:
        print(f"[{backend.name}] W4 ({system}) ...", file=sys.stderr, flush=True)
        if system != "e":
            cmd = [sys.executable, str(HERE / "cases.py"), "inflight", "--systems", system, "--runs", str(runs),
                   "--delay", str(delay), "--db-url", backend.url]
            rows += [{**row, "backend": backend.name} for row in _json_lines(cmd, backend, env)]
            continue
        for workers in args.load_workers:
            nats = EmbeddedNats(backend.workdir / f"nats-w4-{workers}", port=free_port())
            url = nats.start()
            actors = _start_actors(backend, url, backend.workdir / f"w4-{workers}.out", executor=f"bench-w4-{workers}",
                                   workers=workers, TIMESTEP_AGENT_CONCURRENCY=str(runs + 64), **env)
            try:
                cmd = [sys.executable, str(HERE / "cases.py"), "inflight-bus", "--nats-url", url, "--runs"]
                _json_lines([*cmd, str(2 * workers)], backend, env)  # warm up
                base_mb, cpu, peak = _tree_rss_mb(actors.pid), _tree_cpu_seconds(actors.pid), [0.0]

                def sample() -> None:
                    peak[0] = max(peak[0], _tree_rss_mb(actors.pid))

                [done] = _json_lines([*cmd, str(runs)], backend, env, sample)
                figures = inflight_figures(runs, delay, done["makespan_s"], _tree_cpu_seconds(actors.pid) - cpu, base_mb, max(peak[0], base_mb))
                rows.append({"system": "e", "workload": "W4", **figures, "backend": backend.name, "workers": workers})
            finally:
                _stop(actors)
                nats.stop()
    return rows


def _streaming(backend: Backend, args: argparse.Namespace) -> list[dict]:
    """W5: `--w5-streams` runs at once through the bus, each streaming `--w5-deltas` text deltas
    at `--w5-rate` a second; delays measured by a NATS subscriber, CPU of the actors from /proc."""
    env = {"BENCH_W5_DELTAS": str(args.w5_deltas), "BENCH_W5_RATE": str(args.w5_rate)}
    rows = []
    for workers in args.load_workers:
        nats = EmbeddedNats(backend.workdir / f"nats-w5-{workers}", port=free_port())
        url = nats.start()
        actors = _start_actors(backend, url, backend.workdir / f"w5-{workers}.out", executor=f"bench-w5-{workers}", workers=workers,
                               TIMESTEP_AGENT_CONCURRENCY=str(max(args.w5_streams) + 64), **env)
        try:
            cmd = [sys.executable, str(HERE / "cases.py"), "stream", "--nats-url", url, "--deltas", str(args.w5_deltas),
                   "--rate", str(args.w5_rate), "--runs"]
            _json_lines([*cmd, str(2 * workers)], backend, env)  # warm up
            for streams in args.w5_streams:
                print(f"[{backend.name}] W5 ({streams} streams, {workers} worker(s)) ...", file=sys.stderr, flush=True)
                cpu, nats_cpu = _tree_cpu_seconds(actors.pid), _cpu_seconds(nats.process.pid)
                [row] = _json_lines([*cmd, str(streams)], backend, env)
                used, nats_used = _tree_cpu_seconds(actors.pid) - cpu, _cpu_seconds(nats.process.pid) - nats_cpu
                row.update(
                    system="e", workload="W5", backend=backend.name, target_per_s=round(streams * args.w5_rate), workers=workers,
                    cpu_per_delta_us=round(used / max(1, row["deltas"]) * 1e6, 1),
                    nats_cpu_per_delta_us=round(nats_used / max(1, row["deltas"]) * 1e6, 1),
                )
                rows.append(row)
        finally:
            _stop(actors)
            nats.stop()
    return rows


def _scale(backend: Backend, args: argparse.Namespace) -> list[dict]:
    """W2 at concurrency 32 over the bus (direct runs) to `timestep up --workers 1`, then `--workers 2`
    (every role in the first process, the agent role in the second too); CPU of both."""
    rows = []
    for agents in (1, 2):
        print(f"[{backend.name}] scale-out: timestep up --workers {agents} ...", file=sys.stderr, flush=True)
        nats = EmbeddedNats(backend.workdir / f"nats-scale{agents}", port=free_port())
        url = nats.start()
        actors = _start_actors(backend, url, backend.workdir / f"scale-{agents}.out", executor=f"bench-scale{agents}", workers=agents)
        try:
            shape = argparse.Namespace(runs=args.scale_runs, concurrency=[32], workloads=["W2"])
            cpu = _tree_cpu_seconds(actors.pid)
            [row] = _cases("bus", backend, shape, nats_url=url, systems="e")
            used = _tree_cpu_seconds(actors.pid) - cpu
            rows.append({**row, "workload": "scale", "agent_processes": agents, "cpu_per_run_ms": round(used / max(1, args.scale_runs) * 1e3, 2)})
        finally:
            _stop(actors)
            nats.stop()
    return rows


def _storage(backend: Backend, args: argparse.Namespace) -> list[dict]:
    """Bytes stored by one run with N tool calls, (d) and (g), each case in a process and a database of its own."""
    rows = []
    for calls in args.storage_calls:
        for system in ("d", "g"):
            print(f"[{backend.name}] storage: ({system}), {calls} tool calls ...", file=sys.stderr, flush=True)
            cmd = [sys.executable, str(HERE / "storage.py"), "--system", system, "--backend", backend.name, "--calls", str(calls),
                   "--workdir", str(backend.workdir / "storage")]
            rows += _json_lines(cmd, backend, {"PG_CONNECTION_URI": backend.url} if backend.name == "postgres" else {})
    return rows


def _load_summary(rounds: list[dict[str, list[dict]]]) -> dict[str, list[dict]]:
    """Per part, one row per case: the median over rounds of each figure; losses, disorder, max delays
    and peak memory from the worst round."""
    keys = {
        "W4": ("backend", "system", "workers"), "W5": ("backend", "streams", "workers"), "scale": ("backend", "agent_processes"),
        "storage": ("backend", "system", "tool_calls"),
    }
    out: dict[str, list[dict]] = {}
    for part, key in keys.items():
        cases: dict[tuple, list[dict]] = {}
        for one in rounds:
            for row in one.get(part, []):
                cases.setdefault(tuple(row.get(k, 1) for k in key), []).append(row)
        combined = []
        for rows in cases.values():
            row = dict(rows[0])
            for field, value in rows[0].items():
                if isinstance(value, (int, float)) and field not in key:
                    row[field] = round(statistics.median(r[field] for r in rows), 2)
            for field in row:
                if field.endswith(("lost", "out_of_order", "max_ms")) or field == "rss_peak_mb":
                    row[field] = max(r[field] for r in rows)  # the worst round (stored and live alike)
            row["rounds"] = len(rows)
            combined.append(row)
        if part == "scale":
            for row in combined:
                one = [r for r in combined if r["backend"] == row["backend"] and r["agent_processes"] == 1]
                ratios = [b["throughput"] / a["throughput"] for one_round in rounds
                          for a in one_round.get("scale", []) for b in one_round.get("scale", [])
                          if a["backend"] == b["backend"] == row["backend"] and a["agent_processes"] == 1 and b["agent_processes"] == 2]
                if row["agent_processes"] == 2 and one and ratios:
                    row["vs_one"] = round(statistics.median(ratios), 2)
                    row["vs_one_range"] = [round(min(ratios), 2), round(max(ratios), 2)]
        if combined:
            out[part] = combined
    return out


def _load_markdown(load: dict[str, list[dict]], args: argparse.Namespace) -> str:
    lines = []
    if "W4" in load:
        lines += ["", f"W4, runs in flight: {args.w4_runs} runs of the W2 shape started at once, each model call sleeping {args.w4_delay} s; "
                  "ideal = the two model calls' wait + CPU per run x runs / cores; (e) is one `timestep up --workers N` (the memory "
                  "and CPU of its N processes), the others the library in one process each:", "",
                  "| backend | system | workers | makespan s | ideal s | makespan/ideal | CPU per run ms | peak RSS MB | RSS per run in flight KB |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in sorted(load["W4"], key=lambda r: (r["backend"], r["system"], r.get("workers", 1))):
            lines.append(f"| {r['backend']} | ({r['system']}) {SYSTEMS[r['system']]} | {r.get('workers', 1) if r['system'] == 'e' else ''} | "
                         f"{r['makespan_s']} | {r['ideal_s']} | "
                         f"{r['makespan_vs_ideal']} | {r['cpu_per_run_ms']} | {r['rss_peak_mb']} | {r['rss_per_run_kb']} |")
    if "W5" in load:
        lines += ["", f"W5, streaming through the bus: runs at once, each streaming {args.w5_deltas} text deltas at {args.w5_rate} a second; "
                  "delay from the model yielding a delta to a NATS subscriber receiving it (the model yields the next delta only when "
                  "the run has taken the last, so a run that cannot keep up slows its stream: read the rate reached beside the delays); "
                  "live: each delta as yielded, on `runs.live.<run_id>` (core NATS, not stored); stored: the `delta` events "
                  "(JetStream, synced; deltas gathered while the run's previous one is stored); "
                  "CPU per delta of `timestep up` (the runs' whole cost over their deltas) and of nats-server:", "",
                  "| backend | workers | streams | deltas/s asked | deltas/s reached | live p50 ms | live p99 ms | live max ms | live lost | live out of order "
                  "| stored p50 ms | stored p99 ms | stored max ms | stored lost | stored out of order | CPU per delta µs | nats-server CPU per delta µs |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in sorted(load["W5"], key=lambda r: (r["backend"], r["workers"], r["streams"])):
            lines.append(f"| {r['backend']} | {r['workers']} | {r['streams']} | {r['target_per_s']} | {round(r['deltas'] / r['seconds'])} | "
                         f"{r.get('live_p50_ms', '')} | {r.get('live_p99_ms', '')} | {r.get('live_max_ms', '')} | {r.get('live_lost', '')} | "
                         f"{r.get('live_out_of_order', '')} | {r['p50_ms']} | {r['p99_ms']} | {r['max_ms']} | "
                         f"{r['lost']} | {r['out_of_order']} | {r['cpu_per_delta_us']} | {r['nats_cpu_per_delta_us']} |")
    if "storage" in load:
        lines += ["", "Storage: bytes one run stores, by its number of tool calls, each returning 1,024 characters of JSON text (what "
                  "zlib does to those outputs alone: the last column); SQLite: the values' bytes, PostgreSQL: their stored size "
                  "(`pg_column_size`, after PostgreSQL's own compression); bench/storage.py:", "",
                  "| backend | tool calls | (d) Timestep KB | (d) per KB of output | (g) LangGraph KB | (g) per KB of output | (g)/(d) | outputs' zlib ratio |",
                  "|---|---|---|---|---|---|---|---|"]
        cases: dict[tuple, dict[str, dict]] = {}
        for r in load["storage"]:
            cases.setdefault((r["backend"], r["tool_calls"]), {})[r["system"]] = r
        for (backend, calls), by in sorted(cases.items()):
            d, g = by.get("d"), by.get("g")
            cell = lambda r: (f"{r['stored_bytes'] / 1024:.1f}", f"{r['per_kb_of_output']}") if r else ("", "")  # noqa: E731
            ratio = f"{g['stored_bytes'] / d['stored_bytes']:.1f}" if d and g and d["stored_bytes"] else ""
            lines.append(f"| {backend} | {calls} | {' | '.join(cell(d))} | {' | '.join(cell(g))} | {ratio} | {(d or g or {}).get('output_compressibility', '')} |")
    if "scale" in load:
        lines += ["", f"Scale-out: W2 at concurrency 32 over the bus (direct runs, {args.scale_runs} per round) to `timestep up "
                  "--workers N` (CPU per run: all N processes):", "",
                  "| backend | workers | runs/s | p50 ms | CPU per run ms | two / one |", "|---|---|---|---|---|---|"]
        for r in sorted(load["scale"], key=lambda r: (r["backend"], r["agent_processes"])):
            ratio = f"{r['vs_one']} ({r['vs_one_range'][0]} to {r['vs_one_range'][1]})" if "vs_one" in r else ""
            lines.append(f"| {r['backend']} | {r['agent_processes']} | {r['throughput']} | {r['p50_ms']} | {r.get('cpu_per_run_ms', '')} | {ratio} |")
    return "\n".join(lines) + "\n" if lines else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200, help="runs per case, split over the rounds")
    parser.add_argument("--rounds", type=int, default=3, help="every system runs once per round; ratios are taken within a round")
    parser.add_argument("--backends", type=lambda s: s.split(","), default=["sqlite", "postgres"])
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 32])
    parser.add_argument("--workloads", type=lambda s: s.split(","), default=["W1", "W2", "W3", "W4", "W5", "scale", "storage"],
                        help="W1-W3 (throughput), W4 (runs in flight), W5 (streaming), scale (one agent process vs two)")
    parser.add_argument("--w4-runs", type=int, default=1000, help="W4: runs started at once")
    parser.add_argument("--w4-delay", type=float, default=1.0, help="W4: seconds each model call sleeps")
    parser.add_argument("--w4-systems", type=lambda s: s.split(","), default=["e", "b", "d", "g", "h"])
    parser.add_argument("--w5-streams", type=lambda s: [int(x) for x in s.split(",")], default=[100, 500], help="W5: runs streaming at once")
    parser.add_argument("--w5-deltas", type=int, default=200, help="W5: deltas per stream")
    parser.add_argument("--w5-rate", type=float, default=50, help="W5: deltas per second per stream")
    parser.add_argument("--scale-runs", type=int, default=300, help="scale-out: runs per case and round")
    parser.add_argument("--storage-calls", type=lambda s: [int(x) for x in s.split(",")], default=[10, 40, 160],
                        help="storage: the tool calls of each measured run")
    parser.add_argument("--load-workers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2],
                        help="W4 (e) and W5: measured with `timestep up --workers N` for each N")
    parser.add_argument("--load-rounds", type=int, help="rounds of W4, W5 and scale (default: --rounds)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--governor-requests", type=int, default=2000, help="backlog for the governor check (0: skip)")
    parser.add_argument("--governor-limit", type=int, default=100, help="the backlog queue's runs per second")
    parser.add_argument("--recovery-runs", type=int, default=20, help="runs in flight when the actors are SIGKILLed (0: skip)")
    parser.add_argument("--backlog-requests", type=int, default=10000, help="backlog drained while the actors' memory is sampled (0: skip)")
    parser.add_argument("--only", choices=["backlog", "recovery"], help="run only this part")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    unknown = set(args.workloads) - {"W1", "W2", "W3", *LOAD}
    if unknown:
        parser.error(f"--workloads: unknown {', '.join(sorted(unknown))}; choose from W1, W2, W3, W4, W5, scale, storage")
    throughput = [w for w in args.workloads if w not in LOAD]
    rounds: list[list[dict]] = [[] for _ in range(args.rounds)]
    load_rounds: list[dict[str, list[dict]]] = [{} for _ in range(args.load_rounds or args.rounds)]
    meta: dict = {
        "runs": args.runs,
        "rounds": args.rounds,
        "machine": f"{os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}",
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "bus": {},
        "versions": versions(),
    }
    for name in args.backends:
        with tempfile.TemporaryDirectory(prefix=f"timestep-bench-{name}-") as tmp:
            try:
                backend = Backend(name, Path(tmp))
            except Exception as exc:
                print(f"skipping {name}: {exc}", file=sys.stderr)
                continue
            try:
                if args.only == "recovery":
                    print(f"[{name}] recovery ...", file=sys.stderr, flush=True)
                    meta["bus"][name] = {
                        "recovery": _recovery(backend, args.recovery_runs),
                        "recovery_standby": _recovery(backend, args.recovery_runs, standby=True),
                    }
                    continue
                if args.only == "backlog":
                    print(f"[{name}] backlog ...", file=sys.stderr, flush=True)
                    meta["bus"][name] = {"backlog": _backlog(backend, args.backlog_requests)}
                    continue
                per_round = argparse.Namespace(**{**vars(args), "runs": max(1, args.runs // args.rounds), "workloads": throughput})
                extra = {}
                for index in range(args.rounds if throughput else 0):
                    print(f"[{name}] round {index + 1}/{args.rounds}: systems a-d, g, h ...", file=sys.stderr, flush=True)
                    round_rows = _cases("local", backend, per_round, db_url=backend.url)
                    print(f"[{name}] round {index + 1}/{args.rounds}: systems e-f ...", file=sys.stderr, flush=True)
                    bus_rows, bus_extra = _bus_cases(backend, per_round, governor=index == 0)
                    rounds[index] += round_rows + bus_rows
                    extra = {**bus_extra, **extra}  # the first round's start-up time and governor check
                for index in range(len(load_rounds)):
                    parts = {"W4": _inflight, "W5": _streaming, "scale": _scale}
                    for part, measure in parts.items():
                        if part in args.workloads:
                            load_rounds[index].setdefault(part, []).extend(measure(backend, args))
                if "storage" in args.workloads:  # bytes, not time: one round tells it
                    load_rounds[0].setdefault("storage", []).extend(_storage(backend, args))
                if args.recovery_runs and throughput:
                    print(f"[{name}] recovery ...", file=sys.stderr, flush=True)
                    extra["recovery"] = _recovery(backend, args.recovery_runs)
                    extra["recovery_standby"] = _recovery(backend, args.recovery_runs, standby=True)
                if args.backlog_requests and throughput:
                    print(f"[{name}] backlog ...", file=sys.stderr, flush=True)
                    extra["backlog"] = _backlog(backend, args.backlog_requests)
                meta["bus"][name] = extra
            finally:
                backend.drop()
    if args.only:
        text = _markdown([], [], meta).split("\n", 1)[1].replace("| backend |", "", 0)
        text = "\n".join(line for line in text.splitlines() if line and not line.startswith("|")).strip() + "\n"
        (args.out / f"{args.only}.json").write_text(json.dumps(meta, indent=1))
        (args.out / f"{args.only}.md").write_text(f"{meta['machine']}; {meta['when']}.\n\n" + text)
        print(text)
        return 0
    rows = _combine(rounds)
    ratios = _round_ratios(rounds) if rows else []
    load = _load_summary(load_rounds)
    (args.out / "results.json").write_text(json.dumps(
        {"meta": meta, "rows": rows, "ratios": ratios, "rounds": rounds, "load": load, "load_rounds": load_rounds}, indent=1))
    markdown = _markdown(rows, ratios, meta) + _load_markdown(load, args)
    (args.out / "results.md").write_text(markdown)
    if rows:
        _chart(rows, args.out / "chart.png")
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
