"""What a run must be to be accepted: one set of rules for both ways in, the library's
`run_agent_workflow` / `queue_agent_workflow` / `create_scheduled_agent_workflow` and a request on
the bus (`timestep.bus.intake`, which the governor and the scheduler call).

The rules are the contract's types (`subjects.messages.RunRequest`: lengths, bounds, no control
characters where PostgreSQL cannot store them), told in the contract's words (`subjects.problems`);
this module adds only what no type can say, and the look at the session that a `reject` run needs.
A problem names the field as the contract does (`session_id`, `queue`); the library names its own
arguments (`LIBRARY_NAMES`). Once admitted, a run is built, started and queued by `runs.spec_for`,
`runs.start_run` and `runs.enqueue_run`, cancelled by `runs.cancel_run`, and its approvals are
decided by `approvals.waiting_for`, the same on both ways in.

>>> run_request("assistant", "Hi", timeout_seconds=1e10)
Traceback (most recent call last):
timestep.errors.ValidationError: timeout_seconds: 10000000000.0 is not a number more than 0 and at most 31536000
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from agents import RunState

from subjects.messages import ModelRetry, RunRequest
from subjects.problems import convert_problem
from timestep.durable import registry, run_context, turns
from timestep.durable.queues import check_queue_name
from timestep.errors import SessionBusyError, ValidationError

#: The library's argument for each field of the contract it names differently.
LIBRARY_NAMES = {"input": "input_items", "id": "workflow_id", "session_id": "session", "queue": "queue_name"}
_HEAD = re.compile(r"^[^.\[]*")
_ROLES = {"user", "assistant", "system", "developer"}


def library_name(field: str) -> str:
    """`field` (`input[0].role`) as the library's arguments name it (`input_items[0].role`)."""
    return _HEAD.sub(lambda m: LIBRARY_NAMES.get(m.group(0), m.group(0)), field, count=1)


def check_request(request: RunRequest) -> None:
    """The rules no type of the contract says: the shape of the input items, and the queue names
    DBOS keeps for itself. Raises ValidationError naming the contract's field."""
    if isinstance(request.input, list):
        check_input_items(request.input)
    if request.queue is not None:
        check_queue_name(request.queue, "queue")
    if request.context is not None:  # when this process hosts the agent; else the run checks it as it starts
        run_context.from_json(request.context, registry.agent_context_type(request.agent))


def run_request(agent: str, input: str | list[Any], **options: Any) -> RunRequest:
    """The library's run options as the contract's `RunRequest` (an option that is None is left
    out), held to the rules a request on the bus is held to; a ValidationError names the library's
    argument (`session`, not `session_id`) and says the rest in the bus's words."""
    retry = options.get("model_retry")
    if isinstance(retry, ModelRetry):
        options["model_retry"] = msgspec.to_builtins(retry)
    fields = {"agent": agent, "input": input, **{k: v for k, v in options.items() if v is not None}}
    try:
        request = msgspec.convert(fields, RunRequest)
        check_request(request)
    except msgspec.ValidationError as exc:
        field, problem = convert_problem(exc, fields, RunRequest)
        raise ValidationError(library_name(field), problem) from None
    except ValidationError as exc:
        raise ValidationError(library_name(exc.field), exc.problem, exc.fix) from None
    return request


def check_input_items(items: list[Any], field: str = "input") -> None:
    """Each item a Responses-API input item the Agents SDK can run; raises ValidationError naming
    the item (`input[2].role`)."""
    if not items:
        raise ValidationError(field, "is an empty list", "pass at least one input item, or a string")
    for index, item in enumerate(items):
        where = f"{field}[{index}]"
        if not isinstance(item, dict):
            raise ValidationError(where, f"is a {type(item).__name__}", "each item must be a dict such as {'role': 'user', 'content': 'Hi'}")
        kind = item.get("type")
        if kind is not None and not isinstance(kind, str):
            raise ValidationError(f"{where}.type", f"{kind!r} is not a string", "use e.g. 'message' or 'function_call_output'")
        if kind in (None, "message"):
            role = item.get("role")
            if role not in _ROLES:
                raise ValidationError(f"{where}.role", f"{role!r} is not one of {sorted(_ROLES)}", "a message needs a role, e.g. 'user'")
            content = item.get("content")
            if isinstance(content, list):
                for part_index, part in enumerate(content):
                    if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                        raise ValidationError(
                            f"{where}.content[{part_index}]",
                            f"{part!r} has no 'type'",
                            "content parts look like {'type': 'input_text', 'text': 'Hi'}",
                        )
            elif not isinstance(content, str):
                raise ValidationError(f"{where}.content", f"is a {type(content).__name__}", "content is a string or a list of content parts")
        elif kind in ("function_call_output", "function_call"):
            if not isinstance(item.get("call_id"), str):
                raise ValidationError(f"{where}.call_id", "is missing", f"a {kind} item needs the call_id of its tool call")


async def refuse_if_busy(session_id: str | None, session_policy: str | None, run_id: str) -> None:
    """`session_policy="reject"`: refuse with SessionBusyError before anything is written when the
    session has an unfinished run (the run checks again as it joins, for one that came in between)."""
    if session_policy == "reject" and session_id:
        busy = await turns.unfinished(session_id, besides=run_id)
        if busy is not None:
            raise SessionBusyError(session_id, busy)


def library_input(input_items: Any) -> str | list[Any] | RunState:
    """The library's `input_items`: a string, input items, or a RunState to resume."""
    if isinstance(input_items, (str, RunState)):
        return input_items
    if not isinstance(input_items, list):
        raise ValidationError(
            "input_items",
            f"is a {type(input_items).__name__}",
            "pass a string, a list of Responses-API input items, or a RunState to resume",
        )
    check_input_items(input_items, "input_items")
    return input_items
