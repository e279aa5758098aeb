"""Model calls through the real openai client, over HTTP, to a small OpenAI-compatible server
of the tests' own: durable retries, the provider's errors by name."""

from __future__ import annotations

import email.utils
import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from agents import Agent, OpenAIResponsesModel, function_tool
from openai import AsyncOpenAI

import timestep
from subjects.events import Completed, Delta, Failed, Started, ToolCall, ToolOutput
from timestep.durable import engine


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _usage() -> dict:
    return {
        "input_tokens": 3,
        "output_tokens": 2,
        "total_tokens": 5,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens_details": {"reasoning_tokens": 0},
    }


def response(*items: dict) -> tuple[int, dict, dict]:
    body = {
        "id": f"resp_{uuid.uuid4().hex[:8]}",
        "object": "response",
        "created_at": 0,
        "model": "gpt-test",
        "status": "completed",
        "output": list(items),
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": _usage(),
    }
    return 200, {}, body


def streamed(words: list[str]) -> tuple[int, dict, list[dict]]:
    """The Responses API's events for a message of `words`, streamed."""
    _, _, final = response(text("".join(words)))
    item = final["output"][0]
    events = [{"type": "response.created", "sequence_number": 0, "response": {**final, "status": "in_progress", "output": []}}]
    events += [
        {"type": "response.output_text.delta", "sequence_number": n + 1, "item_id": item["id"], "output_index": 0,
         "content_index": 0, "delta": word, "logprobs": []}
        for n, word in enumerate(words)
    ]
    events.append({"type": "response.output_item.done", "sequence_number": len(words) + 1, "output_index": 0, "item": item})
    events.append({"type": "response.completed", "sequence_number": len(words) + 2, "response": final})
    return 200, {}, events


def text(words: str) -> dict:
    return {
        "type": "message",
        "id": f"msg_{uuid.uuid4().hex[:8]}",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": words, "annotations": []}],
    }


def tool_call(name: str, arguments: dict, call_id: str) -> dict:
    return {
        "type": "function_call",
        "id": f"fc_{call_id}",
        "call_id": call_id,
        "name": name,
        "arguments": json.dumps(arguments),
        "status": "completed",
    }


def error(status: int, kind: str, message: str, headers: dict | None = None) -> tuple[int, dict, dict]:
    return status, headers or {}, {"error": {"message": message, "type": kind, "param": None, "code": None}}


class Provider:
    """Answers POST /v1/responses with the scripted replies, in order; records each request."""

    def __init__(self, replies: list[tuple[int, dict, dict]]) -> None:
        self.replies = list(replies)
        self.requests: list[tuple[float, dict]] = []
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
                provider.requests.append((time.monotonic(), body))
                status, headers, payload = provider.replies.pop(0)
                if isinstance(payload, list):  # server-sent events
                    data = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in payload).encode()
                    kind = "text/event-stream"
                else:
                    data = json.dumps(payload).encode()
                    kind = "application/json"
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def gaps(self) -> list[float]:
        times = [t for t, _ in self.requests]
        return [b - a for a, b in zip(times, times[1:])]


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch) -> Iterator[callable]:
    """Start a provider with the given replies and point OPENAI_BASE_URL and OPENAI_API_KEY at it."""
    started: list[Provider] = []

    def start(*replies: tuple[int, dict, dict]) -> Provider:
        server = Provider(list(replies))
        server.thread.start()
        started.append(server)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        monkeypatch.setenv("TIMESTEP_MODEL_BACKOFF_SECONDS", "0.05")
        return server

    yield start
    for server in started:
        server.server.shutdown()
        server.server.server_close()


def weather_agent(name: str, calls: list[str], model: object = "gpt-test") -> Agent:
    @function_tool
    def get_weather(city: str) -> str:
        calls.append(city)
        return f"sunny in {city}"

    return Agent(name=name, model=model, tools=[get_weather])


