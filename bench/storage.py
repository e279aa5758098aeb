"""Bytes stored per run, by the number of tool calls in it: Timestep (d) beside LangGraph's checkpointer (g).

One run calls `lookup` CALLS times, one call per model turn, each returning 1,024 characters of JSON text
(records drawn at random, seeded: what a search or a database tool returns), then answers. Each
case runs on a database of its own: a warm-up run first (the tables, and what a process records once),
then the measured run; the figure is what the measured run added, summed over every column of every table:
SQLite, the bytes of each value as stored; PostgreSQL, each value's stored size (`pg_column_size`, after
PostgreSQL's own compression of large values). Prints one JSON line per case.

    python bench/storage.py --system d --backend sqlite --calls 10,40,160 --workdir /tmp/st
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import sys
import uuid
import warnings
import zlib
from pathlib import Path
from typing import Any

OUTPUT_CHARS = 1024
WORDS = (
    "order customer invoice shipped pending refund amount total status item quantity price warehouse address city "
    "street note priority express standard delivered returned account balance credit payment method card region"
).split()


def tool_output(i: int) -> str:
    """1,024 characters of JSON text, different for each call: records with ids, amounts, a status and a note
    of made-up words (zlib writes each in about 40% of its size; JSON from real APIs often compresses more)."""
    rng = random.Random(i)
    syllables = ["ka", "to", "ri", "men", "sol", "vek", "dra", "lu", "pin", "zor", "e", "a", "qui", "bro", "ste", "na"]

    def word() -> str:
        return "".join(rng.choice(syllables) for _ in range(rng.randrange(1, 4)))

    records = []
    while len(json.dumps(records)) < OUTPUT_CHARS:
        records.append({
            "id": rng.randrange(10**9), "status": rng.choice(WORDS), "note": " ".join(word() for _ in range(rng.randrange(3, 9))),
            "amount": round(rng.uniform(1, 5000), 2), "city": word().title(), "updated": f"2026-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}",
        })
    return json.dumps(records)[:OUTPUT_CHARS]


def compressibility(calls: int) -> float:
    """How much zlib shrinks each tool output alone (their size over zlib's, one output at a time, as each
    step is written), for the reader's scale."""
    outputs = [tool_output(i).encode() for i in range(calls)]
    return round(sum(map(len, outputs)) / sum(len(zlib.compress(o, 6)) for o in outputs), 2)


# --- measuring --------------------------------------------------------------------------------------


