"""This process's metrics, rendered in the Prometheus text format (0.0.4) at `GET /metrics`.

A small registry with no dependencies, so every module may count without importing
anything heavy (the client and the CLI start fast):

>>> from timestep import metrics
>>> metrics.RUN_EVENTS.inc(type="completed")
>>> print(metrics.render())

Counters count what this process did since it started; queue gauges are read from the
database at scrape time (see `actors.health`).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable
from typing import TypeVar

_lock = threading.Lock()  # steps and DBOS threads may count concurrently with a scrape

Labels = tuple[str, ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _series(name: str, labelnames: Labels, values: Labels, extra: str = "") -> str:
    pairs = [f'{k}="{_escape(v)}"' for k, v in zip(labelnames, values)]
    if extra:
        pairs.append(extra)
    return f"{name}{{{','.join(pairs)}}}" if pairs else name


class _Metric:
    kind = ""

    def __init__(self, name: str, help: str, labelnames: Iterable[str] = ()) -> None:
        self.name = name
        self.help = help
        self.labelnames: Labels = tuple(labelnames)

    def _key(self, labels: dict[str, str]) -> Labels:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name}: labels {sorted(labels)} do not match {sorted(self.labelnames)}")
        return tuple(str(labels[k]) for k in self.labelnames)

    def lines(self) -> list[str]:
        raise NotImplementedError


class Counter(_Metric):
    """Only goes up. `inc(amount, **labels)`; `value(**labels)` for tests and summaries."""

    kind = "counter"

    def __init__(self, name: str, help: str, labelnames: Iterable[str] = ()) -> None:
        super().__init__(name, help, labelnames)
        self._values: dict[Labels, float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = self._key(labels)
        with _lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self._values.get(self._key(labels), 0.0)

    def lines(self) -> list[str]:
        with _lock:
            items = sorted(self._values.items())
        return [f"{_series(self.name, self.labelnames, k)} {_number(v)}" for k, v in items]


class Gauge(_Metric):
    """A value that is set: `set(value, **labels)`; `replace(values)` swaps every series at once."""

    kind = "gauge"

    def __init__(self, name: str, help: str, labelnames: Iterable[str] = ()) -> None:
        super().__init__(name, help, labelnames)
        self._values: dict[Labels, float] = {}

    def set(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with _lock:
            self._values[key] = float(value)

    def replace(self, values: dict[Labels, float]) -> None:
        with _lock:
            self._values = dict(values)

    def value(self, **labels: str) -> float | None:
        return self._values.get(self._key(labels))

    def lines(self) -> list[str]:
        with _lock:
            items = sorted(self._values.items())
        return [f"{_series(self.name, self.labelnames, k)} {_number(v)}" for k, v in items]


class Histogram(_Metric):
    """Observations in cumulative buckets, with their count and sum: `observe(value, **labels)`."""

    kind = "histogram"

    def __init__(self, name: str, help: str, labelnames: Iterable[str] = (), buckets: Iterable[float] = ()) -> None:
        super().__init__(name, help, labelnames)
        self.buckets = tuple(sorted(buckets)) + (math.inf,)
        self._values: dict[Labels, tuple[list[int], float]] = {}

    def observe(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with _lock:
            counts, total = self._values.get(key) or ([0] * len(self.buckets), 0.0)
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    counts[i] += 1
            self._values[key] = (counts, total + value)

    def count(self, **labels: str) -> int:
        entry = self._values.get(self._key(labels))
        return entry[0][-1] if entry else 0

    def lines(self) -> list[str]:
        with _lock:
            items = sorted((k, (list(c), s)) for k, (c, s) in self._values.items())
        out = []
        for key, (counts, total) in items:
            for bound, count in zip(self.buckets, counts):
                le = 'le="' + _number(bound) + '"'
                out.append(f"{_series(self.name + '_bucket', self.labelnames, key, le)} {count}")
            out.append(f"{_series(self.name + '_count', self.labelnames, key)} {counts[-1]}")
            out.append(f"{_series(self.name + '_sum', self.labelnames, key)} {_number(total)}")
        return out


_metrics: list[_Metric] = []
M = TypeVar("M", bound=_Metric)


def _add(metric: M) -> M:
    _metrics.append(metric)
    return metric


def render() -> str:
    """Every metric in the Prometheus text exposition format, version 0.0.4."""
    out: list[str] = []
    for metric in _metrics:
        out.append(f"# HELP {metric.name} {metric.help.replace(chr(92), chr(92) * 2).replace(chr(10), ' ')}")
        out.append(f"# TYPE {metric.name} {metric.kind}")
        out.extend(metric.lines())
    return "\n".join(out) + "\n"


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

PROCESS_INFO = _add(Gauge(
    "timestep_process_info", "This process: its roles, executor id and application version (value 1).",
    ["role", "executor_id", "app_version"],
))
RUN_EVENTS = _add(Counter(
    "timestep_run_events_total", "Run lifecycle events this process published, by type (accepted, started, completed, failed, ...).",
    ["type"],
))
RUNS_ADMITTED = _add(Counter(
    "timestep_runs_admitted_total", "Run requests this process's governor handed over: kind direct (queue \"\") or queued (by queue).",
    ["kind", "queue"],
))
QUEUE_DEPTH = _add(Gauge(
    "timestep_queue_depth", "Runs waiting in each queue (read from the database at scrape time).", ["queue"],
))
QUEUE_RUNNING = _add(Gauge(
    "timestep_queue_running", "Runs of each queue that have started and not finished (read at scrape time).", ["queue"],
))
STEP_SECONDS = _add(Histogram(
    "timestep_step_duration_seconds", "Duration of model and tool steps this process executed (replayed steps are not counted).",
    ["step"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
))
REDELIVERIES = _add(Counter(
    "timestep_redeliveries_total", "Messages an actor received again (JetStream delivery count above 1), by actor and stream.",
    ["actor", "stream"],
))
DEAD_LETTERS = _add(Counter(
    "timestep_dead_letters_total", "Messages this process dead-lettered, by the stream they came from (\"core\": request/reply).",
    ["stream"],
))
