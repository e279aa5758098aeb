"""Timestep: OpenAI Agents SDK runs as durable DBOS workflows, and an actor system over NATS.

>>> from timestep import run_agent_workflow
>>> result = await run_agent_workflow(agent, "Hello!", session="user-42", workflow_id="greeting-1")
>>> print(result.output)

Names are imported on first use, so a light module (the bus client, the command line)
does not pay for loading the Agents SDK and DBOS.
"""

# ruff: noqa: F401  (names re-exported lazily; the imports below are for type checkers)
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "ConfigurationError": "timestep.errors",
    "DuplicateRunError": "timestep.errors",
    "PermissionDeniedError": "timestep.errors",
    "RunCancelledError": "timestep.errors",
    "RunTimeoutError": "timestep.errors",
    "TimestepError": "timestep.errors",
    "UnknownAgentError": "timestep.errors",
    "ValidationError": "timestep.errors",
    "EventSink": "timestep.events",
    "add_event_sink": "timestep.events",
    "listen": "timestep.events",
    "remove_event_sink": "timestep.events",
    "configure_dbos": "timestep.launch",
    "ensure_dbos_launched": "timestep.launch",
    "OfflineDemoModel": "timestep.offline_model",
    "QueuePolicy": "timestep.queues",
    "configure_queue": "timestep.queues",
    "get_agent": "timestep.registry",
    "register_agent": "timestep.registry",
    "registered_agents": "timestep.registry",
    "RunHandle": "timestep.runs",
    "RunResult": "timestep.runs",
    "RunStatus": "timestep.runs",
    "cancel_run": "timestep.runs",
    "queue_agent_workflow": "timestep.runs",
    "run_agent_workflow": "timestep.runs",
    "ScheduleInfo": "timestep.schedules",
    "create_scheduled_agent_workflow": "timestep.schedules",
    "delete_schedule": "timestep.schedules",
    "list_schedules": "timestep.schedules",
    "DatabaseSession": "timestep.sessions",
    "RunStateStore": "timestep.state_store",
    "Client": "timestep.client",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'timestep' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    from timestep.client import Client
    from timestep.errors import (
        ConfigurationError,
        DuplicateRunError,
        PermissionDeniedError,
        RunCancelledError,
        RunTimeoutError,
        TimestepError,
        UnknownAgentError,
        ValidationError,
    )
    from timestep.events import EventSink, add_event_sink, listen, remove_event_sink
    from timestep.launch import configure_dbos, ensure_dbos_launched
    from timestep.offline_model import OfflineDemoModel
    from timestep.queues import QueuePolicy, configure_queue
    from timestep.registry import get_agent, register_agent, registered_agents
    from timestep.runs import RunHandle, RunResult, RunStatus, cancel_run, queue_agent_workflow, run_agent_workflow
    from timestep.schedules import ScheduleInfo, create_scheduled_agent_workflow, delete_schedule, list_schedules
    from timestep.sessions import DatabaseSession
    from timestep.state_store import RunStateStore
