"""Requests and replies of the contract, as msgspec Structs. The types are the schema:
`python -m subjects.schema` writes the JSON Schema that programs in other languages use.

Fields may be added later, never removed. Unknown fields are ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

import msgspec
from msgspec import Meta

from subjects.events import ErrorInfo
from subjects.ids import RUN_ID_PATTERN

RunId = Annotated[str, Meta(pattern=RUN_ID_PATTERN, description="1-128 characters of [A-Za-z0-9_-]: one subject token")]
Name = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,100}$", description="1-100 characters of [A-Za-z0-9_-]")]
Priority = Annotated[int, Meta(ge=1, le=2**31 - 2, description="lower runs first; omit to run after prioritised runs")]
Text = Annotated[str, Meta(max_length=200_000)]
# Keys are stored in database text columns, which in PostgreSQL cannot hold NUL: no control characters.
Key = Annotated[str, Meta(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f\x7f]+$", description="1-255 characters, no control characters")]
# Bounded so every deadline and count fits the database's integer columns.
Seconds = Annotated[float, Meta(gt=0, le=31_536_000, description="seconds, more than 0 and at most 365 days")]
Count = Annotated[int, Meta(ge=1, le=2**31 - 1, description="1 to 2,147,483,647")]


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
    session_policy: SessionPolicy | None = None
    """With `session_id`: what the run does when another run of the session is unfinished (running,
    waiting for its turn or for approval). `enqueue` (the default): wait for it, in order of arrival;
    `reject`: be refused (`rejected`, error type `SessionBusy`, naming the unfinished run);
    `interrupt`: cancel it at its next step boundary and go on with the history so far."""


class Approve(msgspec.Struct, kw_only=True, omit_defaults=True):
    """`<prefix>.runs.control.<run_id>.approve`"""

    call_id: Key
    always: bool = False


class Reject(msgspec.Struct, kw_only=True, omit_defaults=True):
    """`<prefix>.runs.control.<run_id>.reject`"""

    call_id: Key
    message: Annotated[str, Meta(max_length=10_000)] | None = None


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
    name: str
    cron: str
    request: RunRequest
    created_at: float


class QueueConfigure(msgspec.Struct, kw_only=True, omit_defaults=True):
    """`<prefix>.queues.configure` (request/reply): create or replace a queue's policy."""

    name: Name
    limit: Count | None = None
    period_seconds: Seconds | None = None
    concurrency: Count | None = None
    tokens_per_period: Count | None = None


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


class Reply(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The answer to every request/reply subject: `ok`, or `error`; plus what was asked for."""

    ok: bool
    error: ErrorInfo | None = None
    schedule: Schedule | None = None
    schedules: list[Schedule] | None = None
    queues: list[QueueStatus] | None = None
    deleted: bool | None = None


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
