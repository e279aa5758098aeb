"""The benchmark's agents and its instant, deterministic model (no network, no waiting).

W1: one model call. W2: model -> tool call -> model. W3: W2 streamed.
W4: W2 with each model call sleeping BENCH_MODEL_DELAY seconds (default 1). W5: one model call
streaming BENCH_W5_DELTAS text deltas (default 200) at BENCH_W5_RATE a second (default 50), each
delta's text "<index>@<time.time() when yielded>;" so a subscriber can time it.
`timestep up --agents bench_agents` (bench/ on PYTHONPATH) hosts the same agents.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from agents import Agent, FunctionTool, Model, Usage, function_tool
from agents.items import ModelResponse
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseTextDeltaEvent,
)

from timestep import register_agent

USAGE = Usage(requests=1, input_tokens=10, output_tokens=5, total_tokens=15)


def _message(text: str) -> ResponseOutputMessage:
    return ResponseOutputMessage(
        id="msg_bench", type="message", role="assistant", status="completed",
        content=[ResponseOutputText(type="output_text", text=text, annotations=[], logprobs=[])],
    )


class InstantModel(Model):
    """Answers at once (after `delay` seconds): calls `lookup` first when the agent has it, then answers."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay

    def _output(self, input: Any, tools: list[Any]) -> list[Any]:
        items = input if isinstance(input, list) else []
        done_tool = any(isinstance(i, dict) and i.get("type") == "function_call_output" for i in items)
        if not done_tool and any(isinstance(t, FunctionTool) and t.name == "lookup" for t in tools):
            return [ResponseFunctionToolCall(id="fc_1", call_id="call_1", type="function_call", name="lookup", arguments='{"q": "x"}')]
        return [_message("the answer is 42")]

    async def get_response(self, system_instructions: Any, input: Any, model_settings: Any, tools: Any, *args: Any, **kwargs: Any) -> ModelResponse:
        if self.delay:
            await asyncio.sleep(self.delay)
        return ModelResponse(output=self._output(input, tools), usage=USAGE, response_id=None)

    async def stream_response(self, system_instructions: Any, input: Any, model_settings: Any, tools: Any, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        if self.delay:
            await asyncio.sleep(self.delay)
        output = self._output(input, tools)
        if isinstance(output[0], ResponseOutputMessage):
            for piece in ("the ", "answer ", "is ", "42"):
                yield ResponseTextDeltaEvent(type="response.output_text.delta", item_id="msg_bench", output_index=0, content_index=0, delta=piece, logprobs=[], sequence_number=0)
        response = Response(
            id="resp_bench", created_at=0, model="instant", object="response", output=output, tool_choice="auto",
            tools=[], top_p=None, parallel_tool_calls=False, status="completed",
        )
        yield ResponseCompletedEvent(type="response.completed", response=response, sequence_number=1)


class PacedStreamModel(Model):
    """Streams `deltas` text deltas at `rate` a second, each "<index>@<time yielded>;", then completes."""

    def __init__(self, deltas: int, rate: float) -> None:
        self.deltas, self.rate = deltas, rate

    async def get_response(self, *args: Any, **kwargs: Any) -> ModelResponse:
        return ModelResponse(output=[_message("paced")], usage=USAGE, response_id=None)

    async def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        loop = asyncio.get_running_loop()
        begin = loop.time()
        pieces = []
        for i in range(self.deltas):
            wait = begin + i / self.rate - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            piece = f"{i}@{time.time():.6f};"
            pieces.append(piece)
            yield ResponseTextDeltaEvent(type="response.output_text.delta", item_id="msg_bench", output_index=0, content_index=0, delta=piece, logprobs=[], sequence_number=i)
        response = Response(
            id="resp_bench", created_at=0, model="paced", object="response", output=[_message("".join(pieces))], tool_choice="auto",
            tools=[], top_p=None, parallel_tool_calls=False, status="completed",
        )
        yield ResponseCompletedEvent(type="response.completed", response=response, sequence_number=self.deltas)


async def _lookup(q: str) -> str:
    return f"found {q}"


lookup = function_tool(_lookup, name_override="lookup")


async def _hold(q: str) -> str:
    """Blocks while BENCH_HOLD is set (the recovery benchmark kills the process meanwhile)."""
    if os.environ.get("BENCH_HOLD"):
        await asyncio.sleep(3600)
    return f"held {q}"


hold = function_tool(_hold, name_override="lookup")

W1 = Agent(name="bench-w1", model=InstantModel())
W2 = Agent(name="bench-w2", model=InstantModel(), tools=[lookup])
SLOW = Agent(name="bench-hold", model=InstantModel(), tools=[hold])
MODEL_DELAY = float(os.environ.get("BENCH_MODEL_DELAY", "1"))
W4 = Agent(name="bench-w4", model=InstantModel(delay=MODEL_DELAY), tools=[lookup])
W5 = Agent(name="bench-w5", model=PacedStreamModel(int(os.environ.get("BENCH_W5_DELTAS", "200")), float(os.environ.get("BENCH_W5_RATE", "50"))))
for _agent in (W1, W2, SLOW, W4, W5):
    register_agent(_agent)

#: workload -> (agent, stream, model calls + tool calls)
WORKLOADS = {"W1": (W1, False, 1), "W2": (W2, False, 3), "W3": (W2, True, 3), "W4": (W4, False, 3)}
