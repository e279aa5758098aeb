"""Run ids: one NATS subject token each, so `timestep.runs.events.<run_id>.<type>` is always well formed."""

import re

RUN_ID_MAX_LENGTH = 128
RUN_ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"
_RUN_ID = re.compile(RUN_ID_PATTERN)


def is_valid_run_id(value: object) -> bool:
    """True when `value` can be a run id (and a DBOS workflow id and a subject token)."""
    return isinstance(value, str) and _RUN_ID.fullmatch(value) is not None


def run_id_problem(value: object) -> str | None:
    """Why `value` cannot be a run id, or None when it can.

    >>> run_id_problem("a.b")
    "contains '.'; use only letters, digits, '_' and '-' (at most 128 characters)"
    """
    if not isinstance(value, str):
        return f"must be a string, not {type(value).__name__}"
    if not value:
        return "must not be empty"
    if len(value) > RUN_ID_MAX_LENGTH:
        return f"is {len(value)} characters long; the limit is {RUN_ID_MAX_LENGTH}"
    bad = next((c for c in value if not (c.isascii() and (c.isalnum() or c in "_-"))), None)
    if bad is not None:
        return f"contains {bad!r}; use only letters, digits, '_' and '-' (at most {RUN_ID_MAX_LENGTH} characters)"
    return None
