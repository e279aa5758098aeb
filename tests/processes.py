"""Real `timestep up` processes for the multi-process tests: one way to give them an
environment, see them come up and stop them, and `Deployment`, the one harness of the tests
that run the actor roles as separate processes (the fault tests, scale-out)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

TESTS = Path(__file__).parent
#: Settings a test process must never inherit from the test run's own environment.
PRIVATE = ("PG_CONNECTION_URI", "OPENAI_API_KEY", "NATS_URL")


def process_env(*drop: str, **values: str) -> dict[str, str]:
    """This environment without PRIVATE (and `drop`), plus `values`; tests/ on PYTHONPATH
    so `--agents bus_agents` and the other test agents import."""
    env = {k: v for k, v in os.environ.items() if k not in PRIVATE + drop}
    env.update(values)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    return env


def up(out: Path, env: dict[str, str], *args: str) -> subprocess.Popen:
    """Start `timestep up ARGS`, its output (both streams) in `out`."""
    command = [sys.executable, "-m", "actors.cli.main", "up", *args]
    return subprocess.Popen(command, env=env, stdout=out.open("w"), stderr=subprocess.STDOUT)


def _check(proc: subprocess.Popen, out: Path, text: str, deadline: float) -> bool:
    if text in out.read_text():
        return True
    if proc.poll() is not None or time.monotonic() > deadline:
        raise AssertionError(f"{out.stem}: no {text!r} (exit code {proc.poll()}): {out.read_text()[-3000:]}")
    return False


def wait_printed(started: Iterable[tuple[subprocess.Popen, Path]], text: str = "timestep up:", timeout: float = 90) -> None:
    """Return once every process printed `text`; fail at once if one exits first."""
    deadline = time.monotonic() + timeout
    for proc, out in started:
        while not _check(proc, out, text, deadline):
            time.sleep(0.05)


async def wait_printed_async(started: Iterable[tuple[subprocess.Popen, Path]], text: str = "timestep up:", timeout: float = 90) -> None:
    """`wait_printed` for a test whose event loop has other work meanwhile."""
    deadline = time.monotonic() + timeout
    for proc, out in started:
        while not _check(proc, out, text, deadline):
            await asyncio.sleep(0.05)


def stop(procs: Iterable[subprocess.Popen], wait: float = 30) -> None:
    """SIGTERM every process still running, then wait for each; kill one that does not stop."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_program(program: str, folder: Path, *unset: str) -> subprocess.CompletedProcess:
    """A Python program of the docs, run as a reader runs it: a file in a folder of its own, without the
    settings a reader would not have set (and `unset`)."""
    script = folder / "example.py"
    script.write_text(program)
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "PG_CONNECTION_URI", "TIMESTEP_HOME", *unset)}
    return subprocess.run([sys.executable, str(script)], cwd=folder, env=env, capture_output=True, text=True, timeout=120)


