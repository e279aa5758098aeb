"""The `timestep` command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import gc
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from timestep.errors import TimestepError, ValidationError
from timestep.settings import SettingError


def _when(seconds: float | None) -> str:
    if not seconds:
        return "-"
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _status_row(w: Any) -> dict[str, Any]:
    return {
        "workflow_id": w.id,
        "status": w.status,
        "name": w.name,
        "queue": w.queue,
        "priority": w.priority,
        "executor": w.executor_id,
        "created_at": w.created_at,
        "updated_at": w.updated_at,
    }


async def _workflows(args: argparse.Namespace) -> int:
    from timestep.durable import launch

    admin = launch.admin()
    try:
        return await _workflow_action(admin, args)
    finally:
        admin.close()


async def _workflow_action(admin: Any, args: argparse.Namespace) -> int:
    if args.action == "list":
        rows = await admin.list_workflows(limit=args.limit, newest_first=True, status=args.status, load_input=False, load_output=False)
        if args.json:
            print(json.dumps([_status_row(w) for w in rows], indent=1))
            return 0
        print(f"{'WORKFLOW ID':<44} {'STATUS':<10} {'QUEUE':<14} {'CREATED (UTC)':<20} NAME")
        for w in rows:
            print(f"{w.id:<44} {w.status:<10} {(w.queue or '-'):<14} {_when(w.created_at):<20} {w.name}")
        return 0
    if args.workflow_id is None:
        print(f"timestep workflows {args.action}: give a WORKFLOW_ID", file=sys.stderr)
        return 2
    from subjects.ids import run_id_problem

    problem = run_id_problem(args.workflow_id)
    if problem is not None:
        print(f"error: workflow_id: {args.workflow_id!r} {problem}", file=sys.stderr)
        return 2
    if args.action == "show":
        status = await admin.status(args.workflow_id)
        if status is None:
            print(f"no workflow {args.workflow_id!r}", file=sys.stderr)
            return 1
        steps = await admin.steps(args.workflow_id)
        if args.json:
            row = _status_row(status)
            row["steps"] = [{"step": s.number, "name": s.name, "error": repr(s.error) if s.error else None} for s in steps]
            print(json.dumps(row, indent=1, default=str))
            return 0
        for key, value in _status_row(status).items():
            print(f"{key:<12} {_when(value) if key.endswith('_at') else value}")
        print("steps:")
        for s in steps:
            error = f"  error: {s.error!r}" if s.error else ""
            print(f"  {s.number:>3}  {s.name}{error}")
        return 0
    status = await admin.status(args.workflow_id)
    if status is None:
        print(f"error: no workflow {args.workflow_id!r}; `timestep workflows list` lists them", file=sys.stderr)
        return 1
    was = status.status
    if args.action == "cancel":
        if status.finished:
            print(f"error: workflow {args.workflow_id!r} already finished ({was}); there is nothing to cancel", file=sys.stderr)
            return 1
        await admin.cancel(args.workflow_id)
        print(f"cancelled {args.workflow_id} (it was {was})")
        return 0
    if args.action == "resume":
        if was == "completed":
            print(f"error: workflow {args.workflow_id!r} already completed; there is nothing to resume", file=sys.stderr)
            return 1
        await admin.resume(args.workflow_id)
        print(f"resumed {args.workflow_id} (it was {was})")
        return 0
    return 2



@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """The garbage collector off while a command imports the Agents SDK, DBOS and the agents: their classes
    and pydantic models (about 240,000 objects, few of them garbage) set off about 570 of its passes. Measured
    here: the imports of `timestep up` took 1.9 s of CPU instead of 2.3 s, and start-up until it is ready
    2.40 s instead of 2.58 s (five starts each). Back on once they are imported (a standby then waits, maybe
    for hours)."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


def _freeze_start_up() -> None:
    """Take what start-up made (the modules of the Agents SDK, DBOS, SQLAlchemy and nats-py, the
    agents: about 240,000 objects) out of the garbage collector's full passes. They live as long
    as the process, and a full pass over them took about 200 ms while every run waited: the
    longest delay of streamed text at 500 streams (W5, SQLite) went from 205-223 ms to 50-125 ms."""
    gc.collect()
    gc.freeze()


