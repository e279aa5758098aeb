"""The benchmark harness runs end to end with tiny counts (its figures are not checked: timing
belongs in the benchmark, not in tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_smoke(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--runs", "4", "--rounds", "2", "--backends", "sqlite", "--concurrency", "1,2",
         "--workloads", "W2,W3", "--out", str(tmp_path), "--governor-requests", "20", "--governor-limit", "10", "--recovery-runs", "2",
         "--backlog-requests", "20"],
        capture_output=True, text=True, timeout=300,
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