async def test_responses_api_with_a_tool_call(db: str, provider) -> None:
    server = provider(response(tool_call("get_weather", {"city": "Paris"}, "c1")), response(text("Sunny in Paris.")))
    calls: list[str] = []
    events = []
    result = await timestep.run_agent_workflow(weather_agent(uid("http"), calls), "Weather in Paris?", on_event=events.append)

    assert result.status == "completed" and result.output == "Sunny in Paris."
    assert calls == ["Paris"]
    assert [type(e) for e in events] == [Started, ToolCall, ToolOutput, Completed]
    assert len(server.requests) == 2
    # the tool's output went back to the provider over HTTP
    outputs = [i for i in server.requests[1][1]["input"] if i.get("type") == "function_call_output"]
    assert outputs == [{"type": "function_call_output", "call_id": "c1", "output": "sunny in Paris"}]
    assert result.usage.total_tokens == 10


async def test_429_with_retry_after_is_retried_durably_until_it_succeeds(db: str, provider) -> None:
    busy = error(429, "rate_limit_exceeded", "Rate limit reached", {"Retry-After": "1"})
    server = provider(busy, busy, busy, busy, response(text("At last.")))
    result = await timestep.run_agent_workflow(Agent(name=uid("limited"), model="gpt-test"), "Hi")

    assert result.status == "completed" and result.output == "At last."
    # the client's own retries are off: every attempt is the runtime's, one HTTP call each
    assert len(server.requests) == 5
    steps = [s["function_name"] for s in await engine.list_steps(result.workflow_id)]
    assert steps.count("model") == 5
    assert steps.count("DBOS.sleep") == 4
    # each wait honoured Retry-After: 1 (a lower bound only: the machine may be slow)
    assert all(gap >= 0.9 for gap in server.gaps())


async def test_500_then_success(db: str, provider) -> None:
    server = provider(error(500, "server_error", "The server had an error"), response(text("Fine now.")))
    result = await timestep.run_agent_workflow(Agent(name=uid("flaky"), model="gpt-test"), "Hi")
    assert result.output == "Fine now."
    assert len(server.requests) == 2


async def test_400_fails_at_once_with_the_providers_class_and_message(db: str, provider) -> None:
    server = provider(error(400, "invalid_request_error", "Unknown parameter: 'temperatur'."))
    events = []
    with pytest.raises(timestep.ModelCallError) as raised:
        await timestep.run_agent_workflow(Agent(name=uid("bad"), model="gpt-test"), "Hi", on_event=events.append)

    assert len(server.requests) == 1
    assert raised.value.provider_error == "BadRequestError" and raised.value.status_code == 400
    assert "Unknown parameter: 'temperatur'." in str(raised.value)
    assert [type(e) for e in events] == [Started, Failed]
    assert events[-1].error.type == "BadRequestError"
    assert "400" in events[-1].error.message and "temperatur" in events[-1].error.message


async def test_retries_run_out_and_the_error_keeps_its_name_on_replay(db: str, provider, monkeypatch) -> None:
    monkeypatch.setenv("TIMESTEP_MODEL_MAX_ATTEMPTS", "3")
    busy = error(429, "rate_limit_exceeded", "Rate limit reached", {"retry-after-ms": "10"})
    server = provider(busy, busy, busy)
    agent = Agent(name=uid("exhausted"), model="gpt-test")
    workflow_id = uid("run")
    events = []
    with pytest.raises(timestep.ModelCallError) as raised:
        await timestep.run_agent_workflow(agent, "Hi", workflow_id=workflow_id, on_event=events.append)
    assert len(server.requests) == 3
    assert raised.value.provider_error == "RateLimitError" and raised.value.status_code == 429
    assert raised.value.attempts == 3
    assert events[-1].error.type == "RateLimitError" and "429" in events[-1].error.message

    # the same id again: the recorded outcome, with its class name and status, and no HTTP call
    with pytest.raises(timestep.ModelCallError) as again:
        await timestep.run_agent_workflow(agent, "Hi", workflow_id=workflow_id)
    assert again.value.provider_error == "RateLimitError" and again.value.status_code == 429
    assert len(server.requests) == 3


