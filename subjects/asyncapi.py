"""AsyncAPI 3.0 document of the contract, generated from the msgspec types (like `subjects.schema`).

    python -m subjects.asyncapi            # rewrite subjects/asyncapi.json
    python -m subjects.asyncapi --check    # exit 1 when the checked-in file is out of date

Operations are written from the point of view of a client application: it *sends* run requests,
controls and admin requests, and *receives* run events and dead letters.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from subjects.events import EVENT_TYPES, Accepted, LiveText, Rejected, RunEvent
from subjects.ids import CONTRACT_VERSION
from subjects.messages import (
    ApprovalList,
    Approve,
    Cancel,
    DeadLetter,
    QueueConfigure,
    QueueDelete,
    QueueStatusRequest,
    Reject,
    Reply,
    RunFork,
    RunGet,
    RunRequest,
    RunsList,
    RunSteps,
    ScheduleCreate,
    ScheduleDelete,
    ScheduleList,
)
from subjects.names import CONTROL_STREAM, DEAD_STREAM, EVENTS_STREAM, SUBMIT_STREAM, Subjects
from subjects.schema import write_or_check

ASYNCAPI_FILE = Path(__file__).with_name("asyncapi.json")

_S = Subjects()  # addresses come from the same names the actors use, with the default prefix
_RUN_ID = "{run_id}"

#: Reply channels: the requester's inbox, whose address NATS makes up per request.
REPLIES: dict[str, tuple[tuple[type, ...], str]] = {
    "submit.reply": ((Accepted, Rejected), (
        "The requester's inbox: the run's `accepted` event plus a JetStream PubAck's `stream` (and "
        "`duplicate: true` for a repeat), or its `rejected` event whose `error` is JetStream's API error "
        "`{code: 400, description}`, so a JetStream publish returns a PubAck or raises with the reason; the "
        "field at fault, when one is, beside it as top-level `field`."
    )),
    "admin.reply": ((Reply,), "The requester's inbox: `ok`, or `error`, plus what was asked for."),
}

#: Request subjects a client sends on: channel id, operation id, address, body, reply channel, stream, what it does.
REQUESTS: list[tuple[str, str, str, type, str | None, str | None, str]] = [
    ("submit", "submitRun", _S.submit, RunRequest, "submit.reply", SUBMIT_STREAM,
     "Start a run. Sent as a request, it is answered with the run's `accepted` or `rejected` event once a governor "
     "has handed it over durably; a plain publish gets no answer (follow the run's events). Without `queue` the run "
     "starts at once; with `queue` it waits its turn there."),
    ("control.approve", "approveToolCall", _S.control(_RUN_ID, "approve"), Approve, None, CONTROL_STREAM,
     "Approve a tool call of an interrupted run (`call_id` from its `interrupted` event). Stored, and acted on when an "
     "agent actor takes it; nothing answers (a refusal goes to the dead letters): use `command.approve` for an answer."),
    ("control.reject", "rejectToolCall", _S.control(_RUN_ID, "reject"), Reject, None, CONTROL_STREAM,
     "Reject a tool call of an interrupted run; the model is told `message`. Stored; nothing answers."),
    ("control.cancel", "cancelRun", _S.control(_RUN_ID, "cancel"), Cancel, None, CONTROL_STREAM,
     "Cancel a queued or running run. Stored; nothing answers."),
    ("command.approve", "approveToolCallAndWait", _S.command(_RUN_ID, "approve"), Approve, "admin.reply", None,
     "Approve a tool call of an interrupted run, as a request: an agent actor checks the run waits on `call_id`, hands "
     "the approval to it durably, and answers `ok`; or answers `error` (`type` UnknownRun, AlreadyFinished, NotWaiting, "
     "NotStarted, InvalidRequest) and did nothing."),
    ("command.reject", "rejectToolCallAndWait", _S.command(_RUN_ID, "reject"), Reject, "admin.reply", None,
     "Reject a tool call of an interrupted run, as a request, answered as `command.approve`."),
    ("command.cancel", "cancelRunAndWait", _S.command(_RUN_ID, "cancel"), Cancel, "admin.reply", None,
     "Cancel a queued or running run, as a request: answered `ok` once cancelled, or `error` (AlreadyFinished for a run "
     "that ended, UnknownRun)."),
    ("runs.list", "listRuns", _S.runs_list, RunsList, "admin.reply", None,
     "The newest runs first, as the database holds them (status, agent, queue, times, tokens), filtered by `status`, "
     "`agent` and `queue`; the reply's `runs`."),
    ("runs.get", "getRun", _S.runs_get, RunGet, "admin.reply", None,
     "One run, in the reply's `run`; or `error` UnknownRun. Its timeline is its events."),
    ("runs.steps", "getRunSteps", _S.runs_steps, RunSteps, "admin.reply", None,
     "A run's recorded steps in order, in the reply's `steps`: each step's number, kind, name, times, status, a model "
     "call's attempt, and its value (cut to 2,000 characters of JSON in a listing; with `step`, that one step whole); "
     "or `error` UnknownRun."),
    ("runs.fork", "forkRun", _S.runs_fork, RunFork, "admin.reply", None,
     "A new run that goes on from step `from_step` of the finished run `id`: the steps before it come from the "
     "record (no model or tool call before it runs again), and from it on an agent actor runs it with the agent as "
     "deployed now. The reply's `run` is the fork (its first event is `forked`); or `error` naming the field: a run "
     "not ended or with a session, a step it does not have, an agent no actor hosts."),
    ("schedules.create", "createSchedule", _S.schedules_create, ScheduleCreate, "admin.reply", None,
     "Create or replace a cron schedule of a run request (5 fields, or 6 with seconds first)."),
    ("schedules.delete", "deleteSchedule", _S.schedules_delete, ScheduleDelete, "admin.reply", None,
     "Delete a schedule; the reply's `deleted` says whether it existed."),
    ("schedules.list", "listSchedules", _S.schedules_list, ScheduleList, "admin.reply", None,
     "List the schedules; the body may be empty."),
    ("queues.configure", "configureQueue", _S.queues_configure, QueueConfigure, "admin.reply", None,
     "Create or replace a queue's policy; the reply's `queues` holds its status."),
    ("queues.delete", "deleteQueue", _S.queues_delete, QueueDelete, "admin.reply", None,
     "Delete a queue; the reply's `deleted` says whether it existed. Refused (saying how many) while runs wait or run on it."),
    ("queues.status", "getQueueStatus", _S.queues_status, QueueStatusRequest, "admin.reply", None,
     "Depth, running and admitted in the current window, of one queue or (without `name`) every queue."),
    ("approvals.list", "listApprovals", _S.approvals_list, ApprovalList, "admin.reply", None,
     "Approvals across runs, newest first, filtered by status (`pending`, the default; `decided`: the audit trail; "
     "`all`), run, agent, tool, queue and age; the reply's `approvals` holds the records."),
]

PARAMETERS = {
    "run_id": "The run id: 1-128 characters of [A-Za-z0-9_-], always one subject token; also the DBOS workflow id.",
    "original_subject": "The subject the unprocessable message was published on (several tokens).",
}

HEADERS = {
    "SubmitHeaders": {
        "Nats-Msg-Id": "Set it to the run id: JetStream drops a repeat inside its duplicate window "
        "(TIMESTEP_DUPLICATE_WINDOW, 120 s). Without a body `id`, the governor derives the run id from it.",
        "traceparent": "W3C trace context (`00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`), optional: the run's "
        "events carry the same trace id.",
        "tracestate": "W3C trace state, optional, passed on with `traceparent`.",
    },
    "ControlHeaders": {
        "Nats-Msg-Id": "`<run_id>.<action>.<call_id>` (`<run_id>.cancel.run` for a cancellation): a retried "
        "publish is stored once.",
    },
    "EventHeaders": {
        "Nats-Msg-Id": "`<run_id>.<seq>` (`<run_id>.cancelled` for a cancellation): a step replayed after a crash "
        "publishes the same ids, which JetStream drops.",
        "traceparent": "The run's W3C trace context (the trace id of its submit).",
    },
}

_HEADER_OF = {SUBMIT_STREAM: "SubmitHeaders", CONTROL_STREAM: "ControlHeaders", EVENTS_STREAM: "EventHeaders"}


def _tag(tp: type) -> str:
    return tp.__struct_config__.tag  # type: ignore[attr-defined]


def _doc(tp: type) -> str:
    return " ".join((tp.__doc__ or "").split())


def _asyncapi_schema(node: Any) -> Any:
    """msgspec writes OpenAPI's discriminator object; an AsyncAPI schema's `discriminator` is the property name."""
    if isinstance(node, dict):
        out = {k: _asyncapi_schema(v) for k, v in node.items()}
        if isinstance(out.get("discriminator"), dict):
            out["discriminator"] = out["discriminator"]["propertyName"]
        return out
    if isinstance(node, list):
        return [_asyncapi_schema(v) for v in node]
    return node


def _schemas() -> dict[str, Any]:
    bodies = [RunRequest, Approve, Reject, Cancel, ScheduleCreate, ScheduleDelete, ScheduleList,
              QueueConfigure, QueueDelete, QueueStatusRequest, RunsList, RunGet, RunSteps, RunFork, ApprovalList, Reply, DeadLetter, LiveText, RunEvent]
    schemas, components = msgspec.json.schema_components(bodies, ref_template="#/components/schemas/{name}")
    defs = dict(components)
    defs["RunEvent"] = schemas[bodies.index(RunEvent)]
    for name, fields in HEADERS.items():
        defs[name] = {
            "type": "object",
            "properties": {
                "Content-Type": {"type": "string", "const": "application/json"},
                **{header: {"type": "string", "description": text} for header, text in fields.items()},
            },
        }
    return _asyncapi_schema(dict(sorted(defs.items())))


def _message(name: str, tp: type, summary: str, headers: str | None = None, correlated: bool = False) -> dict[str, Any]:
    message: dict[str, Any] = {
        "name": name,
        "title": tp.__name__,
        "summary": summary,
        "contentType": "application/json",
        "payload": {"$ref": f"#/components/schemas/{tp.__name__}"},
    }
    if headers:
        message["headers"] = {"$ref": f"#/components/schemas/{headers}"}
    if correlated:
        message["correlationId"] = {"description": "Every event of a run carries its id.", "location": "$message.payload#/run_id"}
    return message


def _ref(*path: str) -> dict[str, str]:
    return {"$ref": "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in path)}


def _params(address: str) -> dict[str, Any]:
    return {name: _ref("components", "parameters", name) for name in PARAMETERS if "{" + name + "}" in address}


def asyncapi_document() -> dict[str, Any]:
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}

    for tp in EVENT_TYPES.values():
        messages[_tag(tp)] = _message(_tag(tp), tp, _doc(tp), "EventHeaders", correlated=True)
    for tp in (RunRequest, Approve, Reject, Cancel, ScheduleCreate, ScheduleDelete, ScheduleList,
               QueueConfigure, QueueDelete, QueueStatusRequest, RunsList, RunGet, RunSteps, RunFork, ApprovalList, Reply, DeadLetter, LiveText):
        headers = {RunRequest: "SubmitHeaders", Approve: "ControlHeaders", Reject: "ControlHeaders", Cancel: "ControlHeaders"}
        messages[tp.__name__] = _message(tp.__name__, tp, _doc(tp), headers.get(tp))

    def message_names(channel_id: str) -> list[str]:
        return [_tag(t) if t in EVENT_TYPES.values() else t.__name__ for t in REPLIES[channel_id][0]]

    for channel_id, (_, text) in REPLIES.items():
        channels[channel_id] = {
            "address": None,
            "description": text,
            "messages": {m: _ref("components", "messages", m) for m in message_names(channel_id)},
        }

    for channel_id, operation_id, address, body, reply, stream, text in REQUESTS:
        channel: dict[str, Any] = {
            "address": address,
            "description": text,
            "messages": {body.__name__: _ref("components", "messages", body.__name__)},
        }
        if _params(address):
            channel["parameters"] = _params(address)
        if stream:
            channel["x-timestep-stream"] = stream
        channels[channel_id] = channel
        operation: dict[str, Any] = {
            "action": "send",
            "channel": _ref("channels", channel_id),
            "summary": text.split(". ")[0].rstrip(".") + ".",
            "messages": [_ref("channels", channel_id, "messages", body.__name__)],
        }
        if reply is not None:
            operation["reply"] = {
                "channel": _ref("channels", reply),
                "messages": [_ref("channels", reply, "messages", m) for m in message_names(reply)],
            }
        operations[operation_id] = operation

    for tag, tp in EVENT_TYPES.items():
        channel_id = f"events.{tag}"
        address = _S.events(_RUN_ID, tag)
        channels[channel_id] = {
            "address": address,
            "description": f"`{tag}` events of a run. Subscribe to `{_S.run_events(_RUN_ID)}` with a JetStream "
            f"consumer on the `{EVENTS_STREAM}` stream from its start to replay a run's history, late or not.",
            "messages": {tag: _ref("components", "messages", tag)},
            "parameters": _params(address),
            "x-timestep-stream": EVENTS_STREAM,
        }
        operations["on" + tp.__name__] = {
            "action": "receive",
            "channel": _ref("channels", channel_id),
            "summary": _doc(tp),
            "messages": [_ref("channels", channel_id, "messages", tag)],
        }

    live = _S.live(_RUN_ID)
    channels["live"] = {
        "address": live,
        "description": "A run's streamed model text, each piece the moment the model yields it: core NATS, not "
        "stored, so only a subscriber present at the time gets it, at most once. The run's `delta` events store the "
        "same text (gathered into fewer events while storage is busy); a subscriber that sees a gap in `offset` "
        "reads those. Subscribe to `" + _S.all_live + "` for every run.",
        "messages": {"LiveText": _ref("components", "messages", "LiveText")},
        "parameters": _params(live),
    }
    operations["onLiveText"] = {
        "action": "receive",
        "channel": _ref("channels", "live"),
        "summary": "A piece of a run's streamed model text, as it is yielded (not stored).",
        "messages": [_ref("channels", "live", "messages", "LiveText")],
    }

    dead = _S.dead("{original_subject}")
    channels["dead"] = {
        "address": dead,
        "description": "What could not be processed, and why: undecodable or invalid messages (after their answer), "
        "and messages whose handling kept failing after 10 attempts. Kept 30 days.",
        "messages": {"DeadLetter": _ref("components", "messages", "DeadLetter")},
        "parameters": _params(dead),
        "x-timestep-stream": DEAD_STREAM,
    }
    operations["onDeadLetter"] = {
        "action": "receive",
        "channel": _ref("channels", "dead"),
        "summary": "A message that could not be processed, and why.",
        "messages": [_ref("channels", "dead", "messages", "DeadLetter")],
    }

    return {
        "asyncapi": "3.0.0",
        "id": "urn:timestep:contract",
        "info": {
            "title": "Timestep subject contract",
            "version": CONTRACT_VERSION,
            "description": "Start OpenAI Agents SDK runs and follow them over NATS JetStream. Bodies are JSON, "
            "snake_case; fields may be added later, never removed; unknown fields are ignored. Every subject starts "
            "with the prefix, `timestep` by default (TIMESTEP_SUBJECT_PREFIX). Generated from the msgspec types in "
            "`subjects/` by `python -m subjects.asyncapi`; see subjects/README.md.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "host": "127.0.0.1:4222",
                "protocol": "nats",
                "description": "The embedded server of `timestep up` (it writes its URL to $TIMESTEP_HOME/nats.url); "
                "elsewhere the server or cluster of NATS_URL.",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": _schemas(),
            "messages": messages,
            "parameters": {name: {"description": text} for name, text in PARAMETERS.items()},
        },
    }


def render() -> str:
    return json.dumps(asyncapi_document(), indent=2) + "\n"


def main(argv: list[str]) -> int:
    return write_or_check(ASYNCAPI_FILE, render(), "python -m subjects.asyncapi", argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
