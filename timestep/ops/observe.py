"""What ties a log line or a span to a run: the current run (a context variable), JSON logs,
and W3C trace context (`traceparent`, `tracestate`).

- `bind_run(run_id, trace)` marks the code that handles a run (an actor's message, the
  run's workflow); every log line logged there carries `run_id`, and every event the bus
  publishes for that run carries the run's `traceparent` header.
- `configure_logging(settings, role)` with `TIMESTEP_LOG_FORMAT=json` makes every log line
  of the process (Timestep's and DBOS's) one JSON object.
- `span(name, parent)` is an OpenTelemetry span when the `opentelemetry` API is installed
  and a tracer provider is set (the SDK); otherwise it creates nothing and passes the
  trace context on unchanged, so a trace id still follows a run from submit to completion.

>>> with span("timestep.submit", None) as trace:
...     headers = trace_headers(trace)   # {"traceparent": "00-<trace id>-<span id>-01"}
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import datetime, timezone
from typing import Any, NamedTuple

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


class Trace(NamedTuple):
    """A W3C trace context: `traceparent` (`00-<trace id>-<parent span id>-<flags>`) and `tracestate`."""

    traceparent: str
    tracestate: str | None = None

    @property
    def trace_id(self) -> str:
        return self.traceparent[3:35]


def parse_traceparent(value: object) -> tuple[str, str, str] | None:
    """(trace id, span id, flags) of a valid version-00 `traceparent`, else None."""
    if not isinstance(value, str):
        return None
    match = _TRACEPARENT.match(value.strip().lower())
    if match is None or set(match.group(1)) == {"0"} or set(match.group(2)) == {"0"}:
        return None
    return match.group(1), match.group(2), match.group(3)


def new_trace() -> Trace:
    """A new trace, sampled (the caller decides; a collector may still drop it)."""
    return Trace(f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01")


def trace_from_headers(headers: dict[str, str] | None) -> Trace | None:
    """The trace context of NATS headers, or None when they carry none (or a malformed one)."""
    if not headers or parse_traceparent(headers.get("traceparent")) is None:
        return None
    return Trace(headers["traceparent"].strip().lower(), headers.get("tracestate") or None)


def trace_headers(trace: Trace | None) -> dict[str, str]:
    if trace is None:
        return {}
    return {"traceparent": trace.traceparent, **({"tracestate": trace.tracestate} if trace.tracestate else {})}


# --- the current run --------------------------------------------------------------


class RunContext(NamedTuple):
    run_id: str
    trace: Trace | None


_run: ContextVar[RunContext | None] = ContextVar("timestep_run", default=None)


def bind_run(run_id: str, trace: Trace | None = None) -> Token:
    """Mark what follows, in this task and the tasks it starts, as work on `run_id`.
    Undo with `unbind_run(token)`; an actor's message handler may leave it bound, since
    each message is handled in a task of its own."""
    return _run.set(RunContext(run_id, trace))


def unbind_run(token: Token) -> None:
    _run.reset(token)


def current_run() -> RunContext | None:
    return _run.get()


def run_trace(run_id: str) -> Trace | None:
    """The trace context to publish an event of `run_id` with (None outside that run)."""
    ctx = _run.get()
    return ctx.trace if ctx is not None and ctx.run_id == run_id else None


# --- spans ------------------------------------------------------------------------


def _otel() -> Any:
    """The OpenTelemetry trace API, when something in this process imported it (only such a
    process can have a tracer provider or a current span); else None. Never a dependency."""
    if "opentelemetry.trace" not in sys.modules:
        return None
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    return trace


def _propagator() -> Any:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator()


def _current_otel_trace() -> Trace | None:
    if _otel() is None:
        return None
    carrier: dict[str, str] = {}
    _propagator().inject(carrier)
    return trace_from_headers(carrier)


def _recording() -> bool:
    """True when an OpenTelemetry tracer provider (the SDK's, or another) is set for the process."""
    otel = _otel()
    return otel is not None and not isinstance(otel.get_tracer_provider(), (otel.ProxyTracerProvider, otel.NoOpTracerProvider))


@contextmanager
def span(name: str, parent: Trace | None, **attributes: Any) -> Iterator[Trace]:
    """A span named `name`, child of `parent` (else of the current OpenTelemetry span, else
    the root of a new trace). Yields the trace context to pass on: the span's own when
    OpenTelemetry records spans, else `parent` (or the current OpenTelemetry context, or a
    new trace) unchanged."""
    if not _recording():
        yield parent or _current_otel_trace() or new_trace()
        return
    context = _propagator().extract(trace_headers(parent)) if parent is not None else None
    tracer = _otel().get_tracer("timestep")
    attrs = {f"timestep.{k}": v for k, v in attributes.items() if v is not None}
    with tracer.start_as_current_span(name, context=context, attributes=attrs):
        yield _current_otel_trace() or parent or new_trace()


@contextmanager
def run_span(name: str, **attributes: Any) -> Iterator[None]:
    """A span inside the current run; the run's events published within carry its context."""
    ctx = _run.get()
    if ctx is None or ctx.trace is None or not _recording():
        yield
        return
    with span(name, ctx.trace, run_id=ctx.run_id, **attributes) as inner:
        token = _run.set(RunContext(ctx.run_id, inner))
        try:
            yield
        finally:
            _run.reset(token)


# --- logs -------------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, run_id (when a run is bound),
    trace_id, role, executor_id, and the exception's traceback when there is one."""

    def __init__(self, role: str | None = None, executor_id: str | None = None) -> None:
        super().__init__()
        self.role = role
        self.executor_id = executor_id

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat().replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        ctx = _run.get()
        run_id = ctx.run_id if ctx is not None else getattr(record, "operationUUID", None)  # DBOS names its workflow id so
        if run_id:
            entry["run_id"] = run_id
        if ctx is not None and ctx.trace is not None:
            entry["trace_id"] = ctx.trace.trace_id
        if self.role:
            entry["role"] = self.role
        if self.executor_id:
            entry["executor_id"] = self.executor_id
        if record.exc_info:
            entry["exception"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, default=str, ensure_ascii=False)


_handler: logging.Handler | None = None
#: Loggers whose level TIMESTEP_LOG_LEVEL sets (DBOS gets it through its config).
LOGGERS = ("timestep", "actors")


def configure_logging(log_format: str, log_level: str, *, role: str | None = None, executor_id: str | None = None) -> None:
    """Set Timestep's log level, and with `log_format == "json"` send every log line of the
    process, DBOS's too, to stderr as JSON (once per process; later calls update role and level)."""
    global _handler
    for name in LOGGERS:
        logging.getLogger(name).setLevel(log_level)
    if log_format != "json":
        return
    if _handler is None:
        _handler = logging.StreamHandler(sys.stderr)
        logging.getLogger().addHandler(_handler)
        # DBOS logs to its own console handler and not to the root: make it ours (when DBOS
        # starts after this, it finds a handler there and adds none).
        dbos = logging.getLogger("dbos")
        for handler in list(dbos.handlers):
            if handler.name == "__dbos_console_log_handler__":
                dbos.removeHandler(handler)
        dbos.addHandler(_handler)
        dbos.propagate = False
    _handler.setFormatter(JsonFormatter(role, executor_id))