async def test_an_explicit_openai_client_model(db: str, provider) -> None:
    server = provider(error(503, "server_error", "Overloaded"), response(text("Hello.")))
    client = AsyncOpenAI(base_url=server.url, api_key="sk-test", max_retries=0)
    agent = Agent(name=uid("explicit"), model=OpenAIResponsesModel(model="gpt-test", openai_client=client))
    result = await timestep.run_agent_workflow(agent, "Hi")
    assert result.output == "Hello."
    assert len(server.requests) == 2


async def test_x_should_retry_overrides_the_status(db: str, provider) -> None:
    # a 400 the provider says to retry is retried; a 429 it says not to retry fails at once
    server = provider(
        error(400, "invalid_request_error", "try again", {"x-should-retry": "true"}),
        response(text("Retried.")),
    )
    result = await timestep.run_agent_workflow(Agent(name=uid("should"), model="gpt-test"), "Hi")
    assert result.output == "Retried." and len(server.requests) == 2

    server = provider(error(429, "insufficient_quota", "You exceeded your quota", {"x-should-retry": "false"}))
    with pytest.raises(timestep.ModelCallError, match="You exceeded your quota") as raised:
        await timestep.run_agent_workflow(Agent(name=uid("quota"), model="gpt-test"), "Hi")
    assert raised.value.status_code == 429 and len(server.requests) == 1


async def test_retry_after_as_an_http_date(db: str, provider) -> None:
    at = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=2)
    soon = email.utils.format_datetime(at, usegmt=True)
    server = provider(error(503, "server_error", "Busy", {"Retry-After": soon}), response(text("Done.")))
    workflow_id = uid("dated")
    result = await timestep.run_agent_workflow(Agent(name=uid("dated"), model="gpt-test"), "Hi", workflow_id=workflow_id)
    assert result.output == "Done."
    assert len(server.requests) == 2
    # The retry did not come before the date the server named (however long the first call took to
    # be made on a busy machine), and the wait was a durable sleep.
    assert time.time() - (time.monotonic() - server.requests[1][0]) >= at.timestamp() - 0.05
    steps = [s["function_name"] for s in await engine.list_steps(workflow_id)]
    assert steps == ["model", "DBOS.sleep", "model"], steps


async def test_no_connection_is_retried_then_fails_with_its_class(db: str, provider, monkeypatch) -> None:
    server = provider()
    server.server.shutdown()
    server.server.server_close()  # nothing listens on the port any more
    monkeypatch.setenv("TIMESTEP_MODEL_MAX_ATTEMPTS", "3")
    workflow_id = uid("down")
    with pytest.raises(timestep.ModelCallError) as raised:
        await timestep.run_agent_workflow(Agent(name=uid("down"), model="gpt-test"), "Hi", workflow_id=workflow_id)
    assert raised.value.provider_error == "APIConnectionError" and raised.value.status_code is None
    assert raised.value.attempts == 3
    steps = [s["function_name"] for s in await engine.list_steps(workflow_id)]
    assert steps.count("model") == 3


def test_a_bad_retry_setting_names_the_variable(monkeypatch) -> None:
    from timestep.settings import Settings

    monkeypatch.setenv("TIMESTEP_MODEL_MAX_ATTEMPTS", "ten")
    with pytest.raises(ValueError, match="TIMESTEP_MODEL_MAX_ATTEMPTS='ten' is not a whole number"):
        Settings.from_env()


async def test_a_streamed_run_is_retried_too(db: str, provider) -> None:
    busy = error(429, "rate_limit_exceeded", "Rate limit reached", {"retry-after-ms": "50"})
    server = provider(busy, streamed(["Hel", "lo."]))
    events = []
    result = await timestep.run_agent_workflow(Agent(name=uid("streamed"), model="gpt-test"), "Hi", stream=True, on_event=events.append)
    assert result.output == "Hello."
    assert len(server.requests) == 2 and server.requests[1][1]["stream"] is True
    assert [e.text for e in events if isinstance(e, Delta)] == ["Hel", "lo."]
