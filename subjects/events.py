"""A run's lifecycle events: one msgspec Struct per type, tagged by `type`.

Every event carries `run_id`, `seq` (1, 2, 3, ... within the run, a fork's `forked` 0; assigned
deterministically, so a replayed workflow re-creates the same numbers) and
`time` (UTC). The same types travel in-process (event sinks, listeners) and
on the wire (`timestep.runs.events.<run_id>.<type>`).
"""

from datetime import datetime
from typing import Any, Union

import msgspec


class TokenUsage(msgspec.Struct, kw_only=True):
    """Model usage summed over a run."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0


class ErrorInfo(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What went wrong: `type` is a stable class name, `message` says what and how to fix it, and
    `field`, when one field of the request is at fault, names it as the contract does
    (`deduplication_id`, `request.agent`, `arguments.to`); the message then starts with it."""

    type: str
    message: str
    field: str | None = None


class Approval(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A tool call waiting for a human decision; `deadline` (seconds since the epoch), when set,
    is when it is rejected by itself if still undecided."""

    call_id: str
    tool: str
    arguments: str
    deadline: float | None = None


class _Event(msgspec.Struct, tag_field="type", kw_only=True):
    run_id: str
    seq: int
    time: datetime

    @property
    def type(self) -> str:
        """The event's type, as on the wire (`"accepted"`, `"delta"`, ...)."""
        return type(self).__struct_config__.tag  # type: ignore[attr-defined]


class Accepted(_Event, tag="accepted", kw_only=True):
    """The request was validated and durably handed over."""


class Forked(_Event, tag="forked", kw_only=True):
    """The run is a fork: it goes on from step `from_step` of run `from_run` (of agent `agent`), with
    that run's input and its steps before `from_step` as recorded, and runs from there with the agent
    as deployed now (an `agent_changed` event follows when that agent differs from the one the run
    forked started with). A fork's first event, numbered 0: its numbers then go on from those of the
    steps it took from the record."""

    from_run: str
    from_step: int
    agent: str


class Rejected(_Event, tag="rejected", kw_only=True):
    """The request was refused; nothing ran."""

    error: ErrorInfo


class Queued(_Event, tag="queued", kw_only=True):
    """The run waits in `queue` for its turn."""

    queue: str


class Started(_Event, tag="started", kw_only=True):
    """The run's workflow began executing."""


class Delta(_Event, tag="delta", kw_only=True):
    """A piece of streamed model text, in order."""

    text: str


class ToolCall(_Event, tag="tool_call", kw_only=True):
    """A tool is about to run (durably, as its own step)."""

    tool: str
    call_id: str
    arguments: str


class ToolOutput(_Event, tag="tool_output", kw_only=True):
    """A tool finished; `output` is its result as text, `arguments` what it really ran with
    (an approver may have edited the model's)."""

    call_id: str
    output: str
    arguments: str | None = None


class Interrupted(_Event, tag="interrupted", kw_only=True):
    """The run stopped to wait for approval of these tool calls; its state is saved."""

    approvals: list[Approval]


class ToolApproved(_Event, tag="tool_approved", kw_only=True):
    """The waiting run took the approval of this tool call (`always`: of the tool, for the rest of the run)."""

    call_id: str
    tool: str
    always: bool = False
    arguments: str | None = None
    """The arguments the approver set in place of the model's, when edited."""
    decided_by: str | None = None


class ToolRejected(_Event, tag="tool_rejected", kw_only=True):
    """The waiting run took the rejection of this tool call: the tool does not run, the model is told `message`."""

    call_id: str
    tool: str
    message: str | None = None
    always: bool = False
    """Every call of this tool is rejected for the rest of the run."""
    decided_by: str | None = None
    expired: bool = False
    """Nobody decided before the approval's deadline: the call was rejected by itself."""


class Retrying(_Event, tag="retrying", kw_only=True):
    """A model call failed for a passing reason (rate limit, overload, no connection): the run waits
    `delay_seconds`, durably, until `retry_at`, then makes attempt `attempt + 1`. Text deltas
    streamed since the failed attempt began are void: the next attempt streams its own."""

    attempt: int
    delay_seconds: float
    retry_at: datetime
    error: ErrorInfo
    status_code: int | None = None


class AgentChanged(_Event, tag="agent_changed", kw_only=True):
    """The run goes on (recovered, or resumed after an approval) under another definition of its agent
    than the one it started with: `changes` says what changed (a tool removed, other parameters, other
    instructions, ...); `previous` and `current` are the definitions' digests."""

    agent: str
    changes: list[str]
    previous: str
    current: str


class Completed(_Event, tag="completed", kw_only=True, omit_defaults=True):
    """The run finished with `output` (the agent's final output, as JSON); `context`, for a run
    given a JSON object as its context, is that context as the run left it."""

    output: Any
    usage: TokenUsage
    context: dict[str, Any] | None = None


class Failed(_Event, tag="failed", kw_only=True):
    """The run ended with an error."""

    error: ErrorInfo


class Cancelled(_Event, tag="cancelled", kw_only=True):
    """The run was cancelled (by request or by its timeout)."""


class LiveText(msgspec.Struct, kw_only=True):
    """A piece of a run's streamed model text, published on `<prefix>.runs.live.<run_id>` (core NATS,
    not stored) the moment the model yields it, before the run's `delta` events store the same text.

    `call` numbers the run's model calls (the durable step of the call: a retried attempt is a new
    one); `offset` is the number of characters of that call's text before `text`, so a subscriber
    that sees an offset it did not expect has missed a piece (core NATS delivers at most once) and
    reads the stored `delta` events instead. A live piece of an attempt that then failed is void,
    as its `delta` events are (the `retrying` event says so). `time` is when the model yielded it."""

    run_id: str
    call: int
    offset: int
    text: str
    time: datetime


RunEvent = Union[
    Accepted, Forked, Rejected, Queued, Started, Delta, ToolCall, ToolOutput, Interrupted, ToolApproved, ToolRejected,
    Retrying, AgentChanged, Completed, Failed, Cancelled,
]

EVENT_TYPES: dict[str, type] = {
    cls.__struct_config__.tag: cls  # type: ignore[attr-defined]
    for cls in RunEvent.__args__  # type: ignore[attr-defined]
}

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(RunEvent)


_live_decoder = msgspec.json.Decoder(LiveText)


def decode_live(data: bytes | str) -> LiveText:
    """Decode and validate a live text piece (`<prefix>.runs.live.<run_id>`)."""
    return _live_decoder.decode(data)


def encode_event(event: RunEvent) -> bytes:
    """JSON bytes of an event."""
    return _encoder.encode(event)


def decode_event(data: bytes | str) -> RunEvent:
    """Decode and validate an event; raises `msgspec.ValidationError` naming the bad field."""
    return _decoder.decode(data)


#: The JetStream API error code a refused submit is answered with (a bad request).
SUBMIT_REFUSED_CODE = 400
#: ... and a run refused because its session has an unfinished run (`session_policy: reject`): a conflict.
SESSION_BUSY_CODE = 409


def submit_answer(event: Accepted | Rejected, *, stream: str, duplicate: bool = False) -> bytes:
    """The governor's answer to a submit request that has a reply subject: the run's event, shaped
    so that the JetStream publish of the official NATS clients reads it too.

    `accepted` gains a PubAck's `stream` (and `duplicate: true` for a repeat): its `seq` stays the
    event's number (1), not a stream sequence. `rejected` carries its error as JetStream's API error
    (`{"code": 400, "description": "<field>: <problem and fix>"}`; `code` 409 for a run refused by its
    session policy, SessionBusy), so those clients raise with the reason; the field at fault is beside
    it, top-level `field` (an API error takes no other key: nats-py builds its exception from them all).
    The run's stored `rejected` event keeps `error: {type, message, field}`."""
    answer = msgspec.to_builtins(event)
    if isinstance(event, Rejected):
        code = SESSION_BUSY_CODE if event.error.type == "SessionBusy" else SUBMIT_REFUSED_CODE
        answer["error"] = {"code": code, "description": event.error.message}
        if event.error.field is not None:
            answer["field"] = event.error.field
    else:
        answer["stream"] = stream
        if duplicate:
            answer["duplicate"] = True
    return _encoder.encode(answer)


def decode_submit_answer(data: bytes | str) -> Accepted | Rejected:
    """The event of a submit answer (see `submit_answer`); a `rejected` one gets back `error: {type, message, field}`."""
    raw = msgspec.json.decode(data)
    error = raw.get("error") if isinstance(raw, dict) else None
    if isinstance(error, dict) and "message" not in error and "description" in error:
        kind = "SessionBusy" if error.get("code") == SESSION_BUSY_CODE else "InvalidRequest"
        field = raw.pop("field", None)
        raw["error"] = {"type": kind, "message": error["description"], **({"field": field} if isinstance(field, str) else {})}
    event = _decoder.decode(_encoder.encode(raw))
    if not isinstance(event, (Accepted, Rejected)):
        raise msgspec.ValidationError(f"a submit is answered with `accepted` or `rejected`, not `{event.type}`")
    return event
