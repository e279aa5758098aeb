"""A TypeScript agent actor (`@timestep/runtime`'s `serveAgents`, clients/typescript-runtime/fixtures/actor.ts)
on the bus beside the Python actors: a real nats-server, the Python governor, agent actor and scheduler in
this process (on SQLite), and the Node actor as its own process on a PostgreSQL database of its own (DBOS's
TypeScript SDK stores runs in PostgreSQL only). Runs are submitted as a NATS program does, with nats-py's
standard JetStream publish, and through the Python client; the Node process is killed with SIGKILL inside
its tool and stopped with SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from pathlib import Path

import msgspec
import nats
import pytest

from conftest import PG_PROBLEM, _drop_pg_database, _pg_base, _with_database
from node_packages import ROOT, NodePackage
from subjects.events import encode_event
from timestep.client import RequestRefusedError

pytestmark = [
    pytest.mark.node,
    pytest.mark.postgres,
    # The Python actors are on SQLite; the one Node process keeps at most 12 PostgreSQL connections (a DBOS pool
    # of 6, Timestep's 4, a client's 2), so these run beside the tests that start several processes on it.
    pytest.mark.few_pg_connections,
    pytest.mark.skipif(PG_PROBLEM is not None, reason=PG_PROBLEM or ""),
    # The Python actors' database: the Node actor has its own; one backend is enough.
    pytest.mark.parametrize("backend", ["sqlite"], indirect=True),
]

RUNTIME = NodePackage(ROOT / "clients" / "typescript-runtime")


class NodeActor:
    """`node dist/fixtures/actor.js` serving `ts-assistant`, its output kept for the failure message."""

    def __init__(self, node: str, nats_url: str, database: str, tmp: Path, executor_id: str) -> None:
        self.node, self.tmp, self.executor_id = node, tmp, executor_id
        self.calls = tmp / "calls.txt"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("PG_", "NATS_", "TIMESTEP_"))},
            "NATS_URL": nats_url, "PG_CONNECTION_URI": database, "TIMESTEP_EXECUTOR_ID": executor_id,
            "TIMESTEP_DB_POOL_SIZE": "6", "CALLS_FILE": str(self.calls),
        }
        self.proc: asyncio.subprocess.Process | None = None
        self.output = b""
        self.database = database

    async def turns(self, session_id: str) -> list[str]:
        """The runs holding or waiting for a turn of the session, in order, as the runtime's database has them."""
        import psycopg

        async with await psycopg.AsyncConnection.connect(self.database, autocommit=True) as conn:
            cursor = await conn.execute("SELECT run_id FROM timestep.session_turns WHERE session_id = %s ORDER BY id", (session_id,))
            return [row[0] for row in await cursor.fetchall()]

    async def start(self, **extra: str) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            self.node, "dist/fixtures/actor.js", cwd=RUNTIME.path, env={**self.env, **extra},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        line = b""
        try:
            while b"serving ts-assistant" not in line:
                line = await asyncio.wait_for(self.proc.stdout.readline(), 120)
                self.output += line
                assert line, f"the Node actor exited before serving:\n{self.output.decode(errors='replace')}"
        except TimeoutError:
            raise AssertionError(f"the Node actor did not serve within 120 s:\n{self.output.decode(errors='replace')}") from None
        self._drain = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc is not None
        while chunk := await self.proc.stdout.read(4096):
            self.output += chunk

    async def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30) -> int | None:
        if self.proc is None or self.proc.returncode is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        await self._drain
        return self.proc.returncode

    def ran(self) -> list[str]:
        return self.calls.read_text().split("\n")[:-1] if self.calls.exists() else []


