"""Who may do what on the bus, on a real nats-server with the accounts of deploy/nats: actors (one
user per role, separate processes) serve runs; a client submits, follows, approves and cancels, and
is refused what only actors or admins may do; an admin configures queues and schedules. Then the
other ways in (nkey, a creds file in operator mode, TLS with client certificates), and secrets:
none appears in an event, a dead letter or a log line."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import msgspec
import pytest
from agents import FunctionTool
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import NotFoundError
from openai.types.responses import Response, ResponseUsage
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails

from conftest import PG_PROBLEM, _drop_pg_database, _pg_base, _with_database, pg_processes_lock
from processes import process_env, stop, up, wait_printed, wait_printed_async
from subjects.events import Cancelled, Completed, Interrupted, Rejected, Started, ToolCall, decode_submit_answer
from subjects.messages import DeadLetter, QueueConfigure, RunRequest, ScheduleCreate
from subjects.names import DEAD_STREAM, EVENTS_STREAM
from timestep.bus.connection import Bus, BusEventSink
from timestep.client import Client, RunRejectedError
from timestep.errors import PermissionDeniedError, RunCancelledError, TimestepError
from timestep.bus.server import EmbeddedNats, free_port
from timestep.durable.offline_model import OfflineDemoModel
from timestep.settings import NatsSettings, Settings

TESTS = Path(__file__).parent
DEPLOY_NATS = TESTS.parent / "deploy" / "nats"
# One xdist worker runs the module: the deployment (a secured nats-server and three `timestep up`) starts once.
pytestmark = pytest.mark.xdist_group("access")

AGENT = "bus-assistant"
ROLES = ("agent", "governor", "scheduler")
USERS = (*ROLES, "client", "viewer", "admin", "sys")


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def settings_for(url: str, deadline: float = 10.0, **nats: str | None) -> Settings:
    """This process's settings with only the given NATS credentials (nothing from the environment).
    A refused first connection takes the whole `deadline` (NATS_CONNECT_TIMEOUT): nats-py retries."""
    base = Settings.from_env()
    none = {f.name: None for f in dataclasses.fields(NatsSettings) if f.name != "connect_deadline"}
    return dataclasses.replace(base, nats=NatsSettings(**{**none, "url": url, "connect_deadline": deadline, **nats}))


def secured_server(root: Path, passwords: dict[str, str], extra: str = "", without: str | None = None) -> EmbeddedNats:
    """A nats-server with deploy/nats/accounts.conf (copied beside its config: includes are relative);
    `without`: one permission entry of permissions.conf, quoted as there, taken away."""
    store = root / "nats"
    store.mkdir(parents=True)
    for name in ("accounts.conf", "permissions.conf"):
        shutil.copy(DEPLOY_NATS / name, store / name)
    if without is not None:
        conf = (store / "permissions.conf").read_text()
        assert conf.count(without) == 1, without
        (store / "permissions.conf").write_text(conf.replace(without, '"timestep.test.taken-away"'))
    env = {f"NATS_{user.upper()}_PASSWORD": pw for user, pw in passwords.items()}
    return EmbeddedNats(store, port=free_port(), extra_config=f"include ./accounts.conf\n{extra}", env=env)


def violations(server: EmbeddedNats) -> list[str]:
    return [line for line in (server.store_dir / "nats-server.log").read_text().splitlines() if "Violation" in line]


def actor_violations(server: EmbeddedNats) -> list[str]:
    """Refusals of an actor's user: `"<account>/user:agent" - Publish Violation` (nats-server 2.10+),
    `Publish Violation - User "agent"` (older)."""
    return [line for line in violations(server) if re.search(r'(/user:|User ")(agent|governor|scheduler)"', line)]


# --- an OpenAI-compatible model server on loopback -------------------------------------------


class ModelServer:
    """The Responses API on 127.0.0.1, answering with the offline model's rules, so the actors run
    with OPENAI_API_KEY set and use the SDK's OpenAI client, and nothing leaves the machine.
    Records the Authorization header of every request."""

    def __init__(self) -> None:
        self.authorizations: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                owner.authorizations.append(self.headers.get("Authorization", ""))
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                payload = owner.respond(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/v1"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    @staticmethod
    def respond(body: dict) -> str:
        tools = [
            FunctionTool(name=t["name"], description="", params_json_schema=t.get("parameters") or {}, on_invoke_tool=None)  # type: ignore[arg-type]
            for t in body.get("tools") or [] if t.get("type") == "function"
        ]
        output, text = OfflineDemoModel()._decide(body["input"], tools)
        return Response(
            id="resp_test", created_at=0, model=body.get("model", "test"), object="response", output=output,
            tool_choice="auto", tools=[], top_p=None, parallel_tool_calls=False, status="completed",
            usage=ResponseUsage(
                input_tokens=3, output_tokens=max(1, len(text.split())), total_tokens=3 + max(1, len(text.split())),
                input_tokens_details=InputTokensDetails(cached_tokens=0, cache_write_tokens=0), output_tokens_details=OutputTokensDetails(reasoning_tokens=0),
            ),
        ).model_dump_json(exclude_none=True, by_alias=True)  # as the API sends it: no nulls, wire names

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


# --- the deployment: a secured server and one process per role --------------------------------

# Every process logs everything, every library included, at DEBUG to stderr.
DEBUG_MAIN = "import logging, sys; logging.basicConfig(level=logging.DEBUG); from actors.cli.main import main; sys.exit(main(sys.argv[1:]))"


@dataclasses.dataclass
class Deployment:
    server: EmbeddedNats
    url: str
    passwords: dict[str, str]
    api_key: str
    db_password: str
    model: ModelServer
    outputs: list[Path]
    procs: list[subprocess.Popen]

    def settings(self, user: str, password: str | None = None) -> Settings:
        return settings_for(self.url, user=user, password=password if password is not None else self.passwords[user])

    async def client(self, user: str = "client") -> Client:
        return Client(await Bus.connect(self.url, settings=self.settings(user), name=f"test-{user}"))

    def secrets(self) -> dict[str, str]:
        return {**{f"NATS password of {u}": pw for u, pw in self.passwords.items()}, "OPENAI_API_KEY": self.api_key, "database password": self.db_password}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp("access")
    passwords = {user: f"pw-{user}-{uuid.uuid4().hex}" for user in USERS}
    server = secured_server(tmp, passwords)
    url = server.start()
    model = ModelServer()
    api_key = f"sk-test-{uuid.uuid4().hex}"
    db_password = f"dbpw-{uuid.uuid4().hex}"
    db_name = f"timestep_t_{uuid.uuid4().hex[:12]}"
    if PG_PROBLEM is None:  # trust auth accepts any password: the password still travels in the URL
        head, _, tail = _with_database(_pg_base(), db_name).partition("://")
        user_host = tail.split("@")[-1]
        db_url = f"{head}://postgres:{db_password}@{user_host}"
    else:
        db_url = None
    # Three processes on PostgreSQL for the whole module: no other test's processes on it meanwhile.
    held = contextlib.ExitStack()
    if db_url:
        held.enter_context(pg_processes_lock(tmp_path_factory))
    outputs, procs = [], []
    try:
        for role in ROLES:
            env = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "PG_", "OPENAI_", "TIMESTEP_"))}
            env.update(
                NATS_URL=url, NATS_USER=role, NATS_PASSWORD=passwords[role],
                OPENAI_API_KEY=api_key, OPENAI_BASE_URL=model.url,
                TIMESTEP_HOME=str(tmp / "home"), TIMESTEP_EXECUTOR_ID=role, TIMESTEP_LOG_LEVEL="DEBUG",
                TIMESTEP_QUEUE_POLL_SECONDS="0.05", TIMESTEP_WORKERS="1", TIMESTEP_DB_POOL_SIZE="6",
                PYTHONPATH=os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")]),
            )
            if db_url:
                env["PG_CONNECTION_URI"] = db_url
            out = tmp / f"{role}.log"
            outputs.append(out)
            args = [sys.executable, "-c", DEBUG_MAIN, "up", "--agents", "bus_agents", "--role", role]
            procs.append(subprocess.Popen(args, env=env, stdout=out.open("w"), stderr=subprocess.STDOUT))
        deployed = Deployment(server, url, passwords, api_key, db_password, model, outputs, procs)
        wait_printed(zip(procs, outputs))
        yield deployed
    finally:
        stop(procs, wait=20)
        server.stop()
        model.close()
        if db_url:
            _drop_pg_database(db_name)
        held.close()


def kinds(events: list) -> list[str]:
    return [type(e).__struct_config__.tag for e in events]


async def events_of(client: Client, run_id: str, timeout: float = 60) -> list:
    async def gather() -> list:
        return [event async for event in client.events(run_id)]

    return await asyncio.wait_for(gather(), timeout)


@pytest.mark.processes
async def test_actors_with_actor_credentials_serve_runs_end_to_end(deployment: Deployment) -> None:
    client = await deployment.client()
    try:
        city = uid("Oslo")
        run = await client.submit(AGENT, f"get_weather city={city}")
        events = await events_of(client, run.run_id)
        assert kinds(events) == ["accepted", "started", "tool_call", "tool_output", "completed"]
        assert events[-1].output == f"get_weather returned: sunny in {city}"

        queued = await client.submit(AGENT, "hello", queue=uid("q"), priority=3)
        assert kinds(await events_of(client, queued.run_id)) == ["accepted", "queued", "started", "completed"]

        with pytest.raises(RunRejectedError, match="no agent named 'nobody'"):
            await client.submit("nobody", "hi")
    finally:
        await client.close()
    # The model calls went to the model server with the key: the key was in play.
    assert deployment.model.authorizations and set(deployment.model.authorizations) == {f"Bearer {deployment.api_key}"}
    assert actor_violations(deployment.server) == []


@pytest.mark.processes
async def test_client_approves_and_cancels(deployment: Deployment) -> None:
    client = await deployment.client()

    async def follow(run_id: str, when: type, then) -> object:
        async for event in client.events(run_id):
            if isinstance(event, when):
                await then(event)
        return event

    try:
        run = await client.submit(AGENT, "send_email to=ada@example.com")
        approve = lambda event: client.approve(run.run_id, event.approvals[0].call_id)  # noqa: E731
        last = await asyncio.wait_for(follow(run.run_id, Interrupted, approve), 60)
        assert isinstance(last, Completed) and last.output == "send_email returned: sent to ada@example.com"

        run = await client.submit(AGENT, "think seconds=30")
        last = await asyncio.wait_for(follow(run.run_id, ToolCall, lambda _: client.cancel(run.run_id)), 60)
        assert isinstance(last, Cancelled)
        with pytest.raises(RunCancelledError):
            await run.result(timeout=5)
        assert [q.name for q in await client.queue_status("default")] == ["default"]
    finally:
        await client.close()
    assert actor_violations(deployment.server) == []


async def _refused(caplog: pytest.LogCaptureFixture, subject: str) -> bool:
    """The server's permission error for `subject` reached the client (nats-py reports it
    through the error callback, which Bus logs; the callback runs as a task of its own)."""
    pattern = re.compile(rf'permissions violation for publish to "{re.escape(subject)}"', re.IGNORECASE)
    for _ in range(100):
        if any(pattern.search(r.getMessage()) for r in caplog.records):
            return True
        await asyncio.sleep(0.05)
    return False


@pytest.mark.processes
async def test_client_is_refused_what_only_actors_and_admins_may_do(deployment: Deployment, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="timestep.bus.connection")
    client, admin = await deployment.client(), await deployment.client("admin")
    bus, s = client.bus, client.subjects
    try:
        queue = uid("locked")
        before = await admin.configure_queue(queue, limit=7, period_seconds=60)
        run_id = uid("forged")

        # A forged event, a forged hand-off to the agent actors (bypassing the governor), a queue
        # policy and a schedule: each publish is refused by the server, which says so.
        forged = [
            (s.events(run_id, "completed"), b'{"type":"completed","run_id":"%s","seq":1}' % run_id.encode()),
            (s.start, b"{}"),
            (s.queues_configure, msgspec.json.encode(QueueConfigure(name=queue, limit=1000, period_seconds=1))),
            (s.schedules_create, msgspec.json.encode(ScheduleCreate(name=run_id, cron="* * * * *", request=RunRequest(agent=AGENT, input="x")))),
            (s.schedules_delete, b'{"name": "x"}'),
            (s.dead("x"), b"{}"),
        ]
        for subject, data in forged:
            await bus.nc.publish(subject, data)
        await bus.nc.flush()
        for subject, _ in forged:
            assert await _refused(caplog, subject), f"publishing to {subject} was not refused"

        # Requests to admin services get no answer (the server drops them), and nothing happened.
        with pytest.raises(TimeoutError, match="no answer on timestep.queues.configure"):
            await bus.request(s.queues_configure, forged[2][1], timeout=1)
        with pytest.raises(NotFoundError):
            await bus.js.get_last_msg(EVENTS_STREAM, s.events(run_id, "completed"), direct=True)
        (after,) = await client.queue_status(queue)
        assert (after.limit, after.period_seconds) == (before.limit, before.period_seconds) == (7, 60.0)
        assert run_id not in [x.name for x in await client.list_schedules()]

        # Creating a stream goes through the JetStream API, which refuses it the same way.
        rogue = uid("ROGUE").replace("-", "_")
        with pytest.raises(NatsTimeout):
            await bus.nc.jetstream(timeout=1).add_stream(name=rogue, subjects=["rogue.>"])
        assert await _refused(caplog, f"$JS.API.STREAM.CREATE.{rogue}")
    finally:
        await client.close()
        await admin.close()
    assert actor_violations(deployment.server) == []


async def test_a_refused_publish_fails_at_once_naming_the_subject_and_the_fix(tmp_path: Path) -> None:
    """The server answers a refused publish with an error of its own, not a reply, so nats-py alone
    would see a timeout, a transient error: publish_durably, settling and ensure_streams raise instead."""
    passwords = {user: f"pw-{user}-{uuid.uuid4().hex}" for user in USERS}
    with secured_server(tmp_path, passwords) as server:
        as_user = lambda user: settings_for(server.url, user=user, password=passwords[user])  # noqa: E731
        actor, client = await Bus.connect(settings=as_user("agent")), await Bus.connect(settings=as_user("client"))
        try:
            await actor.ensure_streams()
            subject = client.subjects.events(uid("Forged"), "completed")  # nats-py lower-cases the server's error
            with pytest.raises(PermissionDeniedError) as refused:
                # A bound only so that a regression fails instead of hanging the suite.
                await asyncio.wait_for(client.publish_durably(subject, b'{"type":"completed"}', uid("msg")), 60)
            assert refused.value.subject == subject
            assert f"NATS user 'client' may not publish to {subject}" in str(refused.value)
            assert f"give this user publish permission on {subject} (see deploy/nats/permissions.conf)" in str(refused.value)
            assert (await actor.js.stream_info(EVENTS_STREAM)).state.messages == 0

            # Events published without waiting (an agent actor's run): settling reports the refusal and lets them go.
            sink = BusEventSink(client)
            sink.ACK_WAIT = 0.2
            await sink.emit(Started(run_id=uid("Forged"), seq=1, time=time.time()))
            with pytest.raises(PermissionDeniedError, match="give this user publish permission on timestep.runs.events."):
                await asyncio.wait_for(sink.settle(), 60)
            await asyncio.wait_for(sink.settle(), 60)  # nothing left to settle
            assert (await actor.js.stream_info(EVENTS_STREAM)).state.messages == 0
            # The refused publish_durably was its caller's to handle; events published without
            # waiting are work the process cannot do: that refusal is the one `timestep up` exits with.
            assert client.refusals.denied is not None and client.refusals.denied.subject == subject
            assert client.refusals.fatal is not None and client.refusals.fatal.subject.startswith("timestep.runs.events.")

            # `timestep up` with a client's credentials cannot create the streams, and says so.
            with pytest.raises(PermissionDeniedError, match=re.escape("may not publish to $JS.API.STREAM.CREATE.TIMESTEP_SUBMIT")):
                await asyncio.wait_for(client.ensure_streams(), 60)
        finally:
            await actor.close()
            await client.close()


async def test_each_actor_role_may_publish_only_what_it_does(tmp_path: Path) -> None:
    """Least privilege per role: the scheduler only submits; only the governor accepts, queues,
    rejects and hands runs to agents; only the agent publishes a run's progress."""
    passwords = {user: f"pw-{user}-{uuid.uuid4().hex}" for user in USERS}
    with secured_server(tmp_path, passwords) as server:
        buses = {role: await Bus.connect(settings=settings_for(server.url, user=role, password=passwords[role])) for role in ROLES}
        s = buses["agent"].subjects
        run_id = uid("Role")
        allowed = {
            "agent": [s.events(run_id, "started"), s.events(run_id, "completed")],
            "governor": [s.events(run_id, "accepted"), s.events(run_id, "rejected"), s.start],
            "scheduler": [],  # submit: a plain publish (the submit stream sends no acknowledgement), checked below
        }
        refused = {
            "agent": [s.start, s.submit],
            "governor": [s.events(run_id, "started"), s.events(run_id, "completed"), s.events(run_id, "tool_call")],
            "scheduler": [s.events(run_id, "accepted"), s.events(run_id, "completed"), s.start],
        }
        try:
            for role, bus in buses.items():
                await asyncio.wait_for(bus.ensure_streams(), 60)  # every role may create and update the streams
                for subject in allowed[role]:
                    await asyncio.wait_for(bus.publish_durably(subject, b"{}", uid("msg")), 60)
                for subject in refused[role]:
                    with pytest.raises(PermissionDeniedError, match=f"NATS user '{role}' may not publish to {re.escape(subject)}"):
                        await asyncio.wait_for(bus.publish_durably(subject, b"{}", uid("msg")), 60)
            await buses["scheduler"].nc.publish(s.submit, b"{}")
            await buses["scheduler"].nc.flush()
            refusals = violations(server)
            assert len(refusals) == sum(len(subjects) for subjects in refused.values()), refusals
            assert not [line for line in refusals if 'user:scheduler" - Publish Violation - Subject "timestep.runs.submit"' in line]
        finally:
            for bus in buses.values():
                await bus.close()


