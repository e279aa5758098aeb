"""The wire contract's run ids and event types."""

from __future__ import annotations

from datetime import datetime, timezone

import msgspec
import pytest

import subjects


@pytest.mark.parametrize("good", ["a", "run-1", "RUN_2", "x" * 128, "0123-abcd_EF"])
def test_valid_run_ids(good: str) -> None:
    assert subjects.is_valid_run_id(good)
    assert subjects.run_id_problem(good) is None


@pytest.mark.parametrize("bad", ["", "a.b", "*", ">", "a b", "x" * 129, "é", None, 5])
def test_invalid_run_ids_say_why(bad: object) -> None:
    assert not subjects.is_valid_run_id(bad)
    assert subjects.run_id_problem(bad)


def test_events_round_trip_as_tagged_json() -> None:
    event = subjects.Interrupted(
        run_id="r1", seq=3, time=datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
        approvals=[subjects.Approval(call_id="c1", tool="send_email", arguments='{"to":"bob"}')],
    )
    data = subjects.encode_event(event)
    assert data.startswith(b'{"type":"interrupted","run_id":"r1","seq":3,"time":"2026-01-02T03:04:05Z"')
    assert subjects.decode_event(data) == event


def test_decoding_a_bad_event_names_the_field() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"\$\.seq"):
        subjects.decode_event(b'{"type":"started","run_id":"r","seq":"one","time":"2026-01-01T00:00:00Z"}')
    with pytest.raises(msgspec.ValidationError, match="Invalid value 'exploded'"):
        subjects.decode_event(b'{"type":"exploded","run_id":"r","seq":1,"time":"2026-01-01T00:00:00Z"}')


def test_checked_in_json_schema_matches_the_types() -> None:
    from subjects.schema import SCHEMA_FILE, render

    assert SCHEMA_FILE.read_text() == render(), "run `python -m subjects.schema` and commit subjects/contract.schema.json"


def test_schema_covers_every_subject_and_event() -> None:
    from subjects.schema import contract_schema

    schema = contract_schema()
    assert "timestep.runs.submit" in schema["x-subjects"]
    event_refs = {ref["$ref"].rsplit("/", 1)[1] for ref in schema["$defs"]["RunEvent"]["anyOf"]}
    assert event_refs == {cls.__name__ for cls in subjects.EVENT_TYPES.values()}
    assert schema["$defs"]["RunRequest"]["required"] == ["agent", "input"]


def test_an_event_type_reads_as_on_the_wire() -> None:
    from subjects.events import decode_event

    event = decode_event(b'{"type": "delta", "run_id": "r1", "seq": 3, "time": "2026-11-25T07:00:00Z", "text": "Hi"}')
    assert event.type == "delta"