def stored_bytes(url: str) -> int:
    """Every value of every table, summed (see the module's docstring)."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            total = 0
            for (table,) in conn.execute("select name from sqlite_master where type = 'table' and name not like 'sqlite_%'"):
                columns = [row[1] for row in conn.execute(f'pragma table_info("{table}")')]
                if columns:
                    parts = " + ".join(f'coalesce(sum(length(cast("{c}" as blob))), 0)' for c in columns)
                    total += conn.execute(f'select {parts} from "{table}"').fetchone()[0]
            return total
        finally:
            conn.close()
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        tables = conn.execute(
            "select table_schema, table_name, array_agg(column_name::text) from information_schema.columns "
            "where table_schema not in ('pg_catalog', 'information_schema') group by 1, 2"
        ).fetchall()
        total = 0
        for schema, table, columns in tables:
            parts = " + ".join(f'coalesce(sum(pg_column_size("{c}")), 0)' for c in columns)
            total += conn.execute(f'select {parts} from "{schema}"."{table}"').fetchone()[0]
        return total


def fresh_database(backend: str, workdir: Path, name: str) -> str:
    if backend == "sqlite":
        path = workdir / f"{name}.sqlite"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return f"sqlite:///{path}"
    import psycopg

    base = os.environ.get("PG_CONNECTION_URI", "postgresql://postgres@127.0.0.1:5432/test")
    root, _, _ = base.rpartition("/")
    database = f"timestep_storage_{name}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(f"{root}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    return f"{root}/{database}"


def drop_database(url: str) -> None:
    if url.startswith("sqlite"):
        return
    import psycopg

    root, _, database = url.rpartition("/")
    with psycopg.connect(f"{root}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


# --- (d) Timestep -----------------------------------------------------------------------------------


def timestep_agent(calls: int) -> Any:
    from agents import Agent, Model, Usage, function_tool
    from agents.items import ModelResponse
    from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage, ResponseOutputText

    usage = Usage(requests=1, input_tokens=10, output_tokens=5, total_tokens=15)

    class CallingModel(Model):
        """`lookup` until it has `calls` outputs, then the answer."""

        async def get_response(self, system_instructions: Any, input: Any, *args: Any, **kwargs: Any) -> ModelResponse:
            done = sum(1 for i in input if isinstance(i, dict) and i.get("type") == "function_call_output") if isinstance(input, list) else 0
            if done < calls:
                output: list[Any] = [ResponseFunctionToolCall(
                    id=f"fc_{done}", call_id=f"call_{done}", type="function_call", name="lookup", arguments=json.dumps({"q": done}),
                )]
            else:
                output = [ResponseOutputMessage(
                    id="msg", type="message", role="assistant", status="completed",
                    content=[ResponseOutputText(type="output_text", text="done", annotations=[], logprobs=[])],
                )]
            return ModelResponse(output=output, usage=usage, response_id=None)

        def stream_response(self, *args: Any, **kwargs: Any) -> Any:
            raise NotImplementedError

    @function_tool
    def lookup(q: int) -> str:
        """Look something up."""
        return tool_output(q)

    return Agent(name=f"storage-{calls}", model=CallingModel(), tools=[lookup])


async def measure_timestep(url: str, calls: int) -> int:
    import timestep

    agent = timestep_agent(calls)
    timestep.register_agent(agent)
    timestep.configure_dbos(system_database_url=url)
    timestep.ensure_dbos_launched()
    await timestep.run_agent_workflow(agent, "warm up", workflow_id=f"warm-{calls}", max_turns=calls + 2)
    before = stored_bytes(url)
    await timestep.run_agent_workflow(agent, "go", workflow_id=f"measured-{calls}", max_turns=calls + 2)
    return stored_bytes(url) - before


# --- (g) LangGraph ----------------------------------------------------------------------------------


async def measure_langgraph(url: str, calls: int) -> int:
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import AIMessage, ToolMessage
    from langchain_core.outputs import ChatGeneration, ChatResult
    from langchain_core.tools import tool

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from langgraph.prebuilt import create_react_agent

    class CallingChatModel(BaseChatModel):
        @property
        def _llm_type(self) -> str:
            return "calling"

        def bind_tools(self, tools: Any, **kwargs: Any) -> CallingChatModel:
            return self

        def _reply(self, messages: list) -> AIMessage:
            done = sum(1 for m in messages if isinstance(m, ToolMessage))
            if done < calls:
                return AIMessage(content="", tool_calls=[{"name": "lookup", "args": {"q": done}, "id": f"call_{done}"}])
            return AIMessage(content="done")

        def _generate(self, messages: list, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
            return ChatResult(generations=[ChatGeneration(message=self._reply(messages))])

    @tool
    async def lookup(q: int) -> str:
        """Look something up."""
        return tool_output(q)

    if url.startswith("sqlite"):
        import aiosqlite
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        conn = await aiosqlite.connect(url.removeprefix("sqlite:///"))
        saver, close = AsyncSqliteSaver(conn), conn.close
    else:
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
        from psycopg import AsyncConnection
        from psycopg.rows import dict_row

        conn = await AsyncConnection.connect(url, autocommit=True, prepare_threshold=0, row_factory=dict_row)
        saver, close = AsyncPostgresSaver(conn), conn.close
    try:
        await saver.setup()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = create_react_agent(CallingChatModel(), tools=[lookup], checkpointer=saver)
        limit = {"recursion_limit": 2 * calls + 10}
        await graph.ainvoke({"messages": [("user", "warm up")]}, {"configurable": {"thread_id": "warm"}, **limit}, durability="sync")
        before = stored_bytes(url)
        await graph.ainvoke({"messages": [("user", "go")]}, {"configurable": {"thread_id": "measured"}, **limit}, durability="sync")
        return stored_bytes(url) - before
    finally:
        await close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--system", choices=["d", "g"], required=True)
    parser.add_argument("--backend", choices=["sqlite", "postgres"], required=True)
    parser.add_argument("--calls", type=int, required=True, help="tool calls in the run (one case per process: DBOS launches once)")
    parser.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TIMESTEP_HOME", str(args.workdir / "home"))
    url = fresh_database(args.backend, args.workdir, f"{args.system}_{args.calls}")
    try:
        measure = measure_timestep if args.system == "d" else measure_langgraph
        stored = await measure(url, args.calls)
    finally:
        drop_database(url)
    output = args.calls * OUTPUT_CHARS
    print(json.dumps({
        "system": args.system, "backend": args.backend, "tool_calls": args.calls, "tool_output_bytes": output, "stored_bytes": stored,
        "per_kb_of_output": round(stored / output, 2), "output_compressibility": compressibility(args.calls),
    }), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
    sys.stdout.flush()
    os._exit(0)  # DBOS's threads
