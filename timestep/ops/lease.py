"""One live process per executor id: the lease a `timestep up` process holds while it runs.

DBOS recovers, at launch, the unfinished runs of the launching process's executor id, so two
live processes under one id would both run the same runs. A process takes its id's lease
before it launches and holds it until it exits; the lease goes away with the process, even on
SIGKILL: on SQLite it is a file lock in TIMESTEP_HOME (released by the kernel), on PostgreSQL a
session advisory lock (released by the server when the connection drops; TCP keepalives bound
that to about 15 s when a whole machine disappears).

A second process with a held id stops at once with the reason, or, as a standby
(`timestep up --standby`), waits with everything imported and connected (with the embedded
server, before starting it), and takes the runs over about a second after the first one dies::

    lease = ExecutorLease("worker-0", database_url, home)
    await lease.acquire(wait=False)   # raises ExecutorIdTaken when another process holds it
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import time
from pathlib import Path
from typing import Any

from timestep.errors import TimestepError

POLL_SECONDS = 0.1
CONNECT_RETRY_SECONDS = 60.0

log = logging.getLogger("timestep.ops.lease")


class ExecutorIdTaken(TimestepError):
    pass


class ExecutorLease:
    def __init__(self, executor_id: str, database_url: str, home: Path) -> None:
        self.executor_id = executor_id
        self.database_url = database_url
        self.home = home
        self._held: Any = None

    @property
    def where(self) -> str:
        if self.database_url.startswith("sqlite"):
            return f"the lock file {self._path()}"
        return "a PostgreSQL advisory lock on the system database"

    def _path(self) -> Path:
        return self.home / f"executor-{self.executor_id}.lock"

    def _try(self) -> bool:
        if self.database_url.startswith("sqlite"):
            self.home.mkdir(parents=True, exist_ok=True)
            fd = os.open(self._path(), os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            self._held = fd
            return True
        conn = _connect(_libpq_url(self.database_url))
        key = f"timestep-executor:{self.executor_id}"
        if conn.execute("select pg_try_advisory_lock(hashtextextended(%s, 0))", (key,)).fetchone()[0]:
            self._held = conn
            return True
        conn.close()
        return False

    @property
    def held(self) -> Any:
        """The lock held (a file descriptor or a connection), or None."""
        return self._held

    async def try_acquire(self) -> bool:
        """One try: whether the lease is now held."""
        return await self._attempt()

    async def acquire(self, *, wait: bool) -> None:
        """Take the lease; with `wait`, until the process holding it is gone."""
        while not await self._attempt():
            if not wait:
                raise ExecutorIdTaken(
                    f"TIMESTEP_EXECUTOR_ID={self.executor_id!r} is held by another live process ({self.where}); "
                    "give each process its own TIMESTEP_EXECUTOR_ID, or start this one with --standby to take over "
                    "when that one stops"
                )
            await asyncio.sleep(POLL_SECONDS)

    async def _attempt(self) -> bool:
        """One try; a database that refuses connections for a while (restarting, out of
        connection slots) is retried for up to CONNECT_RETRY_SECONDS."""
        deadline = time.monotonic() + CONNECT_RETRY_SECONDS
        while True:
            try:
                return await asyncio.to_thread(self._try)
            except Exception as exc:
                if "does not exist" in str(exc) or time.monotonic() > deadline:
                    raise
                log.warning("executor lease: %s: %s; retrying", type(exc).__name__, str(exc).strip()[:200])
                await asyncio.sleep(1.0)

    def release(self) -> None:
        held, self._held = self._held, None
        if held is None:
            return
        if isinstance(held, int):
            os.close(held)  # closing the descriptor drops the lock
        else:
            held.close()


def _connect(url: str) -> Any:
    """A connection kept for the lease's life; the database is created first when missing
    (a new deployment's first process takes the lease before DBOS creates it)."""
    import psycopg

    options = dict(autocommit=True, connect_timeout=10, keepalives=1, keepalives_idle=5, keepalives_interval=2, keepalives_count=3)
    try:
        return psycopg.connect(url, **options)
    except psycopg.OperationalError as exc:
        if "does not exist" not in str(exc):
            raise
    head, _, name = url.partition("?")[0].rpartition("/")
    with psycopg.connect(f"{head}/postgres", autocommit=True, connect_timeout=10) as admin:
        try:
            admin.execute(f'CREATE DATABASE "{name}"')
        except (psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
            pass  # another process created it first
    return psycopg.connect(url, **options)


def _libpq_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)