@pytest.fixture
async def node_actor(system, tmp_path: Path):
    node = await RUNTIME.installed_and_built()
    name = f"timestep_t_{uuid.uuid4().hex[:12]}"
    import psycopg

    with psycopg.connect(_pg_base(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    actor = NodeActor(node, system.url, _with_database(_pg_base(), name), tmp_path, f"ts-actor-{uuid.uuid4().hex[:8]}")
    await actor.start()
    try:
        yield actor
    finally:
        await actor.stop(signal.SIGKILL)
        _drop_pg_database(name)


async def _published(url: str, agent: str, text: str, **fields) -> str:
    """Submit as any NATS program does: the standard JetStream publish of nats-py, its PubAck awaited."""
    run_id = f"{agent}-{uuid.uuid4().hex[:10]}"
    nc = await nats.connect(url)
    try:
        ack = await nc.jetstream().publish(
            "timestep.runs.submit", json.dumps({"id": run_id, "agent": agent, "input": text, **fields}).encode(),
            headers={"Nats-Msg-Id": run_id}, timeout=10,
        )
        assert ack.stream == "TIMESTEP_SUBMIT"
    finally:
        await nc.close()
    return run_id


async def _held_in_its_tool(node_actor: NodeActor, url: str, tmp_path: Path, text: str, **fields) -> str:
    """The Node actor started again with its tool holding, and a run of `text` published and inside its tool
    (until `hold.release` exists)."""
    await node_actor.stop()
    hold = tmp_path / "hold"
    await node_actor.start(HOLD_FILE=str(hold))
    run_id = await _published(url, "ts-assistant", text, **fields)
    for _ in range(600):
        if hold.exists():
            return run_id
        await asyncio.sleep(0.1)
    raise AssertionError(f"the tool did not start:\n{node_actor.output.decode(errors='replace')}")


async def _events(client, run_id: str, timeout: float = 120) -> list[dict]:
    async def gather() -> list[dict]:
        return [msgspec.json.decode(encode_event(e)) async for e in client.events(run_id)]

    return await asyncio.wait_for(gather(), timeout)


def _shape(events: list[dict]) -> list[tuple]:
    """What a follower relies on, the same whichever actor served the run: each event's type and number,
    and for tool calls, tool outputs and the end, what they carry (not times, ids or the model's usage)."""
    kept = {
        "tool_call": ("tool", "call_id", "arguments"), "tool_output": ("call_id", "output"), "completed": ("output",), "failed": ("error",),
        "tool_approved": ("call_id", "tool", "always", "arguments", "decided_by"), "tool_rejected": ("call_id", "tool", "message", "expired"),
    }
    return [(e["type"], e["seq"], *(e.get(k) for k in kept.get(e["type"], ()))) for e in events]


async def test_a_run_published_for_a_typescript_agent_is_served_by_the_node_actor_with_the_events_a_python_agent_publishes(
    node_actor, client, system,
) -> None:
    typescript = await _events(client, await _published(system.url, "ts-assistant", "get_weather city=Paris"))
    python = await _events(client, await _published(system.url, "bus-assistant", "get_weather city=Paris"))
    assert _shape(typescript) == _shape(python) == [
        ("accepted", 1),
        ("started", 2),
        ("tool_call", 3, "get_weather", "call_1", '{"city": "Paris"}'),
        ("tool_output", 4, "call_1", "sunny in Paris"),
        ("completed", 5, "get_weather returned: sunny in Paris"),
    ]
    assert typescript[-1]["usage"]["requests"] == python[-1]["usage"]["requests"] == 2
    assert [line.split()[0] for line in node_actor.ran()] == ["model", "get_weather:Paris", "model"]


async def test_the_python_client_submits_to_a_typescript_agent(node_actor, client) -> None:
    submitted = await client.submit("ts-assistant", "get_weather city=Lyon")
    assert (await submitted.result(timeout=120)).output == "get_weather returned: sunny in Lyon"


async def test_killed_with_sigkill_inside_its_tool_the_node_actor_s_run_resumes_in_the_next_process_without_a_second_model_call(
    node_actor, client, system, tmp_path: Path,
) -> None:
    run_id = await _held_in_its_tool(node_actor, system.url, tmp_path, "get_weather city=Oslo")
    assert await node_actor.stop(signal.SIGKILL) == -signal.SIGKILL
    first_pid = node_actor.ran()[0].split()[1]

    await node_actor.start()  # the same executor id: DBOS recovers the run at launch
    events = await _events(client, run_id)
    assert _shape(events) == [
        ("accepted", 1),
        ("started", 2),
        ("tool_call", 3, "get_weather", "call_1", '{"city": "Oslo"}'),
        ("tool_output", 4, "call_1", "sunny in Oslo"),
        ("completed", 5, "get_weather returned: sunny in Oslo"),
    ], "each event stored once, though the cut-off tool step published its tool_call again"
    ran = [line.split() for line in node_actor.ran()]
    # The finished model call came from the record; the tool call the kill cut off ran again, then the answer.
    assert [what for what, _ in ran] == ["model", "get_weather:Oslo", "get_weather:Oslo", "model"]
    assert ran[0][1] == ran[1][1] == first_pid and ran[2][1] != first_pid
    assert await node_actor.stop() == 0, "SIGTERM: the Node actor stops and exits 0"


async def test_a_cancel_sent_to_a_typescript_agent_s_run_stops_it_at_its_next_step_and_an_approval_it_does_not_wait_for_is_refused(
    node_actor, client, system, tmp_path: Path,
) -> None:
    """Control goes where every NATS program sends it (`runs.command` through the Python client): the Python
    agent actor sees the run is a TypeScript agent's (its events say so) and passes it on."""
    run_id = await _held_in_its_tool(node_actor, system.url, tmp_path, "get_weather city=Rome")
    with pytest.raises(RequestRefusedError) as refused:
        await client.approve(run_id, "call_1")
    assert refused.value.error.type == "NotWaiting" and "is not waiting for a decision" in refused.value.error.message
    await client.cancel(run_id)
    (tmp_path / "hold.release").touch()  # the tool's step ends; the run stops before the next
    try:
        events = await _events(client, run_id, timeout=30)
    except TimeoutError:
        raise AssertionError(node_actor.output.decode(errors="replace")) from None
    assert _shape(events)[-1] == ("cancelled", 5)
    assert [e["type"] for e in events] == ["accepted", "started", "tool_call", "tool_output", "cancelled"]
    assert [line.split()[0] for line in node_actor.ran()] == ["model", "get_weather:Rome"], "no model call after the cancel"
    with pytest.raises(RequestRefusedError) as again:
        await client.cancel(run_id)
    assert again.value.error.type == "AlreadyFinished"


async def _until(client, run_id: str, kind: str, timeout: float = 60) -> dict:
    async def first() -> dict:
        async for e in client.events(run_id):
            event = msgspec.json.decode(encode_event(e))
            if event["type"] == kind:
                return event
        raise AssertionError(f"run {run_id} ended without {kind}")

    return await asyncio.wait_for(first(), timeout)


async def test_an_approval_with_edited_arguments_over_the_bus_goes_on_as_it_does_for_a_python_agent(node_actor, client, system) -> None:
    shapes, audits = [], []
    for agent in ("ts-assistant", "bus-assistant"):
        run_id = await _published(system.url, agent, "send_email to=ada@example.com")
        interrupted = await _until(client, run_id, "interrupted")
        assert [(a["call_id"], a["tool"], a["arguments"]) for a in interrupted["approvals"]] == [("call_1", "send_email", '{"to": "ada@example.com"}')]
        # The approvals inbox lists it, whichever runtime executes the run.
        waiting = await client.list_approvals(run_id=run_id)
        assert [(a.call_id, a.agent, a.tool, a.arguments, a.status) for a in waiting] == [("call_1", agent, "send_email", '{"to": "ada@example.com"}', "pending")]
        assert run_id in {a.run_id for a in await client.list_approvals()}
        with pytest.raises(RequestRefusedError) as refused:
            await client.approve(run_id, "call_9")
        assert refused.value.error.type == "NotWaiting"
        await client.approve(run_id, "call_1", arguments='{"to": "bob@example.com"}', decided_by="ada")
        shapes.append(_shape(await _events(client, run_id)))
        # The audit trail keeps who decided what, whichever runtime executed the run.
        decided = await client.list_approvals("decided", run_id=run_id)
        audits.append([(a.call_id, a.agent == agent, a.tool, a.arguments, a.status, a.decided_by, a.always, a.approved_arguments) for a in decided])
        assert await client.list_approvals(run_id=run_id) == [], "no longer pending"
    typescript, python = shapes
    assert typescript == python
    assert audits[0] == audits[1] == [("call_1", True, "send_email", '{"to": "ada@example.com"}', "approved", "ada", False, '{"to": "bob@example.com"}')]
    assert [s[0] for s in typescript] == ["accepted", "started", "interrupted", "tool_approved", "tool_call", "tool_output", "completed"]
    assert typescript[3] == ("tool_approved", 4, "call_1", "send_email", False, '{"to": "bob@example.com"}', "ada")
    assert typescript[-1] == ("completed", 7, "send_email returned: sent to bob@example.com")
    assert [line.split()[0] for line in node_actor.ran()] == ["model", "send_email:bob@example.com", "model"]


async def test_a_rejection_over_the_bus_reaches_the_typescript_agent_s_model_and_its_tool_does_not_run(node_actor, client, system) -> None:
    run_id = await _published(system.url, "ts-assistant", "send_email to=ada@example.com")
    await _until(client, run_id, "interrupted")
    await client.reject(run_id, "call_1", message="not to Ada")
    events = await _events(client, run_id)
    rejected = next(e for e in events if e["type"] == "tool_rejected")
    assert (rejected["call_id"], rejected["tool"], rejected["message"], rejected["expired"]) == ("call_1", "send_email", "not to Ada", False)
    assert events[-1]["type"] == "completed" and events[-1]["output"] == "send_email returned: not to Ada"
    [audit] = await client.list_approvals("all", run_id=run_id)
    assert (audit.status, audit.message, audit.decided_by, audit.approved_arguments) == ("rejected", "not to Ada", None, None)
    assert [line.split()[0] for line in node_actor.ran()] == ["model", "model"]


async def _cli(url: str, *args: str) -> tuple[int, str, str]:
    """The command line, as an operator runs it (a process of its own; the actors run on this event loop)."""
    import sys

    from processes import process_env

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "actors.cli.main", *args, env=process_env(NATS_URL=url),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode, out.decode(), err.decode()


async def test_timestep_run_and_approve_on_the_command_line_drive_a_typescript_agent_with_their_exit_codes(node_actor, system) -> None:
    code, out, err = await _cli(system.url, "run", "ts-assistant", "get_weather city=Paris", "--json")
    assert code == 0, (out, err)
    assert json.loads(out.strip().splitlines()[-1])["output"] == "get_weather returned: sunny in Paris"

    run_id = f"ts-cli-{uuid.uuid4().hex[:8]}"
    code, out, err = await _cli(system.url, "run", "ts-assistant", "send_email to=ada@example.com", "--id", run_id)
    assert code == 3 and f"timestep approve {run_id} call_1" in out, (code, out, err)
    code, out, err = await _cli(system.url, "approve", run_id, "call_1")
    assert code == 0, (out, err)
    code, out, err = await _cli(system.url, "events", run_id, "--json")
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["output"] == "send_email returned: sent to ada@example.com", (out, err)


async def test_a_typescript_agent_actor_stopped_with_sigterm_mid_run_exits_and_its_next_process_finishes_the_run(
    node_actor, client, system, tmp_path: Path,
) -> None:
    run_id = await _held_in_its_tool(node_actor, system.url, tmp_path, "get_weather city=Kyiv")
    assert await node_actor.stop(signal.SIGTERM) == 0, node_actor.output.decode(errors="replace")
    await node_actor.start()
    events = await _events(client, run_id)
    assert [e["type"] for e in events] == ["accepted", "started", "tool_call", "tool_output", "completed"]
    assert events[-1]["output"] == "get_weather returned: sunny in Kyiv"
    assert [line.split()[0] for line in node_actor.ran()] == ["model", "get_weather:Kyiv", "get_weather:Kyiv", "model"]


async def test_a_queued_run_for_a_typescript_agent_is_admitted_by_its_queue_and_served_by_the_node_actor(node_actor, client, system) -> None:
    """One admission path: the governor queues the run as any (priority, rate, deduplication id), and once its
    queue admits it the run is handed to the Node actor, its place in the queue held until it ends."""
    queue = f"ts-{uuid.uuid4().hex[:6]}"
    await client.configure_queue(queue, limit=5, period_seconds=60)
    run_id = await _published(system.url, "ts-assistant", "get_weather city=Lima", queue=queue, deduplication_id="lima-once")
    events = await _events(client, run_id)
    assert _shape(events) == [
        ("accepted", 1),
        ("queued", 2),
        ("started", 3),
        ("tool_call", 4, "get_weather", "call_1", '{"city": "Lima"}'),
        ("tool_output", 5, "call_1", "sunny in Lima"),
        ("completed", 6, "get_weather returned: sunny in Lima"),
    ]
    submitted = await client.submit("ts-assistant", "send_email to=ada@example.com", queue=queue)
    interrupted = await _until(client, submitted.run_id, "interrupted")
    await client.approve(submitted.run_id, interrupted["approvals"][0]["call_id"])
    assert (await submitted.result(timeout=60)).output == "send_email returned: sent to ada@example.com"


async def test_timestep_check_passes_every_check_against_a_typescript_agent(node_actor, system) -> None:
    code, out, err = await _cli(system.url, "check", "--agent", "ts-assistant", "--timeout", "60")
    assert code == 0, (out, err)
    assert out.count("PASS ") == 10 and "FAIL" not in out, out


async def test_a_streamed_run_of_a_typescript_agent_stores_its_text_as_delta_events_and_publishes_it_live(node_actor, client, system) -> None:
    nc = await nats.connect(system.url)
    live: dict[str, list[dict]] = {}
    try:
        async def heard(msg) -> None:
            piece = json.loads(msg.data)
            live.setdefault(piece["run_id"], []).append(piece)

        await nc.subscribe("timestep.runs.live.*", cb=heard)
        texts, kinds = {}, {}
        for agent in ("ts-assistant", "bus-assistant"):
            run_id = await _published(system.url, agent, "get_weather city=Paris", stream=True)
            events = await _events(client, run_id)
            assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
            texts[agent] = "".join(e["text"] for e in events if e["type"] == "delta")
            # Deltas gathered differently (the Python side gathers text while storage lags): compared as one.
            kinds[agent] = [k for i, k in enumerate(e["type"] for e in events) if k != "delta" or events[i - 1]["type"] != "delta"]
            assert events[-1]["output"] == texts[agent]
            await asyncio.sleep(0.2)  # the live pieces are not waited for
            pieces = live.get(run_id, [])
            assert "".join(p["text"] for p in pieces) == texts[agent]
            assert [p["offset"] for p in pieces] == [sum(len(q["text"]) for q in pieces[:i]) for i in range(len(pieces))]
        assert texts["ts-assistant"] == texts["bus-assistant"] == "get_weather returned: sunny in Paris"
        assert kinds["ts-assistant"] == kinds["bus-assistant"] == ["accepted", "started", "tool_call", "tool_output", "delta", "completed"]
    finally:
        await nc.close()


async def test_a_rate_limited_model_call_of_a_typescript_agent_is_retried_durably_with_a_retrying_event(node_actor, client, system) -> None:
    await node_actor.stop()
    await node_actor.start(RATE_LIMITED="1")
    events = await _events(client, await _published(system.url, "ts-assistant", "get_weather city=Oslo rate=limited"))
    assert [e["type"] for e in events] == ["accepted", "started", "retrying", "tool_call", "tool_output", "completed"]
    retrying = events[2]
    assert (retrying["seq"], retrying["attempt"], retrying["delay_seconds"], retrying["status_code"]) == (3, 1, 0.2, 429)
    assert retrying["error"]["type"] == "RateLimitError"
    assert [line.split()[0] for line in node_actor.ran()] == ["model", "model", "get_weather:Oslo", "model"]


async def test_a_rate_limited_streamed_call_of_a_typescript_agent_is_retried_durably_and_streams_once_it_succeeds(
    node_actor, client, system,
) -> None:
    await node_actor.stop()
    await node_actor.start(RATE_LIMITED="1")
    run_id = await _published(system.url, "ts-assistant", "get_weather city=Oslo rate=limited", stream=True)
    events = await _events(client, run_id)
    assert [e["type"] for e in events] == ["accepted", "started", "retrying", "tool_call", "tool_output", *["delta"] * 5, "completed"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    retrying = events[2]
    assert (retrying["attempt"], retrying["delay_seconds"], retrying["status_code"], retrying["error"]["type"]) == (1, 0.2, 429, "RateLimitError")
    assert "".join(e["text"] for e in events if e["type"] == "delta") == "get_weather returned: sunny in Oslo"
    assert [line.split()[0] for line in node_actor.ran()] == ["model", "model", "get_weather:Oslo", "model"]


async def _joined(node_actor: NodeActor, session_id: str, run_id: str) -> None:
    for _ in range(600):
        if run_id in await node_actor.turns(session_id):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"run {run_id} did not join its session:\n{node_actor.output.decode(errors='replace')}")


async def test_runs_of_one_session_on_a_typescript_agent_take_turns_and_the_next_sees_the_conversation(
    node_actor, client, system, tmp_path: Path,
) -> None:
    """`session_id` with the `reject` and `enqueue` policies, published with nats-py's standard JetStream
    publish: a run arriving while another run of its session is inside its tool is refused (`reject`,
    naming that run) or waits for it (`enqueue`) and then runs on the history it left."""
    session = f"user-{uuid.uuid4().hex[:8]}"
    first = await _held_in_its_tool(node_actor, system.url, tmp_path, "get_weather city=Oslo", session_id=session)

    refused = await _published(system.url, "ts-assistant", "hello", session_id=session, session_policy="reject")
    events = await _events(client, refused, timeout=60)
    assert [e["type"] for e in events] == ["accepted", "rejected"]
    error = events[-1]["error"]
    assert error["type"] == "SessionBusy" and error["field"] == "session_id" and first in error["message"], error

    waiting = await _published(system.url, "ts-assistant", "history?", session_id=session)
    await _joined(node_actor, session, waiting)  # it waits for its turn in the runtime's database
    assert await node_actor.turns(session) == [first, waiting]
    (tmp_path / "hold.release").touch()
    assert _shape(await _events(client, first))[-1] == ("completed", 5, "get_weather returned: sunny in Oslo")
    last = await _events(client, waiting)
    # The first run's user message, tool call, tool output and answer were in the second run's input.
    assert (last[-1]["type"], last[-1].get("output")) == ("completed", "I have 4 earlier items")
    assert [e["type"] for e in last] == ["accepted", "started", "completed"]
    assert await node_actor.turns(session) == []
    other = await _published(system.url, "ts-assistant", "history?", session_id=f"{session}-other")
    assert (await _events(client, other))[-1].get("output") == "I have 0 earlier items"


async def test_a_run_with_session_policy_interrupt_cancels_the_typescript_agent_s_unfinished_run_of_its_session(
    node_actor, client, system, tmp_path: Path,
) -> None:
    session = f"user-{uuid.uuid4().hex[:8]}"
    first = await _held_in_its_tool(node_actor, system.url, tmp_path, "get_weather city=Lima", session_id=session)
    newer = await _published(system.url, "ts-assistant", "history?", session_id=session, session_policy="interrupt")
    await _joined(node_actor, session, newer)
    (tmp_path / "hold.release").touch()  # the tool's step ends; the cancelled run stops before its next
    cancelled = await _events(client, first)
    assert [e["type"] for e in cancelled] == ["accepted", "started", "tool_call", "tool_output", "cancelled"]
    done = await _events(client, newer)
    # It went on with the history so far: the cancelled run wrote none (its answer never came).
    assert (done[-1]["type"], done[-1].get("output")) == ("completed", "I have 0 earlier items")
    assert [line.split()[0] for line in node_actor.ran()] == ["model", "get_weather:Lima", "model"]


async def test_a_typescript_agent_s_run_stops_at_its_token_budget_and_retries_as_its_request_says(node_actor, client, system) -> None:
    """A request's `max_tokens` and `model_retry`, as a Python agent actor takes them."""
    over = await _events(client, await _published(system.url, "ts-assistant", "get_weather city=Oslo", max_tokens=1))
    assert [e["type"] for e in over] == ["accepted", "started", "failed"]
    assert over[-1]["error"]["type"] == "BudgetExceeded" and "over its budget of max_tokens=1" in over[-1]["error"]["message"]
    assert [line.split()[0] for line in node_actor.ran()] == ["model"], "no tool call after the call that crossed the budget"

    await node_actor.stop()
    await node_actor.start(RATE_LIMITED="1")
    once = await _events(client, await _published(system.url, "ts-assistant", "get_weather city=Oslo rate=limited", model_retry={"max_attempts": 1}))
    assert [e["type"] for e in once] == ["accepted", "started", "failed"], "a 429 not tried again: one attempt allowed"
    assert once[-1]["error"]["type"] == "RateLimitError" and "(after 1 attempt)" in once[-1]["error"]["message"]
