"""The agent actor: hosts the registered agents and executes their durable runs.

- Direct runs arrive on `<prefix>.runs.start` from a governor; the actor starts each
  as a DBOS workflow (the durable hand-off) and acks. Queued runs are started by
  DBOS from their queues in whichever agent actor polls first.
- Control messages on `<prefix>.runs.control.<run_id>.<action>`: approve and reject
  go durably to the waiting run (it need not be in this process); cancel cancels it.
- Every event of the runs executed here is published through the bus event sink,
  from inside their durable steps, so `completed` is never lost.
"""

from __future__ import annotations

import asyncio
import logging

import msgspec
from nats.aio.msg import Msg

from actors.base import Actor, origin
from subjects.events import Cancelled, ErrorInfo, Interrupted
from subjects.ids import run_id_problem
from subjects.messages import Approve, Cancel, Reject
from subjects.names import CONTROL_STREAM, WORK_STREAM
from timestep import engine, observe, registry
from timestep.bus import Bus
from timestep.events import listen, now
from timestep.intake import StartRun, body_problem
from timestep.runs import agent_run, send_decision
from timestep.settings import Settings

log = logging.getLogger("actors.agent")

_start_decoder = msgspec.json.Decoder(StartRun)
_CONTROL_TYPES = {"approve": Approve, "reject": Reject, "cancel": Cancel}
#: The workflow status a run's last event stands for, when that event ends the run.
_FINISHED_BY_EVENT = {"completed": "SUCCESS", "failed": "ERROR"}


class AgentActor(Actor):
    stream = WORK_STREAM
    durable = "agent"

    def __init__(self, bus: Bus) -> None:
        super().__init__(bus)
        self.subject = bus.subjects.start
        self.capacity = bus.settings.agent_concurrency
        self.concurrency = self.capacity
        self._running: set[asyncio.Task] = set()
        self._room = asyncio.Condition()

    async def on_start(self) -> None:
        await self.bus.announce_agents(registry.registered_agents(), Settings.from_env().executor_id)

    async def ready(self) -> None:
        async with self._room:
            await self._room.wait_for(lambda: len(self._running) < self.capacity)

    async def handle(self, msg: Msg) -> None:
        await self.start_run(_start_decoder.decode(msg.data))

    async def start_run(self, start: StartRun) -> None:
        """The durable hand-off: once this returns, DBOS holds the run. A governor in the same
        process calls it directly, saving a trip through `<prefix>.runs.start`."""
        spec = start.spec
        observe.bind_run(start.run_id, observe.Trace(spec.traceparent, spec.tracestate) if spec.traceparent else None)
        async with self._room:
            await self._room.wait_for(lambda: len(self._running) < self.capacity)
        handle = await engine.start(agent_run, start.spec, workflow_id=start.run_id, timeout_seconds=start.timeout_seconds)
        task = asyncio.create_task(self._follow(handle, start.run_id))
        self._running.add(task)

    async def _follow(self, handle, run_id: str) -> None:
        """Hold a slot while the run executes here (its outcome is already in its events).
        A run waiting for approval gives its slot back: it may wait for days."""
        task = asyncio.current_task()

        async def release() -> None:
            async with self._room:
                self._running.discard(task)
                self._room.notify_all()

        def on_event(event) -> None:
            if isinstance(event, Interrupted):
                asyncio.ensure_future(release())

        stop = listen(run_id, on_event)
        try:
            await handle.get_result()
            log.info("run %s finished", run_id)
        except BaseException as exc:
            log.info("run %s ended: %s: %s", run_id, type(exc).__name__, exc)
        finally:
            stop()
            await release()


class ControlActor(Actor):
    """Part of the agent role: approve, reject and cancel messages."""

    stream = CONTROL_STREAM
    durable = "agent-control"

    def __init__(self, bus: Bus) -> None:
        super().__init__(bus)
        self.subject = bus.subjects.all_control

    async def handle(self, msg: Msg) -> None:
        parsed = self.bus.subjects.parse_control(msg.subject)
        if parsed is None or parsed[1] not in _CONTROL_TYPES:
            await self._dead(msg, "InvalidSubject", f"{msg.subject!r} is not <prefix>.runs.control.<run_id>.approve|reject|cancel")
            return
        run_id, action = parsed
        observe.bind_run(run_id)  # this message's task: its log lines name the run
        problem = run_id_problem(run_id)
        if problem is not None:
            await self._dead(msg, "InvalidSubject", f"run id {run_id!r} in {msg.subject!r} {problem}")
            return
        try:
            command = msgspec.json.decode(msg.data or b"{}", type=_CONTROL_TYPES[action])
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            field, problem = body_problem(exc)
            await self._dead(msg, "InvalidRequest", f"{action}: {field}: {problem}")
            return
        state = await engine.status(run_id)
        if state is None:
            await self._dead(msg, "UnknownRun", f"no run {run_id!r}")
            return
        if isinstance(command, Cancel):
            # A run's last event goes out just before DBOS records its end: `completed` may be
            # stored while the status still says PENDING. Either one means the run is over.
            kind = (await self.bus.last_event(run_id))[2]
            status = _FINISHED_BY_EVENT.get(kind or "") or state.status
            if status in ("SUCCESS", "ERROR"):
                await self._dead(msg, "AlreadyFinished", f"run {run_id!r} already finished ({status}); nothing to cancel")
                return
            await engine.cancel(run_id)
            last, headers, _ = await self.bus.last_event(run_id)
            observe.bind_run(run_id, observe.trace_from_headers(headers))  # the run's trace, from its last event
            await self.bus.publish_event(Cancelled(run_id=run_id, seq=last + 1, time=now()))
        else:
            await send_decision(run_id, command)

    async def _dead(self, msg: Msg, kind: str, message: str) -> None:
        log.info("control message refused: %s", message)
        await self.bus.dead_letter(msg.subject, msg.data, msg.headers, message, ErrorInfo(type=kind, message=message), origin=origin(msg))
