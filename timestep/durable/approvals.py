"""The approvals inbox: every tool call a run waits on is a row in the database.

A run that waits for decisions (every run started over the bus, and library runs with
`wait_for_approval=True`) writes one row per tool call when it is interrupted, inside the
recorded step that publishes `interrupted`, keyed by run id and call id: a step run again
after a crash finds its rows and writes nothing twice. Each decision (approved, rejected, or
expired at its deadline) updates the row inside the recorded step that publishes its event,
with who decided and when; rows are kept after the run ends, as the audit trail.

>>> pending = await list_approvals(agent="assistant", older_than_seconds=60)
>>> await approve_tool_call(pending[0].run_id, pending[0].call_id, arguments='{"to": "ada@example.com"}')
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from contextvars import ContextVar
from typing import Any

import msgspec
import sqlalchemy as sa
from agents import Agent, FunctionTool

from subjects.events import Approval
from subjects.ids import run_id_problem
from subjects.messages import ApprovalList, ApprovalRecord, Approve, Reject
from timestep.durable import engine, registry, store
from timestep.errors import ValidationError

DEADLINE = "deadline"
"""The `decided_by` of an approval rejected because nobody decided before its deadline."""


# --- written by the run, inside its recorded steps ---------------------------------


async def record_requested(
    run_id: str,
    agent: str,
    approvals: list[Approval],
    *,
    session_id: str | None,
    queue: str | None,
    metadata: dict[str, str] | None,
    timeout_seconds: float | None,
) -> list[Approval]:
    """Write a pending row per call (a row already there is kept, with its times), and return
    the calls with their deadlines as stored."""
    table = store.approvals
    now = time.time()
    rows = [
        {
            "run_id": run_id, "call_id": a.call_id, "agent": agent, "tool": a.tool, "arguments": a.arguments,
            "session_id": session_id, "queue": queue, "metadata": json.dumps(metadata) if metadata else None,
            "requested_at": now, "status": "pending", "always": False,
            "deadline": now + seconds if (seconds := _deadline_seconds(agent, a.tool, timeout_seconds)) else None,
        }
        for a in approvals
    ]

    def write(db: sa.Engine) -> dict[str, float | None]:
        with db.begin() as conn:
            store.upsert(conn, table, rows, update=False)
            stored = conn.execute(
                sa.select(table.c.call_id, table.c.deadline).where(
                    table.c.run_id == run_id, table.c.call_id.in_([a.call_id for a in approvals])
                )
            ).all()
        return dict(stored)

    deadlines = await store.run(write)
    return [msgspec.structs.replace(a, deadline=deadlines.get(a.call_id)) for a in approvals]


async def record_decision(
    run_id: str,
    call_ids: Iterable[str],
    *,
    status: str,
    decided_at: float,
    decided_by: str | None,
    message: str | None = None,
    always: bool = False,
    approved_arguments: str | None = None,
) -> None:
    """Mark calls decided. The values come from the decision the run received, so a step run
    again writes the same."""
    table = store.approvals
    values = {
        "status": status, "decided_at": decided_at, "decided_by": decided_by, "message": message,
        "always": always, "approved_arguments": approved_arguments,
    }

    def write(db: sa.Engine) -> None:
        with db.begin() as conn:
            conn.execute(sa.update(table).where(table.c.run_id == run_id, table.c.call_id.in_(list(call_ids))).values(**values))

    await store.run(write)


async def close_pending(run_id: str, how: str) -> None:
    """The run ended while calls still waited (cancelled, failed): they are marked `cancelled`,
    with `how` as the message, and leave the inbox. Idempotent."""
    table = store.approvals

    def write(db: sa.Engine) -> None:
        with db.begin() as conn:
            conn.execute(
                sa.update(table).where(table.c.run_id == run_id, table.c.status == "pending")
                .values(status="cancelled", decided_at=time.time(), message=how)
            )

    await store.run(write)


def _deadline_seconds(agent: str, tool: str, request_timeout: float | None) -> float | None:
    """The request's approval timeout, else the tool's from the agent's registration."""
    if request_timeout is not None:
        return request_timeout
    return registry.approval_timeouts(agent).get(tool)


# --- read by anyone ------------------------------------------------------------------


def _record(row: Any) -> ApprovalRecord:
    return ApprovalRecord(
        run_id=row.run_id, call_id=row.call_id, agent=row.agent, tool=row.tool, arguments=row.arguments,
        session_id=row.session_id, queue=row.queue, metadata=json.loads(row.metadata) if row.metadata else None,
        requested_at=row.requested_at, deadline=row.deadline, status=row.status, decided_at=row.decided_at,
        decided_by=row.decided_by, message=row.message, always=bool(row.always), approved_arguments=row.approved_arguments,
    )


