"""This process's metrics, kept by `prometheus_client` (the official Python client) and served
in its exposition format at `GET /metrics`, beside its process and Python runtime metrics:

>>> from timestep.ops import metrics
>>> metrics.RUN_EVENTS.labels(type="completed").inc()
>>> print(metrics.render())

Counters count what this process did since it started; queue gauges are the figures last read
from the database (`set_queues`, called at scrape time by `actors.health`). The step histogram
carries the run's trace id as an exemplar, shown to scrapers that ask for OpenMetrics.
"""

from __future__ import annotations

import threading

import prometheus_client
import prometheus_client.exposition
from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

# `_created` series double every counter's lines and say nothing a restart's counter reset does not.
prometheus_client.disable_created_metrics()

CONTENT_TYPE = prometheus_client.exposition.CONTENT_TYPE_PLAIN_0_0_4  # what the endpoint always promised

PROCESS_INFO = Gauge(
    "timestep_process_info", "This process: its roles, executor id and application version (value 1).",
    ["role", "executor_id", "app_version"],
)
RUN_EVENTS = Counter(
    "timestep_run_events", "Run lifecycle events this process published, by type (accepted, started, completed, failed, ...).",
    ["type"],
)
RUNS_ADMITTED = Counter(
    "timestep_runs_admitted", "Run requests this process's governor handed over: kind direct (queue \"\") or queued (by queue).",
    ["kind", "queue"],
)
STEP_SECONDS = Histogram(
    "timestep_step_duration_seconds", "Duration of model and tool steps this process executed (replayed steps are not counted).",
    ["step"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
REDELIVERIES = Counter(
    "timestep_redeliveries", "Messages an actor received again (JetStream delivery count above 1), by actor and stream.",
    ["actor", "stream"],
)
LIVE_DROPPED = Counter(
    "timestep_live_text_dropped", "Pieces of streamed text not published on `runs.live` (disconnected or buffer full); the delta events hold them.",
)
DEAD_LETTERS = Counter(
    "timestep_dead_letters", "Messages this process dead-lettered, by the stream they came from (\"core\": request/reply).",
    ["stream"],
)
WORKERS = Gauge(
    "timestep_agent_workers", "Agent processes of this `timestep up` alive now, itself included (`--workers`).",
)
WORKER_RESTARTS = Counter(
    "timestep_agent_worker_restarts", "Agent worker processes this `timestep up` started again after one exited.",
)


_children: dict[tuple[int, str], object] = {}


def _child(metric, label: str):
    """`metric.labels(label)`, kept: `labels()` costs more than the count itself, and a run counts
    an event per delta and a duration per step."""
    key = (id(metric), label)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(label)
    return child


def count_event(kind: str) -> None:
    """RUN_EVENTS of type `kind`, one more."""
    _child(RUN_EVENTS, kind).inc()


def count_live_dropped() -> None:
    LIVE_DROPPED.inc()


def observe_step(step: str, seconds: float, exemplar: dict[str, str] | None) -> None:
    """STEP_SECONDS of `step` (`model`, `tool:<name>`, ...), with the run's trace id as exemplar."""
    _child(STEP_SECONDS, step).observe(seconds, exemplar)


class _Queues(Collector):
    """`timestep_queue_depth` and `timestep_queue_running`: the figures of the last database read,
    swapped in whole, so a scrape never sees a half-updated set."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._figures: dict[str, tuple[int, int]] = {}

    def set(self, figures: dict[str, tuple[int, int]]) -> None:
        with self._lock:
            self._figures = dict(figures)

    def collect(self):
        with self._lock:
            figures = sorted(self._figures.items())
        depth = GaugeMetricFamily("timestep_queue_depth", "Runs waiting in each queue (read from the database at scrape time).", labels=["queue"])
        running = GaugeMetricFamily(
            "timestep_queue_running", "Runs of each queue that have started and not finished (read at scrape time).", labels=["queue"]
        )
        for name, (waiting, started) in figures:
            depth.add_metric([name], waiting)
            running.add_metric([name], started)
        yield depth
        yield running


_queues = _Queues()
REGISTRY.register(_queues)


def set_queues(figures: dict[str, tuple[int, int]]) -> None:
    """Replace the queue gauges: queue name -> (waiting, running)."""
    _queues.set(figures)


def render(openmetrics: bool = False) -> str:
    """Every metric of the process, in the Prometheus text format (or OpenMetrics, with exemplars)."""
    if openmetrics:
        from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

        return generate_openmetrics(REGISTRY).decode()
    return prometheus_client.generate_latest(REGISTRY).decode()
