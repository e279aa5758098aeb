"""The console's HTTP side: the page (static files) and a JSON API that the page calls, each
route one request of the contract made with the caller's connection (see `access`).

    GET  /                                  the page (runs, one run, approvals, queues, schedules)
    GET  /api/whoami                        {user, login}
    GET  /api/runs?status=&agent=&queue=    runs.list, each run timed by its own events (see `_timed`)
    GET  /api/runs/{id}                     runs.get, timed the same way
    GET  /api/runs/{id}/events              the run's events from its first, live (server-sent events)
    GET  /api/runs/{id}/steps[?step=N]      runs.steps: its recorded steps (one step whole, with `step`)
    GET  /api/events                        every run's new events, live (server-sent events)
    POST /api/runs/{id}/approve|reject|cancel   runs.command.<id>.<action>
    POST /api/runs/{id}/fork {from_step}    runs.fork: the fork (`run`), which goes on from that step
    GET  /api/approvals                     tool calls waiting for a decision, from the waiting runs' events
    GET  /api/queues, POST /api/queues/{name}   queues.status, queues.configure
    GET  /api/schedules, POST /api/schedules, DELETE /api/schedules/{name}
    GET  /favicon.ico                       the icon (SVG), without login like the probes

Refusals come back as `{"error": {"type", "message"}}`: 403 for what the NATS user may not
do, 409 for a request an actor refused, 400 for bad input.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web

from actors.console.access import Login, LoginRefused, basic_credentials, is_loopback
from subjects.messages import RunInfo
from timestep.client import Client, RequestRefusedError
from timestep.errors import PermissionDeniedError, TimestepError, ValidationError

log = logging.getLogger("actors.console")

STATIC = Path(__file__).with_name("static")
SSE_PING_SECONDS = 15.0
#: The connection a request acts through, and the NATS user who logged in (None: open access).
CLIENT = web.RequestKey("timestep_client", Client)
USER = web.RequestKey("timestep_user", object)
_encoder = msgspec.json.Encoder()
#: A run of each of these statuses ended with the event of the same name.
_ENDED = ("completed", "failed", "cancelled")


class _When(msgspec.Struct):
    time: datetime


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=_encoder.encode(data), status=status, content_type="application/json")


def _error(status: int, kind: str, message: str) -> web.Response:
    return _json({"error": {"type": kind, "message": message}}, status)


class Console:
    """The console's routes. `client`: the connection every request uses (open access); or
    `login`: a connection per user, from HTTP Basic credentials (see `access`)."""

    def __init__(self, client: Client | None = None, *, login: Login | None = None) -> None:
        if (client is None) == (login is None):
            raise ValueError("give the console a client (open access) or a login (per-user access), one of them")
        self.client = client
        self.login = login

    @classmethod
    def for_host(cls, host: str, client: Client, *, url: str, login: bool = False) -> Console:
        """Open on a loopback address unless `login`; anywhere else, only with credentials."""
        if login or not is_loopback(host):
            return cls(login=Login(url, client.bus.settings))
        return cls(client)

    async def close(self) -> None:
        if self.login is not None:
            await self.login.close()

    def add_routes(self, app: web.Application) -> None:
        app.middlewares.append(self._access)
        r = app.router
        r.add_get("/", self._page)
        r.add_get("/favicon.ico", self._icon)
        r.add_static("/static/", STATIC, append_version=False)
        r.add_get("/api/whoami", self._whoami)
        r.add_get("/api/runs", self._runs)
        r.add_get("/api/runs/{id}", self._run)
        r.add_get("/api/runs/{id}/events", self._run_events)
        r.add_get("/api/runs/{id}/steps", self._run_steps)
        r.add_get("/api/events", self._events)
        r.add_post("/api/runs/{id}/{action:approve|reject|cancel}", self._control)
        r.add_post("/api/runs/{id}/fork", self._fork)
        r.add_get("/api/approvals", self._approvals)
        r.add_get("/api/queues", self._queues)
        r.add_post("/api/queues/{name}", self._configure_queue)
        r.add_get("/api/schedules", self._schedules)
        r.add_post("/api/schedules", self._create_schedule)
        r.add_delete("/api/schedules/{name}", self._delete_schedule)

    # --- access ------------------------------------------------------------------------

    @web.middleware
    async def _access(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if not (request.path == "/" or request.path.startswith(("/api/", "/static/"))):
            return await handler(request)  # /healthz, /readyz, /metrics: for probes, without login
        forged = _cross_site(request)
        if forged is not None:
            return _error(403, "CrossSiteRequest", forged)
        if self.login is None:
            request[CLIENT], request[USER] = self.client, None
        else:
            credentials = basic_credentials(request.headers.get("Authorization"))
            if credentials is None:
                return self._challenge("log in with your NATS user and password (viewer, client or admin)")
            try:
                request[CLIENT] = await self.login.client(*credentials)
            except LoginRefused as exc:
                return self._challenge(str(exc))
            request[USER] = credentials[0]
        try:
            return await handler(request)
        except PermissionDeniedError as exc:
            return _error(403, "PermissionDenied", str(exc))
        except RequestRefusedError as exc:
            return _error(409, exc.type, str(exc))
        except ValidationError as exc:
            return _error(400, "InvalidRequest", str(exc))
        except TimestepError as exc:
            return _error(502, type(exc).__name__, str(exc))

    @staticmethod
    def _challenge(message: str) -> web.Response:
        response = _error(401, "Unauthorized", message)
        response.headers["WWW-Authenticate"] = 'Basic realm="timestep console", charset="UTF-8"'
        return response

    # --- pages ---------------------------------------------------------------------------

    async def _page(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html")

    async def _icon(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "icon.svg", headers={"Content-Type": "image/svg+xml", "Cache-Control": "max-age=86400"})

    async def _whoami(self, request: web.Request) -> web.Response:
        return _json({"user": request[USER], "login": self.login is not None})

    # --- runs ----------------------------------------------------------------------------

    async def _runs(self, request: web.Request) -> web.Response:
        q = request.query
        limit = q.get("limit", "100")
        if not limit.isdigit():
            raise ValidationError("limit", f"{limit!r} is not a whole number", "give 1 to 1000")
        client: Client = request[CLIENT]
        runs = await client.list_runs(
            status=q.get("status") or None, agent=q.get("agent") or None, queue=q.get("queue") or None, limit=int(limit)
        )
        return _json({"runs": await asyncio.gather(*(_timed(client, run) for run in runs))})

    async def _run(self, request: web.Request) -> web.Response:
        client: Client = request[CLIENT]
        return _json({"run": await _timed(client, await client.get_run(request.match_info["id"]))})

    async def _run_steps(self, request: web.Request) -> web.Response:
        client: Client = request[CLIENT]
        step = request.query.get("step")
        if step is not None and not step.isdigit():
            raise ValidationError("step", f"{step!r} is not a step number", "give a whole number from 1")
        return _json({"steps": await client.steps(request.match_info["id"], int(step) if step else None)})

    async def _run_events(self, request: web.Request) -> web.StreamResponse:
        client: Client = request[CLIENT]
        return await self._relay(request, client.events(request.match_info["id"]))

    async def _events(self, request: web.Request) -> web.StreamResponse:
        client: Client = request[CLIENT]
        return await self._relay(request, client.events())

    async def _relay(self, request: web.Request, events: Any) -> web.StreamResponse:
        """Server-sent events: one `data:` line of the event's JSON per event, as it comes."""
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()

        async def pump() -> None:
            try:
                async with contextlib.aclosing(events) as stream:
                    async for event in stream:
                        await queue.put(b"data: " + _encoder.encode(event) + b"\n\n")
            except Exception as exc:
                log.warning("console: events stream ended (%s: %s)", type(exc).__name__, exc)
                message = {"type": "console_error", "error": {"type": type(exc).__name__, "message": str(exc)}}
                await queue.put(b"data: " + _encoder.encode(message) + b"\n\n")
            await queue.put(None)

        task = asyncio.create_task(pump())
        try:
            await response.write(b": connected\n\n")
            while True:
                try:
                    chunk = await asyncio.wait_for(queue.get(), SSE_PING_SECONDS)
                except TimeoutError:
                    chunk = b": ping\n\n"  # finds a browser that went away
                if chunk is None:
                    await response.write(b"event: end\ndata: {}\n\n")
                    break
                await response.write(chunk)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return response

    async def _control(self, request: web.Request) -> web.Response:
        client: Client = request[CLIENT]
        run_id, action = request.match_info["id"], request.match_info["action"]
        body = await _body(request)
        if action == "cancel":
            await client.cancel(run_id)
        elif action == "approve":
            await client.approve(
                run_id, _text(body, "call_id"), always=bool(body.get("always", False)),
                arguments=body.get("arguments") or None, decided_by=request[USER] or "console",
            )
        else:
            await client.reject(
                run_id, _text(body, "call_id"), body.get("message") or None, always=bool(body.get("always", False)),
                decided_by=request[USER] or "console",
            )
        return _json({"ok": True})

    async def _fork(self, request: web.Request) -> web.Response:
        body = await _body(request)
        fork = await request[CLIENT].fork(request.match_info["id"], body.get("from_step"), fork_id=body.get("fork_id") or None)
        return _json({"run": fork})

    async def _approvals(self, request: web.Request) -> web.Response:
        """The approvals inbox (`approvals.list`): pending calls, or with `?status=decided` the audit trail."""
        q = request.query
        records = await request[CLIENT].list_approvals(
            q.get("status") or "pending", agent=q.get("agent") or None, tool=q.get("tool") or None,
            queue=q.get("queue") or None, limit=int(q.get("limit", "200")),
        )
        return _json({"approvals": records})

    # --- queues and schedules ----------------------------------------------------------------

    async def _queues(self, request: web.Request) -> web.Response:
        return _json({"queues": await request[CLIENT].queue_status()})

    async def _configure_queue(self, request: web.Request) -> web.Response:
        body = await _body(request)
        policy = {k: body.get(k) for k in ("limit", "period_seconds", "concurrency", "tokens_per_period")}
        status = await request[CLIENT].configure_queue(request.match_info["name"], **{k: v for k, v in policy.items() if v not in (None, "")})
        return _json({"queue": status})

    async def _schedules(self, request: web.Request) -> web.Response:
        schedules = await request[CLIENT].list_schedules()
        return _json({"schedules": [{**msgspec.to_builtins(s), "next_tick": _next_tick(s.cron)} for s in schedules]})

    async def _create_schedule(self, request: web.Request) -> web.Response:
        body = await _body(request)
        run = {"agent": body.get("agent"), "input": body.get("input")}
        if body.get("queue"):
            run["queue"] = body["queue"]
        schedule = await request[CLIENT].create_schedule(_text(body, "name"), _text(body, "cron"), run)
        return _json({"schedule": schedule})

    async def _delete_schedule(self, request: web.Request) -> web.Response:
        return _json({"deleted": await request[CLIENT].delete_schedule(request.match_info["name"])})