def up_as(role: str, server: EmbeddedNats, password: str, home: Path, out: Path, *args: str) -> subprocess.Popen:
    """`timestep up --role ROLE` as that role's NATS user, its output in `out`."""
    env = process_env(*[k for k in os.environ if k.startswith(("NATS_", "PG_", "OPENAI_", "TIMESTEP_"))])
    env.update(NATS_URL=server.url, NATS_USER=role, NATS_PASSWORD=password, TIMESTEP_HOME=str(home), TIMESTEP_WORKERS="1")
    return up(out, env, "--agents", "bus_agents", "--role", role, *args)


@pytest.mark.processes
@pytest.mark.parametrize(
    ("role", "taken_away", "message"),
    [
        # its mailbox: it could never fetch a message
        ("agent", '"$JS.API.CONSUMER.MSG.NEXT.TIMESTEP_WORK.agent"', "NATS user 'agent' may not publish to $JS.API.CONSUMER.MSG.NEXT.TIMESTEP_WORK.agent"),
        # a service: no request would ever reach it
        ("scheduler", '"timestep.schedules.list timestep-scheduler"', "NATS user 'scheduler' may not subscribe to timestep.schedules.list"),
    ],
    ids=["agent-fetch", "scheduler-subscription"],
)
def test_timestep_up_exits_when_its_user_may_not_do_the_actors_work(tmp_path: Path, role: str, taken_away: str, message: str) -> None:
    """Without a permission its actors need, a process would retry or wait forever (the server's
    refusal reaches nats-py only as an error callback): `timestep up` stops, naming the subject."""
    passwords = {user: f"pw-{user}-{uuid.uuid4().hex}" for user in USERS}
    with secured_server(tmp_path, passwords, without=taken_away) as server:
        out = tmp_path / "up.log"
        proc = up_as(role, server, passwords[role], tmp_path / "home", out)
        try:
            code = proc.wait(90)  # a bound only so that a regression fails instead of hanging the suite
        finally:
            stop([proc])
        output = out.read_text()
        assert code == 2, output[-3000:]
        assert f"error: {message}" in output and "(see deploy/nats/permissions.conf)" in output, output[-3000:]
        assert output.count(message) == 2, output[-3000:]  # logged once as the server said it, then the exit's error


