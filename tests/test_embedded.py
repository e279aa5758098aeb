"""`timestep up` with NATS_URL unset runs its own nats-server; with NATS_URL set, auth passes through."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from timestep.bus import Bus
from timestep.natsserver import EmbeddedNats, free_port
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
        proc = subprocess.Popen([sys.executable, "-m", "timestep.cli", "up", "--agents", "timestep.demo_agents"], env=env, stdout=out.open("w"), stderr=subprocess.STDOUT)
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
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, out.read_text()
        assert not _port_open(port)
        assert not (tmp_path / "nats.url").exists()
    assert (tmp_path / "timestep.sqlite").exists()


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
