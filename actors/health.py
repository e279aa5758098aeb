"""The per-process HTTP endpoint for probes and scrapers, on a tiny asyncio server:

- `GET /healthz`: 200 while the event loop runs (it answers on it) and every actor's
  mailbox loop is alive; 503 naming the actor whose loop ended.
- `GET /readyz`: 200 when connected to NATS, DBOS launched (roles that use it) and every
  actor's consumer bound; 503 with the reason otherwise (for example while NATS is down, or
  once the server refused the process's user a publish or subscription: see `bus.Refusals`).
- `GET /metrics`: `timestep.ops.metrics` in the Prometheus text format 0.0.4, with queue
  depth and running runs read from the database at scrape time.

Started by `actors.system.System` when TIMESTEP_HTTP_PORT is set (0: a free port):

>>> server = HealthServer(system, "127.0.0.1", 0)
>>> await server.start()    # "http://127.0.0.1:41234"
>>> await server.stop()

`system` is anything with `bus`, `actors` (each with `name`, `stream`, `durable`, `alive`,
`bound`), `roles` and `settings`; this module imports nothing from `actors`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from timestep.ops import metrics

log = logging.getLogger("actors.health")

#: A scrape serves the last queue figures when the database does not answer in time.
QUEUE_READ_TIMEOUT = 5.0
REQUEST_TIMEOUT = 10.0
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 500: "Internal Server Error", 503: "Service Unavailable"}


def liveness_problem(system: Any) -> str | None:
    """Why the process is not alive, or None."""
    for actor in system.actors:
        if not actor.alive:
            return f"actor {actor.name}: its mailbox loop has ended"
    return None


def readiness_problem(system: Any) -> str | None:
    """Why the process cannot do its work now, or None."""
    from timestep.durable import engine

    bus = system.bus
    if bus is None:
        return "not started"
    if bus.refusals.denied is not None:
        return str(bus.refusals.denied)  # until restarted: the refused call is not retried
    nc = bus.nc
    if not nc.is_connected:
        state = "closed" if nc.is_closed else "reconnecting" if nc.is_reconnecting else "disconnected"
        return f"NATS {state}"
    if system.roles & {"agent", "governor"} and not engine.is_launched():
        return "DBOS not launched"
    if not system.actors:
        return "actors not started"
    for actor in system.actors:
        if actor.stream is not None and not actor.bound:
            return f"actor {actor.name}: consumer {actor.durable!r} on stream {actor.stream} not bound"
    return liveness_problem(system)


async def _read_queues() -> None:
    from timestep.durable import engine, queues

    if not engine.is_launched():
        return
    depth: dict[tuple[str, ...], float] = {}
    running: dict[tuple[str, ...], float] = {}
    for name in await engine.blocking(queues.queue_names):
        status = await queues.queue_status(name)
        depth[(name,)] = status.depth
        running[(name,)] = status.running
    metrics.QUEUE_DEPTH.replace(depth)
    metrics.QUEUE_RUNNING.replace(running)


async def render_metrics() -> str:
    try:
        await asyncio.wait_for(_read_queues(), QUEUE_READ_TIMEOUT)
    except Exception as exc:  # the counters are still worth serving
        log.warning("metrics: could not read queue depths (%s: %s); serving the last ones", type(exc).__name__, exc)
    return metrics.render()


class HealthServer:
    """/healthz, /readyz and /metrics of one process (see the module docstring)."""

    def __init__(self, system: Any, host: str, port: int) -> None:
        self.system = system
        self.host = host
        self.port = port
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> str:
        """Listen; returns the URL (with the port chosen when `port` is 0)."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        settings = self.system.settings
        metrics.PROCESS_INFO.set(
            1, role="+".join(sorted(self.system.roles)), executor_id=settings.executor_id, app_version=settings.application_version
        )
        return self.url

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            method, path = await asyncio.wait_for(_read_request(reader), REQUEST_TIMEOUT)
            status, content_type, body = await self._respond(method, path)
            head = (
                f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode("latin-1") + (body if method != "HEAD" else b""))
            await writer.drain()
        except Exception:
            pass  # a probe that hung up or sent garbage
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except Exception:
                pass

    async def _respond(self, method: str, path: str) -> tuple[int, str, bytes]:
        text = "text/plain; charset=utf-8"
        if not method:
            return 400, text, b"bad request\n"
        if path not in ("/healthz", "/readyz", "/metrics"):
            return 404, text, b"not found: try /healthz, /readyz or /metrics\n"
        if method not in ("GET", "HEAD"):
            return 405, text, b"only GET\n"
        try:
            if path == "/metrics":
                return 200, metrics.CONTENT_TYPE, (await render_metrics()).encode()
            problem = liveness_problem(self.system) if path == "/healthz" else readiness_problem(self.system)
        except Exception as exc:
            return 500, text, f"{type(exc).__name__}: {exc}\n".encode()
        if problem is not None:
            return 503, text, f"{problem}\n".encode()
        return 200, text, b"ok\n"


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str]:
    """(method, path) of an HTTP/1.x request; the headers are read and ignored."""
    parts = (await reader.readline()).decode("latin-1").split()
    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
        pass
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return "", ""
    return parts[0], parts[1].split("?", 1)[0]
