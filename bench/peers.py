"""The peers a user weighs against Timestep, each with an instant deterministic model of its own kind.

(g) LangGraph: a prebuilt ReAct agent (a model node and a tool node) with LangGraph's own
checkpointer (SQLite or PostgreSQL), invoked with `durability="sync"`: each step's checkpoint is
written before the next step begins. (h) Pydantic AI with its DBOS durability (`DBOSDurability`):
the run inside a DBOS workflow, each model request a DBOS step, the tool a DBOS step.

The models answer like `bench_agents.InstantModel`: a call of `lookup` first when the agent has
it, then "the answer is 42" (streamed in four pieces when streaming). `delay` makes each model
call sleep (W4); `deltas` and `rate` make a streamed answer that many pieces at that many per
second (W5), each piece stamped with the time it was yielded.
"""

from __future__ import annotations

import asyncio
import uuid
import warnings
from collections.abc import AsyncIterator, Callable
from typing import Any

PIECES = ("the ", "answer ", "is ", "42")


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("openai-agents", "dbos", "dbos-openai-agents", "langgraph", "langgraph-checkpoint-sqlite",
                 "langgraph-checkpoint-postgres", "langchain-core", "pydantic-ai-slim"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


# --- (g) LangGraph ------------------------------------------------------------------------


def _chat_model_class():
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import AIMessage, AIMessageChunk, ToolMessage
    from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

    class InstantChatModel(BaseChatModel):
        """A tool call of `lookup` when bound to it and no tool result is in the messages yet, then the answer."""

        has_lookup: bool = False
        delay: float = 0.0

        @property
        def _llm_type(self) -> str:
            return "instant"

        def bind_tools(self, tools: Any, **kwargs: Any) -> InstantChatModel:
            names = {getattr(t, "name", None) for t in tools}
            return self.model_copy(update={"has_lookup": "lookup" in names})

        def _wants_tool(self, messages: list) -> bool:
            return self.has_lookup and not any(isinstance(m, ToolMessage) for m in messages)

        def _reply(self, messages: list) -> AIMessage:
            if self._wants_tool(messages):
                return AIMessage(content="", tool_calls=[{"name": "lookup", "args": {"q": "x"}, "id": f"call_{uuid.uuid4().hex[:8]}"}])
            return AIMessage(content="the answer is 42")

        def _generate(self, messages: list, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
            return ChatResult(generations=[ChatGeneration(message=self._reply(messages))])

        async def _agenerate(self, messages: list, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
            if self.delay:
                await asyncio.sleep(self.delay)
            return ChatResult(generations=[ChatGeneration(message=self._reply(messages))])

        async def _astream(self, messages: list, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> AsyncIterator[Any]:
            if self.delay:
                await asyncio.sleep(self.delay)
            if self._wants_tool(messages):
                chunk = {"name": "lookup", "args": '{"q": "x"}', "id": f"call_{uuid.uuid4().hex[:8]}", "index": 0}
                yield ChatGenerationChunk(message=AIMessageChunk(content="", tool_call_chunks=[chunk]))
                return
            for piece in PIECES:
                yield ChatGenerationChunk(message=AIMessageChunk(content=piece))

    return InstantChatModel


class LangGraphPeer:
    """Prebuilt ReAct agents for W1 (no tools) and W2/W3 (the `lookup` tool) over one checkpointer."""

    def __init__(self, db_url: str, *, delay: float = 0.0) -> None:
        self.db_url = db_url
        self.delay = delay
        self._exit: Callable[[], Any] | None = None

    async def open(self) -> None:
        from langchain_core.tools import tool

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from langgraph.prebuilt import create_react_agent

        if self.db_url.startswith("sqlite"):
            import aiosqlite
            from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

            path = self.db_url.removeprefix("sqlite:///").removesuffix(".sqlite") + "-langgraph.sqlite"
            conn = await aiosqlite.connect(path)
            saver = AsyncSqliteSaver(conn)
            self._exit = conn.close
        else:
            from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
            from psycopg.rows import dict_row
            from psycopg_pool import AsyncConnectionPool

            # the same pool size as Timestep's DBOS pool (TIMESTEP_DB_POOL_SIZE, 20)
            pool = AsyncConnectionPool(
                self.db_url, min_size=4, max_size=20, open=False,
                kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
            )
            await pool.open()
            saver = AsyncPostgresSaver(pool)
            self._exit = pool.close
        await saver.setup()

        @tool
        async def lookup(q: str) -> str:
            """Look something up."""
            return f"found {q}"

        model = _chat_model_class()(delay=self.delay)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.graphs = {
                "W1": create_react_agent(model, tools=[], checkpointer=saver),
                "W2": create_react_agent(model, tools=[lookup], checkpointer=saver),
            }

    async def close(self) -> None:
        if self._exit is not None:
            await self._exit()

    async def run(self, workload: str, *, stream: bool = False) -> None:
        graph = self.graphs["W1" if workload == "W1" else "W2"]
        config = {"configurable": {"thread_id": uuid.uuid4().hex}}
        inputs = {"messages": [("user", "question")]}
        if stream:
            async for _ in graph.astream(inputs, config, stream_mode="messages", durability="sync"):
                pass
        else:
            await graph.ainvoke(inputs, config, durability="sync")


# --- (h) Pydantic AI + DBOS -------------------------------------------------------------------


class PydanticAIPeer:
    """Pydantic AI agents with `DBOSDurability`, run inside a DBOS workflow; the tool is a DBOS step.
    Build before DBOS launches (the capability registers its steps)."""

    def __init__(self, lookup_step: Callable[[str], Any], *, delay: float = 0.0) -> None:
        from dbos import DBOS
        from pydantic_ai import Agent
        from pydantic_ai.durable_exec.dbos import DBOSDurability
        from pydantic_ai.messages import ModelResponse, TextPart, ToolCallPart, ToolReturnPart
        from pydantic_ai.models.function import AgentInfo, DeltaToolCall, FunctionModel

        def wants_tool(messages: list, info: AgentInfo) -> bool:
            done = any(isinstance(p, ToolReturnPart) for m in messages for p in getattr(m, "parts", ()))
            return not done and any(t.name == "lookup" for t in info.function_tools)

        async def respond(messages: list, info: AgentInfo) -> ModelResponse:
            if delay:
                await asyncio.sleep(delay)
            if wants_tool(messages, info):
                return ModelResponse(parts=[ToolCallPart("lookup", {"q": "x"}, tool_call_id=f"call_{uuid.uuid4().hex[:8]}")])
            return ModelResponse(parts=[TextPart("the answer is 42")])

        async def stream(messages: list, info: AgentInfo) -> AsyncIterator[Any]:
            if delay:
                await asyncio.sleep(delay)
            if wants_tool(messages, info):
                yield {0: DeltaToolCall(name="lookup", json_args='{"q": "x"}', tool_call_id=f"call_{uuid.uuid4().hex[:8]}")}
                return
            for piece in PIECES:
                yield piece

        async def drain(ctx: Any, events: Any) -> None:
            async for _ in events:
                pass

        model = FunctionModel(respond, stream_function=stream)
        self.agents = {
            "W1": Agent(model, name="bench_pai_w1", capabilities=[DBOSDurability()]),
            "W2": Agent(model, name="bench_pai_w2", capabilities=[DBOSDurability()]),
            "W3": Agent(model, name="bench_pai_w3", capabilities=[DBOSDurability(event_stream_handler=drain)]),
        }
        self.agents["W4"] = self.agents["W2"]  # W4 runs in a process of its own, built with the delay
        for name in ("W2", "W3"):
            @self.agents[name].tool_plain(name="lookup")
            async def lookup(q: str) -> str:
                return await lookup_step(q)

        agents = self.agents

        @DBOS.workflow(name="bench.pydantic_ai")
        async def run_agent(workload: str) -> str:
            result = await agents[workload].run("question")
            return str(result.output)

        self._workflow = run_agent

    async def run(self, workload: str, *, stream: bool = False) -> None:
        from dbos import DBOS

        handle = await DBOS.start_workflow_async(self._workflow, workload)
        await handle.get_result()
