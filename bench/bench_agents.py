"""The benchmark's agents and its instant, deterministic model (no network, no waiting).

W1: one model call. W2: model -> tool call -> model. W3: W2 streamed.
`timestep up --agents bench_agents` (bench/ on PYTHONPATH) hosts the same agents.
"""

from __future__ import annotations

import asyncio
import os
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
    """Answers at once: calls `lookup` first when the agent has it, then answers."""

    def _output(self, input: Any, tools: list[Any]) -> list[Any]:
        items = input if isinstance(input, list) else []
        done_tool = any(isinstance(i, dict) and i.get("type") == "function_call_output" for i in items)
        if not done_tool and any(isinstance(t, FunctionTool) and t.name == "lookup" for t in tools):
            return [ResponseFunctionToolCall(id="fc_1", call_id="call_1", type="function_call", name="lookup", arguments='{"q": "x"}')]
        return [_message("the answer is 42")]

    async def get_response(self, system_instructions: Any, input: Any, model_settings: Any, tools: Any, *args: Any, **kwargs: Any) -> ModelResponse:
        return ModelResponse(output=self._output(input, tools), usage=USAGE, response_id=None)

    async def stream_response(self, system_instructions: Any, input: Any, model_settings: Any, tools: Any, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        output = self._output(input, tools)
        if isinstance(output[0], ResponseOutputMessage):
            for piece in ("the ", "answer ", "is ", "42"):
                yield ResponseTextDeltaEvent(type="response.output_text.delta", item_id="msg_bench", output_index=0, content_index=0, delta=piece, logprobs=[], sequence_number=0)
        response = Response(
            id="resp_bench", created_at=0, model="instant", object="response", output=output, tool_choice="auto",
            tools=[], top_p=None, parallel_tool_calls=False, status="completed",
        )
        yield ResponseCompletedEvent(type="response.completed", response=response, sequence_number=1)


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
register_agent(W1)
register_agent(W2)
register_agent(SLOW)

#: workload -> (agent, stream, model calls + tool calls)
WORKLOADS = {"W1": (W1, False, 1), "W2": (W2, False, 3), "W3": (W2, True, 3)}