async def list_approvals(
    status: str = "pending",
    *,
    run_id: str | None = None,
    agent: str | None = None,
    tool: str | None = None,
    queue: str | None = None,
    older_than_seconds: float | None = None,
    newer_than_seconds: float | None = None,
    limit: int = 100,
) -> list[ApprovalRecord]:
    """Approvals across every run on the database, newest first.

    `status`: `"pending"` (waiting for a decision, in runs that still wait), `"decided"` (the
    audit trail: approved, rejected or expired, with who decided and when) or `"all"`. The
    other arguments filter by run, agent, tool, queue and age (seconds since requested).

    >>> for a in await list_approvals(tool="send_email", older_than_seconds=3600):
    ...     print(a.run_id, a.call_id, a.arguments, a.requested_at)
    """
    try:
        query = msgspec.convert(
            {k: v for k, v in {
                "status": status, "run_id": run_id, "agent": agent, "tool": tool, "queue": queue,
                "older_than_seconds": older_than_seconds, "newer_than_seconds": newer_than_seconds, "limit": limit,
            }.items() if v is not None},
            ApprovalList,
        )
    except msgspec.ValidationError as exc:
        problem, _, where = str(exc).partition(" - at `$.")
        raise ValidationError(where.rstrip("`") or "status", problem, "see list_approvals's arguments") from None
    return await query_approvals(query)


async def query_approvals(query: ApprovalList) -> list[ApprovalRecord]:
    """`list_approvals` for a validated `ApprovalList` (what `<prefix>.approvals.list` carries)."""
    table = store.approvals
    now = time.time()
    where = []
    if query.status == "pending":
        where.append(table.c.status == "pending")
    elif query.status == "decided":
        where.append(table.c.status != "pending")
    for column, value in ((table.c.run_id, query.run_id), (table.c.agent, query.agent), (table.c.tool, query.tool), (table.c.queue, query.queue)):
        if value is not None:
            where.append(column == value)
    if query.older_than_seconds is not None:
        where.append(table.c.requested_at <= now - query.older_than_seconds)
    if query.newer_than_seconds is not None:
        where.append(table.c.requested_at >= now - query.newer_than_seconds)
    order = table.c.decided_at if query.status == "decided" else table.c.requested_at

    def read(db: sa.Engine) -> list[ApprovalRecord]:
        with db.connect() as conn:
            statement = sa.select(table).where(*where).order_by(order.desc(), table.c.call_id).limit(query.limit)
            return [_record(row) for row in conn.execute(statement).all()]

    records = await store.run(read)
    if query.status != "pending":
        return records
    # A run that ended (cancelled, timed out) while waiting leaves rows that wait on nothing.
    over = {r for r in {rec.run_id for rec in records if rec.status == "pending"} if await _run_over(r)}
    return [r for r in records if not (r.status == "pending" and r.run_id in over)]


async def has_pending(run_id: str) -> bool:
    """Whether the run has a call waiting for a decision: its rows are written before
    `interrupted` is published, so a follower that saw the event finds them."""
    table = store.approvals

    def read(db: sa.Engine) -> bool:
        with db.connect() as conn:
            query = sa.select(table.c.call_id).where(table.c.run_id == run_id, table.c.status == "pending").limit(1)
            return conn.execute(query).first() is not None

    return await store.run(read)


async def _run_over(run_id: str) -> bool:
    state = await engine.status(run_id)
    return state is None or state.finished


async def get_approval(run_id: str, call_id: str) -> ApprovalRecord | None:
    table = store.approvals

    def read(db: sa.Engine) -> ApprovalRecord | None:
        with db.connect() as conn:
            row = conn.execute(sa.select(table).where(table.c.run_id == run_id, table.c.call_id == call_id)).first()
        return _record(row) if row is not None else None

    return await store.run(read)


# --- edited arguments ------------------------------------------------------------------


def find_tool(agent: Agent, name: str, seen: set[int] | None = None) -> FunctionTool | None:
    """The function tool `name` of `agent` or of an agent it hands off to."""
    seen = seen if seen is not None else set()
    if id(agent) in seen:
        return None
    seen.add(id(agent))
    for tool in agent.tools:
        if isinstance(tool, FunctionTool) and tool.name == name:
            return tool
    for handoff in agent.handoffs:
        if isinstance(handoff, Agent) and (found := find_tool(handoff, name, seen)) is not None:
            return found
    return None


