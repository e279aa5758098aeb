"""Which agents are hosted follows the processes that are alive: an agent a deploy removed stops
being accepted, a run accepted for it before ends with a `failed` event that says why, and a failed
read of the bus never turns a valid request away."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import nats
import pytest

from processes import process_env, stop, up, wait_printed
from timestep.bus.connection import HOSTED_TTL_SECONDS, Bus
from timestep.bus.server import EmbeddedNats, free_port

AGENT_MODULE = """
from agents import Agent
from timestep import register_agent

register_agent(Agent(name={name!r}, instructions="Be brief."))
"""


@pytest.fixture
def deploy(tmp_path: Path, fresh_db_url: str):
    """An operator's deploy: a NATS server, a database, and `timestep up` processes with their own
    agent modules (in a folder on PYTHONPATH), started and stopped as a deploy does."""
    modules = tmp_path / "modules"
    modules.mkdir()
    for name in ("alpha", "beta"):
        (modules / f"{name}_agents.py").write_text(AGENT_MODULE.format(name=name))
    server = EmbeddedNats(tmp_path / "nats", port=free_port())
    url = server.start()
    procs: list[subprocess.Popen] = []

    def env(executor: str) -> dict[str, str]:
        values = process_env(
            NATS_URL=url, TIMESTEP_HOME=str(tmp_path / "home"), TIMESTEP_EXECUTOR_ID=executor, TIMESTEP_DB_POOL_SIZE="6",
        )
        values["PYTHONPATH"] = f"{modules}:{values['PYTHONPATH']}"
        if not fresh_db_url.startswith("sqlite"):
            values["PG_CONNECTION_URI"] = fresh_db_url
        return values

    def start(module: str, executor: str, *roles: str) -> subprocess.Popen:
        out = tmp_path / f"{executor}.out"
        proc = up(out, env(executor), "--agents", module, *(arg for role in roles for arg in ("--role", role)))
        procs.append(proc)
        wait_printed([(proc, out)])
        return proc

    def command(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "actors.cli.main", *args], env=env("cli"), capture_output=True, text=True, timeout=timeout
        )

    yield type("Deploy", (), {"url": url, "start": staticmethod(start), "command": staticmethod(command), "env": staticmethod(env)})
    stop(procs, wait=20)
    server.stop()


async def hosted(url: str) -> set[str]:
    """The agents the bus says live processes host, read as any NATS client would."""
    nc = await nats.connect(url)
    try:
        kv = await nc.jetstream().key_value("TIMESTEP_AGENTS")
        try:
            keys = await kv.keys()
        except nats.js.errors.NoKeysError:
            return set()
        return {bytes.fromhex(key.split(".")[0][2:]).decode() for key in keys if "." in key}
    finally:
        await nc.close()


async def submit_and_wait(url: str, agent: str) -> dict:
    """Publish a request with the standard JetStream publish, then read the run's events until the
    first that ends it. A request refused at the door is the publish's own error."""
    run_id = f"r-{uuid.uuid4().hex[:10]}"
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        body = json.dumps({"id": run_id, "agent": agent, "input": "hello"}).encode()
        try:
            await js.publish("timestep.runs.submit", body)
        except nats.js.errors.BadRequestError as refused:
            return {"type": "refused", "message": refused.description}
        sub = await js.subscribe(f"timestep.runs.events.{run_id}.*", ordered_consumer=True)
        while True:
            event = json.loads((await sub.next_msg(timeout=60)).data)
            if event["type"] in ("completed", "failed", "rejected", "cancelled"):
                return event
    finally:
        await nc.close()


@pytest.mark.processes
async def test_a_removed_agent_is_refused_once_its_last_host_is_gone(deploy) -> None:
    old = deploy.start("alpha_agents", "old")
    deploy.start("beta_agents", "new")
    assert await hosted(deploy.url) == {"alpha", "beta"}

    old.terminate()  # the deploy removed `alpha`: its only host stops
    assert old.wait(30) == 0

    # Accepted while the stopped host's announcement still lasts: the run is executed where `alpha`
    # is not registered, and ends with a `failed` event saying why; its follower stops waiting.
    followed = deploy.command("run", "alpha", "hello")
    assert followed.returncode == 1, followed.stdout + followed.stderr
    assert "UnknownAgentError" in followed.stderr and "removed or renamed" in followed.stderr, followed.stderr

    # Once the announcement expired, a request for `alpha` is refused at the door, naming what is hosted.
    deadline = time.monotonic() + HOSTED_TTL_SECONDS + 15
    while "alpha" in await hosted(deploy.url):
        assert time.monotonic() < deadline, "the stopped process's agents never expired"
        await asyncio.sleep(0.5)
    refused = await submit_and_wait(deploy.url, "alpha")
    assert refused["type"] == "refused"
    assert "no agent named 'alpha'" in refused["message"] and "hosted: beta" in refused["message"], refused

    # The live process stays a host for as long as it lives, well past the TTL.
    done = await submit_and_wait(deploy.url, "beta")
    assert done["type"] == "completed", done


async def test_a_failed_read_of_the_bus_is_not_a_no(nats_server) -> None:
    """A governor started without --agents asks the bus; when the read fails it raises (the request
    is redelivered), instead of answering "nobody hosts it" and rejecting a valid request."""
    from actors.base import KnownAgents

    bus = await Bus.connect(nats_server.url)
    await bus.announce_agents(["reader-test"], "reader-node")
    known = KnownAgents(bus)
    assert await known.problem("reader-test") is None
    assert "no agent named 'nobody'" in (await known.problem("nobody") or "")

    await bus.nc.close()  # the bus is away
    known = KnownAgents(bus)
    with pytest.raises(Exception) as failed:
        await known.problem("reader-test")
    assert not isinstance(failed.value, AssertionError)


async def test_a_bucket_from_before_expiry_gets_the_ttl_and_loses_its_stale_names(tmp_path: Path) -> None:
    """A deployment upgraded from a version whose announcements never expired: its bucket is given
    the TTL by the first agent actor, and the names nobody renews go."""
    server = EmbeddedNats(tmp_path / "nats", port=free_port())
    url = server.start()
    try:
        nc = await nats.connect(url)
        kv = await nc.jetstream().create_key_value(bucket="TIMESTEP_AGENTS", history=1)
        await kv.put("a-" + b"retired".hex(), b'{"executor_id": "old", "time": 0}')
        bus = await Bus.connect(url)
        await bus.announce_agents(["current"], "node-1")
        info = await nc.jetstream().stream_info("KV_TIMESTEP_AGENTS")
        assert info.config.max_age == HOSTED_TTL_SECONDS
        assert await bus.hosted_agents() == ["current"]
        await bus.close()
        await nc.close()
    finally:
        server.stop()
