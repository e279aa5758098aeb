"""The process's durable runtime: one launch of Timestep, on one database.

A `Runtime` holds what belongs to one launch: its DBOS configuration, whether it is launched, its
graceful stop (the workflows executing here, the steps under way), the wakers of its queue worker
threads, and every cache of what its database holds (statements built for its tables, the queues
registered there, the pauses read there, the agent definitions stored there). `shutdown` replaces it
whole, so a launch on another database (a test, a program that configures again) starts from nothing
it did not read from that database.

The library's functions and the actor system (`actors.system.System`) share the process's one
`current()` runtime, as the Agents SDK's `Runner` functions share its default runner: DBOS itself is
one instance per process (`DBOS(config=...)`), so a second runtime running beside it could not exist.

What lasts for the whole process stays at module level, each named for what it holds: the settings
its edge chose (`timestep.settings`), the agents, queues and schedules a program declared (the
registry, hooks run at every launch), the objects a caller handed to a run in flight (its context, its
session), and the I/O thread pool (which outlives DBOS's on purpose, see `io`).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class StopState:
    """A graceful stop's view of this launch (see `stop`): the workflow executions running here and the
    durable work under way that a stop waits for. (What a stop cut off is the process's: `stop.steps_cut_off`.)"""

    def __init__(self) -> None:
        self.executing: set[asyncio.Task] = set()
        self.busy = 0
        self.idle: asyncio.Event | None = None
        self.stopping = False


class Runtime:
    """One launch of Timestep in this process (see the module's docstring)."""

    def __init__(self) -> None:
        self.config: dict[str, Any] | None = None
        """DBOS's configuration in force (None until `configure`)."""
        self.launched = False
        self.stop = StopState()
        self.wakers: dict[str, Any] = {}
        """Each queue worker thread's waker, by queue name (see `hooks._Waker`)."""
        self._caches: dict[str, Any] = {}
        self._lock = threading.Lock()

    def cache(self, name: str, make: Callable[[], T]) -> T:
        """This launch's cache `name`, made by `make()` on first use. Everything a cache holds was
        read from, or written to, this launch's database; the next launch starts without it."""
        found = self._caches.get(name)
        if found is None:
            with self._lock:
                found = self._caches.get(name)
                if found is None:
                    found = self._caches[name] = make()
        return found


_current = Runtime()
_current_lock = threading.Lock()


def current() -> Runtime:
    """The process's runtime: the launch in force, or the one the next launch fills in."""
    return _current


def replace() -> Runtime:
    """Drop the current runtime for a fresh one (at shutdown) and return the one dropped."""
    global _current
    with _current_lock:
        dropped, _current = _current, Runtime()
    return dropped
