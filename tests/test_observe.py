"""What operators see: /healthz, /readyz and /metrics of a process, W3C trace context from
submit to the last event, and JSON log lines that name their run. Real nats-servers, real
actors, a real `timestep up` process for the logs."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgspec
import pytest
from agents import Agent, Model
from nats.js.api import DeliverPolicy, RetentionPolicy, StreamConfig

from actors.base import Actor
from actors.system import System
from processes import process_env
from subjects.events import Accepted, Cancelled, Completed, Failed, ToolCall
from subjects.names import EVENTS_STREAM
from timestep import register_agent
from timestep.durable import engine
from timestep.ops import metrics
from timestep.bus.connection import Bus
from timestep.client import Client, RunFailedError
from actors.health import HealthServer
from timestep.bus.server import EmbeddedNats, free_port
from timestep.ops.observe import parse_traceparent
from timestep.settings import Settings

AGENT = "bus-assistant"
TESTS = Path(__file__).parent
_http_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="test-http")


class BrokenModel(Model):
    """A model whose every call fails: the run ends with `failed`."""

    async def get_response(self, *args, **kwargs):
        raise RuntimeError("the model is down")

    def stream_response(self, *args, **kwargs):
        raise RuntimeError("the model is down")


register_agent(Agent(name="observe-broken", model=BrokenModel()))


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def http_get(url: str) -> tuple[int, str, str]:
    """(status, content type, body) from a real HTTP client."""

    def get() -> tuple[int, str, str]:
        try:
            with urllib.request.urlopen(url, timeout=15) as response:
                return response.status, response.headers.get("Content-Type", ""), response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.headers.get("Content-Type", ""), error.read().decode()

    return await asyncio.get_running_loop().run_in_executor(_http_pool, get)


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)')


def parse_prometheus(text: str) -> dict[tuple[str, frozenset], float]:
    """Samples of the Prometheus text format 0.0.4, checked strictly: every sample belongs to
    a family declared by `# TYPE`, and every line is a comment or a well-formed sample."""
    assert text.endswith("\n")
    types: dict[str, str] = {}
    samples: dict[tuple[str, frozenset], float] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), line
            types[name] = kind
            continue
        if line.startswith("# HELP ") or not line:
            continue
        match = _SAMPLE.match(line)
        assert match, f"not a sample: {line!r}"
        name, labels, value = match.groups()
        family = re.sub(r"_(bucket|count|sum)$", "", name) if name not in types else name
        assert family in types, f"{name} has no # TYPE line"
        pairs = _LABEL.findall(labels or "")
        assert ",".join(f'{k}="{v}"' for k, v in pairs) == (labels or ""), f"bad labels: {labels!r}"
        key = (name, frozenset(pairs))
        assert key not in samples, f"duplicate sample {line!r}"
        samples[key] = float(value)
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(url: str) -> dict:
    status, content_type, body = await http_get(url + "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    return parse_prometheus(body)


async def wait_for(check, timeout: float = 30.0, every: float = 0.1):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"still not true after {timeout} s: {check.__name__}")
        await asyncio.sleep(every)


# --- metrics --------------------------------------------------------------------------


async def test_metrics_move_with_runs_queues_and_dead_letters(system, client) -> None:
    server = HealthServer(system, "127.0.0.1", 0)
    url = await server.start()
    try:
        before = await scrape(url)
        assert value(before, "timestep_process_info", role="agent+governor+scheduler", executor_id="local", app_version="timestep-1") == 1

        await (await client.submit(AGENT, f"get_weather city={uid('Oslo')}")).result(timeout=30)
        with pytest.raises(RunFailedError, match="the model is down"):
            await (await client.submit("observe-broken", "hello")).result(timeout=30)
        bus = system.bus
        reply = await bus.nc.request(bus.subjects.submit, b'{"agent": ', timeout=10)  # not JSON: rejected, dead-lettered
        assert b"rejected" in reply.data

        # A queue that admits one run a minute: the second run waits in it.
        queue = uid("obsq")
        await client.configure_queue(queue, limit=1, period_seconds=60)
        first = await client.submit(AGENT, "hello", queue=queue)
        second = await client.submit(AGENT, "hello", queue=queue)
        await first.result(timeout=30)

        async def settled() -> dict | None:  # `completed` goes out just before the run is recorded as done
            samples = await scrape(url)
            return samples if value(samples, "timestep_queue_running", queue=queue) == 0 else None

        after = await wait_for(settled)
        await client.cancel(second.run_id)
    finally:
        await server.stop()

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("timestep_run_events_total", type="accepted") >= 4
    assert moved("timestep_run_events_total", type="completed") >= 2
    assert moved("timestep_run_events_total", type="failed") >= 1
    assert moved("timestep_run_events_total", type="queued") >= 2
    assert moved("timestep_runs_admitted_total", kind="direct", queue="") >= 2
    assert value(after, "timestep_runs_admitted_total", kind="queued", queue=queue) == 2
    assert value(after, "timestep_queue_depth", queue=queue) == 1
    assert value(after, "timestep_queue_running", queue=queue) == 0
    assert moved("timestep_dead_letters_total", stream="TIMESTEP_SUBMIT") >= 1
    # Step latency: the weather run made two model calls and one tool call, the broken run one model call.
    assert moved("timestep_step_duration_seconds_count", step="model") >= 3
    assert moved("timestep_step_duration_seconds_count", step="tool:get_weather") >= 1
    assert moved("timestep_step_duration_seconds_sum", step="tool:get_weather") > 0
    count = value(after, "timestep_step_duration_seconds_count", step="model")
    assert value(after, "timestep_step_duration_seconds_bucket", step="model", le="+Inf") == count
    assert value(after, "timestep_step_duration_seconds_bucket", step="model", le="0.005") <= count


class Flaky(Actor):
    """Fails 'twice' on its first two deliveries and 'poison' always."""

    max_deliver = 3
    backoff = (0.05, 0.05, 0.05)

    def __init__(self, bus: Bus, stream: str, subject: str) -> None:
        super().__init__(bus)
        self.stream, self.durable, self.subject = stream, f"flaky-{uuid.uuid4().hex[:6]}", subject
        self.done: list[str] = []

    async def handle(self, msg) -> None:
        body = msg.data.decode()
        if body == "poison" or (body == "twice" and msg.metadata.num_delivered <= 2):
            raise RuntimeError(f"cannot handle {body}")
        self.done.append(body)


async def test_redeliveries_and_dead_letters_are_counted_per_stream(nats_server) -> None:
    bus = await Bus.connect(nats_server.url)
    stream = f"OBS{uuid.uuid4().hex[:8]}".upper()
    subject = f"test.{stream.lower()}"
    await bus.js.add_stream(StreamConfig(name=stream, subjects=[subject], retention=RetentionPolicy.WORK_QUEUE))
    await bus.ensure_streams()
    actor = Flaky(bus, stream, subject)
    await actor.start()
    try:
        for body in ["twice", "poison", "fine"]:
            await bus.js.publish(subject, body.encode())

        async def settled() -> bool:
            return sorted(actor.done) == ["fine", "twice"] and actor.dead_lettered == 1

        await wait_for(settled)
    finally:
        await actor.stop()
        await bus.close()
    samples = parse_prometheus(metrics.render())
    # 'twice' came back twice and 'poison' twice before it was dead-lettered on its third delivery.
    assert value(samples, "timestep_redeliveries_total", actor="Flaky", stream=stream) == 4
    assert value(samples, "timestep_dead_letters_total", stream=stream) == 1


# --- trace context ------------------------------------------------------------------------


async def raw_events(bus: Bus, run_id: str, last: tuple[type, ...] = (Completed, Failed, Cancelled)) -> list[tuple[str, dict]]:
    """(type, headers) of each stored event of the run, read from the stream as any program would."""
    sub = await bus.js.subscribe(
        bus.subjects.run_events(run_id), ordered_consumer=True, deliver_policy=DeliverPolicy.ALL, stream=EVENTS_STREAM
    )
    tags = {cls.__struct_config__.tag for cls in last}
    out = []
    try:
        while True:
            msg = await sub.next_msg(timeout=30)
            kind = msgspec.json.decode(msg.data)["type"]
            out.append((kind, dict(msg.headers or {})))
            if kind in tags:
                return out
    finally:
        await sub.unsubscribe()


def trace_ids(events: list[tuple[str, dict]]) -> set[str | None]:
    return {(parse_traceparent(h.get("traceparent")) or (None,))[0] for _, h in events}


async def test_every_event_carries_the_trace_id_the_client_sent(system, client) -> None:
    trace_id = uuid.uuid4().hex
    sent = f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"
    run = await client.submit(AGENT, f"get_weather city={uid('Rome')}", traceparent=sent, stream=True)
    assert run.traceparent == sent  # no OpenTelemetry SDK here: the context goes on unchanged
    events = await raw_events(system.bus, run.run_id)
    assert [kind for kind, _ in events][:2] == ["accepted", "started"]
    assert events[-1][0] == "completed" and any(kind == "tool_call" for kind, _ in events)
    assert trace_ids(events) == {trace_id}
    # The trace context is part of the run's durable input, so a recovered run keeps it.
    [status] = await engine.list_workflows(ids=[run.run_id])
    assert status.args[0].traceparent == sent


async def test_queued_and_cancelled_runs_keep_the_trace_and_a_client_starts_one(system, client) -> None:
    queue = uid("obsq")
    run = await client.submit(AGENT, "hello", queue=queue)  # no traceparent given: the client starts a trace
    parsed = parse_traceparent(run.traceparent)
    assert parsed is not None
    queued = await raw_events(system.bus, run.run_id)
    assert [kind for kind, _ in queued] == ["accepted", "queued", "started", "completed"]
    assert trace_ids(queued) == {parsed[0]}

    run = await client.submit(AGENT, "think seconds=30")
    async for event in client.events(run.run_id):
        if isinstance(event, ToolCall):
            await client.cancel(run.run_id)
    cancelled = await raw_events(system.bus, run.run_id)
    assert cancelled[-1][0] == "cancelled"
    assert trace_ids(cancelled) == {parse_traceparent(run.traceparent)[0]}


async def test_a_request_without_traceparent_gets_one_trace_for_all_its_events(system) -> None:
    bus = system.bus
    run_id = uid("plain")
    await bus.nc.publish(bus.subjects.submit, msgspec.json.encode({"id": run_id, "agent": AGENT, "input": "hello"}), headers={"Nats-Msg-Id": run_id})
    events = await raw_events(bus, run_id)
    [trace_id] = trace_ids(events)
    assert trace_id is not None and len(events) == 3


async def test_client_refuses_a_malformed_traceparent(client) -> None:
    with pytest.raises(ValueError, match="traceparent: 'abc' is not a W3C traceparent"):
        await client.submit(AGENT, "hello", traceparent="abc")


# --- health and readiness ---------------------------------------------------------------


async def test_readiness_follows_the_nats_connection(db, tmp_path) -> None:
    """A governor-only process on its own nats-server: ready, not ready while the server is
    down (still alive), ready again once it is back and the consumer is bound again."""
    nats = EmbeddedNats(tmp_path / "nats", port=free_port())
    nats.start()
    settings = dataclasses.replace(Settings.from_env(), http_port=0)
    system = System({"governor"}, nats_url=nats.url, settings=settings)
    await system.start()
    try:
        url = system.http.url
        assert url.startswith("http://127.0.0.1:")
        assert (await http_get(url + "/healthz"))[0] == 200

        async def ready() -> bool:
            return (await http_get(url + "/readyz"))[0] == 200

        await wait_for(ready)
        assert (await http_get(url + "/nope"))[0] == 404

        nats.stop()

        async def not_ready() -> tuple[int, str, str] | None:
            answer = await http_get(url + "/readyz")
            return answer if answer[0] == 503 else None

        status, _, reason = await wait_for(not_ready)
        assert reason.startswith("NATS "), reason
        assert (await http_get(url + "/healthz"))[0] == 200  # alive: the loop runs, the actors' loops too

        nats.start()
        await wait_for(ready, timeout=60)
        # The governor's consumer takes requests again after the server came back.
        async with await Client.connect(nats.url) as again:
            run = await again.submit(AGENT, "hello again")
            assert isinstance(run.accepted, Accepted)
    finally:
        await system.stop()
        nats.stop()


async def test_liveness_names_an_actor_whose_mailbox_loop_ended(nats_server) -> None:
    bus = await Bus.connect(nats_server.url)
    stream = f"OBS{uuid.uuid4().hex[:8]}".upper()
    await bus.js.add_stream(StreamConfig(name=stream, subjects=[f"test.{stream.lower()}"], retention=RetentionPolicy.WORK_QUEUE))
    actor = Flaky(bus, stream, f"test.{stream.lower()}")
    await actor.start()
    process = type("Process", (), {"bus": bus, "actors": [actor], "roles": {"scheduler"}, "settings": Settings.from_env()})()
    server = HealthServer(process, "127.0.0.1", 0)
    url = await server.start()
    try:
        async def bound() -> bool:
            return (await http_get(url + "/readyz"))[0] == 200

        await wait_for(bound)
        assert (await http_get(url + "/healthz"))[:3:2] == (200, "ok\n")
        actor._task.cancel()  # the loop ends for good, as after an error its supervisor cannot catch
        await asyncio.gather(actor._task, return_exceptions=True)
        assert (await http_get(url + "/healthz"))[:3:2] == (503, "actor Flaky: its mailbox loop has ended\n")
        assert (await http_get(url + "/readyz"))[0] == 503
    finally:
        await server.stop()
        await actor.stop()
        await bus.close()


# --- JSON logs, and the flag of `timestep up` ---------------------------------------------


@pytest.mark.processes
async def test_timestep_up_logs_json_with_run_ids_and_serves_http(tmp_path) -> None:
    nats = EmbeddedNats(tmp_path / "nats", port=free_port())
    nats.start()
    env = {k: v for k, v in os.environ.items() if k not in ("PG_CONNECTION_URI", "OPENAI_API_KEY", "TIMESTEP_HTTP_PORT")}
    env.update(
        NATS_URL=nats.url, TIMESTEP_HOME=str(tmp_path / "home"), TIMESTEP_EXECUTOR_ID="obs-1",
        TIMESTEP_LOG_FORMAT="json", TIMESTEP_LOG_LEVEL="INFO",
        PYTHONPATH=os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")]),
    )
    out, err = tmp_path / "up.out", tmp_path / "up.err"
    proc = subprocess.Popen(
        [sys.executable, "-m", "actors.cli.main", "up", "--agents", "bus_agents", "--http-port", "0"],
        env=env, stdout=out.open("w"), stderr=err.open("w"),
    )
    try:
        async def up() -> str | None:
            assert proc.poll() is None, err.read_text()[-3000:]
            found = re.search(r"http: (http://127\.0\.0\.1:\d+)", out.read_text())
            return found.group(1) if found else None

        url = await wait_for(up, timeout=90)

        async def ready() -> bool:
            return (await http_get(url + "/readyz"))[0] == 200

        await wait_for(ready)
        trace_id = uuid.uuid4().hex
        async with await Client.connect(nats.url) as remote:
            run = await remote.submit(AGENT, f"get_weather city={uid('Lima')}", traceparent=f"00-{trace_id}-{'1' * 16}-01")
            await run.result(timeout=30)
        samples = await scrape(url)
        assert value(samples, "timestep_process_info", role="agent+governor+scheduler", executor_id="obs-1", app_version="timestep-1") == 1
        assert value(samples, "timestep_run_events_total", type="completed") == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        nats.stop()

    lines = [line for line in err.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert records
    for record in records:
        assert {"time", "level", "logger", "message"} <= record.keys(), record
        assert record["role"] == "agent+governor+scheduler" and record["executor_id"] == "obs-1"
    assert any("health and metrics on " + url in r["message"] for r in records)
    of_run = [r for r in records if r.get("run_id") == run.run_id]
    assert {r["logger"] for r in of_run} >= {"actors.governor", "actors.agent"}, of_run
    assert all(r["trace_id"] == trace_id for r in of_run), of_run


SPANS_SCRIPT = """
import asyncio, json, os, sys
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)