async def _up(args: argparse.Namespace) -> int:
    import dataclasses

    with _collector_paused():
        from actors.system import ROLES, System, import_agent_modules
        from timestep.settings import Settings

        from actors import workers as agent_workers

        import_agent_modules(args.agents or [])
    roles = set(args.role or ROLES)
    settings = Settings.from_env()
    if args.http_port is not None:
        settings = dataclasses.replace(settings, http_port=args.http_port)
    if args.console:
        settings = dataclasses.replace(settings, console=True)
    worker = args.worker  # set in the processes a `timestep up --workers N` starts (actors.workers)
    if worker is not None or ("agent" not in roles and args.workers is None):
        count = 1
    else:
        count = agent_workers.check_count(args.workers or settings.workers or agent_workers.default_count(), roles)
    system = System(
        roles, settings=settings, standby=args.standby or worker is not None, workers=count, agent_modules=args.agents or [], worker=worker,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signalled: list[float] = []

    def on_signal() -> None:
        signalled.append(time.monotonic())
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    # A standby waits inside start(); a signal meanwhile stops it there.
    starting, stopping = asyncio.ensure_future(system.start()), asyncio.ensure_future(stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        await system.stop()
        return 0
    stopping.cancel()
    try:
        starting.result()
    except BaseException:
        await system.stop()
        raise
    from timestep.durable import launch
    from timestep.durable.registry import registered_agents

    http = f"; http: {system.http.url}" if system.http is not None else ""
    if system.console is not None:
        http += f"; console: {system.http.url}/"
    from timestep.bus.connection import redact_url

    _freeze_start_up()
    if worker is not None:
        print(agent_workers.READY, flush=True)  # to worker 0, which prints its own line for all
    else:
        many = f"; workers: {count}" if count > 1 else ""
        print(f"timestep up: NATS {redact_url(system.url)}; roles: {', '.join(sorted(roles))}; agents: {', '.join(registered_agents()) or 'none'}{many}{http}", flush=True)
    # A permission the user lacks for the actors' own work (see timestep.bus.Refusals) would otherwise
    # be retried or redelivered forever.
    refused = asyncio.ensure_future(system.bus.refusals.wait_fatal())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({refused, stopping}, return_when=asyncio.FIRST_COMPLETED)
    for waiting in (refused, stopping):
        waiting.cancel()
    first = signalled[0] if signalled else time.monotonic()

    def hurry() -> None:
        # A second signal: stop without waiting for steps. Not within a second of the first, in a worker:
        # a deploy that signals every process of the service signals it once, and worker 0 once more.
        if worker is not None and time.monotonic() - first < 1.0:
            return
        system.hurry()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, hurry)
    if worker is None:
        print(f"timestep: stopping (steps under way get up to {settings.stop_grace_seconds:g} s to finish; signal again to stop now)", flush=True)
    await system.stop()
    if refused.done() and not refused.cancelled():
        raise refused.result()
    if launch.steps_cut_off():
        _exit_without_waiting_for_tools(launch.steps_cut_off())
    return 0


def _exit_without_waiting_for_tools(cut_off: int) -> None:
    """The stop cut steps off: a plain `def` tool among them still runs in its thread, which
    nothing can cancel. Python would wait for it at exit (a deploy's SIGKILL may come first), and
    it would finish here unrecorded, then run again on recovery: its side effect twice. Exit now,
    the tool stopped mid-way as by SIGKILL; it runs again once on recovery."""
    import logging

    print(f"timestep: exiting without waiting for the {cut_off} step(s) cut off", flush=True)
    logging.shutdown()
    sys.stderr.flush()
    os._exit(0)


async def _console(args: argparse.Namespace) -> int:
    from actors.console import Console, serve
    from timestep.client import Client, resolve_url
    from timestep.settings import Settings

    settings = Settings.from_env()
    client = await Client.connect(args.nats)
    console = Console.for_host(args.host, client, url=args.nats or resolve_url(settings), login=args.login or settings.console_login)
    try:
        runner, url = await serve(console, args.host, args.port)
    except OSError as exc:
        await console.close()
        await client.close()
        flag = "--host" if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL else "--port"
        print(f"error: {flag}: cannot listen on {args.host}:{args.port} ({exc.strerror or exc}); give another", file=sys.stderr)
        return 2
    print(f"timestep console: {url}/ ({'login with a NATS user' if console.login else 'open on this machine'})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await console.close()
        await client.close()
    return 0


async def _client(args: argparse.Namespace) -> Any:
    from timestep.client import Client

    return await Client.connect()


#: How the command line names the fields of the contract, by command (as its usage shows them): a
#: refusal names the flag or argument.
FLAGS = {
    "run": {"id": "--id", "session_id": "--session", "queue": "--queue", "priority": "--priority",
            "timeout_seconds": "--timeout", "input": "text", "max_tokens": "--max-tokens", "context": "--context"},
    "queues": {"limit": "--limit", "period_seconds": "--period", "period": "--period",
               "concurrency": "--concurrency", "tokens_per_period": "--tokens", "max_tokens_per_run": "--max-tokens-per-run"},
    "schedules": {"crontab": "cron", "request.agent": "agent", "request.input": "text", "request.queue": "--queue"},
    "reject": {"message": "--message", "decided_by": "--by"},
    "approve": {"arguments": "--arguments", "decided_by": "--by"},
    "fork": {"from_step": "--from-step", "fork_id": "--id", "id": "run_id"},
    "replay": {"live_tools": "--live-tools", "ids": "--ids", "since": "--since", "agent": "--agent"},
    "approvals": {"older_than_seconds": "--older-than", "newer_than_seconds": "--newer-than", "limit": "--limit",
                  "run_id": "--run", "agent": "--agent", "tool": "--tool", "queue": "--queue"},
}


def as_given(command: str, exc: BaseException) -> str:
    """The error's message, with the contract field it names (`period_seconds: ...`) as this
    command takes it (`--period: ...`)."""
    message, field = str(exc), getattr(exc, "field", None)
    flag = FLAGS.get(command, {}).get(field) if isinstance(field, str) else None
    return f"{flag}: {message.removeprefix(f'{field}: ')}" if flag and message.startswith(f"{field}: ") else message


async def _print_events(
    client: Any, run_id: str | None, as_json: bool, stop_on_interrupt: bool = False, events: Any = None
) -> int:
    """Print events as they come; the exit code says how the run ended: 0 completed, 1 failed or
    cancelled (by request or its timeout), 2 rejected, 3 waiting for approval (with `stop_on_interrupt`)."""
    from subjects.events import Cancelled, Failed, Interrupted, Rejected
    from actors.cli.render import describe

    code = 0
    # Closed on the way out, whatever happens (a closed pipe, say): its subscription ends before the connection.
    async with contextlib.aclosing(events or client.events(run_id)) as events:
        async for event in events:
            print(encode_json(event) if as_json else describe(event, with_run=run_id is None), flush=True)
            if run_id is None:
                continue
            if isinstance(event, Failed):
                print(f"run {event.run_id} failed: {event.error.type}: {event.error.message}", file=sys.stderr)
                code = 1
            elif isinstance(event, Cancelled):
                print(f"run {event.run_id} was cancelled (by request or by its timeout)", file=sys.stderr)
                code = 1
            elif isinstance(event, Rejected):
                code = 2
            if stop_on_interrupt and isinstance(event, Interrupted):
                if not as_json:
                    for a in event.approvals:
                        print(f"waiting for approval: timestep approve {event.run_id} {a.call_id}   (or: timestep reject ...)")
                return 3
    return code


def encode_json(value: Any) -> str:
    import msgspec

    return msgspec.json.encode(value).decode()


async def _run(args: argparse.Namespace) -> int:
    from timestep.client import RunRejectedError

    client = await _client(args)
    try:
        try:
            run = await client.submit(
                args.agent, args.text, id=args.id, session_id=args.session, queue=args.queue,
                priority=args.priority, stream=args.stream, timeout_seconds=args.timeout, max_tokens=args.max_tokens,
                context=args.context,
            )
        except RunRejectedError as exc:
            print(f"rejected: {as_given('run', exc)}", file=sys.stderr)
            return 2
        if run.reused:
            print(f"run {run.run_id}: this id was used before; showing that run (the text and options given now were not used)", file=sys.stderr)
        elif run.accepted is None:
            print(f"run {run.run_id}: no governor answered; the request is stored and runs when one is up", file=sys.stderr)
        else:
            print(f"run {run.run_id}", file=sys.stderr)
        return await _print_events(client, run.run_id, args.json, stop_on_interrupt=not args.wait)
    finally:
        await client.close()


async def _fork(args: argparse.Namespace) -> int:
    """Fork a finished run from one of its steps, in the deployment (`runs.fork`: an agent process
    runs the fork with the agent as it registers it now), then follow the fork's events as `run` does."""
    client = await _client(args)
    try:
        fork = await client.fork(args.run_id, args.from_step, fork_id=args.id)
        print(f"run {fork.id}: a fork of run {args.run_id} from its step {args.from_step}", file=sys.stderr)
        return await _print_events(client, fork.id, args.json, stop_on_interrupt=not args.wait)
    finally:
        await client.close()


async def _replay(args: argparse.Namespace) -> int:
    """Replay recorded runs of an agent against the agent as its modules register it now, from the
    database (as `workflows` reads it: nothing is taken over, written or published). Exit code: 0
    when no run changed beyond `--allow`, 1 when one did or a replay failed, 2 refused."""
    with _collector_paused():
        from actors.system import import_agent_modules
        from timestep.durable import launch, registry, replay

        import_agent_modules(args.agents or [])
    agent = registry.get_agent(args.agent)
    since = None
    if args.since is not None:
        since = _date_arg(args.since)
    admin = launch.admin()
    try:
        reports = await replay.replay(
            admin, agent, limit=args.runs, since=since, ids=args.ids, model=args.model, live_tools=args.live_tools or (),
        )
    finally:
        admin.close()
    allowed = set(args.allow or ())
    beyond = [r for r in reports if r.status == "failed" or set(r.changes) - allowed]
    if args.json:
        print(json.dumps({"runs": [r.as_dict() for r in reports], "changed": [r.run_id for r in beyond]}, indent=1, default=str))
        return 1 if beyond else 0
    print(f"{'RUN ID':<44} {'RESULT':<8} {'OUTPUT':<9} {'TOOL CALLS':<24} TOKENS")
    for r in reports:
        calls = f"+{len(r.added)} -{len(r.removed)} ~{len(r.other_arguments)}" if r.status in ("same", "changed", "failed") else "-"
        output = "-" if r.status == "skipped" else ("changed" if "output" in r.changes else "same")
        print(f"{r.run_id:<44} {r.status:<8} {output:<9} {calls:<24} {r.tokens_before} -> {r.tokens_after}")
        for change in r.added:
            print(f"    + {change.tool}({change.after})  not in the recording: not run")
        for change in r.removed:
            print(f"    - {change.tool}({change.before})  recorded, not called now")
        for change in r.other_arguments:
            print(f"    ~ {change.tool}: recorded {change.before}, now {change.after}")
        if "output" in r.changes:
            print(f"    output: {_shorten(r.output_before)} -> {_shorten(r.output_after)}")
        if r.error:
            print(f"    {r.status}: {r.error}")
    counts = {s: sum(r.status == s for r in reports) for s in ("same", "changed", "failed", "skipped")}
    print(f"{len(reports)} runs replayed against agent {agent.name!r}: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    if beyond:
        print(f"{len(beyond)} changed beyond --allow ({', '.join(sorted(allowed)) or 'nothing'}): " + ", ".join(r.run_id for r in beyond), file=sys.stderr)
    return 1 if beyond else 0


def _shorten(value: Any, width: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return repr(text if len(text) <= width else text[: width - 3] + "...")


def _date_arg(value: str) -> float:
    """`--since`: an ISO date or time (UTC unless it says), or a number of hours back (`24h`)."""
    if value.endswith("h") and value[:-1].replace(".", "", 1).isdigit():
        return time.time() - float(value[:-1]) * 3600
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ValidationError("since", f"{value!r} is not a date", "give an ISO date or time (2026-12-01, 2026-12-01T09:00) or hours back (24h)") from None
    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()


async def _events(args: argparse.Namespace) -> int:
    client = await _client(args)
    try:
        events = client.events(args.run_id)  # a malformed run id is refused here, before any wait
        if args.run_id is not None and await client.bus.stored_event(args.run_id, "*") is None:
            # A mistyped id would otherwise wait in silence; a run submitted a moment later is followed all the same.
            print(f"waiting for run {args.run_id}, which has no events yet (Ctrl-C to stop)", file=sys.stderr, flush=True)
        return await _print_events(client, args.run_id, args.json, events=events)
    finally:
        await client.close()


async def _control(args: argparse.Namespace) -> int:
    from timestep.client import RequestRefusedError

    client = await _client(args)
    wait = not args.no_wait
    try:
        try:
            if args.command == "approve":
                await client.approve(
                    args.run_id, args.call_id, always=args.always, arguments=args.arguments, decided_by=args.by, wait=wait
                )
                done = f"approved {args.call_id} of run {args.run_id}" + (" with the arguments given" if args.arguments else "")
            elif args.command == "reject":
                await client.reject(args.run_id, args.call_id, args.message, always=args.always, decided_by=args.by, wait=wait)
                done = f"rejected {args.call_id} of run {args.run_id}; the model is told why"
            else:
                await client.cancel(args.run_id, wait=wait)
                done = f"cancelled run {args.run_id}"
        except RequestRefusedError as exc:
            print(f"error: {as_given(args.command, exc)}", file=sys.stderr)
            return 1
        if not wait:
            done = f"{args.command} for run {args.run_id} stored; an agent actor acts on it (refusals: `timestep dead`)"
        print(done)
        return 0
    finally:
        await client.close()


async def _approvals(args: argparse.Namespace) -> int:
    """The inbox (pending approvals across runs), or with --decided the audit trail."""
    from timestep.client import RequestRefusedError

    status = "all" if args.all else "decided" if args.decided else "pending"
    client = await _client(args)
    try:
        try:
            records = await client.list_approvals(
                status, run_id=args.run, agent=args.agent, tool=args.tool, queue=args.queue,
                older_than_seconds=args.older_than, newer_than_seconds=args.newer_than, limit=args.limit,
            )
        except RequestRefusedError as exc:
            print(f"error: {as_given('approvals', exc)}", file=sys.stderr)
            return 1
        if args.json:
            print(encode_json(records))
            return 0
        if status == "pending":
            print(f"{'REQUESTED (UTC)':<20} {'RUN':<36} {'CALL':<16} {'AGENT':<16} {'TOOL':<16} {'DEADLINE (UTC)':<20} ARGUMENTS")
            for a in records:
                print(f"{_when(a.requested_at):<20} {a.run_id:<36} {a.call_id:<16} {a.agent:<16} {a.tool:<16} "
                      f"{_when(a.deadline) if a.deadline else '-':<20} {a.arguments}")
        else:
            print(f"{'DECIDED (UTC)':<20} {'STATUS':<9} {'BY':<12} {'RUN':<36} {'CALL':<16} {'TOOL':<16} DETAIL")
            for a in records:
                detail = a.approved_arguments and f"arguments={a.approved_arguments}" or a.message or ""
                if a.always:
                    detail = f"always {detail}".strip()
                when = _when(a.decided_at) if a.decided_at else "-"
                print(f"{when:<20} {a.status:<9} {(a.decided_by or '-'):<12} {a.run_id:<36} {a.call_id:<16} {a.tool:<16} {detail}")
        return 0
    finally:
        await client.close()


async def _steps(args: argparse.Namespace) -> int:
    """A run's recorded steps: one line each (number, kind, name, status, duration, what it recorded),
    or with --step N that step's whole value."""
    from timestep.client import RequestRefusedError

    client = await _client(args)
    try:
        try:
            steps = await client.steps(args.run_id, args.step)
        except RequestRefusedError as exc:
            print(f"error: {as_given('steps', exc)}", file=sys.stderr)
            return 1
        if args.json or args.step is not None:
            print(encode_json(steps if args.step is None else steps[0]))
            return 0
        print(f"{'#':>4} {'KIND':<10} {'NAME':<28} {'STATUS':<10} {'TOOK':>8}  RECORDED")
        for s in steps:
            took = f"{(s.ended_at - s.started_at) * 1000:.0f} ms" if s.started_at and s.ended_at else "-"
            status = s.status if s.attempt is None or s.attempt == 1 and s.status == "completed" else f"{s.status} #{s.attempt}"
            value = s.value.get("output", s.value) if isinstance(s.value, dict) and s.kind == "model" else s.value  # a model call: its answer
            shown = f"{s.error.type}: {s.error.message}" if s.error else "" if value is None else encode_json(value) if not s.cut else value
            shown = shown if len(shown) <= 100 else shown[:99] + "…"
            print(f"{s.number:>4} {s.kind:<10} {s.name[:28]:<28} {status:<10} {took:>8}  {shown}")
        return 0
    finally:
        await client.close()


async def _dead(args: argparse.Namespace) -> int:
    client = await _client(args)
    try:
        letters = await client.bus.dead_letters(args.limit)
        if args.json:
            print(encode_json(letters))
            return 0
        print(f"{'TIME (UTC)':<20} {'ERROR':<16} {'SUBJECT':<48} REASON")
        for d in letters:
            print(f"{_when(d.time):<20} {d.error.type:<16} {d.subject:<48} {d.reason}")
        return 0
    finally:
        await client.close()


def _print_schedules(schedules: list[Any]) -> None:
    from croniter import CroniterError

    from timestep.durable.schedules import next_time

    now = datetime.now(timezone.utc)
    print(f"{'NAME':<30} {'AGENT':<20} {'CRON':<20} {'TZ':<4} {'QUEUE':<16} {'FIRED BY':<9} {'NEXT TICK (UTC)':<20} INPUT")
    for s in schedules:
        try:
            tick = next_time(s.cron, now).strftime("%Y-%m-%d %H:%M:%S")
        except (CroniterError, ValueError):
            tick = "never"
        text = s.request.input if isinstance(s.request.input, str) else "[items]"
        by = "library" if s.origin == "library" else "scheduler"
        print(f"{s.name:<30} {s.request.agent:<20} {s.cron:<20} {'UTC':<4} {(s.request.queue or '-'):<16} {by:<9} {tick:<20} {text}")


async def _schedules(args: argparse.Namespace) -> int:
    client = await _client(args)
    try:
        if args.action == "create":
            request = {"agent": args.agent, "input": args.text}
            if args.queue:
                request["queue"] = args.queue
            schedule = await client.create_schedule(args.name, args.cron, request)
            print(encode_json(schedule) if args.json else f"schedule {schedule.name}: {schedule.cron} (UTC) -> {args.agent}")
        elif args.action == "delete":
            deleted = await client.delete_schedule(args.name)
            if args.json:
                print(encode_json({"deleted": deleted}))
            elif deleted:
                print("deleted")
            else:
                print(f"error: no schedule {args.name!r}; `timestep schedules list` lists them", file=sys.stderr)
            return 0 if deleted else 1
        else:
            schedules = await client.list_schedules()
            if args.json:
                print(encode_json(schedules))
            elif not schedules:
                print("no schedules")
            else:
                _print_schedules(schedules)
        return 0
    finally:
        await client.close()


async def _queues(args: argparse.Namespace) -> int:
    from timestep.client import RequestRefusedError

    client = await _client(args)
    try:
        if args.action == "delete":
            try:
                deleted = await client.delete_queue(args.name)
            except RequestRefusedError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            if args.json:
                print(encode_json({"deleted": deleted}))
            elif deleted:
                print(f"deleted queue {args.name}")
            else:
                print(f"error: no queue {args.name!r}; `timestep queues status` lists them", file=sys.stderr)
            return 0 if deleted else 1
        if args.action == "configure":
            statuses = [await client.configure_queue(
                args.name, limit=args.limit, period_seconds=args.period, concurrency=args.concurrency,
                tokens_per_period=args.tokens, max_tokens_per_run=args.max_tokens_per_run,
            )]
        else:
            statuses = await client.queue_status(args.name)
        if args.json:
            print(encode_json(statuses))
            return 0
        print(f"{'QUEUE':<24} {'LIMIT':<14} {'CONCURRENCY':<12} {'TOKENS':<16} {'WAITING':>8} {'RUNNING':>8} {'IN WINDOW':>10}")
        for q in statuses:
            limit = f"{q.limit}/{q.period_seconds:g}s" if q.limit else "-"
            tokens = f"{q.tokens_in_window}/{q.tokens_per_period}" if q.tokens_per_period else "-"
            print(f"{q.name:<24} {limit:<14} {str(q.concurrency or '-'):<12} {tokens:<16} {q.depth:>8} {q.running:>8} {q.admitted_in_window:>10}")
        for q in statuses:
            if q.max_tokens_per_run:
                print(f"{q.name}: each run may use {q.max_tokens_per_run} model tokens unless it sets --max-tokens")
            if q.paused_until is not None:
                print(f"{q.name}: paused until {q.paused_until.isoformat(timespec='seconds')}: {q.paused_reason}")
        return 0
    finally:
        await client.close()


async def _check(args: argparse.Namespace) -> int:
    from actors.cli.check import check

    return await check(args)


WORKFLOW_STATUSES = ("queued", "running", "completed", "failed", "cancelled")  # engine.STATUSES


def _os_user() -> str | None:
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # no user name in this environment: the decision says nobody
        return None


def _port_arg(value: str) -> int:
    if not value.isdigit() or int(value) > 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port; give a number from 0 (any free port) to 65535")
    return int(value)


def _nats_url_arg(value: str) -> str:
    from urllib.parse import urlsplit

    scheme = urlsplit(value).scheme if "://" in value else "nats"
    if scheme not in ("nats", "tls", "ws", "wss") or not value.partition("://")[2].strip("/"):
        raise argparse.ArgumentTypeError(f"{value!r} is not a NATS URL; give one such as nats://127.0.0.1:4222 (nats, tls, ws or wss)")
    return value


def _json_object(value: str, what: str, example: str) -> dict:
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise argparse.ArgumentTypeError(f"{value!r} is not a JSON object; pass {what} as one, e.g. '{example}'")
    return parsed


def _json_object_arg(value: str) -> str:
    _json_object(value, "the tool's arguments", '{"to": "ada@example.com"}')
    return value


def _context_arg(value: str) -> dict:
    return _json_object(value, "the run's context", '{"user": "ada"}')


def _seconds_arg(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not seconds > 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds; give one above 0, e.g. 30")
    return seconds


def _count_arg(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of at least 1")
    return int(value)


class _Parser(argparse.ArgumentParser):
    """Bad usage in one line: the argument, what is wrong, and where the help is (not the usage block)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="timestep", description="Durable OpenAI Agents SDK runs on DBOS, over NATS.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the demo: the whole system, runs submitted over the bus")
    demo.add_argument("--library", action="store_true", help="the library demo instead: durable runs in this process, no NATS")

    up = sub.add_parser("up", help="run the actors (embedded NATS when NATS_URL is unset)")
    up.add_argument("--agents", nargs="+", metavar="MODULE", help="modules to import that register agents")
    up.add_argument("--role", action="append", choices=["agent", "governor", "scheduler"], help="run only these roles (repeatable); default all")
    up.add_argument(
        "--workers", type=_count_arg, metavar="N",
        help="agent processes to run, this one included, sharing its NATS, database, governor and scheduler "
        "(default: TIMESTEP_WORKERS, else one per core; 1: this process alone)",
    )
    up.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # the number of a worker `--workers` started
    up.add_argument(
        "--standby", action="store_true",
        help="when another live process holds TIMESTEP_EXECUTOR_ID, wait (imported and connected) and take over its runs when it stops",
    )
    up.add_argument(
        "--http-port", type=_port_arg, metavar="N",
        help="serve /healthz, /readyz and /metrics on this port (0: a free one); overrides TIMESTEP_HTTP_PORT",
    )
    up.add_argument(
        "--console", action="store_true",
        help="also serve the web console on that HTTP server (a free port when none is set; open on 127.0.0.1, "
        "a NATS login anywhere else); as TIMESTEP_CONSOLE=1",
    )

    console = sub.add_parser(
        "console", help="serve the web console against any deployment",
        description="Runs, one run's timeline, approvals, queues and schedules, through the subject contract. "
        "Open on 127.0.0.1; on any other address (or with --login) the browser logs in with a NATS user and password.",
    )
    console.add_argument("--nats", type=_nats_url_arg, metavar="URL", help="the NATS URL (default: NATS_URL, else the `timestep up` of TIMESTEP_HOME)")
    console.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    console.add_argument("--port", type=_port_arg, default=8080, metavar="N", help="port (default 8080; 0: a free one)")
    console.add_argument("--login", action="store_true", help="ask for a NATS user and password even on 127.0.0.1 (as TIMESTEP_CONSOLE_LOGIN=1)")

    run = sub.add_parser(
        "run", help="submit a run and print its events as they arrive",
        description="Exit code: 0 completed, 1 failed or cancelled (by request or --timeout), 2 rejected, 3 waiting for approval.",
    )
    run.add_argument("agent")
    run.add_argument("text")
    run.add_argument("--id", help="the run id (default: a new one)")
    run.add_argument("--session", help="session id (conversation memory)")
    run.add_argument("--queue")
    run.add_argument("--priority", type=int)
    run.add_argument("--stream", action="store_true", help="stream text deltas")
    run.add_argument("--timeout", type=_seconds_arg, metavar="S", help="cancel the run after S seconds (timeout_seconds)")
    run.add_argument("--max-tokens", type=int, help="the run's model-token budget (max_tokens)")
    run.add_argument("--context", type=_context_arg, metavar="JSON", help="the run context its tools see as ctx.context (a JSON object)")
    run.add_argument("--wait", action="store_true", help="keep following after an interruption")
    run.add_argument("--json", action="store_true")

    events = sub.add_parser("events", help="follow events (one run from its start, or every run's new ones)")
    events.add_argument("run_id", nargs="?")
    events.add_argument("--json", action="store_true")

    no_wait = "only store it: an agent actor acts on it when one runs (refusals: `timestep dead`)"
    approve = sub.add_parser("approve", help="approve a tool call of an interrupted run (exit 1 when refused)")
    approve.add_argument("run_id")
    approve.add_argument("call_id")
    approve.add_argument("--always", action="store_true", help="approve this tool for the rest of the run")
    approve.add_argument("--arguments", type=_json_object_arg, metavar="JSON", help="run the tool with these arguments (a JSON object) instead of the model's")
    approve.add_argument("--by", default=_os_user(), help="who decides (default: the OS user; the NATS user where the server names it)")
    approve.add_argument("--no-wait", action="store_true", help=no_wait)
    reject = sub.add_parser("reject", help="reject a tool call of an interrupted run (exit 1 when refused)")
    reject.add_argument("run_id")
    reject.add_argument("call_id")
    reject.add_argument("--message", help="what the model is told")
    reject.add_argument("--always", action="store_true", help="reject this tool for the rest of the run")
    reject.add_argument("--by", default=_os_user(), help="who decides (default: the OS user; the NATS user where the server names it)")
    reject.add_argument("--no-wait", action="store_true", help=no_wait)
    approvals = sub.add_parser(
        "approvals", help="the approvals inbox: tool calls waiting for a decision, across runs (--decided: the audit trail)",
        description="Exit code: 0 listed (also when none), 1 refused, 2 bad usage or no server.",
    )
    shown = approvals.add_mutually_exclusive_group()
    shown.add_argument("--decided", action="store_true", help="decided ones instead: approved, rejected or expired, who decided and when")
    shown.add_argument("--all", action="store_true", help="pending and decided")
    approvals.add_argument("--run", metavar="RUN_ID", help="only this run's")
    approvals.add_argument("--agent")
    approvals.add_argument("--tool")
    approvals.add_argument("--queue")
    approvals.add_argument("--older-than", type=_seconds_arg, metavar="S", help="requested at least S seconds ago")
    approvals.add_argument("--newer-than", type=_seconds_arg, metavar="S", help="requested at most S seconds ago")
    approvals.add_argument("--limit", type=int, default=100, help="at most N, newest first (default 100)")
    approvals.add_argument("--json", action="store_true")
    fork = sub.add_parser(
        "fork", help="run a finished run again from one of its steps, with the agent as deployed now",
        description="The steps before --from-step come from the record: no model or tool call before it runs again. "
        "Exit code: as `run` (0 completed, 1 failed or cancelled, 3 stopped at an interruption); 2 refused or bad usage.",
    )
    fork.add_argument("run_id")
    fork.add_argument("--from-step", type=_count_arg, required=True, metavar="N", help="the step to run from (`timestep steps RUN_ID` numbers them)")
    fork.add_argument("--id", help="the fork's run id (default: RUN_ID-fork-<random>)")
    fork.add_argument("--wait", action="store_true", help="keep following past an interruption")
    fork.add_argument("--json", action="store_true")
    replay = sub.add_parser(
        "replay", help="replay recorded runs of an agent against the agent as registered now, and say what changed",
        description="Each completed run of AGENT runs again from its input against the agent its modules (--agents) register now. "
        "Nothing is written, published or queued. The model is called afresh; a tool call whose tool and arguments match the "
        "recorded run's gets the recorded output, and no tool runs (a call not in the recording is answered so, unless its tool "
        "is in --live-tools). Exit code: 0 no run changed beyond --allow, 1 one did (or a replay failed), 2 refused or bad usage.",
    )
    replay.add_argument("--agent", required=True, help="the agent's name")
    replay.add_argument("--agents", nargs="+", metavar="MODULE", help="modules to import that register agents (as `timestep up --agents`)")
    which = replay.add_mutually_exclusive_group()
    which.add_argument("--runs", type=_count_arg, default=20, metavar="N", help="the newest N completed runs (default 20)")
    which.add_argument("--since", metavar="DATE", help="the completed runs created since DATE (ISO, UTC unless it says) or hours back (24h)")
    which.add_argument("--ids", nargs="+", metavar="RUN_ID", help="these runs")
    replay.add_argument("--model", help="call this model instead of the agent's (through the configured provider)")
    replay.add_argument("--live-tools", nargs="+", metavar="TOOL", help="tools safe to run again: a call of one not in the recording runs")
    replay.add_argument("--allow", nargs="+", choices=("output", "tools"), help="changes that do not fail the check (exit 0)")
    replay.add_argument("--json", action="store_true")
    steps = sub.add_parser(
        "steps", help="a run's recorded steps: model and tool calls, guardrails, waits, with what each recorded",
        description="Exit code: 0 listed, 1 refused (no such run or step), 2 bad usage or no server.",
    )
    steps.add_argument("run_id")
    steps.add_argument("--step", type=_count_arg, metavar="N", help="only step N, its whole value (JSON)")
    steps.add_argument("--json", action="store_true")
    cancel = sub.add_parser("cancel", help="cancel a run (exit 1 when refused)")
    cancel.add_argument("run_id")
    cancel.add_argument("--no-wait", action="store_true", help=no_wait)

    dead = sub.add_parser("dead", help="list dead letters: messages that could not be processed, and why")
    dead.add_argument("--limit", type=_count_arg, default=50, help="the newest N (default 50)")
    dead.add_argument("--json", action="store_true")

    schedules = sub.add_parser(
        "schedules", help="cron schedules of runs (times in UTC)",
        description="create NAME CRON AGENT TEXT | list | delete NAME. The cron is read in UTC, on every machine: "
        "'0 9 * * *' fires at 09:00 UTC.",
    )
    schedules.add_argument("action", choices=["create", "list", "delete"])
    schedules.add_argument("name", nargs="?")
    schedules.add_argument("cron", nargs="?", help="in UTC: 5 fields (minute hour day month weekday), or 6 with seconds first")
    schedules.add_argument("agent", nargs="?")
    schedules.add_argument("text", nargs="?")
    schedules.add_argument("--queue")
    schedules.add_argument("--json", action="store_true")

    queues = sub.add_parser(
        "queues", help="queue policies and status",
        description="configure NAME [options] | status [NAME] | delete NAME (refused, exit code 1, while runs wait or run on it)",
    )
    queues.add_argument("action", choices=["configure", "status", "delete"])
    queues.add_argument("name", nargs="?")
    queues.add_argument("--limit", type=int, help="runs per period")
    queues.add_argument("--period", type=_seconds_arg, metavar="S", help="the rate limit's window, in seconds")
    queues.add_argument("--concurrency", type=int)
    queues.add_argument("--tokens", type=int, help="model tokens per period")
    queues.add_argument("--max-tokens-per-run", type=int, help="token budget of each run that sets none")
    queues.add_argument("--json", action="store_true")
    check = sub.add_parser(
        "check", help="run the subject contract against a running deployment: PASS or FAIL per line",
        description="Submits by each of the three ways, follows events, replays, cancels, uses a queue and a schedule, "
        "and sends a malformed request, all against AGENT. Exit code: 0 every check passed, 1 one failed, 2 bad usage or no server.",
    )
    check.add_argument("url", nargs="?", type=_nats_url_arg, help="the NATS URL (default: NATS_URL, else the `timestep up` of TIMESTEP_HOME)")
    check.add_argument("--agent", required=True, help="a hosted agent to run the checks' runs on")
    check.add_argument("--input", default="hello", help="the runs' input: text the agent completes without approval (default 'hello')")
    check.add_argument("--timeout", type=_seconds_arg, default=30.0, help="seconds each check waits (default 30)")
    check.add_argument("--json", action="store_true", help="one JSON object per check")
    workflows = sub.add_parser("workflows", help="list, show, cancel or resume workflows (runs)")
    workflows.add_argument("action", choices=["list", "show", "cancel", "resume"])
    workflows.add_argument("workflow_id", nargs="?")
    workflows.add_argument("--status", choices=WORKFLOW_STATUSES, metavar="STATUS", help=f"list only this status ({', '.join(WORKFLOW_STATUSES)})")
    workflows.add_argument("--limit", type=_count_arg, default=50, help="the newest N (default 50)")
    workflows.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        code = _main(argv)
        sys.stdout.flush()  # here, where a closed pipe can be handled, not at exit
        return code
    except BrokenPipeError:
        # The reader went away (`timestep ... | head`): stop quietly, and keep Python from
        # complaining while it flushes stdout on the way out.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "schedules" and args.action != "list" and not args.name:
        print("timestep schedules create|delete: give a NAME", file=sys.stderr)
        return 2
    if args.command == "schedules" and args.action == "create":
        missing = next((n for n, v in (("CRON", args.cron), ("AGENT", args.agent), ("TEXT", args.text)) if not v), None)
        if missing:
            print(f"timestep schedules create: {missing} is missing; usage: timestep schedules create NAME CRON AGENT TEXT", file=sys.stderr)
            return 2
    if args.command == "queues" and args.action == "configure" and not args.name:
        print("usage: timestep queues configure NAME [--limit N --period S] [--concurrency C] [--tokens T]", file=sys.stderr)
        return 2
    if args.command == "queues" and args.action == "delete" and not args.name:
        print("timestep queues delete: NAME is missing; usage: timestep queues delete NAME", file=sys.stderr)
        return 2
    commands = {
        "up": _up, "run": _run, "events": _events, "approve": _control, "reject": _control, "cancel": _control,
        "schedules": _schedules, "queues": _queues, "workflows": _workflows, "dead": _dead, "check": _check,
        "console": _console,
        "approvals": _approvals, "steps": _steps, "fork": _fork, "replay": _replay,
    }
    try:
        if args.command == "demo":
            if args.library:
                from actors.cli import demo_library

                asyncio.run(demo_library.main())
            else:
                from actors.cli import demo

                asyncio.run(demo.main())
            return 0
        return asyncio.run(commands[args.command](args))
    except TimestepError as exc:
        print(f"error: {as_given(args.command, exc)}", file=sys.stderr)
        return 2
    except SettingError as exc:  # a bad environment variable, named with its fix
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        raise
    except ConnectionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
