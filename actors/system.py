"""Run the actors: all three roles in one process by default, or the ones asked for.

    async with System(roles={"agent", "governor", "scheduler"}) as system:
        print(system.url)
        await system.wait()

With NATS_URL unset, the system starts the embedded nats-server (see
`timestep.bus.server`) and stops it on exit.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import traceback

from actors.agent import AgentActor, ControlActor
from actors.base import Actor
from actors.governor import Governor
from actors.scheduler import Scheduler
from actors.console import Console
from actors.health import HealthServer
from actors.workers import Workers
from timestep.bus.connection import Bus, BusEventSink
from timestep.bus.server import EmbeddedNats, remove_url_file, write_url_file
from timestep.durable.events import add_event_sink, remove_event_sink
from timestep.durable import launch
from timestep.durable.launch import configure_dbos, ensure_dbos_launched
from timestep.errors import ValidationError
from timestep.ops import observe
from timestep.ops.lease import ExecutorLease
from timestep.settings import Settings
from timestep.settings import use as use_settings

log = logging.getLogger("actors.system")

ROLES = ("agent", "governor", "scheduler")
_leases: dict[tuple[str, str], ExecutorLease] = {}  # held until the process exits


def import_agent_modules(modules: list[str]) -> None:
    """Import the user's modules that call `register_agent` (the `--agents` option), from the
    working directory first, as uvicorn, celery and pytest do: `timestep up --agents myapp.agents`
    works in the folder that holds `myapp/`, without PYTHONPATH.

    A module that cannot be imported raises ValidationError naming `--agents`, the module and why."""
    here = os.getcwd()
    if here not in sys.path:
        sys.path.insert(0, here)
    for name in modules:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if name.endswith(".py") or os.sep in name:
                raise ValidationError("--agents", f"{name!r} is a file path", f"give a module name, e.g. {_as_module(name)}") from None
            if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
                parent = exc.name.rpartition(".")[0]
                found = parent and getattr(sys.modules.get(parent), "__path__", None)
                fix = (
                    f"the package {parent} is at {list(found)[0]}: check the name"
                    if found
                    else f"run `timestep up` from the folder that holds {exc.name.partition('.')[0]}/, or install that package"
                )
                raise ValidationError("--agents", f"no module named {exc.name!r} in {here} or the installed packages", fix) from None
            raise ValidationError("--agents", f"importing {name!r} failed: {exc}{_where(exc)}", "install it in this environment") from None
        except ImportError as exc:
            raise ValidationError("--agents", f"importing {name!r} failed: {exc}{_where(exc)}") from None
        except SyntaxError as exc:
            where = f" ({os.path.relpath(exc.filename)}, line {exc.lineno})" if exc.filename else ""
            raise ValidationError("--agents", f"{name!r} has a syntax error: {exc.msg}{where}") from None
        except (TypeError, ValueError):  # an empty or relative name: import_module refuses it
            if not name or name.startswith("."):
                raise ValidationError("--agents", f"{name!r} is not a module name", "give one such as myapp.agents") from None
            raise


def _as_module(path: str) -> str:
    return path.removesuffix(".py").strip(os.sep).replace(os.sep, ".")


def _where(exc: BaseException) -> str:
    """Where the failed import is written: the innermost frame of Python code, not the import machinery."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<")]
    if not frames:
        return ""
    return f" ({os.path.relpath(frames[-1].filename)}, line {frames[-1].lineno})"


