"""Which tool calls a run waits on, read from its stored events: what `approve` and `reject` are
checked against on the bus, so a decision for a call the run no longer waits on is refused."""

from __future__ import annotations

from datetime import datetime, timezone

import msgspec

import subjects
from actors.agent import waiting_calls

T = datetime(2026, 1, 1, tzinfo=timezone.utc)


def history(*events: subjects.RunEvent) -> list[dict]:
    """Events as the bus hands them back: plain JSON objects, numbered in order."""
    return [msgspec.json.decode(subjects.encode_event(msgspec.structs.replace(e, seq=i + 1))) for i, e in enumerate(events)]


def started() -> subjects.RunEvent:
    return subjects.Started(run_id="r", seq=0, time=T)


def interrupted(*call_ids: str) -> subjects.RunEvent:
    approvals = [subjects.Approval(call_id=c, tool="send_email", arguments="{}") for c in call_ids]
    return subjects.Interrupted(run_id="r", seq=0, time=T, approvals=approvals)


def approved(call_id: str) -> subjects.RunEvent:
    return subjects.ToolApproved(run_id="r", seq=0, time=T, call_id=call_id, tool="send_email")


def rejected(call_id: str) -> subjects.RunEvent:
    return subjects.ToolRejected(run_id="r", seq=0, time=T, call_id=call_id, tool="send_email")


def delta(text: str) -> subjects.RunEvent:
    return subjects.Delta(run_id="r", seq=0, time=T, text=text)


def test_a_run_that_never_stopped_for_approval_waits_on_nothing() -> None:
    assert waiting_calls([]) == []
    assert waiting_calls(history(started(), delta("Hi"))) == []


def test_a_stopped_run_waits_on_every_call_of_its_interruption_in_order() -> None:
    assert waiting_calls(history(started(), interrupted("c1", "c2", "c3"))) == ["c1", "c2", "c3"]


def test_a_decided_call_is_no_longer_waited_on_and_the_others_still_are() -> None:
    events = history(started(), interrupted("c1", "c2", "c3"), approved("c2"), rejected("c3"))
    assert waiting_calls(events) == ["c1"]


def test_once_the_run_went_on_it_waits_on_nothing_until_it_stops_again() -> None:
    went_on = history(started(), interrupted("c1", "c2"), approved("c1"), delta("sent"))
    assert waiting_calls(went_on) == []
    # The latest interruption counts, not an earlier one with the same call ids.
    again = history(started(), interrupted("c1"), approved("c1"), delta("sent"), interrupted("c2", "c1"))
    assert waiting_calls(again) == ["c2", "c1"]