async def http_get(url: str) -> tuple[int, str]:
    def get() -> tuple[int, str]:
        try:
            with urllib.request.urlopen(url, timeout=15) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    return await asyncio.to_thread(get)


@pytest.mark.processes
async def test_readyz_names_a_refused_publish_and_the_message_is_dead_lettered(tmp_path: Path) -> None:
    """A governor that may not hand runs to the agents (`timestep.runs.start`) dead-letters the
    request whose publish was refused, as before, and is not ready from then on, saying why."""
    passwords = {user: f"pw-{user}-{uuid.uuid4().hex}" for user in USERS}
    with secured_server(tmp_path, passwords, without='"timestep.runs.start"') as server:
        out = tmp_path / "up.log"
        proc = up_as("governor", server, passwords["governor"], tmp_path / "home", out, "--http-port", "0")
        admin = await Bus.connect(settings=settings_for(server.url, user="admin", password=passwords["admin"]))
        try:
            await wait_printed_async([(proc, out)])
            url = re.search(r"http: (http://127\.0\.0\.1:\d+)", out.read_text()).group(1)

            async def readiness(status: int) -> str | None:
                answer = await http_get(url + "/readyz")
                return answer[1] if answer[0] == status else None

            await wait_until(lambda: readiness(200))

            run_id = uid("Refused")
            client = await Bus.connect(settings=settings_for(server.url, user="client", password=passwords["client"]))
            try:
                await client.nc.publish(client.subjects.submit, msgspec.json.encode(RunRequest(agent=AGENT, input="hi", id=run_id)))
                await client.nc.flush()
            finally:
                await client.close()

            reason = await wait_until(lambda: readiness(503))
            assert reason.startswith("NATS user 'governor' may not publish to timestep.runs.start: the server refused it"), reason
            letter = await wait_until(lambda: dead_letter(admin, admin.subjects.dead(admin.subjects.submit)))
            assert letter.reason == "publish not permitted" and run_id in letter.data
            assert proc.poll() is None, out.read_text()[-3000:]  # a handler's refusal costs its message, not the process
        finally:
            stop([proc])
            await admin.close()