async def _timed(client: Client, run: RunInfo) -> dict[str, Any]:
    """The run with `accepted_at`, `started_at`, `queued_seconds` (accepted to started) and
    `ran_seconds` (started to its end), from the times of its own events. The database's are no
    substitute: they count the time queued as running, and on SQLite before 3.42 (Python 3.11)
    DBOS keeps them in whole seconds."""
    end = run.status if run.status in _ENDED else None
    accepted, started, ended = await asyncio.gather(*(_event_time(client, run.id, kind) for kind in ("accepted", "started", end)))
    timed = msgspec.to_builtins(run)
    timed["accepted_at"] = accepted.timestamp() if accepted else None
    timed["started_at"] = started.timestamp() if started else None
    timed["queued_seconds"] = round((started - accepted).total_seconds(), 3) if started and accepted else None
    timed["ran_seconds"] = round((ended - started).total_seconds(), 3) if started and ended else None
    return timed


async def _event_time(client: Client, run_id: str, kind: str | None) -> datetime | None:
    """The time of the run's latest event of this type (a direct get from the events stream), or None."""
    data = await client.bus.stored_event(run_id, kind) if kind else None
    try:
        return msgspec.json.decode(data, type=_When).time if data else None
    except msgspec.DecodeError:
        return None


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json() if request.can_read_body else {}
    except ValueError:
        raise ValidationError("body", "is not JSON", "send a JSON object") from None
    if not isinstance(body, dict):
        raise ValidationError("body", "is not a JSON object", "send a JSON object")
    return body


