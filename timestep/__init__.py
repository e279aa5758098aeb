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
    "BudgetExceeded": "timestep.errors",
    "AgentChangedError": "timestep.errors",
    "ConfigurationError": "timestep.errors",
    "DuplicateRunError": "timestep.errors",
    "ModelCallError": "timestep.errors",
    "PermissionDeniedError": "timestep.errors",
    "RunCancelledError": "timestep.errors",
    "RunTimeoutError": "timestep.errors",
    "SessionBusyError": "timestep.errors",
    "TimestepError": "timestep.errors",
    "UnknownAgentError": "timestep.errors",
    "ValidationError": "timestep.errors",
    "ApprovalRecord": "subjects.messages",
    "approve_tool_call": "timestep.durable.approvals",
    "idempotency_key": "timestep.durable.approvals",
    "list_approvals": "timestep.durable.approvals",
    "reject_tool_call": "timestep.durable.approvals",
    "EventSink": "timestep.durable.events",
    "add_event_sink": "timestep.durable.events",
    "listen": "timestep.durable.events",
    "remove_event_sink": "timestep.durable.events",
    "configure_dbos": "timestep.durable.launch",
    "ensure_dbos_launched": "timestep.durable.launch",
    "OfflineDemoModel": "timestep.durable.offline_model",
    "QueuePolicy": "timestep.durable.queues",
    "QueuePause": "timestep.durable.queues",
    "ModelRetry": "subjects.messages",
    "configure_queue": "timestep.durable.queues",
    "delete_queue": "timestep.durable.queues",
    "get_agent": "timestep.durable.registry",
    "register_agent": "timestep.durable.registry",
    "registered_agents": "timestep.durable.registry",
    "RunHandle": "timestep.durable.runs",
    "RunResult": "timestep.durable.runs",
    "RunStatus": "timestep.durable.runs",
    "cancel_run": "timestep.durable.runs",
    "queue_agent_workflow": "timestep.durable.runs",
    "run_agent_workflow": "timestep.durable.runs",
    "fork_run": "timestep.durable.runs",
    "ScheduleInfo": "timestep.durable.schedules",
    "create_scheduled_agent_workflow": "timestep.durable.schedules",
    "delete_schedule": "timestep.durable.schedules",
    "list_schedules": "timestep.durable.schedules",
    "DatabaseSession": "timestep.durable.sessions",
    "run_steps": "timestep.durable.listing",
    "ReplayReport": "timestep.durable.replay",
    "replay_runs": "timestep.durable.replay",
    "register_session_factory": "timestep.durable.sessions",
    "RunStateStore": "timestep.durable.state_store",
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
        BudgetExceeded,
        AgentChangedError,
        ConfigurationError,
        DuplicateRunError,
        ModelCallError,
        PermissionDeniedError,
        RunCancelledError,
        RunTimeoutError,
        SessionBusyError,
        TimestepError,
        UnknownAgentError,
        ValidationError,
    )
    from subjects.messages import ApprovalRecord
    from timestep.durable.approvals import approve_tool_call, idempotency_key, list_approvals, reject_tool_call
    from timestep.durable.events import EventSink, add_event_sink, listen, remove_event_sink
    from timestep.durable.launch import configure_dbos, ensure_dbos_launched
    from timestep.durable.offline_model import OfflineDemoModel
    from subjects.messages import ModelRetry
    from timestep.durable.queues import QueuePause, QueuePolicy, configure_queue, delete_queue
    from timestep.durable.registry import get_agent, register_agent, registered_agents
    from timestep.durable.runs import RunHandle, RunResult, RunStatus, cancel_run, fork_run, queue_agent_workflow, run_agent_workflow
    from timestep.durable.schedules import ScheduleInfo, create_scheduled_agent_workflow, delete_schedule, list_schedules
    from timestep.durable.listing import run_steps
    from timestep.durable.replay import ReplayReport, replay_runs
    from timestep.durable.sessions import DatabaseSession, register_session_factory
    from timestep.durable.state_store import RunStateStore
