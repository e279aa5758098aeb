"""`timestep up --workers N`: N agent processes on one machine, as a user starts them (no NATS_URL: the
embedded server; the default SQLite store), sharing the work, started again when one dies, stopped
together by one SIGTERM, killed together with the first, and no run left behind when N is lowered."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from actors.workers import default_count
from conftest import POSTGRES_ONLY
from processes import process_env, up, wait_printed
from timestep.client import Client, Submission

pytestmark = pytest.mark.processes

AGENT = "bus-holding"


class Up:
    """One `timestep up --agents bus_agents ARGS` in a TIMESTEP_HOME of the test's, its tools held."""

    def __init__(self, tmp: Path, db_url: str) -> None:
        self.tmp, self.db_url = tmp, db_url
        self.log = tmp / "calls.log"
        self.hold = Path(f"{self.log}.hold")
        self.hold.touch()
        self.proc: subprocess.Popen | None = None
        self.out = tmp / "up.out"
        self._starts = 0

    def start(self, *args: str, **env: str) -> subprocess.Popen:
        self._starts += 1
        self.out = self.tmp / f"up-{self._starts}.out"
        values = {
            "TIMESTEP_HOME": str(self.tmp / "home"), "TIMESTEP_TEST_LOG": str(self.log), "TIMESTEP_AGENT_CONCURRENCY": "1",
            "TIMESTEP_DB_POOL_SIZE": "6", **env,
        }
        if not self.db_url.startswith("sqlite"):
            values["PG_CONNECTION_URI"] = self.db_url
        drop = ("TIMESTEP_WORKERS",) if "TIMESTEP_WORKERS" not in env else ()
        self.proc = up(self.out, process_env(*drop, **values), "--agents", "bus_agents", *args)
        wait_printed([(self.proc, self.out)], timeout=120)
        return self.proc

    @property
    def url(self) -> str:
        return re.search(r"NATS (nats://\S+);", self.out.read_text()).group(1)

    def calls(self) -> list[tuple[str, int]]:
        rows = []
        for line in self.log.read_text().splitlines() if self.log.exists() else []:
            call, _, pid = line.rpartition(" pid=")
            rows.append((call, int(pid)))
        return rows

    def wait_for(self, count: int, prefix: str, timeout: float = 60) -> list[tuple[str, int]]:
        deadline = time.monotonic() + timeout
        while True:
            found = [c for c in self.calls() if c[0].startswith(prefix)]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{count} x {prefix!r} never logged: {self.calls()}\n{self.out.read_text()[-3000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def timestep_up(tmp_path: Path, fresh_db_url: str):
    running = Up(tmp_path, fresh_db_url)
    yield running
    running.stop()


def _gone(pid: int, timeout: float = 30) -> bool:
    """Whether `pid` exited (or is a zombie awaiting its reaper) within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, IndexError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def _held_by(up: Up, tags: list[str]) -> dict[str, tuple[str, int]]:
    """tag -> (executor id, pid) of the process whose `hold` call started, once each has."""
    started = up.wait_for(len(tags), "hold:")
    return {call.split(":")[1]: (call.split(":")[3], pid) for call, pid in started if call.split(":")[2] == "start"}


async def test_by_default_one_agent_process_per_core_shares_the_work_and_one_sigterm_stops_them_all(timestep_up: Up) -> None:
    cores = default_count()
    if cores < 2:
        pytest.skip("one core: the default is one process")
    proc = timestep_up.start()  # neither --workers nor TIMESTEP_WORKERS: one per core
    assert f"; workers: {cores}" in timestep_up.out.read_text()
    async with await Client.connect(timestep_up.url) as client:
        runs = [await client.submit(AGENT, f"hold tag=t{i}") for i in range(cores)]
        held = _held_by(timestep_up, [f"t{i}" for i in range(cores)])
        # One direct run at a time per process (TIMESTEP_AGENT_CONCURRENCY=1): each process took one.
        assert sorted(e for e, _ in held.values()) == sorted(["local"] + [f"local-w{k}" for k in range(1, cores)])
        assert len({pid for _, pid in held.values()}) == cores and proc.pid in {pid for _, pid in held.values()}
        timestep_up.hold.unlink()
        outputs = [(await run.result(timeout=60)).output for run in runs]
    assert outputs == [f"hold returned: held t{i}" for i in range(cores)]
    workers = {pid for _, pid in held.values()} - {proc.pid}
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    assert all(_gone(pid) for pid in workers)


async def test_a_worker_that_dies_is_started_again_and_recovers_its_run(timestep_up: Up) -> None:
    timestep_up.start("--workers", "2")
    async with await Client.connect(timestep_up.url) as client:
        a, b = await client.submit(AGENT, "hold tag=a"), await client.submit(AGENT, "hold tag=b")
        held = _held_by(timestep_up, ["a", "b"])
        [(tag, (_, pid))] = [(t, h) for t, h in held.items() if h[0] == "local-w1"]
        os.kill(pid, signal.SIGKILL)
        # Started again under the same executor id, it recovers the run cut off in its tool.
        again = timestep_up.wait_for(1, f"hold:{tag}:start:local-w1", timeout=90)
        assert len(again) == 1 or again[-1][1] != pid
        timestep_up.wait_for(3, "hold:", timeout=90)
        assert "agent worker 1 (pid" in timestep_up.out.read_text() and "starting it again" in timestep_up.out.read_text()
        timestep_up.hold.unlink()
        assert (await a.result(timeout=60)).output == "hold returned: held a"
        assert (await b.result(timeout=60)).output == "hold returned: held b"
    calls = Counter(call.rsplit(":", 1)[0] if call.endswith(":local-w1") or call.endswith(":local") else call for call, _ in timestep_up.calls())
    other = "b" if tag == "a" else "a"
    assert calls == Counter({f"hold:{tag}:start": 2, f"hold:{tag}:end": 1, f"hold:{other}:start": 1, f"hold:{other}:end": 1})
    restarted = {p for c, p in timestep_up.calls() if c == f"hold:{tag}:end"}
    assert pid not in restarted


async def test_workers_die_with_the_first_process_and_fewer_workers_take_over_their_runs(timestep_up: Up) -> None:
    proc = timestep_up.start("--workers", "2")
    async with await Client.connect(timestep_up.url) as client:
        a, b = await client.submit(AGENT, "hold tag=a"), await client.submit(AGENT, "hold tag=b")
        held = _held_by(timestep_up, ["a", "b"])
    [(worker_tag, (_, worker_pid))] = [(t, h) for t, h in held.items() if h[0] == "local-w1"]
    proc.send_signal(signal.SIGKILL)  # a crash: the worker goes with it (its NATS, the embedded server, did)
    proc.wait()
    assert _gone(worker_pid), "the worker outlived the process that started it"

    timestep_up.start("--workers", "1")  # no worker 1 now: its run must not wait for one forever
    assert "took over 1 unfinished run(s) of executor local-w1" in timestep_up.out.read_text()
    timestep_up.hold.unlink()
    async with await Client.connect(timestep_up.url) as client:
        for run_id, tag in ((a.run_id, "a"), (b.run_id, "b")):
            done = await Submission(client, run_id, None).result(timeout=60)
            assert done.output == f"hold returned: held {tag}"
    ends = [c for c, _ in timestep_up.calls() if c.startswith("hold:") and c.endswith(":end")]
    assert sorted(ends) == ["hold:a:end", "hold:b:end"]
    assert f"hold:{worker_tag}:start:local" in [c for c, _ in timestep_up.calls()]  # the run went on in the only process


class Connections:
    """Samples, every 50 ms in a thread, the PostgreSQL connections open to one database; `most` is the peak."""

    def __init__(self, db_url: str) -> None:
        import psycopg

        self.database = db_url.rsplit("/", 1)[1]
        self.conn = psycopg.connect(db_url.rsplit("/", 1)[0] + "/postgres", autocommit=True)
        self.most, self.busiest = 0, []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while not self.done.wait(0.05):
            rows = self.conn.execute("select left(query, 60), state from pg_stat_activity where datname = %s", (self.database,)).fetchall()
            if len(rows) > self.most:
                self.most, self.busiest = len(rows), rows

    def stop(self) -> int:
        self.done.set()
        self.thread.join()
        self.conn.close()
        return self.most


@pytest.mark.parametrize("backend", POSTGRES_ONLY, indirect=True)
async def test_processes_hold_at_most_their_pool_size_of_postgresql_connections_under_load(timestep_up: Up) -> None:
    """TIMESTEP_DB_POOL_SIZE bounds each process's connections, Timestep's own tables' included (docs/actors.md:
    count `workers × (TIMESTEP_DB_POOL_SIZE + 2)`: each process's pool, its lease on its executor id and DBOS's `LISTEN`). Two
    workers run 80 runs at once, half queued and all in sessions, so DBOS's tables and Timestep's are both busy."""
    pool = 4
    connections = Connections(timestep_up.db_url)
    try:
        timestep_up.start("--workers", "2", TIMESTEP_DB_POOL_SIZE=str(pool), TIMESTEP_AGENT_CONCURRENCY="32")
        async with await Client.connect(timestep_up.url) as client:
            await client.configure_queue("wide", concurrency=32)
            runs = [
                await client.submit("bus-assistant", f"think seconds=0.2 #{i}", session_id=f"s{i % 20}", queue="wide" if i % 2 else None)
                for i in range(80)
            ]
            results = [await run.result(timeout=120) for run in runs]
    finally:
        most = connections.stop()
    assert [r.output for r in results] == ["think returned: thought 0.2"] * 80
    print(f"connections at most: {most} (2 workers, TIMESTEP_DB_POOL_SIZE={pool})", *connections.busiest, sep="\n")
    assert most <= 2 * (pool + 2), f"{most} connections open at once for 2 workers of pool {pool}"


@pytest.mark.parametrize(("args", "env", "says"), [
    (["--workers", "0"], {}, "--workers: '0' is not a whole number of at least 1"),
    (["--workers", "2", "--role", "governor"], {}, "--workers: 2 workers without the agent role"),
    ([], {"TIMESTEP_WORKERS": "two"}, "TIMESTEP_WORKERS='two' is not a whole number"),
])
def test_a_bad_worker_count_is_refused_naming_it(args: list[str], env: dict[str, str], says: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "actors.cli.main", "up", "--agents", "bus_agents", *args],
        env=process_env(TIMESTEP_HOME=str(tmp_path / "home"), **env), capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert says in done.stderr


def test_a_pool_too_small_to_share_is_refused_naming_it(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "actors.cli.main", "up", "--agents", "bus_agents"],
        env=process_env(TIMESTEP_HOME=str(tmp_path / "home"), TIMESTEP_DB_POOL_SIZE="1"), capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "TIMESTEP_DB_POOL_SIZE=1 is too small" in done.stderr and "set it to 2 or more" in done.stderr


def test_a_worker_that_cannot_start_stops_timestep_up_saying_which(tmp_path: Path) -> None:
    """Worker 1's import of the agents fails (here only in that process): `timestep up` exits 2 naming the
    worker, after the worker's own error, and leaves no process behind."""
    (tmp_path / "picky_agents.py").write_text(
        "import os\n"
        "from agents import Agent\n"
        "from timestep import register_agent\n"
        "if os.environ.get('TIMESTEP_EXECUTOR_ID', '').endswith('-w1'):\n"
        "    raise ImportError('no licence for this worker')\n"
        "register_agent(Agent(name='picky'))\n"
    )
    env = process_env("TIMESTEP_WORKERS", TIMESTEP_HOME=str(tmp_path / "home"))
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    done = subprocess.run(
        [sys.executable, "-m", "actors.cli.main", "up", "--agents", "picky_agents", "--workers", "2"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no licence for this worker" in done.stderr  # the worker's own error, first
    assert "error: agent worker 1 exited with code 2 while starting" in done.stderr
    assert "timestep up:" not in done.stdout
