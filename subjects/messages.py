"""Requests and replies of the contract, as msgspec Structs. The types are the schema:
`python -m subjects.schema` writes the JSON Schema that programs in other languages use.

Fields may be added later, never removed. Unknown fields are ignored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Union

import msgspec
from msgspec import Meta

from subjects.events import ErrorInfo, TokenUsage
from subjects.ids import NAME_PATTERN, RUN_ID_PATTERN

RunId = Annotated[str, Meta(pattern=RUN_ID_PATTERN, description="1-128 characters of [A-Za-z0-9_-]: one subject token")]
Name = Annotated[str, Meta(pattern=NAME_PATTERN, description="1-100 characters of [A-Za-z0-9_-]")]
Priority = Annotated[int, Meta(ge=1, le=2**31 - 2, description="lower runs first; omit to run after prioritised runs")]
Text = Annotated[str, Meta(max_length=200_000)]
# Keys are stored in database text columns, which in PostgreSQL cannot hold NUL: no control characters.
Key = Annotated[str, Meta(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f\x7f]+$", description="1-255 characters, no control characters")]
# Bounded so every deadline and count fits the database's integer columns.
Seconds = Annotated[float, Meta(gt=0, le=31_536_000, description="seconds, more than 0 and at most 365 days")]
Count = Annotated[int, Meta(ge=1, le=2**31 - 1, description="1 to 2,147,483,647")]


class ModelRetry(msgspec.Struct, kw_only=True, omit_defaults=True):
    """How a run's failed model calls (408, 409, 429, 5xx, no connection) are retried. A field left out
    keeps the next level's: the run's, else its queue's, else its agent's, else TIMESTEP_MODEL_*."""

    max_attempts: Count | None = None
    """Calls per model turn, the first included (1: no retries)."""
    max_wait_seconds: Seconds | None = None
    """The waits between a turn's attempts add up to at most this."""
    backoff_seconds: Seconds | None = None
    """The first backoff wait when the provider names none, doubled per attempt."""
    max_backoff_seconds: Seconds | None = None
    """The longest backoff wait."""


SessionPolicy = Literal["enqueue", "reject", "interrupt"]


class RunRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    """`<prefix>.runs.submit`: start an agent run."""

    agent: Key
    input: Union[Text, list[dict[str, Any]]]
    id: RunId | None = None
    session_id: Key | None = None
    queue: Name | None = None
    priority: Priority | None = None
    deduplication_id: Key | None = None
    timeout_seconds: Seconds | None = None
    stream: bool = False
    metadata: dict[str, str] | None = None
    max_tokens: Count | None = None
    """The run's model-token budget: it fails with `BudgetExceeded` after the model call that
    crosses it. Unset: the queue's `max_tokens_per_run`, else no budget."""
    model_retry: ModelRetry | None = None
    approval_timeout_seconds: Seconds | None = None
    """A deadline for every approval the run waits for: a call still undecided this long after
    it was requested is rejected (overrides the per-tool deadlines of the agent's registration)."""
    session_policy: SessionPolicy | None = None
    """With `session_id`: what the run does when another run of the session is unfinished (running,
    waiting for its turn or for approval). `enqueue` (the default): wait for it, in order of arrival;
    `reject`: be refused (`rejected`, error type `SessionBusy`, naming the unfinished run);
    `interrupt`: cancel it at its next step boundary and go on with the history so far."""
    context: dict[str, Any] | None = None
    """The run context (the Agents SDK's `context=`): a JSON object the run's tools, guardrails and
    instructions see as `ctx.context` (a dict). Changes they make are kept across a crash, and the
    final context is in the run's `completed` event."""