def show_edited_arguments(state: Any, item: Any, arguments: str) -> None:
    """Make the run's own history say that call `call_id` was made with `arguments` (an approver's
    edit): the function call item the model wrote, wherever the paused run keeps it (the items
    generated so far, the model's response, the call waiting to run, its approval item `item`), so the next
    model turn sees the call that really ran beside its output, not the one it first asked for.
    The SDK keeps these in RunState's private fields; an SDK release that moves them leaves the
    history as the model wrote it and the tool still runs with the edit (steps.py takes it)."""
    call_id = item.call_id
    step = getattr(state, "_current_step", None)
    raws: list[Any] = [item.raw_item, *(getattr(i, "raw_item", None) for i in getattr(step, "interruptions", None) or [])]
    raws += [getattr(item, "raw_item", None) for item in getattr(state, "_generated_items", None) or []]
    raws += [getattr(item, "raw_item", None) for item in getattr(state, "_session_items", None) or []]
    for response in getattr(state, "_model_responses", None) or []:
        raws += list(getattr(response, "output", None) or [])
    processed = getattr(state, "_last_processed_response", None)
    raws += [getattr(run, "tool_call", None) for run in getattr(processed, "functions", None) or []]
    # The SDK remembers each call id's invocation by a fingerprint of its arguments, to refuse a
    # model that reuses an id for another call; the edit is not that, so the call's record, not yet
    # run, is forgotten and made again from the edited call when it runs.
    context = getattr(state, "_context", None)
    invocations = getattr(context, "_tool_invocations", None)
    record = invocations.get(call_id) if isinstance(invocations, dict) else None
    if record is not None and not getattr(record, "executed", False) and not getattr(record, "completed", False):
        del invocations[call_id]
    for raw in raws:
        if isinstance(raw, dict):
            if raw.get("call_id") == call_id and "arguments" in raw:
                raw["arguments"] = arguments
        elif raw is not None and getattr(raw, "call_id", None) == call_id and hasattr(raw, "arguments"):
            try:
                raw.arguments = arguments
            except (AttributeError, TypeError, ValueError):  # a frozen item: it keeps what the model wrote
                pass


def check_arguments(agent_name: str, tool_name: str, arguments: str) -> None:
    """Raise ValidationError naming the field (`arguments`, `arguments.to`, ...) when `arguments`
    is not a JSON object that the tool's parameter schema accepts."""
    import jsonschema

    try:
        value = json.loads(arguments)
    except ValueError as exc:
        raise ValidationError("arguments", f"is not valid JSON ({exc})", 'pass a JSON object, e.g. \'{"to": "ada@example.com"}\'') from None
    if not isinstance(value, dict):
        raise ValidationError("arguments", f"is a JSON {type(value).__name__}, not an object", "pass the tool's arguments as a JSON object")
    tool = find_tool(registry.get_agent(agent_name), tool_name)
    if tool is None:
        raise ValidationError("arguments", f"agent {agent_name!r} has no function tool {tool_name!r} to check them against", "approve without editing")
    validator = jsonschema.Draft202012Validator(tool.params_json_schema)
    errors = list(validator.iter_errors(value))
    if not errors:
        return
    # A wrong value first, then an unknown field, then a missing one: the likeliest slip first.
    rank = {"required": 2, "additionalProperties": 1}
    error = min(errors, key=lambda e: (rank.get(e.validator, 0), -len(e.absolute_path)))
    path = [str(p) for p in error.absolute_path]
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = next((k for k in error.validator_value if k not in error.instance), None)
        if missing is not None:
            path.append(missing)
            raise ValidationError(".".join(["arguments", *path]), "is missing", f"tool {tool_name!r} requires it")
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set(error.schema.get("properties", {}))
        extra = next((k for k in error.instance if k not in allowed), None)
        if extra is not None:
            path.append(extra)
            raise ValidationError(".".join(["arguments", *path]), "is not a parameter of the tool", f"tool {tool_name!r} takes {sorted(allowed)}")
    raise ValidationError(".".join(["arguments", *path]), error.message, f"match tool {tool_name!r}'s parameters")


# --- decisions, from the library ---------------------------------------------------------