class System:
    def __init__(
        self, roles: set[str] | None = None, *, nats_url: str | None = None, settings: Settings | None = None, standby: bool = False,
        workers: int = 1, agent_modules: list[str] | tuple[str, ...] = (), worker: int | None = None,
    ) -> None:
        self.roles = set(roles or ROLES)
        unknown = self.roles - set(ROLES)
        if unknown:
            raise ValueError(f"--role: unknown role(s) {sorted(unknown)}; choose from {', '.join(ROLES)}")
        self.settings = settings or Settings.from_env()
        self.url = nats_url or self.settings.nats.url
        self.embedded: EmbeddedNats | None = None
        self.bus: Bus | None = None
        self.actors: list[Actor] = []
        self._sink: BusEventSink | None = None
        self.standby = standby
        """Wait for the executor id's lease instead of failing when another live process holds it."""
        self.http: HealthServer | None = None
        self.console: Console | None = None
        """The web console, served by `http` when TIMESTEP_CONSOLE (`timestep up --console`) is on."""
        self._owns_engine = False
        """This system launched DBOS (`timestep up`), so its stop stops the runs executing here."""
        self.workers_wanted = workers
        """Agent processes, this one included (`timestep up --workers N`): N-1 more are started and watched."""
        self.agent_modules = list(agent_modules)
        """The modules each worker imports (`--agents`)."""
        self.worker = worker
        """This process's number when a `--workers` process started it, else None (worker 0)."""
        self.workers: Workers | None = None

    async def start(self) -> System:
        use_settings(self.settings)  # the process's, for the library below (its durable runs, its queues, its model calls)
        observe.configure_logging(
            self.settings.log_format, self.settings.log_level, role="+".join(sorted(self.roles)), executor_id=self.settings.executor_id
        )
        durable = bool(self.roles & {"agent", "governor"})
        if durable and not launch.is_configured():
            configure_dbos()  # defaults; a configure_dbos() made before stays in force
        if not self.url:
            # The lease, then the store's lock, before the server and its nats.url: a second
            # `timestep up` on this TIMESTEP_HOME is refused leaving the running one's alone.
            if durable:
                await self._take_lease()
            embedded = EmbeddedNats(self.settings.home / "nats", port=self.settings.nats.embedded_port)
            self.url = embedded.start()
            self.embedded = embedded
            write_url_file(self.settings.home, self.url)
        self.bus = await Bus.connect(self.url, settings=self.settings, name=f"timestep-{'+'.join(sorted(self.roles))}")
        await self.bus.ensure_streams()
        if durable:
            if "agent" not in self.roles and not launch.is_launched():
                launch.take_no_queued_runs()
            if "agent" in self.roles:
                # Before launch: runs recovered at launch publish their events too.
                self._sink = BusEventSink(self.bus)
                add_event_sink(self._sink)
            await self._take_lease()  # with NATS_URL, here: a standby waits connected
            self._owns_engine = not launch.is_launched()
            ensure_dbos_launched()
        agent = AgentActor(self.bus) if "agent" in self.roles else None
        if agent is not None:
            self.actors += [agent, ControlActor(self.bus)]
        if "governor" in self.roles:
            # With workers, direct runs go through `<prefix>.runs.start`, shared by every agent process
            # (this one's included); alone, the governor hands them to this process's agent directly.
            self.actors.append(Governor(self.bus, local_agent=agent if self.workers_wanted == 1 else None))
        if "scheduler" in self.roles:
            self.actors.append(Scheduler(self.bus))
        for actor in self.actors:
            await actor.start()
        if self.workers_wanted > 1:
            self.workers = Workers(self.workers_wanted - 1, url=self.url, settings=self.settings, agent_modules=self.agent_modules)
            await self.workers.start()
        if self._owns_engine and "agent" in self.roles and self.worker is None:
            # The runs of a worker no longer started (`--workers` lowered) are this process's to take over.
            keep = set(self.workers.executor_ids if self.workers else [])
            prefix = f"{self.settings.executor_id}-w"
            await launch.adopt_runs(lambda e: e.startswith(prefix) and e[len(prefix):].isdigit() and e not in keep)
        if self.settings.console:
            from timestep.client import Client

            self.console = Console.for_host(self.settings.http_host, Client(self.bus), url=self.url, login=self.settings.console_login)
        if self.settings.http_port is not None or self.console is not None:
            port = self.settings.http_port if self.settings.http_port is not None else 0
            self.http = HealthServer(self, self.settings.http_host, port, console=self.console)
            log.info("health and metrics on %s (/healthz, /readyz, /metrics)", await self.http.start())
            if self.console is not None:
                log.info("console on %s/", self.http.url)
        return self

    async def _take_lease(self) -> None:
        """Before launch: this process becomes the one live holder of its executor id (see
        timestep/ops/lease.py), until it exits: DBOS may still be finishing runs here after stop()."""
        url = launch.database_in_use(self.settings)
        key = (self.settings.executor_id, url)
        if key in _leases:
            return  # another System of this process holds it
        lease = ExecutorLease(self.settings.executor_id, url, self.settings.home)
        # A worker (`--workers`) waits quietly for its last instance's lease; a standby says so.
        waiting = self.standby and (self.worker is None or not await lease.try_acquire())
        if waiting:
            log.warning("standby for executor id %r: waiting until the process holding it stops", self.settings.executor_id)
        if lease.held is None:
            await lease.acquire(wait=self.standby)
        if waiting:
            log.warning("took over executor id %r", self.settings.executor_id)
        _leases[key] = lease

    async def stop(self, grace_seconds: float | None = None) -> None:
        """Take no new work, let the steps under way finish (up to `grace_seconds`, default
        TIMESTEP_STOP_GRACE_SECONDS) with their events published, then stop every run
        executing here at a step boundary (it resumes when this executor id starts again).
        Runs stop only in a system that launched the engine itself (`timestep up`)."""
        if self.http is not None:
            await self.http.stop()
            self.http = None
        if self.console is not None:
            await self.console.close()
            self.console = None
        grace = self.settings.stop_grace_seconds if grace_seconds is None else grace_seconds
        if self.workers is not None:
            self.workers.signal_stop()  # they stop beside this process, and before its NATS
        for actor in reversed(self.actors):
            try:
                await actor.stop()
            except Exception:
                log.exception("stopping %s failed", actor.name)
        self.actors = []
        if self._owns_engine:
            await launch.stop_runs(grace)
        if self.workers is not None:
            await self.workers.stop(grace)
            self.workers = None
        if self._sink is not None:
            remove_event_sink(self._sink)
            self._sink = None
        if self.bus is not None:
            await self.bus.close()
            self.bus = None
        if self._owns_engine:
            launch.shutdown()
            self._owns_engine = False
        if self.embedded is not None:
            self.embedded.stop()
            remove_url_file(self.settings.home, self.embedded.url)
            self.embedded = None

    def hurry(self) -> None:
        """During `stop`: stop now, here and in the workers; the steps under way run again on recovery."""
        launch.hurry_stop()
        if self.workers is not None:
            self.workers.hurry()

    async def __aenter__(self) -> System:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
