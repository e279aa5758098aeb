"""The AsyncAPI document: current with the msgspec types, and structurally sound.
(The TypeScript package's tests also validate it against the official AsyncAPI 3.0 JSON Schema.)"""

from __future__ import annotations

import inspect
import json
import re
from typing import Any

import msgspec

import subjects.events
import subjects.messages
from subjects import asyncapi
from subjects.events import EVENT_TYPES
from subjects.names import Subjects
from subjects.schema import SUBJECTS


def load() -> dict[str, Any]:
    return json.loads(asyncapi.ASYNCAPI_FILE.read_text())


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"{ref}: only local references are used"
    node: Any = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"{ref}: no {part!r}"
        node = node[part]
    return node


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def test_checked_in_document_is_current() -> None:
    assert asyncapi.ASYNCAPI_FILE.read_text() == asyncapi.render(), "subjects/asyncapi.json is stale: run `python -m subjects.asyncapi`"
    assert asyncapi.main(["--check"]) == 0


def test_every_reference_resolves() -> None:
    doc = load()
    assert doc["asyncapi"] == "3.0.0"
    found = refs(doc)
    assert len(found) > 100
    for ref in found:
        resolve(doc, ref)


def test_every_channel_has_a_message_and_operations_use_their_channels_messages() -> None:
    doc = load()
    for channel_id, channel in doc["channels"].items():
        assert channel["messages"], f"channel {channel_id} has no message"
        for name in re.findall(r"{(\w+)}", channel["address"] or ""):
            assert name in channel.get("parameters", {}), f"channel {channel_id}: parameter {name} not declared"
    for operation_id, operation in doc["operations"].items():
        assert operation["action"] in ("send", "receive")
        channel_ref = operation["channel"]["$ref"]
        for message in operation["messages"]:
            assert message["$ref"].startswith(channel_ref + "/messages/"), f"{operation_id}: {message} is not a message of its channel"
        if "reply" in operation:
            for message in operation["reply"]["messages"]:
                assert message["$ref"].startswith(operation["reply"]["channel"]["$ref"] + "/messages/")


def test_every_subject_of_the_contract_is_a_channel() -> None:
    doc = load()
    addresses = {c["address"] for c in doc["channels"].values() if c["address"]}
    s = Subjects()
    expected = {s.submit, s.schedules_create, s.schedules_delete, s.schedules_list, s.queues_configure, s.queues_delete, s.queues_status,
                s.approvals_list}
    expected |= {s.runs_list, s.runs_get, s.runs_steps, s.runs_fork}
    expected |= {s.control("{run_id}", action) for action in ("approve", "reject", "cancel")}
    expected |= {s.command("{run_id}", action) for action in ("approve", "reject", "cancel")}
    expected |= {s.events("{run_id}", tag) for tag in EVENT_TYPES}
    expected |= {s.dead("{original_subject}"), s.live("{run_id}")}
    assert addresses == expected
    # The JSON Schema's subject table names the same subjects.
    for subject, _, _, _ in SUBJECTS:
        pattern = subject.replace("<run_id>", "{run_id}").replace("<original subject>", "{original_subject}")
        assert pattern in addresses or pattern == s.events("{run_id}", "<type>"), subject


def test_every_message_type_of_the_contract_appears() -> None:
    doc = load()
    structs = [
        cls for module in (subjects.events, subjects.messages) for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, msgspec.Struct) and cls.__module__ == module.__name__ and not cls.__name__.startswith("_")
    ]
    assert len(structs) >= 25
    schemas = doc["components"]["schemas"]
    for cls in structs:
        assert cls.__name__ in schemas, f"{cls.__name__} has no schema"
    payloads = {m["payload"]["$ref"].rsplit("/", 1)[1] for m in doc["components"]["messages"].values()}
    on_channels = {ref.rsplit("/", 1)[1] for c in doc["channels"].values() for ref in refs(c["messages"])}
    bodies = {body.__name__ for _, _, _, body, _, _, _ in asyncapi.REQUESTS} | {"Reply", "DeadLetter"} | {cls.__name__ for cls in EVENT_TYPES.values()}
    assert bodies <= payloads
    assert set(doc["components"]["messages"]) == on_channels
    # Each event message carries its type's tag and the run id that correlates it.
    for tag, cls in EVENT_TYPES.items():
        message = doc["components"]["messages"][tag]
        assert schemas[cls.__name__]["properties"]["type"] == {"enum": [tag]}
        assert message["correlationId"]["location"] == "$message.payload#/run_id"


def test_submit_documents_its_reply_and_the_dedup_header() -> None:
    doc = load()
    submit = doc["operations"]["submitRun"]
    assert submit["action"] == "send"
    replies = {resolve(doc, resolve(doc, m["$ref"])["$ref"])["payload"]["$ref"].rsplit("/", 1)[1] for m in submit["reply"]["messages"]}
    assert replies == {"Accepted", "Rejected"}
    headers = resolve(doc, doc["components"]["messages"]["RunRequest"]["headers"]["$ref"])
    assert "Nats-Msg-Id" in headers["properties"]
    assert all(doc["operations"][f"on{cls.__name__}"]["action"] == "receive" for cls in EVENT_TYPES.values())