async def waiting_for(run_id: str, call_id: str) -> ApprovalRecord:
    """The record of the tool call `call_id` when run `run_id` waits for a decision on it, else
    ValidationError (field `call_id`) saying which calls it waits on. The one check of an approve
    or a reject, from the library and over the bus: decided from the approvals record, which the
    run writes in the step that says `interrupted` and updates in the step that says each decision.

    >>> await waiting_for("run-1", "call_9")
    Traceback (most recent call last):
    timestep.errors.ValidationError: call_id: run 'run-1' is not waiting for approval of 'call_9'; it waits on 'call_1'
    """
    problem = run_id_problem(run_id)
    if problem is not None:
        raise ValidationError("run_id", f"{run_id!r} {problem}", "use the id of a run")
    record = await get_approval(run_id, call_id)
    over = await _run_over(run_id)
    if record is not None and record.status == "pending" and not over:
        return record
    waiting = [] if over else [r.call_id for r in await query_approvals(ApprovalList(run_id=run_id, limit=10_000))]
    was = f" (it was {record.status})" if record is not None and record.status != "pending" else ""
    raise ValidationError(
        "call_id", f"run {run_id!r} is not waiting for approval of {call_id!r}{was}",
        f"it waits on {', '.join(map(repr, sorted(waiting)))}" if waiting else "it waits on no tool call now",
    )


async def approve_tool_call(
    run_id: str, call_id: str, *, arguments: str | None = None, always: bool = False, decided_by: str | None = None
) -> None:
    """Approve a tool call a run waits on (from `list_approvals`), in this process, without NATS.

    `arguments` (a JSON object as a string) replaces the model's: it is checked against the
    tool's parameter schema first (the agent must be registered here), and a bad edit raises
    ValidationError naming the field while the approval stays pending. `always` approves every
    call of this tool for the rest of the run.

    >>> await approve_tool_call("run-1", "call_1", arguments='{"to": "bob@example.com"}', decided_by="ada")
    """
    record = await waiting_for(run_id, call_id)
    if arguments is not None:
        check_arguments(record.agent, record.tool, arguments)
    await send_decision(run_id, _convert(Approve, call_id=call_id, always=always, arguments=arguments, decided_by=decided_by))


async def reject_tool_call(
    run_id: str, call_id: str, message: str | None = None, *, always: bool = False, decided_by: str | None = None
) -> None:
    """Reject a tool call a run waits on; the model is told `message`. `always` rejects every
    call of this tool for the rest of the run.

    >>> await reject_tool_call("run-1", "call_1", "not to that address", decided_by="ada")
    """
    await waiting_for(run_id, call_id)
    await send_decision(run_id, _convert(Reject, call_id=call_id, message=message, always=always, decided_by=decided_by))


def _convert(tp: type, **fields: Any) -> Any:
    try:
        return msgspec.convert({k: v for k, v in fields.items() if v is not None}, tp)
    except msgspec.ValidationError as exc:
        problem, _, where = str(exc).partition(" - at `$.")
        raise ValidationError(where.rstrip("`") or tp.__name__.lower(), problem) from None


#: The topic on which a waiting run receives approve/reject decisions.
DECISION_TOPIC = "timestep.decision"


async def send_decision(run_id: str, decision: Approve | Reject) -> None:
    """Hand a decision to a waiting run; durable, once per (run, call, kind). Stamps `decided_at`."""
    kind = "approve" if isinstance(decision, Approve) else "reject"
    if decision.decided_at is None:
        decision = msgspec.structs.replace(decision, decided_at=time.time())
    await engine.send(run_id, decision, DECISION_TOPIC, idempotency_key=f"{run_id}.{decision.call_id}.{kind}")


# --- idempotency keys for tools ------------------------------------------------------------

_call_key: ContextVar[str | None] = ContextVar("timestep_idempotency_key", default=None)


def set_idempotency_key(key: str) -> Any:
    return _call_key.set(key)


def reset_idempotency_key(token: Any) -> None:
    _call_key.reset(token)


def idempotency_key(ctx: Any = None) -> str:
    """Inside a tool of a durable run: a key for this tool call, the same every time the call
    runs (a tool whose process died before its step was recorded runs again, with the same
    key). Pass it to payment or e-mail APIs so the side effect happens once. `ctx` (the tool's
    `ToolContext`, optional) is accepted so a tool can say where the key comes from.

    >>> @function_tool(needs_approval=True)
    ... def charge(ctx: ToolContext, amount: int) -> str:
    ...     return payments.charge(amount, idempotency_key=timestep.idempotency_key(ctx))
    """
    key = _call_key.get()
    if key is None:
        raise RuntimeError("idempotency_key() is only available inside a tool call of a Timestep run")
    return key
