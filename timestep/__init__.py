"""Timestep: OpenAI Agents SDK runs as durable DBOS workflows.

>>> from timestep import run_agent_workflow
>>> result = await run_agent_workflow(agent, "Hello!", session="user-42", workflow_id="greeting-1")
>>> print(result.output)
"""

from timestep.errors import (
    ConfigurationError,
    DuplicateRunError,
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

__all__ = [
    "ConfigurationError",
    "DatabaseSession",
    "DuplicateRunError",
    "EventSink",
    "OfflineDemoModel",
    "QueuePolicy",
    "RunCancelledError",
    "RunHandle",
    "RunResult",
    "RunStateStore",
    "RunStatus",
    "RunTimeoutError",
    "ScheduleInfo",
    "TimestepError",
    "UnknownAgentError",
    "ValidationError",
    "add_event_sink",
    "cancel_run",
    "configure_dbos",
    "configure_queue",
    "create_scheduled_agent_workflow",
    "delete_schedule",
    "ensure_dbos_launched",
    "get_agent",
    "list_schedules",
    "listen",
    "queue_agent_workflow",
    "register_agent",
    "registered_agents",
    "remove_event_sink",
    "run_agent_workflow",
]
