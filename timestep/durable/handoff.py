"""Runs another runtime executes: a queued run of an agent that only TypeScript agent actors host.

The run is admitted here like any queued run (its queue's rate, concurrency and priority, its
deduplication id, a pause, a token budget), as the workflow `agent_run`; once admitted, that workflow
hands it on and waits for its end in one step (`run.handoff`), which holds the run's place in its queue
meanwhile. The hand-off itself is the bus's (`set_handoff`, installed by the agent actor): the library
alone cannot reach another runtime.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from timestep.errors import ConfigurationError, TimestepError

#: (run_id, spec) -> the run's last event, as the contract's JSON object (`completed`, `failed` or `cancelled`).
Handoff = Callable[[str, Any], Awaitable[dict[str, Any]]]

_handoff: Handoff | None = None


class HandedOnRunFailed(TimestepError):
    """A run handed on ended with `failed` there (its event says why)."""


def set_handoff(handoff: Handoff | None) -> None:
    """Where this process hands runs on to (None: it does not)."""
    global _handoff
    _handoff = handoff


async def hand_on(run_id: str, spec: Any) -> dict[str, Any]:
    """Hand run `run_id` on and wait for its last event; repeatable (a recovered step does it again and
    finds the run started once, or ended)."""
    if _handoff is None:
        raise ConfigurationError(
            f"run {run_id!r} is for agent {spec.agent!r}, which TypeScript agent actors host, and this process cannot reach "
            "them: run it where an agent actor runs (`timestep up`), which hands such runs on over the bus"
        )
    return await _handoff(run_id, spec)
