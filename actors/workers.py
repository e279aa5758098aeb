"""Agent workers: `timestep up --workers N` runs N agent processes, so a machine's every core runs agents.

One Python process runs on one core. The process started by `timestep up` is worker 0: it hosts the
roles asked for (all three by default) and starts N-1 more processes that host the agent role only,
with the same agent modules and settings, sharing its NATS (the embedded server, or NATS_URL), its
database, its governor and scheduler:

    workers = Workers(1, url=system.url, settings=settings, agent_modules=["myapp.agents"])
    await workers.start()        # each worker connected, launched and consuming work
    ...
    await workers.stop(8.0)      # SIGTERM to each: their steps under way finish, as this process's do

Worker k's executor id is `<TIMESTEP_EXECUTOR_ID>-w<k>`: the same at every start, so a worker that
dies is started again and recovers its runs, and `timestep up` started again after a crash recovers
each worker's runs in the worker of that number. A worker waits for its id's lease (as `--standby`),
so its successor never runs beside one still stopping. Runs left by a worker that is no longer
started (`--workers` lowered) are taken over by worker 0 at start-up (`launch.adopt_runs`).

Workers die with worker 0, even when it is SIGKILLed (Linux's parent-death signal): their runs
resume when `timestep up` starts again, as after a crash of the machine.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from timestep.errors import TimestepError, ValidationError
from timestep.ops import metrics
from timestep.settings import Settings

log = logging.getLogger("actors.workers")

#: What a worker prints on stdout once it is connected, launched and consuming work.
READY = "timestep worker ready"
#: How long a worker may take to start (imports, connecting, launching) before start-up fails.
START_SECONDS = 120.0
#: Restarts of a worker that keeps dying wait this long at first, doubling up to RESTART_MAX_SECONDS;
#: a worker that stayed up STEADY_SECONDS starts from the first wait again.
RESTART_SECONDS, RESTART_MAX_SECONDS, STEADY_SECONDS = 1.0, 30.0, 60.0


class WorkerStartError(TimestepError):
    """A worker did not start: `timestep up` stops with this line and exit code 2."""


def default_count() -> int:
    """The cores this process may use: its CPU affinity (a cpuset), and no more than its cgroup's CPU quota
    rounded up (a container's `--cpus`, a Kubernetes CPU limit), which the affinity does not show."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)
    quota = cgroup_cpu_quota()
    return max(1, min(cores, math.ceil(quota)) if quota else cores)


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by the cgroup's quota (v2 `cpu.max`, else v1 `cpu.cfs_quota_us`), or None when unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def check_count(count: int, roles: set[str]) -> int:
    if count < 1:
        raise ValidationError("--workers", f"{count} is below 1", "give 1 (this process alone) or more")
    if count > 1 and "agent" not in roles:
        raise ValidationError("--workers", f"{count} workers without the agent role", "add --role agent, or leave --workers out")
    return count


def executor_id(base: str, k: int) -> str:
    return f"{base}-w{k}"


@dataclass
class _Worker:
    number: int
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    wait: float = RESTART_SECONDS
    restarts: int = 0
    watcher: asyncio.Task | None = field(default=None, repr=False)
    copier: asyncio.Task | None = field(default=None, repr=False)
    """Copies its stdout onto this process's (a task nothing else refers to could be collected mid-way)."""


class Workers:
    """Workers 1..`extra` beside this process (worker 0): started, watched and restarted, stopped together."""

    def __init__(self, extra: int, *, url: str, settings: Settings, agent_modules: list[str]) -> None:
        self.url = url
        self.settings = settings
        self.agent_modules = list(agent_modules)
        self._workers = [_Worker(k) for k in range(1, extra + 1)]
        self._stopping = False

    @property
    def executor_ids(self) -> list[str]:
        return [executor_id(self.settings.executor_id, w.number) for w in self._workers]

    def _alive(self) -> list[asyncio.subprocess.Process]:
        return [w.process for w in self._workers if w.process is not None and w.process.returncode is None]

    @property
    def running(self) -> int:
        """Workers alive now, this process included."""
        return 1 + len(self._alive())

    async def start(self) -> None:
        """Start every worker and wait until each is ready; a worker that fails to start fails this."""
        metrics.WORKERS.set(1)
        try:
            await asyncio.gather(*(self._start(w) for w in self._workers))
        except BaseException:
            await self.stop(0)
            raise
        for w in self._workers:
            w.watcher = asyncio.create_task(self._watch(w), name=f"worker-{w.number}")
        metrics.WORKERS.set(self.running)

    async def _start(self, w: _Worker) -> None:
        env = {
            **os.environ,
            "NATS_URL": self.url,
            "TIMESTEP_EXECUTOR_ID": executor_id(self.settings.executor_id, w.number),
            "TIMESTEP_HOME": str(self.settings.home),
        }
        for name in ("TIMESTEP_HTTP_PORT", "TIMESTEP_CONSOLE"):  # worker 0 serves them
            env.pop(name, None)
        args = [sys.executable, "-m", "actors.cli.main", "up", "--role", "agent", "--worker", str(w.number)]
        if self.agent_modules:
            args += ["--agents", *self.agent_modules]
        w.process = await asyncio.create_subprocess_exec(
            *args, env=env, stdout=asyncio.subprocess.PIPE, start_new_session=True, preexec_fn=_die_with_parent,
        )
        w.started_at = time.monotonic()
        assert w.process.stdout is not None
        try:
            async with asyncio.timeout(START_SECONDS):
                while True:
                    line = await w.process.stdout.readline()
                    if not line:
                        code = await w.process.wait()
                        raise WorkerStartError(f"agent worker {w.number} exited with code {code} while starting (its errors are above)")
                    if line.decode(errors="replace").strip() == READY:
                        break
                    sys.stdout.buffer.write(line)
        except TimeoutError:
            w.process.kill()
            raise WorkerStartError(f"agent worker {w.number} was not ready after {START_SECONDS:g} s") from None
        w.copier = asyncio.create_task(_copy(w.process.stdout), name=f"worker-{w.number}-stdout")
        log.info("agent worker %d started (pid %d, executor id %s)", w.number, w.process.pid, executor_id(self.settings.executor_id, w.number))

    async def _watch(self, w: _Worker) -> None:
        """Start the worker again whenever it exits while this process is not stopping."""
        while True:
            assert w.process is not None
            code = await w.process.wait()
            metrics.WORKERS.set(self.running)
            if self._stopping:
                return
            if time.monotonic() - w.started_at >= STEADY_SECONDS:
                w.wait = RESTART_SECONDS
            log.error("agent worker %d (pid %d) exited with code %s; starting it again in %g s", w.number, w.process.pid, code, w.wait)
            while True:
                await asyncio.sleep(w.wait)
                w.wait = min(w.wait * 2, RESTART_MAX_SECONDS)
                if self._stopping:
                    return
                try:
                    await self._start(w)
                    break
                except Exception as exc:
                    log.error("agent worker %d did not start again (%s); trying again in %g s", w.number, exc, w.wait)
            w.restarts += 1
            metrics.WORKER_RESTARTS.inc()
            metrics.WORKERS.set(self.running)

    def signal_stop(self) -> None:
        """Ask every worker to stop (SIGTERM): they stop beside this process, not after it."""
        if self._stopping:
            return  # once: a worker takes a second SIGTERM as "stop now"
        self._stopping = True
        for process in self._alive():
            process.send_signal(signal.SIGTERM)

    def hurry(self) -> None:
        """A second signal: the workers stop without waiting for their steps, as this process does."""
        for process in self._alive():
            process.send_signal(signal.SIGTERM)

    async def stop(self, grace_seconds: float) -> None:
        """Stop every worker and wait for it: SIGTERM, then SIGKILL what still runs after the grace and a margin."""
        self.signal_stop()
        for w in self._workers:
            if w.watcher is not None:
                w.watcher.cancel()
        alive = self._alive()
        if alive:
            _, pending = await asyncio.wait([asyncio.ensure_future(p.wait()) for p in alive], timeout=grace_seconds + 10)
            for p in alive:
                if p.returncode is None:
                    log.error("agent worker (pid %d) did not stop in %g s; killing it", p.pid, grace_seconds + 10)
                    p.kill()
            if pending:
                await asyncio.wait(pending)
        metrics.WORKERS.set(1)


async def _copy(stream: asyncio.StreamReader) -> None:
    """A worker's stdout, after its ready line, onto this process's."""
    while line := await stream.readline():
        sys.stdout.buffer.write(line)
        sys.stdout.buffer.flush()


def _die_with_parent() -> None:
    """Linux: the worker gets SIGKILL when worker 0 dies, even by SIGKILL, as in a crash of the machine
    (its NATS may be worker 0's embedded server, gone with it): its runs resume at the next start."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