#: Who decided: kept in the approval's record and in the decision's event.
DecidedBy = Annotated[str, Meta(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f\x7f]+$", description="who decided (a user name)")]


class Approve(msgspec.Struct, kw_only=True, omit_defaults=True):
    """`<prefix>.runs.control.<run_id>.approve`: run the tool call `call_id`, with `arguments`
    (a JSON object as a string, checked against the tool's parameters) instead of the model's
    when given; `always`: approve every call of this tool for the rest of the run."""

    call_id: Key
    always: bool = False
    arguments: Annotated[str, Meta(max_length=200_000)] | None = None
    decided_by: DecidedBy | None = None
    decided_at: float | None = None
    """Set by whoever hands the decision to the run (seconds since the epoch); callers leave it out."""


class Reject(msgspec.Struct, kw_only=True, omit_defaults=True):
    """`<prefix>.runs.control.<run_id>.reject`: the tool does not run and the model is told
    `message`; `always`: reject every call of this tool for the rest of the run."""

    call_id: Key
    message: Annotated[str, Meta(max_length=10_000)] | None = None
    always: bool = False
    decided_by: DecidedBy | None = None
    decided_at: float | None = None
    """Set by whoever hands the decision to the run (seconds since the epoch); callers leave it out."""


class Cancel(msgspec.Struct, kw_only=True):
    """`<prefix>.runs.control.<run_id>.cancel`"""


class ScheduleCreate(msgspec.Struct, kw_only=True):
    """`<prefix>.schedules.create` (request/reply): run `request` on `cron` (5 fields, or 6 with seconds first)."""

    name: Name
    cron: Annotated[str, Meta(min_length=1, max_length=200)]
    request: RunRequest


class ScheduleDelete(msgspec.Struct, kw_only=True):
    """`<prefix>.schedules.delete` (request/reply)"""

    name: Name


class ScheduleList(msgspec.Struct, kw_only=True):
    """`<prefix>.schedules.list` (request/reply); the body may be empty."""


class Schedule(msgspec.Struct, kw_only=True):
    """A cron schedule of runs. Every schedule is listed here, made on the bus or by the library."""

    name: str
    cron: str
    request: RunRequest
    created_at: float
    origin: Literal["bus", "library"] = "bus"
    """"bus": made with `schedules.create`; the scheduler submits each tick's request on `runs.submit`
    (through the governor). "library": made with the library's `create_scheduled_agent_workflow`; each
    tick is started by a process that registered the agent. Ticks missed while nothing ran are not run."""
    last_fired_at: float | None = None
    """When the schedule last fired (Unix seconds); None before its first tick."""


class QueueConfigure(msgspec.Struct, kw_only=True, omit_defaults=True):
    """`<prefix>.queues.configure` (request/reply): create or replace a queue's policy."""

    name: Name
    limit: Count | None = None
    period_seconds: Seconds | None = None
    concurrency: Count | None = None
    tokens_per_period: Count | None = None
    max_tokens_per_run: Count | None = None
    """The token budget of the queue's runs that set no `max_tokens` of their own."""
    model_retry: ModelRetry | None = None
    """How the queue's runs retry failed model calls (a run's own `model_retry` wins, field by field)."""


class QueueDelete(msgspec.Struct, kw_only=True):
    """`<prefix>.queues.delete` (request/reply): delete a queue; refused while runs wait or run on it."""

    name: Name


class QueueStatusRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    """`<prefix>.queues.status` (request/reply); no name means every queue."""

    name: Name | None = None


class QueueStatus(msgspec.Struct, kw_only=True):
    name: str
    limit: int | None
    period_seconds: float | None
    concurrency: int | None
    tokens_per_period: int | None
    depth: int
    """Runs waiting (queued, not started)."""
    running: int
    admitted_in_window: int
    """Runs started in the last `period_seconds` (the rate limit's window)."""
    tokens_in_window: int
    max_tokens_per_run: int | None = None
    model_retry: ModelRetry | None = None
    paused_until: datetime | None = None
    """Set while the queue admits no run: a run of it met a provider's rate limit that named a time to come back."""
    paused_reason: str | None = None


RunStatus = Literal["queued", "running", "waiting", "completed", "failed", "cancelled"]


class RunsList(msgspec.Struct, kw_only=True, omit_defaults=True):
    """`<prefix>.runs.list` (request/reply): the newest runs first, filtered; the body may be empty."""

    status: RunStatus | None = None
    agent: Key | None = None
    queue: Name | None = None
    limit: Annotated[int, Meta(ge=1, le=1000, description="at most this many runs (1-1000)")] = 100


class RunGet(msgspec.Struct, kw_only=True):
    """`<prefix>.runs.get` (request/reply): one run; its timeline is in its events."""

    id: RunId


class RunInfo(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A run as the database holds it."""

    id: str
    agent: str
    status: RunStatus
    """`waiting`: stopped for approval of a tool call (see its `interrupted` event)."""
    created_at: float
    """Unix time the run was accepted."""
    updated_at: float
    """Unix time of the run's last change (its end, once finished)."""
    queue: str | None = None
    session_id: str | None = None
    duration_seconds: float | None = None
    """From creation to the end, for a finished run."""
    usage: TokenUsage | None = None
    """Model usage of a completed run."""
    error: ErrorInfo | None = None
    """Why a failed run failed."""
    forked_from: str | None = None
    """The run this one is a fork of (`runs.fork`)."""
    input: Any = None
    """What the run was given: its text, or its input items (`runs.get` only; a listing leaves it out)."""


class RunSteps(msgspec.Struct, kw_only=True, omit_defaults=True):
    """`<prefix>.runs.steps` (request/reply): a run's recorded steps, in order; with `step`, that one
    step with its whole value (a listing cuts long values)."""

    id: RunId
    step: Annotated[int, Meta(ge=1, le=2147483647, description="one step's number, for its whole value")] | None = None


class RunFork(msgspec.Struct, kw_only=True, omit_defaults=True):
    """`<prefix>.runs.fork` (request/reply): a new run that goes on from step `from_step` of the finished
    run `id`; the steps before it come from the record (nothing before it runs again), and from it on
    the run runs with the agent as deployed now. The reply's `run` is the fork."""

    id: RunId
    """The finished run to fork."""
    from_step: Annotated[int, Meta(ge=1, le=2147483647, description="the step to go on from (`runs.steps` numbers them)")]
    fork_id: RunId | None = None
    """The fork's run id; a new one when not given."""


StepKind = Literal["model", "tool", "mcp", "guardrail", "handoff", "session", "sleep", "approval", "run"]
"""What a step did: a model call (one attempt), a tool call (an MCP server's tools too), an MCP server's
tool list, prompt or resource, a guardrail, a handoff callback, a session read or write, a durable
wait, an approval's wait or decision, or the run's own bookkeeping."""


class RunStep(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One recorded step of a run."""

    number: int
    """Its place in the run, the same on every execution (`fork` starts from one)."""
    kind: StepKind
    name: str
    """`model`, `tool:<name>`, `guardrail:<name>`, `handoff:<agent>`, `mcp.list_tools:<server>`, `sleep`, ..."""
    status: Literal["completed", "failed"]
    """`failed`: the step raised, or a model call's attempt failed (its `error` says how)."""
    started_at: float | None = None
    ended_at: float | None = None
    attempt: int | None = None
    """A model call's attempt (1, 2, ...), counted over the failed attempts just before it."""
    value: Any = None
    """What it recorded, readable: a model call's `input` items (or `input_since_previous`, those
    added since the run's previous model call), its `instructions` when they changed, its `output`
    items and `usage`; a tool call's `arguments` and `output`; a guardrail's output; a decision."""
    error: ErrorInfo | None = None
    cut: bool = False
    """`value` is cut (to its first 2,000 characters of JSON, as a string); ask for the step by number for all of it."""


ApprovalStatus = Literal["pending", "approved", "rejected", "expired", "cancelled"]
"""`cancelled`: the run ended (cancelled, failed) while the call still waited."""


class ApprovalList(msgspec.Struct, kw_only=True, omit_defaults=True):
    """`<prefix>.approvals.list` (request/reply): approvals across runs, newest first. The body
    may be empty (every pending approval)."""

    status: Literal["pending", "decided", "all"] = "pending"
    """`pending` (waiting for a decision), `decided` (the audit trail: approved, rejected or
    expired) or `all`."""
    run_id: RunId | None = None
    agent: Key | None = None
    tool: Key | None = None
    queue: Name | None = None
    older_than_seconds: Annotated[float, Meta(ge=0, le=3_153_600_000)] | None = None
    """Only approvals requested at least this many seconds ago."""
    newer_than_seconds: Annotated[float, Meta(gt=0, le=3_153_600_000)] | None = None
    """Only approvals requested at most this many seconds ago."""
    limit: Annotated[int, Meta(ge=1, le=10_000)] = 100


class ApprovalRecord(msgspec.Struct, kw_only=True):
    """One tool call that waited for (or waits for) a human decision, as the database keeps it."""

    run_id: str
    call_id: str
    agent: str
    tool: str
    arguments: str
    """The arguments the model asked for (JSON)."""
    session_id: str | None
    queue: str | None
    metadata: dict[str, str] | None
    requested_at: float
    """Seconds since the epoch."""
    deadline: float | None
    """When an undecided call is rejected by itself (seconds since the epoch), if it has a deadline."""
    status: ApprovalStatus
    decided_at: float | None = None
    decided_by: str | None = None
    """Who decided: the NATS user where the server names it, else the decision's `decided_by`;
    `deadline` for an expired one."""
    message: str | None = None
    """A rejection's message."""
    always: bool = False
    """The decision holds for every call of this tool for the rest of the run."""
    approved_arguments: str | None = None
    """The arguments the tool was approved to run with, when the approver edited them."""


class Reply(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The answer to every request/reply subject: `ok`, or `error`; plus what was asked for."""

    ok: bool
    error: ErrorInfo | None = None
    schedule: Schedule | None = None
    schedules: list[Schedule] | None = None
    queues: list[QueueStatus] | None = None
    deleted: bool | None = None
    runs: list[RunInfo] | None = None
    run: RunInfo | None = None
    approvals: list[ApprovalRecord] | None = None
    steps: list[RunStep] | None = None


class DeadLetter(msgspec.Struct, kw_only=True):
    """`<prefix>.dead.<original subject>`: a message that could not be processed, and why."""

    subject: str
    reason: str
    error: ErrorInfo
    data: str
    """The original body as text (invalid UTF-8 replaced), cut to 64 KB."""
    size: int
    headers: dict[str, str]
    time: float


Control = Union[Approve, Reject, Cancel]
ControlAction = Literal["approve", "reject", "cancel"]
