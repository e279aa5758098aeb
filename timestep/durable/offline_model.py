"""A deterministic stand-in for an LLM, for the demo and for machines without an API key.

It is a handful of rules, not a language model:

- after a tool output, it answers "<tool> returned: <output>";
- when the user's text names one of the agent's tools, it calls that tool with
  the `key=value` pairs found in the text as arguments;
- otherwise it answers "You said: <text>".
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

from agents import FunctionTool, Model, ModelProvider, Usage
from agents.items import ModelResponse
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseTextDeltaEvent,
    ResponseUsage,
)
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails

MODEL_NAME = "offline-rules (not an LLM)"


def _text_of(item: Any) -> str:
    content = item.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def _arguments(tool: FunctionTool, text: str) -> dict[str, Any]:
    pairs = dict(re.findall(r"(\w+)=(\"[^\"]*\"|\S+)", text))
    properties = (tool.params_json_schema or {}).get("properties", {})
    args: dict[str, Any] = {}
    for name, schema in properties.items():
        if name in pairs:
            raw = pairs[name].strip('"')
            kind = schema.get("type")
            if kind == "integer" and re.fullmatch(r"-?\d+", raw):
                args[name] = int(raw)
            elif kind == "number" and re.fullmatch(r"-?\d+(\.\d+)?", raw):
                args[name] = float(raw)
            elif kind == "boolean":
                args[name] = raw.lower() in ("1", "true", "yes")
            else:
                args[name] = raw
    return args


class OfflineDemoModel(Model):
    """Deterministic rules that look like a model to the Agents SDK (see the module docstring)."""

    def _decide(self, input: str | list[Any], tools: list[Any]) -> tuple[list[Any], str]:
        items = [{"role": "user", "content": input}] if isinstance(input, str) else list(input)
        last = items[-1] if items else {}
        if isinstance(last, dict) and last.get("type") == "function_call_output":
            calls = {i.get("call_id"): i.get("name") for i in items if isinstance(i, dict) and i.get("type") == "function_call"}
            output = last.get("output")
            if isinstance(output, list) and output and all(isinstance(p, dict) and isinstance(p.get("text"), str) for p in output):
                output = "".join(p["text"] for p in output)  # an MCP tool's output: text content parts
            text = f"{calls.get(last.get('call_id'), 'the tool')} returned: {output if isinstance(output, str) else json.dumps(output)}"
            return [self._message(text)], text
        user_text = next((_text_of(i) for i in reversed(items) if isinstance(i, dict) and i.get("role") == "user"), "")
        n_calls = sum(1 for i in items if isinstance(i, dict) and i.get("type") == "function_call")
        for tool in tools:
            if isinstance(tool, FunctionTool) and tool.name.lower() in user_text.lower():
                call = ResponseFunctionToolCall(
                    id=f"fc_{n_calls + 1}",
                    call_id=f"call_{n_calls + 1}",
                    type="function_call",
                    name=tool.name,
                    arguments=json.dumps(_arguments(tool, user_text)),
                )
                return [call], ""
        text = f"You said: {user_text}"
        return [self._message(text)], text

    @staticmethod
    def _message(text: str) -> ResponseOutputMessage:
        return ResponseOutputMessage(
            id="msg_offline",
            type="message",
            role="assistant",
            status="completed",
            content=[ResponseOutputText(type="output_text", text=text, annotations=[], logprobs=[])],
        )

    @staticmethod
    def _usage(input: Any, text: str) -> Usage:
        words_in = len(json.dumps(input, default=str).split())
        words_out = max(1, len(text.split()))
        return Usage(requests=1, input_tokens=words_in, output_tokens=words_out, total_tokens=words_in + words_out)

    async def get_response(self, system_instructions: Any, input: Any, model_settings: Any, tools: Any, *args: Any, **kwargs: Any) -> ModelResponse:
        output, text = self._decide(input, tools)
        return ModelResponse(output=output, usage=self._usage(input, text), response_id=None)

    async def stream_response(self, system_instructions: Any, input: Any, model_settings: Any, tools: Any, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        output, text = self._decide(input, tools)
        usage = self._usage(input, text)
        seq = 0
        for piece in re.findall(r"\S+\s*", text):
            yield ResponseTextDeltaEvent(
                type="response.output_text.delta", item_id="msg_offline", output_index=0,
                content_index=0, delta=piece, logprobs=[], sequence_number=seq,
            )
            seq += 1
        response = Response(
            id="resp_offline", created_at=0, model=MODEL_NAME, object="response", output=output,
            tool_choice="auto", tools=[], top_p=None, parallel_tool_calls=False, status="completed",
            usage=ResponseUsage(
                input_tokens=usage.input_tokens, output_tokens=usage.output_tokens, total_tokens=usage.total_tokens,
                input_tokens_details=InputTokensDetails(cached_tokens=0, cache_write_tokens=0),
                output_tokens_details=OutputTokensDetails(reasoning_tokens=0),
            ),
        )
        yield ResponseCompletedEvent(type="response.completed", response=response, sequence_number=seq)


class OfflineModelProvider(ModelProvider):
    """Answers every model name with `OfflineDemoModel`."""

    def get_model(self, model_name: str | None) -> Model:
        return OfflineDemoModel()
