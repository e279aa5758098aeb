"""The per-process HTTP endpoint for probes and scrapers, served by aiohttp:

- `GET /healthz`: 200 while the event loop runs (it answers on it) and every actor's
  mailbox loop is alive; 503 naming the actor whose loop ended.
- `GET /readyz`: 200 when connected to NATS, DBOS launched (roles that use it) and every
  actor's consumer bound; 503 with the reason otherwise (for example while NATS is down, or
  once the server refused the process's user a publish or subscription: see `bus.Refusals`).
- `GET /metrics`: `timestep.ops.metrics` from `prometheus_client`, in the Prometheus text
  format 0.0.4 (OpenMetrics, with exemplars, when the scraper asks for it), with queue depth
  and running runs read from the database at scrape time.

Started by `actors.system.System` when TIMESTEP_HTTP_PORT is set (0: a free port):

>>> server = HealthServer(system, "127.0.0.1", 0)
>>> await server.start()    # "http://127.0.0.1:41234"
>>> await server.stop()

`system` is anything with `bus`, `actors` (each with `name`, `stream`, `durable`, `alive`,
`bound`), `roles` and `settings`; this module imports nothing from `actors`. `console`, when
given, adds its pages to the same server (`console.add_routes(app)`: see `actors.console`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from timestep.ops import metrics

log = logging.getLogger("actors.health")

#: A scrape serves the last queue figures when the database does not answer in time.
QUEUE_READ_TIMEOUT = 5.0
#: On stop, open requests (a console page following events) get this long before they are cut off.
SHUTDOWN_SECONDS = 1.0


def liveness_problem(system: Any) -> str | None:
    """Why the process is not alive, or None."""
    for actor in system.actors:
        if not actor.alive:
            return f"actor {actor.name}: its mailbox loop has ended"
    return None


def readiness_problem(system: Any) -> str | None:
    """Why the process cannot do its work now, or None."""
    from timestep.durable import launch

    bus = system.bus
    if bus is None:
        return "not started"
    if bus.refusals.denied is not None:
        return str(bus.refusals.denied)  # until restarted: the refused call is not retried
    nc = bus.nc
    if not nc.is_connected:
        state = "closed" if nc.is_closed else "reconnecting" if nc.is_reconnecting else "disconnected"
        return f"NATS {state}"
    if system.roles & {"agent", "governor"} and not launch.is_launched():
        return "DBOS not launched"
    if not system.actors:
        return "actors not started"
    for actor in system.actors:
        if actor.stream is not None and not actor.bound:
            return f"actor {actor.name}: consumer {actor.durable!r} on stream {actor.stream} not bound"
    return liveness_problem(system)


async def _read_queues() -> None:
    from timestep.durable import launch, queues

    if not launch.is_launched():
        return
    figures: dict[str, tuple[int, int]] = {}
    for name in await queues.names():
        status = await queues.queue_status(name)
        figures[name] = (status.depth, status.running)
    metrics.set_queues(figures)


async def render_metrics(openmetrics: bool = False) -> str:
    try:
        await asyncio.wait_for(_read_queues(), QUEUE_READ_TIMEOUT)
    except Exception as exc:  # the counters are still worth serving
        log.warning("metrics: could not read queue depths (%s: %s); serving the last ones", type(exc).__name__, exc)
    return metrics.render(openmetrics)


def _text(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text + "\n", content_type="text/plain", charset="utf-8")


def serve_url(host: str, port: int) -> str:
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}"


class HealthServer:
    """/healthz, /readyz and /metrics of one process (see the module docstring)."""

    def __init__(self, system: Any, host: str, port: int, console: Any = None) -> None:
        self.system = system
        self.host = host
        self.port = port
        self.console = console
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        if self.console is not None:
            self.console.add_routes(app)
        return app

    async def start(self) -> str:
        """Listen; returns the URL (with the port chosen when `port` is 0)."""
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_SECONDS)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        settings = self.system.settings
        metrics.PROCESS_INFO.labels(
            role="+".join(sorted(self.system.roles)), executor_id=settings.executor_id, app_version=settings.application_version
        ).set(1)
        return self.url

    @property
    def url(self) -> str:
        return serve_url(self.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, request: web.Request) -> web.Response:
        return self._probe(liveness_problem)

    async def _readyz(self, request: web.Request) -> web.Response:
        return self._probe(readiness_problem)

    def _probe(self, check: Any) -> web.Response:
        try:
            problem = check(self.system)
        except Exception as exc:
            return _text(500, f"{type(exc).__name__}: {exc}")
        return _text(503, problem) if problem is not None else _text(200, "ok")

    async def _metrics(self, request: web.Request) -> web.Response:
        openmetrics = "application/openmetrics-text" in request.headers.get("Accept", "")
        body = await render_metrics(openmetrics)
        if openmetrics:
            from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST

            content_type = CONTENT_TYPE_LATEST
        else:
            content_type = metrics.CONTENT_TYPE
        return web.Response(body=body.encode(), headers={"Content-Type": content_type})