import bus_agents  # the test agents
from actors.system import System
from timestep.client import Client
from timestep.bus.server import EmbeddedNats, free_port

async def main():
    with EmbeddedNats(sys.argv[1], port=free_port()) as server:
        system = System(nats_url=server.url)
        await system.start()
        try:
            async with await Client.connect(server.url) as client:
                with trace.get_tracer("caller").start_as_current_span("caller"):
                    run = await client.submit("bus-assistant", "get_weather city=Oslo")
                result = await run.result(timeout=60)
        finally:
            await system.stop()
    spans = [
        {"name": s.name, "trace": format(s.context.trace_id, "032x"), "id": format(s.context.span_id, "016x"),
         "parent": format(s.parent.span_id, "016x") if s.parent else None, "attributes": dict(s.attributes)}
        for s in exporter.get_finished_spans()
    ]
    print(json.dumps({"run_id": run.run_id, "traceparent": run.traceparent, "output": result.output, "spans": spans}))
    os._exit(0)

asyncio.run(main())
"""


@pytest.mark.processes
def test_with_a_tracer_provider_a_run_is_one_trace_of_nested_spans(tmp_path: Path) -> None:
    """With the OpenTelemetry SDK set up (a process-global tracer provider, hence a process of its
    own): the caller's span → timestep.submit → timestep.admit → timestep.run → timestep.model and
    timestep.tool, all in one trace, the run id on each of Timestep's spans."""
    pytest.importorskip("opentelemetry.sdk", reason="the OpenTelemetry SDK is a test extra: pip install -e '.[test]'")
    env = process_env(TIMESTEP_HOME=str(tmp_path / "home"))
    done = subprocess.run([sys.executable, "-c", SPANS_SCRIPT, str(tmp_path / "nats")], env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["output"].startswith("get_weather returned: sunny in Oslo")
    spans = report["spans"]
    by_name: dict[str, list[dict]] = {}
    for s in spans:
        by_name.setdefault(s["name"], []).append(s)
    assert set(by_name) >= {"caller", "timestep.submit", "timestep.admit", "timestep.run", "timestep.model", "timestep.tool"}, sorted(by_name)
    assert {s["trace"] for s in spans} == {by_name["caller"][0]["trace"]}  # one trace, from the caller's span on
    parent = {s["id"]: s["parent"] for s in spans}
    name_of = {s["id"]: s["name"] for s in spans}
    assert name_of[by_name["timestep.submit"][0]["parent"]] == "caller"
    assert name_of[by_name["timestep.admit"][0]["parent"]] == "timestep.submit"
    assert name_of[by_name["timestep.run"][0]["parent"]] == "timestep.admit"
    for step in by_name["timestep.model"] + by_name["timestep.tool"]:
        assert name_of[parent[step["id"]]] == "timestep.run", step
    assert len(by_name["timestep.model"]) == 2 and len(by_name["timestep.tool"]) == 1  # model → tool → model
    timestep_spans = [s for s in spans if s["name"].startswith("timestep.")]
    assert all(s["attributes"].get("timestep.run_id") == report["run_id"] for s in timestep_spans), timestep_spans
    # The run's events carry the trace too: the client's traceparent is the submit span's context.
    assert report["traceparent"].split("-")[1] == by_name["caller"][0]["trace"]