async def wait_until(check, timeout: float = 60):
    """`await check()`'s first truthy result."""
    deadline = time.monotonic() + timeout
    while not (result := await check()):
        assert time.monotonic() < deadline, "gave up waiting"
        await asyncio.sleep(0.1)
    return result


async def dead_letter(bus: Bus, subject: str) -> DeadLetter | None:
    try:
        return msgspec.json.decode((await bus.js.get_last_msg(DEAD_STREAM, subject)).data, type=DeadLetter)
    except NotFoundError:
        return None


@pytest.mark.processes
async def test_admin_configures_queues_and_schedules(deployment: Deployment) -> None:
    admin = await deployment.client("admin")
    try:
        queue = uid("admin-q")
        status = await admin.configure_queue(queue, limit=3, period_seconds=10, concurrency=2)
        assert (status.limit, status.period_seconds, status.concurrency) == (3, 10.0, 2)
        name = uid("nightly")
        schedule = await admin.create_schedule(name, "0 3 * * *", {"agent": AGENT, "input": "report"})
        assert schedule.name == name and name in [x.name for x in await admin.list_schedules()]
        assert await admin.delete_schedule(name)
        assert name not in [x.name for x in await admin.list_schedules()]
        # The scheduler reads the hosted agents (the key-value bucket) to refuse one nobody hosts.
        with pytest.raises(TimestepError, match=r"^request\.agent: no agent named 'ghost' is hosted by a running agent actor \(hosted: "):
            await admin.create_schedule(uid("haunted"), "0 3 * * *", {"agent": "ghost", "input": "boo"})
        # Admins follow runs and read dead letters too.
        run = await admin.submit(AGENT, "hi there")
        assert (await run.result(timeout=60)).output == "You said: hi there"
    finally:
        await admin.close()
    assert actor_violations(deployment.server) == []


