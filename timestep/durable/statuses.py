"""A run's status in Timestep's words, from its DBOS workflow's: the one mapping.

Events, `runs.list`, the console, `RunHandle.get_status()` and `timestep workflows` all say `queued`,
`running`, `completed`, `failed` and `cancelled` (and `runs.list` says `waiting` for a running run
that waits for a decision), never DBOS's `ENQUEUED`, `PENDING`, `SUCCESS`, `ERROR`.

>>> run_status("SUCCESS")
'completed'
>>> DBOS_STATUSES["failed"]
['ERROR', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED']
"""

from __future__ import annotations

STATUS = {
    "ENQUEUED": "queued",
    "PENDING": "running",
    "SUCCESS": "completed",
    "ERROR": "failed",
    "MAX_RECOVERY_ATTEMPTS_EXCEEDED": "failed",
    "CANCELLED": "cancelled",
}
"""DBOS's workflow status -> the run's."""

DBOS_STATUSES: dict[str, list[str]] = {}
"""The run's status -> the DBOS statuses it stands for (to filter DBOS's lists by)."""
for _dbos, _ours in STATUS.items():
    DBOS_STATUSES.setdefault(_ours, []).append(_dbos)

FINISHED = ("completed", "failed", "cancelled")


def run_status(dbos_status: str) -> str:
    """The run's status for a DBOS workflow status (`running` for one this version does not know)."""
    return STATUS.get(dbos_status, "running")
