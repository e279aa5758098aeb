"""Subject names. The prefix (default `timestep`) is configurable; everything under it is the contract."""

from __future__ import annotations

from dataclasses import dataclass

EVENTS_STREAM = "TIMESTEP_EVENTS"
SUBMIT_STREAM = "TIMESTEP_SUBMIT"
WORK_STREAM = "TIMESTEP_WORK"
CONTROL_STREAM = "TIMESTEP_CONTROL"
DEAD_STREAM = "TIMESTEP_DEAD"
CONTROL_ACTIONS = ("approve", "reject", "cancel")
#: The header on the events of a run a TypeScript agent actor executes (value "typescript"): control for
#: such a run goes on to the TypeScript agent actors (`Subjects.typescript_command`).
RUNTIME_HEADER = "Timestep-Runtime"


@dataclass(frozen=True)
class Subjects:
    """Every subject of the contract, under one prefix.

    >>> Subjects().events("run-1", "completed")
    'timestep.runs.events.run-1.completed'
    """

    prefix: str = "timestep"

    @property
    def submit(self) -> str:
        return f"{self.prefix}.runs.submit"

    def events(self, run_id: str = "*", type: str = "*") -> str:
        return f"{self.prefix}.runs.events.{run_id}.{type}"

    def run_events(self, run_id: str) -> str:
        """All events of one run (a subscription filter)."""
        return f"{self.prefix}.runs.events.{run_id}.>"

    @property
    def all_events(self) -> str:
        return f"{self.prefix}.runs.events.>"

    def live(self, run_id: str = "*") -> str:
        """Core NATS, not stored: each piece of a run's streamed model text the moment the model
        yields it (`LiveText`). The stored `delta` events carry the same text, gathered."""
        return f"{self.prefix}.runs.live.{run_id}"

    @property
    def all_live(self) -> str:
        return f"{self.prefix}.runs.live.*"

    def control(self, run_id: str = "*", action: str = "*") -> str:
        return f"{self.prefix}.runs.control.{run_id}.{action}"

    @property
    def all_control(self) -> str:
        return f"{self.prefix}.runs.control.>"

    def command(self, run_id: str = "*", action: str = "*") -> str:
        """Request/reply: the same as `control`, acted on at once and answered with a `Reply`.
        Outside `runs.control.>`, so the control stream does not answer it with a PubAck."""
        return f"{self.prefix}.runs.command.{run_id}.{action}"

    @property
    def all_commands(self) -> str:
        return f"{self.prefix}.runs.command.*.*"

    @property
    def start(self) -> str:
        """Internal: a validated direct run handed from a governor to the agent actors."""
        return f"{self.prefix}.runs.start"

    @property
    def start_typescript(self) -> str:
        """Internal: a validated direct run for an agent that TypeScript agent actors host
        (`@timestep/runtime`'s `serveAgents`); they announce themselves with `"runtime": "typescript"`."""
        return f"{self.prefix}.runs.start.typescript"

    def typescript_command(self, run_id: str, action: str) -> str:
        """Internal, request/reply: a control message for a run a TypeScript agent actor executes, passed on
        by a Python agent actor (the one that took it) and answered with a `Reply`."""
        return f"{self.prefix}.runs.command.typescript.{run_id}.{action}"

    @property
    def typescript_approvals(self) -> str:
        """Internal, request/reply: the approvals of the runs TypeScript agent actors execute (an
        `ApprovalList`, answered with a `Reply`); a Python agent actor adds them to its `approvals.list` answer."""
        return f"{self.prefix}.approvals.list.typescript"

    @property
    def schedules_create(self) -> str:
        return f"{self.prefix}.schedules.create"

    @property
    def schedules_delete(self) -> str:
        return f"{self.prefix}.schedules.delete"

    @property
    def schedules_list(self) -> str:
        return f"{self.prefix}.schedules.list"

    @property
    def queues_configure(self) -> str:
        return f"{self.prefix}.queues.configure"

    @property
    def queues_delete(self) -> str:
        return f"{self.prefix}.queues.delete"

    @property
    def queues_status(self) -> str:
        return f"{self.prefix}.queues.status"

    @property
    def runs_list(self) -> str:
        return f"{self.prefix}.runs.list"

    @property
    def runs_get(self) -> str:
        return f"{self.prefix}.runs.get"

    @property
    def runs_steps(self) -> str:
        """Request/reply: a run's recorded steps (`RunSteps`)."""
        return f"{self.prefix}.runs.steps"

    @property
    def runs_fork(self) -> str:
        """Request/reply: a new run going on from a step of a finished run (`RunFork`)."""
        return f"{self.prefix}.runs.fork"

    @property
    def approvals_list(self) -> str:
        """Request/reply: approvals across runs (pending ones, or the decided ones: the audit trail)."""
        return f"{self.prefix}.approvals.list"

    def dead(self, original: str) -> str:
        """Where a message that could not be processed is copied, with its reason."""
        return f"{self.prefix}.dead.{original}"

    @property
    def all_dead(self) -> str:
        return f"{self.prefix}.dead.>"

    def parse_control(self, subject: str) -> tuple[str, str] | None:
        """(run_id, action) of a control or command subject, or None when it is not one."""
        head = next((h for h in (f"{self.prefix}.runs.control.", f"{self.prefix}.runs.command.") if subject.startswith(h)), None)
        if head is None:
            return None
        parts = subject[len(head):].split(".")
        if len(parts) != 2:
            return None
        return parts[0], parts[1]