class Deployment:
    """`timestep up --role R` processes under fixed executor ids, on one NATS (a server or a cluster) and one
    database (SQLite under `tmp/home`, or PostgreSQL): a deployment as an operator runs one, split by role.

    A node is a role (executor id `<role>-1`) or a (role, executor id) pair; roles joined by "+"
    (`agent+governor`) run in one process. `start` brings nodes up side by
    side and returns once each printed its ready line; `kill` SIGKILLs, `stop_gracefully` stops as a deploy
    does; a node started again under its id recovers the runs it held. The test agents log each execution
    to `ledger` (tests/fault_agents.py) or `log` (tests/bus_agents.py)."""

    def __init__(self, tmp: Path, nats_url: str, db_url: str, *, agents: str = "bus_agents", env: dict[str, str] | None = None) -> None:
        self.tmp = tmp
        self.nats_url = nats_url
        self.db_url = db_url
        self.agents = agents
        self.extra_env = env or {}
        self.ledger = tmp / "ledger.log"
        self.log = tmp / "calls.log"
        self.procs: dict[str, subprocess.Popen] = {}  # executor id -> its process
        self.starts: Counter[str] = Counter()
        self.kills: Counter[str] = Counter()  # what was stopped, as the test named it (with ":SIGTERM" for a graceful stop)

    @staticmethod
    def _node(node: str | tuple[str, str]) -> tuple[str, str]:
        return (node, f"{node}-1") if isinstance(node, str) else node

    def env(self, executor: str) -> dict[str, str]:
        env = process_env(
            "TIMESTEP_HTTP_PORT",
            NATS_URL=self.nats_url,
            TIMESTEP_HOME=str(self.tmp / "home"),
            TIMESTEP_DB_POOL_SIZE="6",  # many processes share the test server's 100 connections
            TIMESTEP_EXECUTOR_ID=executor,
            TIMESTEP_LEDGER=str(self.ledger),
            TIMESTEP_TEST_LOG=str(self.log),
            TIMESTEP_QUEUE_POLL_SECONDS="0.05",
            # A killed actor's unacknowledged messages go to its successor after this long.
            TIMESTEP_ACK_WAIT="3",
        )
        if not self.db_url.startswith("sqlite"):
            env["PG_CONNECTION_URI"] = self.db_url
        env.update(self.extra_env)
        return env

    def _launch(self, nodes: tuple[str | tuple[str, str], ...]) -> list[tuple[subprocess.Popen, Path]]:
        launched = []
        for role, executor in map(self._node, nodes):
            self.starts[executor] += 1
            out = self.tmp / f"{executor}-{self.starts[executor]}.out"
            roles = [arg for name in role.split("+") for arg in ("--role", name)]
            self.procs[executor] = up(out, self.env(executor), "--agents", self.agents, *roles)
            launched.append((self.procs[executor], out))
        return launched

    def start(self, *nodes: str | tuple[str, str], timeout: float = 90) -> None:
        """Start each node and wait until each is ready; if one is not, every process of the deployment is
        stopped before the error is raised (a test that starts it outside its `try` would leave them running)."""
        try:
            wait_printed(self._launch(nodes), timeout=timeout)
        except BaseException:
            self.stop()
            raise

    async def start_async(self, *nodes: str | tuple[str, str], timeout: float = 90) -> None:
        """`start` for a test whose event loop has other work meanwhile."""
        try:
            await wait_printed_async(self._launch(nodes), timeout=timeout)
        except BaseException:
            self.stop()
            raise

    def kill(self, *nodes: str | tuple[str, str]) -> list[int]:
        """SIGKILL each node; returns their pids."""
        pids = []
        for node in nodes:
            proc = self.procs.pop(self._node(node)[1])
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            pids.append(proc.pid)
            self.kills[str(node)] += 1
        return pids

    def stop_gracefully(self, *nodes: str | tuple[str, str], sig: signal.Signals = signal.SIGTERM, timeout: float = 60) -> None:
        """Stop each node as a deploy does (SIGTERM, or SIGINT as Ctrl-C); it must exit by itself, with 0."""
        procs = [(node, self.procs.pop(self._node(node)[1])) for node in nodes]
        for _, proc in procs:
            proc.send_signal(sig)
        for node, proc in procs:
            try:
                code = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise AssertionError(f"{node} did not stop within {timeout} s of {sig.name}\n{self.output()}") from None
            assert code == 0, f"{node} exited {code} after {sig.name}\n{self.output()}"
            self.kills[f"{node}:{sig.name}"] += 1

    def calls(self) -> list[tuple[str, int]]:
        """(tool call, pid) for every tool execution tests/bus_agents.py logged."""
        if not self.log.exists():
            return []
        return [(call, int(pid)) for call, _, pid in (line.rpartition(" pid=") for line in self.log.read_text().splitlines())]

    def output(self, tail: int | None = 4000) -> str:
        """What the processes printed (the last `tail` characters of each; None: all of it)."""
        return "\n".join(f"--- {p.name}\n{p.read_text()[-(tail or 0):]}" for p in sorted(self.tmp.glob("*.out")))

    def stop(self) -> None:
        stop(self.procs.values())
        self.procs = {}
