"""Bad input gets a clear error naming the field and the fix, and nothing is written."""

from __future__ import annotations

import pytest
from agents import Agent

import timestep
from timestep.durable import engine

AGENT = Agent(name="validation-agent")


async def _count_workflows() -> int:
    """Runs of this module's agent: the database is shared by the session's other tests, whose
    background work (schedules, queued runs) may add workflows of its own at any moment."""
    runs = await engine.list_workflows(load_output=False)
    return sum(1 for run in runs if any(getattr(arg, "agent", None) == AGENT.name for arg in (run.input or {}).get("args", ())))


@pytest.mark.parametrize("workflow_id", ["a.b", "*", ">", "has space", "", "x" * 129, "tab\there", "ünï"])
async def test_workflow_id_must_be_a_subject_token(db: str, workflow_id: str) -> None:
    before = await _count_workflows()
    with pytest.raises(timestep.ValidationError, match=r"^workflow_id: .*letters, digits, '_' and '-'") as info:
        await timestep.run_agent_workflow(AGENT, "hi", workflow_id=workflow_id)
    assert info.value.field == "workflow_id"
    with pytest.raises(timestep.ValidationError, match=r"^workflow_id: "):
        await timestep.queue_agent_workflow(AGENT, "hi", workflow_id=workflow_id)
    assert await _count_workflows() == before


@pytest.mark.parametrize(
    ("items", "field"),
    [
        (42, "input_items"),
        ([], "input_items"),
        (["hello"], "input_items[0]"),
        ([{"role": "robot", "content": "x"}], "input_items[0].role"),
        ([{"role": "user"}], "input_items[0].content"),
        ([{"role": "user", "content": [{"text": "no type"}]}], "input_items[0].content[0]"),
        ([{"role": "user", "content": "ok"}, {"type": "function_call_output", "output": "x"}], "input_items[1].call_id"),
        ([{"type": 7}], "input_items[0].type"),
    ],
)
async def test_malformed_input_items_name_the_item(db: str, items: object, field: str) -> None:
    before = await _count_workflows()
    with pytest.raises(timestep.ValidationError) as info:
        await timestep.run_agent_workflow(AGENT, items)  # type: ignore[arg-type]
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
    assert await _count_workflows() == before


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"limit": 0, "period": 60}, "limit"),
        ({"limit": 5}, "period"),
        ({"period": 5}, "limit"),
        ({"limit": 5, "period": -1}, "period"),
        ({"limit": 5, "period": "60"}, "period"),
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": True}, "concurrency"),
    ],
)
async def test_invalid_queue_settings(db: str, kwargs: dict, field: str) -> None:
    with pytest.raises(timestep.ValidationError) as info:
        await timestep.configure_queue("settings-check", **kwargs)
    assert info.value.field == field
    assert await engine.blocking(engine.queue_policy, "settings-check") is None


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"priority": 0}, "priority"),
        ({"priority": "high"}, "priority"),
        ({"priority": 2**31}, "priority"),
        ({"queue_name": "a.b"}, "queue_name"),
        ({"queue_name": "_dbos_internal"}, "queue_name"),
        ({"deduplication_id": ""}, "deduplication_id"),
        ({"on_duplicate": "ignore"}, "on_duplicate"),
        ({"timeout_seconds": 0}, "timeout_seconds"),
        ({"stream": "yes"}, "stream"),
        ({"session": 123}, "session"),
    ],
)
async def test_invalid_queue_run_options(db: str, kwargs: dict, field: str) -> None:
    before = await _count_workflows()
    with pytest.raises(timestep.ValidationError) as info:
        await timestep.queue_agent_workflow(AGENT, "hi", **kwargs)
    assert info.value.field == field
    assert await _count_workflows() == before


async def test_unknown_agent_names_the_registered_ones(db: str) -> None:
    timestep.register_agent(AGENT)
    with pytest.raises(timestep.UnknownAgentError, match=r"^agent: no agent named 'nobody' .*validation-agent.*register_agent"):
        timestep.get_agent("nobody")


async def test_not_an_agent(db: str) -> None:
    with pytest.raises(timestep.ValidationError, match=r"^agent: expected an agents.Agent, got str"):
        await timestep.run_agent_workflow("assistant", "hi")  # type: ignore[arg-type]


def test_configure_dbos_rejects_bad_name_and_url() -> None:
    with pytest.raises(timestep.ValidationError, match=r"^name: "):
        timestep.configure_dbos(name="Bad Name")
    with pytest.raises(timestep.ValidationError, match=r"^system_database_url: 'mysql://u:\*\*\*@h/db'"):
        timestep.configure_dbos(system_database_url="mysql://u:secret@h/db")


def test_state_store_needs_a_key() -> None:
    with pytest.raises(timestep.ValidationError, match=r"^session_id: neither session_id nor workflow_id"):
        timestep.RunStateStore(agent=AGENT)
