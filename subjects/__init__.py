"""Timestep's wire contract: run ids and the msgspec types of every message.

This package depends on nothing else of Timestep's, so any service can vendor it.
"""

from subjects.events import (
    EVENT_TYPES,
    Accepted,
    Approval,
    Cancelled,
    Completed,
    Delta,
    ErrorInfo,
    Failed,
    Forked,
    Interrupted,
    Queued,
    Rejected,
    RunEvent,
    Started,
    TokenUsage,
    ToolApproved,
    ToolCall,
    ToolOutput,
    ToolRejected,
    decode_event,
    encode_event,
)
from subjects.ids import CONTRACT_VERSION, RUN_ID_MAX_LENGTH, RUN_ID_PATTERN, is_valid_run_id, run_id_problem

__all__ = [
    "CONTRACT_VERSION",
    "EVENT_TYPES",
    "Accepted",
    "Approval",
    "Cancelled",
    "Completed",
    "Delta",
    "ErrorInfo",
    "Failed",
    "Forked",
    "Interrupted",
    "Queued",
    "RUN_ID_MAX_LENGTH",
    "RUN_ID_PATTERN",
    "Rejected",
    "RunEvent",
    "Started",
    "TokenUsage",
    "ToolApproved",
    "ToolCall",
    "ToolOutput",
    "ToolRejected",
    "decode_event",
    "encode_event",
    "is_valid_run_id",
    "run_id_problem",
]