def _text(body: dict[str, Any], field: str) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not value:
        raise ValidationError(field, "is missing", f"give {field}")
    return value


def _next_tick(cron: str) -> float | None:
    from croniter import croniter

    try:
        six = len(cron.split()) == 6
        return croniter(cron, datetime.now(timezone.utc), second_at_beginning=six).get_next(datetime).timestamp()
    except Exception:
        return None


#: The header the console's page sends with every request that acts. A page of another site cannot
#: send it (a form cannot set headers, and a script's cross-site request with it needs a CORS
#: preflight that this server never grants), so neither the browser's Basic credentials nor the
#: open access on 127.0.0.1 can be used by another site to approve, reject, cancel or configure.
ACTION_HEADER = "X-Timestep-Console"


def _cross_site(request: web.Request) -> str | None:
    """Why a request that acts is refused as possibly sent by another site, or None."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return None
    if request.headers.get(ACTION_HEADER) != "1":
        return f"a request that acts must carry the header {ACTION_HEADER}: 1 (the console's page sends it)"
    origin = request.headers.get("Origin")
    if origin and origin != "null":
        host = origin.split("://", 1)[-1]
        if host != request.host:
            return f"this request comes from {origin!r}, not from the console at {request.host!r}"
    return None


async def serve(console: Console, host: str, port: int) -> tuple[web.AppRunner, str]:
    """Serve the console alone (`timestep console`); returns the runner (to `cleanup()`) and the URL."""
    app = web.Application()
    console.add_routes(app)

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    bound = runner.addresses[0][1]
    shown = f"[{host}]" if ":" in host else host
    return runner, f"http://{shown}:{bound}"
