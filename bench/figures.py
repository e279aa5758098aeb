"""Figures computed the same way in the measuring processes and the orchestrator."""

from __future__ import annotations


def inflight_figures(runs: int, delay: float, makespan: float, cpu: float, base_mb: float, peak_mb: float) -> dict:
    """W4's figures: the ideal is the model's waiting (two calls) plus the CPU the runs need, spread over the cores."""
    import os

    ideal = 2 * delay + cpu / (os.cpu_count() or 1)
    return {
        "runs": runs, "delay_s": delay, "makespan_s": round(makespan, 2), "ideal_s": round(ideal, 2),
        "makespan_vs_ideal": round(makespan / ideal, 2), "cpu_per_run_ms": round(cpu / runs * 1000, 2),
        "rss_base_mb": round(base_mb, 1), "rss_peak_mb": round(peak_mb, 1),
        "rss_per_run_kb": round((peak_mb - base_mb) * 1024 / runs, 1),
    }
