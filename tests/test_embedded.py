"""`timestep up` with NATS_URL unset runs its own nats-server; with NATS_URL set, auth passes through."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from timestep.bus.connection import Bus
from timestep.bus.server import EmbeddedNats, free_port
from timestep.settings import NatsSettings, Settings


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


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