@pytest.mark.processes
@pytest.mark.parametrize("password", [None, "wrong-password"], ids=["no-credentials", "wrong-password"])
async def test_unauthenticated_or_wrong_password_is_refused_clearly(deployment: Deployment, password: str | None) -> None:
    settings = settings_for(deployment.url, deadline=3)
    if password is not None:
        settings = dataclasses.replace(settings, nats=dataclasses.replace(settings.nats, user="client", password=password))
    with pytest.raises(ConnectionError) as refused:
        await Bus.connect(settings=settings)
    message = str(refused.value)
    assert "Authorization Violation" in message and "check NATS_URL and the NATS_* credentials" in message
    assert "wrong-password" not in message


async def stored_messages(bus: Bus, stream: str, subjects: str, containing: str, timeout: float = 30) -> list[bytes]:
    """Every message of a stream, read again until one contains `containing`."""
    deadline = time.monotonic() + timeout
    while True:
        count = (await bus.js.stream_info(stream)).state.messages
        sub = await bus.js.subscribe(subjects, ordered_consumer=True, stream=stream, deliver_policy="all")
        try:
            messages = [(await sub.next_msg(timeout=10)).data for _ in range(count)]
        finally:
            await sub.unsubscribe()
        if any(containing.encode() in m for m in messages) or time.monotonic() > deadline:
            return messages
        await asyncio.sleep(0.2)


