"""What a run stores: each tool output once (the next model call's record names the tool step instead of
holding the output again, and `run_steps` puts it back), compressed where that saves space, and rows
written by an earlier version (DBOS's own pickle) still read."""

from __future__ import annotations

import base64
import pickle
import random
import string
import uuid

import sqlalchemy as sa
from agents import Agent, function_tool
from agents.testing import ScriptedModel, assistant_message, function_call

import timestep
from timestep.durable import engine

CALLS = 20
OUTPUT = 2048


def _noise(i: int) -> str:
    """Text zlib cannot shrink much: the bytes a test counts are the design's, not the compressor's."""
    rng = random.Random(i)
    return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(OUTPUT))


def _agent(name: str) -> Agent:
    @function_tool
    def fetch(page: int) -> str:
        return _noise(page)

    turns = [[function_call("fetch", {"page": i}, call_id=f"c{i}")] for i in range(CALLS)] + [[assistant_message("read them all")]]
    return Agent(name=name, tools=[fetch], model=ScriptedModel(turns))


def _outputs_table(url: str) -> str:
    return "operation_outputs" if url.startswith("sqlite") else "dbos.operation_outputs"


def _stored(url: str, run_id: str) -> list[tuple[int, str, str, str]]:
    db = sa.create_engine(url)
    try:
        with db.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(
                f"select function_id, function_name, output, serialization from {_outputs_table(url)} "
                "where workflow_uuid = :id order by function_id"
            ), {"id": run_id})]
    finally:
        db.dispose()


async def test_each_tool_output_is_stored_once_and_listed_whole(db: str) -> None:
    result = await timestep.run_agent_workflow(_agent(f"store-{uuid.uuid4().hex[:8]}"), "read", max_turns=CALLS + 2)
    rows = _stored(db, result.workflow_id)
    stored = sum(len(output or "") for _, _, output, _ in rows)
    # Each 2 KB output once, as base64 (4/3), and the model calls' own records: 1.54x the outputs here (both
    # backends). Held twice (in its tool step and again in the next model call's record, as before): 3.56x.
    print(f"{stored} bytes stored for {CALLS * OUTPUT} bytes of tool output")
    assert stored < 2 * CALLS * OUTPUT, f"{stored} bytes stored for {CALLS * OUTPUT} bytes of tool output"
    steps = await timestep.run_steps(result.workflow_id)
    models = [s for s in steps if s.kind == "model"]
    for i, model in enumerate(models[1:]):
        [whole] = await timestep.run_steps(result.workflow_id, model.number)
        given = whole.value["input_since_previous"]
        assert [item["type"] for item in given] == ["function_call", "function_call_output"]
        assert given[1] == {"call_id": f"c{i}", "output": _noise(i), "type": "function_call_output"}


async def test_rows_written_with_dboss_own_pickle_still_read(db: str) -> None:
    """A database written before Timestep's serializer: its rows say `py_pickle`, and DBOS reads each row
    by the serializer it names. Here a finished run's rows are written back as DBOS's default writes them."""
    result = await timestep.run_agent_workflow(_agent(f"old-{uuid.uuid4().hex[:8]}"), "read", max_turns=CALLS + 2)
    rows = _stored(db, result.workflow_id)
    assert {serialization for *_, serialization in rows} == {"timestep_zpickle"}
    sa_engine = sa.create_engine(db)
    try:
        with sa_engine.begin() as conn:
            for number, _, output, _ in rows:
                if output is None:
                    continue
                old = base64.b64encode(pickle.dumps(engine.SERIALIZER.deserialize(output))).decode()
                conn.execute(sa.text(
                    f"update {_outputs_table(db)} set output = :o, serialization = 'py_pickle' where workflow_uuid = :id and function_id = :n"
                ), {"o": old, "id": result.workflow_id, "n": number})
    finally:
        sa_engine.dispose()
    assert {serialization for *_, serialization in _stored(db, result.workflow_id)} == {"py_pickle"}
    steps = await timestep.run_steps(result.workflow_id)
    tools = [s for s in steps if s.kind == "tool"]
    assert len(tools) == CALLS
    [first] = await timestep.run_steps(result.workflow_id, tools[0].number)
    assert first.value["output"] == _noise(0)
