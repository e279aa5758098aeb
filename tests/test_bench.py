"""The benchmark harness runs end to end with tiny counts (its figures are not checked: timing
belongs in the benchmark, not in tests)."""

from __future__ import annotations

import json
import pstats
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.bench

ROOT = Path(__file__).resolve().parent.parent


def test_bench_smoke(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--runs", "4", "--rounds", "2", "--backends", "sqlite", "--concurrency", "1,2",
         "--workloads", "W2,W3", "--out", str(tmp_path), "--governor-requests", "20", "--governor-limit", "10", "--recovery-runs", "2",
         "--backlog-requests", "20"],
        capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    seen = {(r["system"], r["workload"], r["concurrency"]) for r in results["rows"]}
    for concurrency in (1, 2):
        assert {s for s, w, c in seen if w == "W2" and c == concurrency} == set("abcdefgh")
        assert {s for s, w, c in seen if w == "W3" and c == concurrency} == set("acdefgh")  # DBOSRunner cannot stream
    assert all(r["throughput"] > 0 and r["p50_ms"] > 0 for r in results["rows"])
    assert all(r["started_p50_ms"] > 0 for r in results["rows"] if r["system"] in "ef")
    markdown = (tmp_path / "results.md").read_text()
    assert "| (d)/(b) | (d)/(g) | (d)/(h) | (d)/best peer |" in markdown
    assert "langgraph 1." in markdown and "pydantic-ai-slim 2." in markdown  # the peers' versions are printed
    assert all(r["d_vs_best_peer"] for r in results["ratios"])
    # every system ran in each of the two rounds; a ratio is the median of the rounds' with their range
    assert [len(r) for r in results["rounds"]] == [len(results["rows"])] * 2
    assert all(r["round_throughputs"] and len(r["round_throughputs"]) == 2 for r in results["rows"])
    w2 = next(r for r in results["ratios"] if r["workload"] == "W2" and r["concurrency"] == 1)
    low, high = w2["e_vs_d_range"]
    assert low <= w2["e_vs_d"] <= high
    governor = results["meta"]["bus"]["sqlite"]["governor"]
    assert governor["requests"] == 20 and governor["max_in_window"] >= 1
    recovery = results["meta"]["bus"]["sqlite"]["recovery"]
    assert recovery["runs"] == 2 and recovery["restart_to_all_completed_s"] > 0
    assert (tmp_path / "chart.png").stat().st_size > 10_000
    backlog = results["meta"]["bus"]["sqlite"]["backlog"]
    assert backlog["requests"] == 20 and backlog["rss_peak_mb"] >= backlog["rss_after_warmup_mb"] > 0
    assert "Backlog (sqlite): 20 queued W1 requests" in (tmp_path / "results.md").read_text()


def test_bench_agent_shaped_load_smoke(tmp_path: Path) -> None:
    """W4 (runs in flight, every system), W5 (streaming over the bus), scale-out and storage, with tiny counts."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--backends", "sqlite", "--rounds", "1", "--workloads", "W4,W5,scale,storage",
         "--w4-runs", "6", "--w4-delay", "0.1", "--w5-streams", "3", "--w5-deltas", "10", "--w5-rate", "50", "--scale-runs", "6", "--load-workers", "2",
         "--storage-calls", "3",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    load = json.loads((tmp_path / "results.json").read_text())["load"]
    w4 = {r["system"]: r for r in load["W4"]}
    assert set(w4) == set("ebdgh") and w4["e"]["workers"] == 2  # (e): `timestep up --workers 2`, both processes measured
    assert all(r["makespan_s"] >= 0.2 and r["cpu_per_run_ms"] > 0 and r["rss_peak_mb"] > 0 for r in w4.values())  # two 0.1 s model calls
    w5 = {r["streams"]: r for r in load["W5"]}
    assert set(w5) == {3} and {r["workers"] for r in w5.values()} == {2}
    assert all(r["deltas"] == r["streams"] * 10 and r["lost"] == 0 and r["out_of_order"] == 0 for r in w5.values())
    assert all(r["max_ms"] >= r["p99_ms"] >= r["p50_ms"] > 0 and r["cpu_per_delta_us"] > 0 for r in w5.values())
    scale = {r["agent_processes"]: r for r in load["scale"]}
    assert set(scale) == {1, 2} and all(r["throughput"] > 0 for r in scale.values()) and scale[2]["vs_one"] > 0
    storage = {r["system"]: r for r in load["storage"]}
    assert set(storage) == {"d", "g"} and all(r["tool_calls"] == 3 and r["stored_bytes"] > r["tool_output_bytes"] / 4 for r in storage.values())
    markdown = (tmp_path / "results.md").read_text()
    assert "| sqlite | 3 |" in markdown and "W4, runs in flight" in markdown and "W5, streaming" in markdown and "Scale-out" in markdown


def test_instructions_profile_smoke(tmp_path: Path) -> None:
    """bench/instructions.py's profiling mode (the counting mode runs under valgrind, too slow here):
    the runs' window is profiled, for (d) and for streamed runs through the bus's event sink."""
    for system in ("d", "s"):
        done = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "instructions.py"), "--systems", system, "--runs", "2", "--deltas", "20",
             "--profile", str(tmp_path)],
            capture_output=True, text=True, timeout=900,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert json.loads(done.stdout.splitlines()[-1])["system"] == system
    # The report lists the heaviest functions only (which ones varies with the machine's speed); the
    # full profile beside it shows the runs' window was profiled: the library run, the streamed model call.
    assert "timestep" in (tmp_path / "profile-d-W2.txt").read_text()
    for name, function in (("profile-d-W2", "run_agent_workflow"), ("profile-s-W5", "_consume_stream")):
        profiled = {func for (_, _, func) in pstats.Stats(str(tmp_path / f"{name}.txt.prof")).stats}
        assert function in profiled, f"{function} not profiled in {name}"