@pytest.mark.processes
async def test_no_secret_in_events_dead_letters_or_logs(deployment: Deployment, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    header_secret = f"hdr-{uuid.uuid4().hex}"
    secrets = {**deployment.secrets(), "Authorization header": header_secret}
    client, admin = await deployment.client(), await deployment.client("admin")
    try:
        # A request with credentials in its headers, for an agent nobody hosts: rejected and dead-lettered.
        run_id = uid("leaky")
        headers = {"Authorization": f"Bearer {header_secret}", "X-Api-Key": header_secret, "Nats-Msg-Id": run_id, "X-Trace": "kept"}
        reply = await client.bus.request(client.subjects.submit, msgspec.json.encode(RunRequest(agent="nobody", input="hi", id=run_id)), 10, headers=headers)
        assert isinstance(decode_submit_answer(reply), Rejected)
        # And a run that completes, on the same processes.
        done = await client.submit(AGENT, "get_weather city=Bergen")
        await done.result(timeout=60)

        # The governor answers, then dead-letters: wait until the letter is stored.
        letters = [msgspec.json.decode(m, type=DeadLetter) for m in await stored_messages(admin.bus, DEAD_STREAM, admin.subjects.all_dead, run_id)]
        ours = [letter for letter in letters if run_id in letter.data]
        assert ours, "the rejected request was not dead-lettered"
        # The credential headers are named (the operator sees they were there), their values are not kept.
        assert ours[0].headers["Authorization"] == ours[0].headers["X-Api-Key"] == "[redacted]"
        assert ours[0].headers["X-Trace"] == "kept"

        stored = [m.decode() for m in await stored_messages(admin.bus, EVENTS_STREAM, admin.subjects.all_events, "Bergen")]
        assert any(run_id in e for e in stored) and any("Bergen" in e for e in stored)
    finally:
        await client.close()
        await admin.close()

    places = {
        "events": "\n".join(stored),
        "dead letters": "\n".join(msgspec.json.encode(x).decode() for x in letters),
        "this process's log": "\n".join(r.getMessage() for r in caplog.records),
        "the nats-server log": (deployment.server.store_dir / "nats-server.log").read_text(),
        **{f"{out.stem}'s output": out.read_text() for out in deployment.outputs},
    }
    assert [where for where, text in places.items() if not text and where != "this process's log"] == []
    assert sum("DEBUG" in places[f"{role}'s output"] for role in ROLES) == 3  # the processes did log at DEBUG
    leaks = [f"{what} in {where}" for where, text in places.items() for what, secret in secrets.items() if secret in text]
    assert leaks == []


# --- other ways in: nkey, creds (operator mode), TLS ------------------------------------------


async def test_nkey_users(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    nkeys = pytest.importorskip("nkeys", reason="nkey and creds auth need the nkeys package: pip install 'nats-py[nkeys]'")
    seeds = {name: _new_seed(nkeys, nkeys.PREFIX_BYTE_USER) for name in (*ROLES, "client", "viewer", "admin", "stranger")}
    for name, seed in seeds.items():
        (tmp_path / f"{name}.nk").write_bytes(seed)
    public = {name: nkeys.from_seed(seed).public_key.decode() for name, seed in seeds.items()}
    users = ", ".join(f"{{ nkey: {public[n]}, permissions: ${n.upper()}_PERMISSIONS }}" for n in (*ROLES, "client", "viewer", "admin"))
    store = tmp_path / "nats"
    store.mkdir()
    shutil.copy(DEPLOY_NATS / "permissions.conf", store / "permissions.conf")
    config = f"include ./permissions.conf\naccounts {{ TIMESTEP {{ jetstream: enabled, users: [{users}] }} }}\n"
    caplog.set_level(logging.WARNING, logger="timestep.bus.connection")
    with EmbeddedNats(store, port=free_port(), extra_config=config) as server:
        seed_of = lambda name: settings_for(server.url, nkey_seed_file=str(tmp_path / f"{name}.nk"))  # noqa: E731
        actor, client = await Bus.connect(settings=seed_of("agent")), await Bus.connect(settings=seed_of("client"))
        try:
            await actor.ensure_streams()
            run_id = uid("nk")
            await client.nc.publish(client.subjects.events(run_id, "completed"), b"{}")
            assert await _refused(caplog, client.subjects.events(run_id, "completed"))
        finally:
            await actor.close()
            await client.close()
        with pytest.raises(ConnectionError, match="Authorization Violation"):
            await Bus.connect(settings=settings_for(server.url, deadline=2, nkey_seed_file=str(tmp_path / "stranger.nk")))


def _new_seed(nkeys, prefix: int) -> bytes:
    return nkeys.encode_seed(os.urandom(32), prefix)


def _jwt(nkeys, signer_seed: bytes, subject: str, name: str, nats: dict) -> str:
    """A NATS JWT (v2): the claims, signed with ed25519 by `signer_seed`."""
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signer = nkeys.from_seed(signer_seed)
    claims = {"iat": int(time.time()), "iss": signer.public_key.decode(), "name": name, "sub": subject, "nats": {**nats, "version": 2}}
    claims["jti"] = base64.b32encode(hashlib.sha256(json.dumps(claims, sort_keys=True).encode()).digest()).decode().rstrip("=")
    head = b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode()) + "." + b64(json.dumps(claims).encode())
    return head + "." + b64(signer.sign(head.encode()))


def _permissions_of(variable: str) -> dict:
    """A permission set of permissions.conf as JWT claims (pub/sub allow lists, responses)."""
    text = (DEPLOY_NATS / "permissions.conf").read_text()
    block = text[text.index(f"{variable}:"):]
    block = block[: block.index("\n}\n")]
    publish = block[block.index("publish"): block.index("subscribe")]
    subscribe = block[block.index("subscribe"):]
    quoted = lambda part: [s for s in re.findall(r'"([^"]+)"', "\n".join(l.split("#")[0] for l in part.splitlines()))]  # noqa: E731,E741
    claims = {"pub": {"allow": quoted(publish)}, "sub": {"allow": quoted(subscribe)}}
    if "allow_responses: true" in block:
        claims["resp"] = {"max": 1, "ttl": 0}
    return claims


async def test_creds_file_in_operator_mode(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    nkeys = pytest.importorskip("nkeys", reason="nkey and creds auth need the nkeys package: pip install 'nats-py[nkeys]'")
    operator, account, system = (_new_seed(nkeys, p) for p in (nkeys.PREFIX_BYTE_OPERATOR, nkeys.PREFIX_BYTE_ACCOUNT, nkeys.PREFIX_BYTE_ACCOUNT))
    pub = lambda seed: nkeys.from_seed(seed).public_key.decode()  # noqa: E731
    unlimited = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": True, "conn": -1, "leaf": -1}
    operator_jwt = _jwt(nkeys, operator, pub(operator), "timestep-operator", {"type": "operator", "system_account": pub(system)})
    account_jwt = _jwt(nkeys, operator, pub(account), "TIMESTEP", {
        "type": "account", "limits": {**unlimited, "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}})
    system_jwt = _jwt(nkeys, operator, pub(system), "SYS", {"type": "account", "limits": unlimited})

    def creds(name: str, variable: str) -> str:
        seed = _new_seed(nkeys, nkeys.PREFIX_BYTE_USER)
        user_jwt = _jwt(nkeys, account, pub(seed), name, {"type": "user", **_permissions_of(variable), "subs": -1, "data": -1, "payload": -1})
        path = tmp_path / f"{name}.creds"
        path.write_text(
            f"-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n"
            f"-----BEGIN USER NKEY SEED-----\n{seed.decode()}\n------END USER NKEY SEED------\n"
        )
        return str(path)

    config = (
        f"operator: {operator_jwt}\nsystem_account: {pub(system)}\nresolver: MEMORY\n"
        f"resolver_preload: {{ {pub(account)}: {account_jwt}, {pub(system)}: {system_jwt} }}\n"
    )
    with EmbeddedNats(tmp_path / "nats", port=free_port(), extra_config=config) as server:
        actor = await Bus.connect(settings=settings_for(server.url, creds_file=creds("agent", "AGENT_PERMISSIONS")))
        client = await Bus.connect(settings=settings_for(server.url, creds_file=creds("client", "CLIENT_PERMISSIONS")))
        caplog.set_level(logging.WARNING, logger="timestep.bus.connection")
        try:
            await actor.ensure_streams()  # the actor's permissions, as JWT claims, cover the streams
            run_id = uid("jwt")
            await actor.publish_event(Started(run_id=run_id, seq=1, time=time.time()))
            stored = await client.js.get_last_msg(EVENTS_STREAM, client.subjects.events(run_id, "started"), direct=True)
            assert json.loads(stored.data)["run_id"] == run_id
            await client.nc.publish(client.subjects.events(run_id, "completed"), b"{}")
            assert await _refused(caplog, client.subjects.events(run_id, "completed"))
            with pytest.raises(NotFoundError):
                await client.js.get_last_msg(EVENTS_STREAM, client.subjects.events(run_id, "completed"), direct=True)
        finally:
            await actor.close()
            await client.close()
        with pytest.raises(ConnectionError, match="Authorization Violation"):
            stranger = _new_seed(nkeys, nkeys.PREFIX_BYTE_ACCOUNT)  # a user signed by an account the server does not know
            seed = _new_seed(nkeys, nkeys.PREFIX_BYTE_USER)
            bad = tmp_path / "stranger.creds"
            bad.write_text(
                f"-----BEGIN NATS USER JWT-----\n{_jwt(nkeys, stranger, pub(seed), 'x', {'type': 'user'})}\n------END NATS USER JWT------\n\n"
                f"-----BEGIN USER NKEY SEED-----\n{seed.decode()}\n------END USER NKEY SEED------\n"
            )
            await Bus.connect(settings=settings_for(server.url, deadline=2, creds_file=str(bad)))


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def certificates(tmp_path: Path) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made with the openssl CLI."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    d = tmp_path / "pki"
    d.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=timestep-test-ca",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth"), ("client", "extendedKeyUsage=clientAuth")):
        (d / f"{name}.ext").write_text(ext + "\n")
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN=timestep-{name}", "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
                 "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=d)
    # A second CA that signed nothing here: a client trusting it must not trust the server.
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=other-ca", "-keyout", "other.key", "-out", "other.pem", cwd=d)
    return d


async def test_tls_required_with_client_certificates(tmp_path: Path, certificates: Path) -> None:
    d = certificates
    config = f'tls {{ cert_file: "{d / "server.pem"}", key_file: "{d / "server.key"}", ca_file: "{d / "ca.pem"}", verify: true, timeout: 3 }}\n'
    with EmbeddedNats(tmp_path / "nats", port=free_port(), extra_config=config) as server:
        url = f"tls://127.0.0.1:{server.port}"
        good = dict(tls_ca_file=str(d / "ca.pem"), tls_cert_file=str(d / "client.pem"), tls_key_file=str(d / "client.key"))
        bus = await Bus.connect(settings=settings_for(url, **good))
        try:
            await bus.ensure_streams()
            assert bus.nc.connected_url is not None
        finally:
            await bus.close()

        refusals = {
            "no TLS settings": {},
            "a CA that did not sign the server": {**good, "tls_ca_file": str(d / "other.pem")},
            "no client certificate": {"tls_ca_file": str(d / "ca.pem")},
        }
        for what, tls in refusals.items():
            with pytest.raises(ConnectionError, match="could not connect to NATS") as refused:
                await Bus.connect(settings=settings_for(url, deadline=2, **tls))
            assert "CERTIFICATE" in str(refused.value) and "check NATS_TLS_CA_FILE" in str(refused.value), f"{what}: {refused.value}"


async def test_settings_and_connection_errors_hold_no_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = {
        "NATS_PASSWORD": f"pw-{uuid.uuid4().hex}", "NATS_TOKEN": f"tok-{uuid.uuid4().hex}",
        "OPENAI_API_KEY": f"sk-{uuid.uuid4().hex}", "PG_CONNECTION_URI": f"postgresql://u:db-{uuid.uuid4().hex}@127.0.0.1:1/x",
    }
    for name, value in {**secrets, "NATS_USER": "u"}.items():
        monkeypatch.setenv(name, value)
    text = repr(Settings.from_env())
    assert [name for name, value in secrets.items() if value.split("db-")[-1] in text] == []

    # A token in the URL itself, refused by a server that wants another one.
    token = f"tok-{uuid.uuid4().hex}"
    with EmbeddedNats(tmp_path / "nats", port=free_port(), extra_config='authorization { token: "the-right-one" }') as server:
        url = f"nats://{token}@127.0.0.1:{server.port}"
        with pytest.raises(ConnectionError, match="Authorization Violation") as refused:
            await Bus.connect(settings=settings_for(url, deadline=3))
        assert token not in str(refused.value) and "nats://***@127.0.0.1" in str(refused.value)
