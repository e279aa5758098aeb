"""JSON Schema of the contract, generated from the msgspec types.

    python -m subjects.schema            # rewrite subjects/contract.schema.json
    python -m subjects.schema --check    # exit 1 when the checked-in file is out of date
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from subjects.events import LiveText, RunEvent
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

SCHEMA_FILE = Path(__file__).with_name("contract.schema.json")

#: Subject (with the default prefix) -> the type of its body, and of its reply if any.
SUBJECTS: list[tuple[str, Any, Any, str]] = [
    ("timestep.runs.submit", RunRequest, RunEvent, "start a run; a request is answered with its accepted or rejected event"),
    ("timestep.runs.events.<run_id>.<type>", RunEvent, None, "a run's events, in order, kept in a stream"),
    ("timestep.runs.live.<run_id>", LiveText, None, "streamed model text the moment it is yielded; core NATS, not stored (the `delta` events store it)"),
    ("timestep.runs.control.<run_id>.approve", Approve, None, "approve a tool call of an interrupted run"),
    ("timestep.runs.control.<run_id>.reject", Reject, None, "reject a tool call of an interrupted run"),
    ("timestep.runs.control.<run_id>.cancel", Cancel, None, "cancel a run"),
    ("timestep.runs.command.<run_id>.approve", Approve, Reply, "approve a tool call; answered once done, or with why not"),
    ("timestep.runs.command.<run_id>.reject", Reject, Reply, "reject a tool call; answered once done, or with why not"),
    ("timestep.runs.command.<run_id>.cancel", Cancel, Reply, "cancel a run; answered once done, or with why not"),
    ("timestep.runs.list", RunsList, Reply, "the newest runs first (status, agent, queue, times, tokens), filtered"),
    ("timestep.runs.get", RunGet, Reply, "one run; the reply's `run`, or error UnknownRun"),
    ("timestep.runs.steps", RunSteps, Reply, "a run's recorded steps (model and tool calls, guardrails, waits), in the reply's `steps`"),
    ("timestep.runs.fork", RunFork, Reply, "a new run going on from a step of a finished run (the steps before it from the record); the reply's `run`"),
    ("timestep.schedules.create", ScheduleCreate, Reply, "create or replace a cron schedule of a run request"),
    ("timestep.schedules.delete", ScheduleDelete, Reply, "delete a schedule"),
    ("timestep.schedules.list", ScheduleList, Reply, "list schedules"),
    ("timestep.queues.configure", QueueConfigure, Reply, "create or replace a queue's policy"),
    ("timestep.queues.delete", QueueDelete, Reply, "delete a queue; refused while runs wait or run on it"),
    ("timestep.queues.status", QueueStatusRequest, Reply, "depth, running and admitted in the current window"),
    ("timestep.approvals.list", ApprovalList, Reply, "approvals across runs: pending ones, or decided ones (the audit trail)"),
    ("timestep.dead.<original subject>", DeadLetter, None, "what could not be processed, and why"),
]


def _name(tp: Any) -> str:
    return "RunEvent" if tp is RunEvent else tp.__name__


def contract_schema() -> dict[str, Any]:
    types = [body for _, body, _, _ in SUBJECTS] + [reply for _, _, reply, _ in SUBJECTS if reply is not None]
    unique = list(dict.fromkeys(types))
    schemas, components = msgspec.json.schema_components(unique, ref_template="#/$defs/{name}")
    defs = dict(components)
    for tp, schema in zip(unique, schemas):
        if tp is RunEvent:
            defs["RunEvent"] = schema
    subjects = {}
    for subject, body, reply, doc in SUBJECTS:
        entry: dict[str, Any] = {"description": doc, "body": {"$ref": f"#/$defs/{_name(body)}"}}
        if reply is not None:
            entry["reply"] = {"$ref": f"#/$defs/{_name(reply)}"}
        subjects[subject] = entry
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "urn:timestep:contract",
        "title": "Timestep subject contract",
        "description": "Message bodies are JSON (Content-Type: application/json), snake_case. "
        "Fields may be added later, never removed. See subjects/README.md.",
        "x-subjects": subjects,
        "$defs": dict(sorted(defs.items())),
    }


def render() -> str:
    return json.dumps(contract_schema(), indent=2, sort_keys=False) + "\n"


def write_or_check(path: Path, text: str, command: str, argv: list[str]) -> int:
    """Write a generated file, or with `--check` only say whether it is up to date."""
    if "--check" in argv:
        if not path.exists() or path.read_text() != text:
            print(f"{path} is out of date: run `{command}`", file=sys.stderr)
            return 1
        return 0
    path.write_text(text)
    print(f"wrote {path}")
    return 0


def main(argv: list[str]) -> int:
    return write_or_check(SCHEMA_FILE, render(), "python -m subjects.schema", argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
