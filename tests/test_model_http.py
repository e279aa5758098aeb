"""Model calls through the real openai client, over HTTP, to a small OpenAI-compatible server
of the tests' own: durable retries, the provider's errors by name."""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from agents import Agent, OpenAIChatCompletionsModel, OpenAIResponsesModel, function_tool
from openai import AsyncOpenAI

import timestep
from subjects.events import Completed, Delta, Failed, Retrying, Started, ToolCall, ToolOutput
from timestep.durable import engine, models, queues
from processes import process_env, stop, up, wait_printed
from timestep.bus.server import free_port


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


def chat(content: str | None = None, *calls: tuple[str, dict, str]) -> tuple[int, dict, dict]:
    """A Chat Completions answer: text, or tool calls (name, arguments, call id)."""
    message: dict = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = [
            {"id": cid, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}} for name, args, cid in calls
        ]
    body = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:8]}", "object": "chat.completion", "created": 0, "model": "gpt-test",
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }
    return 200, {}, body


def chat_streamed(words: list[str], call: tuple[str, dict, str] | None = None) -> tuple[int, dict, str]:
    """A streamed Chat Completions answer (server-sent `data:` chunks, then `[DONE]`): text deltas,
    or one tool call whose arguments arrive in two pieces."""
    def chunk(delta: dict, finish: str | None = None) -> dict:
        return {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 0, "model": "gpt-test",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    chunks = [chunk({"role": "assistant", "content": word}) for word in words]
    if call is not None:
        name, args, cid = call
        raw = json.dumps(args)
        chunks.append(chunk({"role": "assistant", "tool_calls": [{"index": 0, "id": cid, "type": "function", "function": {"name": name, "arguments": raw[:3]}}]}))
        chunks.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": raw[3:]}}]}))
    chunks.append(chunk({}, "tool_calls" if call else "stop"))
    chunks.append({"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 0, "model": "gpt-test", "choices": [],
                   "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})
    return 200, {}, "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"


class Provider:
    """Answers POST requests with the scripted replies, in order (then `default`, if given);
    records each request: its time, body and path, and its wall-clock time in `wall`."""

    def __init__(self, replies: list[tuple[int, dict, dict]], default: tuple[int, dict, dict] | None = None) -> None:
        self.replies = list(replies)
        self.default = default
        self.requests: list[tuple[float, dict]] = []
        self.paths: list[str] = []
        self.wall: list[float] = []
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
                provider.requests.append((time.monotonic(), body))
                provider.paths.append(self.path)
                provider.wall.append(time.time())
                status, headers, payload = provider.replies.pop(0) if provider.replies else provider.default
                if isinstance(payload, str):  # server-sent events, as given
                    data = payload.encode()
                    kind = "text/event-stream"
                elif isinstance(payload, list):  # the Responses API's server-sent events
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
def provider(env) -> Iterator[callable]:
    """Start a provider with the given replies and point OPENAI_BASE_URL and OPENAI_API_KEY at it."""
    started: list[Provider] = []

    def start(*replies: tuple[int, dict, dict], default: tuple[int, dict, dict] | None = None) -> Provider:
        server = Provider(list(replies), default)
        server.thread.start()
        started.append(server)
        env.set("OPENAI_API_KEY", "sk-test")
        env.set("OPENAI_BASE_URL", server.url)
        env.set("TIMESTEP_MODEL_BACKOFF_SECONDS", "0.05")
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
    steps = [s.name for s in await engine.list_steps(result.workflow_id)]
    assert steps.count("model") == 5
    assert steps.count("sleep") == 4
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


async def test_retries_run_out_and_the_error_keeps_its_name_on_replay(db: str, provider, env) -> None:
    env.set("TIMESTEP_MODEL_MAX_ATTEMPTS", "3")
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
    steps = [s.name for s in await engine.list_steps(workflow_id)]
    assert steps == ["model", "sleep", "model"], steps


async def test_no_connection_is_retried_then_fails_with_its_class(db: str, provider, env) -> None:
    server = provider()
    server.server.shutdown()
    server.server.server_close()  # nothing listens on the port any more
    env.set("TIMESTEP_MODEL_MAX_ATTEMPTS", "3")
    workflow_id = uid("down")
    with pytest.raises(timestep.ModelCallError) as raised:
        await timestep.run_agent_workflow(Agent(name=uid("down"), model="gpt-test"), "Hi", workflow_id=workflow_id)
    assert raised.value.provider_error == "APIConnectionError" and raised.value.status_code is None
    assert raised.value.attempts == 3
    steps = [s.name for s in await engine.list_steps(workflow_id)]
    assert steps.count("model") == 3


def test_a_bad_retry_setting_names_the_variable(env) -> None:
    from timestep.settings import Settings

    env.set("TIMESTEP_MODEL_MAX_ATTEMPTS", "ten")
    with pytest.raises(ValueError, match="TIMESTEP_MODEL_MAX_ATTEMPTS='ten' is not a whole number"):
        Settings.from_env()


async def test_a_streamed_run_is_retried_too(db: str, provider) -> None:
    busy = error(429, "rate_limit_exceeded", "Rate limit reached", {"retry-after-ms": "50"})
    server = provider(busy, streamed(["Hel", "lo."]))
    events = []
    result = await timestep.run_agent_workflow(Agent(name=uid("streamed"), model="gpt-test"), "Hi", stream=True, on_event=events.append)
    assert result.output == "Hello."
    assert len(server.requests) == 2 and server.requests[1][1]["stream"] is True
    deltas = [e.text for e in events if isinstance(e, Delta)]
    assert deltas[0] == "Hel" and "".join(deltas) == "Hello."  # later ones may be gathered while one is stored


# --- retries are visible ------------------------------------------------------------


async def test_a_run_waiting_to_retry_says_so_in_a_retrying_event(db: str, provider) -> None:
    busy = error(429, "rate_limit_exceeded", "Rate limit reached", {"retry-after-ms": "200"})
    provider(busy, error(503, "server_error", "Overloaded"), response(text("Done.")))
    events = []
    result = await timestep.run_agent_workflow(Agent(name=uid("visible"), model="gpt-test"), "Hi", on_event=events.append)
    assert result.output == "Done."
    assert [type(e) for e in events] == [Started, Retrying, Retrying, Completed]
    assert [e.seq for e in events] == [1, 2, 3, 4]
    first, second = events[1], events[2]
    assert (first.attempt, first.status_code, first.error.type) == (1, 429, "RateLimitError")
    assert first.delay_seconds == 0.2 and "Rate limit reached" in first.error.message
    assert first.retry_at >= first.time
    assert (second.attempt, second.status_code, second.error.type) == (2, 503, "InternalServerError")
    assert 0.075 <= second.delay_seconds <= 0.1  # the second backoff: 2 x 0.05 s, jittered down by at most a quarter


async def test_no_retrying_event_when_the_error_is_final(db: str, provider) -> None:
    provider(error(401, "invalid_api_key", "Incorrect API key provided"))
    events = []
    with pytest.raises(timestep.ModelCallError) as raised:
        await timestep.run_agent_workflow(Agent(name=uid("final"), model="gpt-test"), "Hi", on_event=events.append)
    assert raised.value.provider_error == "AuthenticationError" and raised.value.status_code == 401
    assert [type(e) for e in events] == [Started, Failed]


# --- Chat Completions servers (Ollama, vLLM, LM Studio) with one setting ---------------


async def test_chat_completions_with_one_setting_and_a_tool_call(db: str, provider, env) -> None:
    env.set("TIMESTEP_OPENAI_API", "chat_completions")
    server = provider(
        error(429, "rate_limit_exceeded", "slow down", {"retry-after-ms": "10"}),
        chat(None, ("get_weather", {"city": "Oslo"}, "call_1")),
        chat("Snowy in Oslo."),
    )
    calls: list[str] = []
    events = []
    result = await timestep.run_agent_workflow(weather_agent(uid("chat"), calls), "Weather in Oslo?", on_event=events.append)
    assert result.output == "Snowy in Oslo." and calls == ["Oslo"]
    assert set(server.paths) == {"/v1/chat/completions"}
    assert [type(e) for e in events] == [Started, Retrying, ToolCall, ToolOutput, Completed]
    # the tool's output went back as a Chat Completions tool message
    tool_messages = [m for m in server.requests[2][1]["messages"] if m["role"] == "tool"]
    assert tool_messages == [{"role": "tool", "tool_call_id": "call_1", "content": "sunny in Oslo"}]


async def test_chat_completions_streamed_with_a_tool_call(db: str, provider, env) -> None:
    env.set("TIMESTEP_OPENAI_API", "chat_completions")
    server = provider(chat_streamed([], ("get_weather", {"city": "Rome"}, "call_7")), chat_streamed(["Warm ", "in ", "Rome."]))
    calls: list[str] = []
    events = []
    result = await timestep.run_agent_workflow(
        weather_agent(uid("chatstream"), calls), "Weather in Rome?", stream=True, on_event=events.append
    )
    assert result.output == "Warm in Rome." and calls == ["Rome"]
    assert set(server.paths) == {"/v1/chat/completions"} and all(r[1]["stream"] for r in server.requests)
    deltas = [e.text for e in events if isinstance(e, Delta)]
    assert deltas[0] == "Warm " and "".join(deltas) == "Warm in Rome."  # later ones may be gathered while one is stored
    assert [e.arguments for e in events if isinstance(e, ToolCall)] == ['{"city": "Rome"}']
    assert result.usage.total_tokens == 10


async def test_an_explicit_chat_completions_model(db: str, provider) -> None:
    server = provider(error(500, "server_error", "boom"), chat("Hi there."))
    client = AsyncOpenAI(base_url=server.url, api_key="sk-test", max_retries=0)
    agent = Agent(name=uid("explicitchat"), model=OpenAIChatCompletionsModel(model="llama3.2", openai_client=client))
    result = await timestep.run_agent_workflow(agent, "Hi")
    assert result.output == "Hi there." and server.paths == ["/v1/chat/completions"] * 2


async def test_configure_dbos_chooses_the_api_too(db: str, provider) -> None:
    server = provider(chat("Via chat."))
    timestep.configure_dbos(system_database_url=db, openai_api="chat_completions")
    try:
        result = await timestep.run_agent_workflow(Agent(name=uid("configured"), model="gpt-test"), "Hi")
    finally:
        models.use_openai_api(None)  # back to TIMESTEP_OPENAI_API, for the tests after this one
    assert result.output == "Via chat." and server.paths == ["/v1/chat/completions"]
    with pytest.raises(timestep.ValidationError, match="openai_api: 'chat' is not an OpenAI API"):
        timestep.configure_dbos(system_database_url=db, openai_api="chat")


def test_a_bad_openai_api_setting_names_the_variable(env) -> None:
    from timestep.settings import Settings

    env.set("TIMESTEP_OPENAI_API", "ollama")
    with pytest.raises(ValueError, match="TIMESTEP_OPENAI_API='ollama' is not an OpenAI API; set it to chat_completions"):
        Settings.from_env()


# --- token budgets ----------------------------------------------------------------------


async def test_a_run_stops_after_the_call_that_crosses_its_budget(db: str, provider) -> None:
    # each answer uses 5 tokens: the first call (5) is within 7, the second (10) crosses it
    server = provider(
        response(tool_call("get_weather", {"city": "Paris"}, "c1")),
        response(tool_call("get_weather", {"city": "Lyon"}, "c2")),
        response(text("never asked for")),
    )
    calls: list[str] = []
    events = []
    agent = weather_agent(uid("budget"), calls)
    workflow_id = uid("budget")
    with pytest.raises(timestep.BudgetExceeded) as raised:
        await timestep.run_agent_workflow(agent, "Weather?", workflow_id=workflow_id, max_tokens=7, on_event=events.append)
    assert (raised.value.used, raised.value.max_tokens) == (10, 7)
    assert calls == ["Paris"] and len(server.requests) == 2  # the crossing call's tool did not run, no third call
    assert events[-1].error.type == "BudgetExceeded" and "10 model tokens" in events[-1].error.message
    # the budget holds from the record: the same run again raises the same, and calls nothing
    with pytest.raises(timestep.BudgetExceeded):
        await timestep.run_agent_workflow(agent, "Weather?", workflow_id=workflow_id, max_tokens=7)
    assert len(server.requests) == 2 and calls == ["Paris"]


async def test_a_queue_gives_its_runs_a_budget(db: str, provider) -> None:
    server = provider(response(text("too long an answer")), response(text("fits")))
    queue = uid("budgeted")
    await timestep.configure_queue(queue, limit=100, period=60, max_tokens_per_run=4)
    assert (await queues.queue_status(queue)).max_tokens_per_run == 4
    agent = Agent(name=uid("budgetq"), model="gpt-test")
    handle = await timestep.queue_agent_workflow(agent, "Hi", queue_name=queue)
    with pytest.raises(timestep.BudgetExceeded, match="over its budget of max_tokens=4"):
        await handle.get_result()
    # a run's own max_tokens wins over the queue's
    handle = await timestep.queue_agent_workflow(agent, "Hi", queue_name=queue, max_tokens=50)
    assert (await handle.get_result()).output == "fits"
    assert len(server.requests) == 2


async def test_a_bad_budget_names_the_field(db: str) -> None:
    agent = Agent(name=uid("badbudget"), model="gpt-test")
    with pytest.raises(timestep.ValidationError, match="max_tokens: 0 is not a whole number"):
        await timestep.run_agent_workflow(agent, "Hi", max_tokens=0)
    with pytest.raises(timestep.ValidationError, match="max_tokens_per_run: 'many' is not a whole number"):
        await timestep.configure_queue(uid("q"), max_tokens_per_run="many")


# --- the fleet backs off together, and waits survive a crash -----------------------------


def _worker(db_url: str, server: Provider, out: Path, *args: str, executor: str) -> subprocess.Popen:
    env = process_env(
        OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=server.url, TIMESTEP_EXECUTOR_ID=executor,
        TIMESTEP_MODEL_BACKOFF_SECONDS="0.05", TIMESTEP_LOG_LEVEL="WARNING",
    )
    command = [sys.executable, str(Path(__file__).parent / "model_worker.py"), db_url, *args]
    return subprocess.Popen(command, env=env, stdout=out.open("w"), stderr=subprocess.STDOUT)


async def _until(check, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.mark.processes
async def test_a_rate_limit_pauses_the_queue_in_every_process(db: str, provider, tmp_path: Path) -> None:
    """A run of queue Q, in another process, meets a 429 with Retry-After: 4. Runs queued on Q
    meanwhile, here, start only after those 4 s, in whichever process takes them; the queue's
    status shows the pause and its reason."""
    wait = 4
    server = provider(error(429, "rate_limit_exceeded", "Rate limit reached", {"Retry-After": str(wait)}), default=response(text("ok")))
    queue = uid("paced")
    await timestep.configure_queue(queue, limit=100, period=60)
    agent = Agent(name="paced", model="gpt-test")
    timestep.register_agent(agent)  # either process may take any run of the queue
    out = tmp_path / "other.log"
    other = _worker(db, server, out, "queue", queue, uid("first"), executor=uid("other"))
    try:
        await _until(lambda: len(server.requests) >= 1, "the other process's first model call")
        limited_at = server.wall[0]
        deadline = time.monotonic() + 60
        while (status := await queues.queue_status(queue)).paused_until is None:  # written as the 429 is taken in
            assert time.monotonic() < deadline, f"no pause: {out.read_text()}"
            await asyncio.sleep(0.05)
        assert status.paused_until.timestamp() >= limited_at + wait - 0.5
        assert "RateLimitError (HTTP 429)" in status.paused_reason and "asked to wait 4 s" in status.paused_reason

        handles = [await timestep.queue_agent_workflow(agent, "Hi", queue_name=queue) for _ in range(3)]
        for handle in handles:
            assert (await handle.get_result()).output == "ok"
        await _until(lambda: "output: ok" in out.read_text(), "the other process's run")
        # 1 refused call, then 4 calls: none before the time the provider named, in any process
        assert len(server.requests) == 5
        assert min(server.wall[1:]) >= status.paused_until.timestamp() - 0.05
        assert (await queues.queue_status(queue)).paused_until is None  # over, and so not shown
    finally:
        other.kill()
        other.wait()


@pytest.mark.processes
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_sigkill_while_waiting_to_retry_waits_only_the_rest(fresh_db_url: str, provider, tmp_path: Path) -> None:
    """Retry-After: 10; the process is killed 5 s into the wait and started again: the call is not
    made before the 10 s are up, and the new process waits only what was left. A fresh wait would
    make the second call 10 s after the new process resumed the run; the rest of the wait ends 10 s
    after the first call, or at once when the new process took longer than that to start (a loaded
    machine), so the bound is taken from when it was ready, not from the first call."""
    server = provider(error(429, "rate_limit_exceeded", "Rate limit reached", {"Retry-After": "10"}), default=response(text("after the wait")))
    run_id = uid("killed")
    first = _worker(fresh_db_url, server, tmp_path / "first.log", "run", run_id, executor="killed")
    try:
        await _until(lambda: len(server.requests) >= 1, "the first model call")
        await asyncio.sleep(5)
        first.send_signal(signal.SIGKILL)
        first.wait()
    finally:
        first.kill()
    assert len(server.requests) == 1
    out = tmp_path / "second.log"
    second = _worker(fresh_db_url, server, out, "run", run_id, executor="killed")
    try:
        assert second.wait(timeout=120) == 0, out.read_text()
    finally:
        second.kill()
    assert "output: after the wait" in out.read_text()
    assert len(server.requests) == 2
    gap = server.wall[1] - server.wall[0]
    assert gap >= 10 - 0.05, gap  # never early
    ready_at = float(out.read_text().split("ready at ", 1)[1].split()[0])
    assert server.wall[1] < ready_at + 8, (gap, server.wall[1] - ready_at)  # only the rest of the wait, not a new one


# --- retry settings per run, queue and agent; the SDK's own retries; errors by class ----------


async def test_retry_settings_per_run_per_queue_and_per_agent(db: str, provider, env) -> None:
    env.set("TIMESTEP_MODEL_MAX_ATTEMPTS", "5")
    busy = error(503, "server_error", "Overloaded", {"retry-after-ms": "1"})
    # the run's own setting wins over the environment's 5
    server = provider(busy, busy, busy, busy, response(text("never")))
    with pytest.raises(timestep.ModelCallError) as raised:
        await timestep.run_agent_workflow(Agent(name=uid("perrun"), model="gpt-test"), "Hi", model_retry=timestep.ModelRetry(max_attempts=2))
    assert raised.value.attempts == 2 and len(server.requests) == 2

    # an agent's registered setting, then a queue's over it, then a run's over the queue's
    agent = timestep.register_agent(Agent(name=uid("peragent"), model="gpt-test"), model_retry={"max_attempts": 3})
    server = provider(busy, busy, busy, busy, busy, response(text("never")))
    with pytest.raises(timestep.ModelCallError) as raised:
        await timestep.run_agent_workflow(agent, "Hi")
    assert raised.value.attempts == 3 and len(server.requests) == 3

    queue = uid("retrying")
    await timestep.configure_queue(queue, limit=100, period=60, model_retry=timestep.ModelRetry(max_attempts=1))
    assert (await queues.queue_status(queue)).model_retry == timestep.ModelRetry(max_attempts=1)
    server = provider(busy, busy, busy, response(text("never")))
    with pytest.raises(timestep.ModelCallError) as raised:
        await (await timestep.queue_agent_workflow(agent, "Hi", queue_name=queue)).get_result()
    assert raised.value.attempts == 1 and len(server.requests) == 1
    server = provider(busy, response(text("second time lucky")))
    handle = await timestep.queue_agent_workflow(agent, "Hi", queue_name=queue, model_retry={"max_attempts": 2})
    assert (await handle.get_result()).output == "second time lucky"

    with pytest.raises(timestep.ValidationError, match=r"^model_retry\.max_attempts: 0 is not a whole number from 1 to 2147483647$"):
        await timestep.run_agent_workflow(agent, "Hi", model_retry={"max_attempts": 0})
    with pytest.raises(timestep.ValidationError, match=r"model_retry\.max_attempt: is not a setting; use max_attempts"):
        await timestep.configure_queue(queue, model_retry={"max_attempt": 2})


async def test_a_failed_call_is_caught_by_the_providers_class(db: str, provider, env) -> None:
    import openai

    env.set("TIMESTEP_MODEL_MAX_ATTEMPTS", "2")
    busy = error(429, "rate_limit_exceeded", "Rate limit reached", {"retry-after-ms": "5", "x-request-id": "req_42"})
    provider(busy, busy)
    workflow_id = uid("byclass")
    agent = Agent(name=uid("byclass"), model="gpt-test")
    for _ in range(2):  # the run, then its recorded outcome again
        with pytest.raises(openai.RateLimitError) as raised:
            await timestep.run_agent_workflow(agent, "Hi", workflow_id=workflow_id)
        assert isinstance(raised.value, timestep.ModelCallError) and raised.value.attempts == 2
        assert raised.value.status_code == 429 and raised.value.response.headers["retry-after-ms"] == "5"
        assert raised.value.request_id == "req_42"


async def test_the_sdks_own_retry_settings_are_not_fought(db: str, provider) -> None:
    """An agent whose ModelSettings ask the SDK to retry: the SDK does (reading the provider's
    class and headers from the error), each of its attempts one durable call, and Timestep
    does not retry on top (which would multiply the calls)."""
    from agents import ModelRetrySettings, ModelSettings, retry_policies

    busy = error(429, "rate_limit_exceeded", "Rate limit reached", {"retry-after-ms": "10"})
    server = provider(busy, busy, busy, busy, response(text("never")))
    settings = ModelSettings(retry=ModelRetrySettings(max_retries=2, policy=retry_policies.provider_suggested()))
    agent = Agent(name=uid("sdkretry"), model="gpt-test", model_settings=settings)
    workflow_id = uid("sdkretry")
    with pytest.raises(Exception) as raised:
        await timestep.run_agent_workflow(agent, "Hi", workflow_id=workflow_id)
    assert len(server.requests) == 3, "the SDK's 1 + 2 retries, not multiplied by Timestep's"
    assert "RateLimitError" in f"{type(raised.value).__name__} {raised.value}"
    steps = [s.name for s in await engine.list_steps(workflow_id)]
    assert steps.count("model") == 3 and "sleep" not in steps


# --- what `timestep up` logs of a failed and a retried run -------------------------------------


@pytest.mark.processes
def test_up_logs_one_line_per_failed_attempt_and_per_failed_run(provider, tmp_path: Path) -> None:
    """At the default log level: a run whose calls meet two 429s says so in one line per retried
    attempt, a run that meets a 400 in one line; each names its run, and no traceback is printed."""
    server = provider(
        error(429, "rate_limit_exceeded", "Rate limit reached"), error(429, "rate_limit_exceeded", "Rate limit reached"),
        response(text("ok")), error(400, "invalid_request_error", "Invalid 'input': bad"),
    )
    (tmp_path / "flaky_agents.py").write_text("from agents import Agent\nimport timestep\ntimestep.register_agent(Agent(name='flaky', model='gpt-test'))\n")
    env = process_env("TIMESTEP_LOG_LEVEL", "TIMESTEP_LOG_FORMAT", TIMESTEP_HOME=str(tmp_path / "home"), TIMESTEP_NATS_PORT=str(free_port()),
                      OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=server.url, TIMESTEP_MODEL_BACKOFF_SECONDS="0.05")
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    out = tmp_path / "up.out"
    proc = up(out, env, "--agents", "flaky_agents")
    try:
        wait_printed([(proc, out)])
        for run_id, code in (("limited", 0), ("refused", 1)):
            done = subprocess.run([sys.executable, "-m", "actors.cli.main", "run", "flaky", "Hi", "--id", run_id], env=env, capture_output=True, text=True, timeout=120)
            assert done.returncode == code, done.stdout + done.stderr
    finally:
        stop([proc])
    log = out.read_text()
    assert "Traceback" not in log and "Error getting response" not in log, log
    limited = [line for line in log.splitlines() if "limited" in line]
    assert len(limited) == 2, log
    for attempt, line in enumerate(limited, 1):
        said = rf"run limited: model call attempt {attempt} failed: RateLimitError \(HTTP 429\): Error code: 429 - Rate limit reached; attempt {attempt + 1} in [0-9.]+ s"
        assert re.fullmatch(said, line), line
    [refused] = [line for line in log.splitlines() if "refused" in line]
    assert refused.endswith("run refused failed: BadRequestError (HTTP 400): Error code: 400 - Invalid 'input': bad"), refused
    assert " WARNING" in refused or " ERROR" in refused


# --- run config over HTTP -------------------------------------------------------------------------


async def test_a_run_config_names_the_model_and_its_settings_over_http(db: str, provider) -> None:
    """RunConfig(model=..., model_settings=...) as Runner.run takes it: the requests the real openai
    client sends carry the run config's model name and temperature, retries stay durable steps."""
    from agents import ModelSettings, RunConfig

    busy = error(503, "server_error", "overloaded")
    server = provider(busy, response(tool_call("get_weather", {"city": "Oslo"}, "c1")), response(text("Rain.")))
    calls: list[str] = []
    config = RunConfig(model="gpt-run-config", model_settings=ModelSettings(temperature=0.3))
    result = await timestep.run_agent_workflow(weather_agent(uid("configured"), calls), "Weather in Oslo?", run_config=config)
    assert result.output == "Rain." and calls == ["Oslo"]
    assert [(body["model"], body.get("temperature")) for _, body in server.requests] == [("gpt-run-config", 0.3)] * 3
    assert [s.name for s in await engine.list_steps(result.workflow_id)].count("model") == 3


async def test_a_provider_with_its_own_client_registered_with_the_agent_is_used_and_made_durable(db: str, provider, monkeypatch) -> None:
    """register_agent(agent, run_config=RunConfig(model_provider=OpenAIProvider(openai_client=AsyncOpenAI(...)))):
    the runs of the agent call that client's server, not OPENAI_BASE_URL's, and a 429 from it is
    waited out durably as Timestep's own provider's is."""
    from agents import OpenAIProvider, RunConfig

    default = provider(response(text("wrong server")))
    own = Provider([error(429, "rate_limit_exceeded", "slow down", {"Retry-After": "0.1"}), response(text("From our gateway."))])
    own.thread.start()
    try:
        client = AsyncOpenAI(base_url=own.url, api_key="sk-gateway", max_retries=0)
        agent = timestep.register_agent(
            Agent(name=uid("gateway"), model="gpt-gateway"), run_config=RunConfig(model_provider=OpenAIProvider(openai_client=client)),
        )
        result = await timestep.run_agent_workflow(agent, "Hi")
    finally:
        own.server.shutdown()
        own.server.server_close()
    assert result.output == "From our gateway."
    assert default.requests == [] and len(own.requests) == 2
    assert [s.name for s in await engine.list_steps(result.workflow_id)] == ["model", "sleep", "model"]


async def test_the_processs_settings_govern_its_runs_not_the_environment(db: str, provider, env) -> None:
    """The settings a process's edge chose (`System(settings=...)` makes its own the process's, with
    `timestep.settings.use`) are what its runs go by, whatever the environment says since: here two
    attempts per model call, under TIMESTEP_MODEL_MAX_ATTEMPTS=5."""
    import dataclasses

    from timestep import settings

    busy = error(503, "server_error", "overloaded")
    server = provider(default=busy)
    env.set("TIMESTEP_MODEL_MAX_ATTEMPTS", "5")
    chosen = settings.current()
    settings.use(dataclasses.replace(chosen, model_retry=dataclasses.replace(chosen.model_retry, max_attempts=2)))
    with pytest.raises(timestep.ModelCallError) as failed:
        await timestep.run_agent_workflow(Agent(name=uid("settled"), model="gpt-test"), "Hi")
    assert failed.value.attempts == 2 and len(server.requests) == 2


async def test_a_failed_attempt_is_listed_as_a_failed_step_and_the_next_counts_on(db: str, provider) -> None:
    """`run_steps`: a 503 from the provider is a `failed` model step with the provider's error and
    status, then the durable wait, then attempt 2."""
    provider(error(503, "server_error", "overloaded"), response(text("Fine.")))
    result = await timestep.run_agent_workflow(Agent(name=uid("flaky"), model="gpt-test"), "Hi")
    steps = await timestep.run_steps(result.workflow_id)
    assert [(s.kind, s.status, s.attempt) for s in steps] == [("model", "failed", 1), ("sleep", "completed", None), ("model", "completed", 2)]
    assert steps[0].error.type == "InternalServerError" and "overloaded" in steps[0].error.message
    assert steps[0].value["status_code"] == 503
