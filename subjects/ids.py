"""Run ids: one NATS subject token each, so `timestep.runs.events.<run_id>.<type>` is always well formed.
Queue and schedule names are the same shape, shorter."""

import re

RUN_ID_MAX_LENGTH = 128
RUN_ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"
NAME_MAX_LENGTH = 100
NAME_PATTERN = r"^[A-Za-z0-9_-]{1,100}$"
_RUN_ID = re.compile(RUN_ID_PATTERN)


def is_valid_run_id(value: object) -> bool:
    """True when `value` can be a run id (and a DBOS workflow id and a subject token)."""
    return isinstance(value, str) and _RUN_ID.fullmatch(value) is not None


def run_id_problem(value: object, max_length: int = RUN_ID_MAX_LENGTH) -> str | None:
    """Why `value` cannot be a run id, or None when it can; with `max_length=NAME_MAX_LENGTH`,
    why it cannot be a queue's or a schedule's name.

    >>> run_id_problem("a.b")
    "contains '.'; use only letters, digits, '_' and '-' (at most 128 characters)"
    >>> run_id_problem("x" * 101, NAME_MAX_LENGTH)
    'is 101 characters long; the limit is 100'
    """
    allowed = f"use 1 to {max_length} letters, digits, '_' and '-'"
    if not isinstance(value, str):
        return f"must be a string, not {type(value).__name__}; {allowed}"
    if not value:
        return f"must not be empty; {allowed}"
    if len(value) > max_length:
        return f"is {len(value)} characters long; the limit is {max_length}"
    bad = next((c for c in value if not (c.isascii() and (c.isalnum() or c in "_-"))), None)
    if bad is not None:
        return f"contains {bad!r}; use only letters, digits, '_' and '-' (at most {max_length} characters)"
    return None


#: The subject contract's version: fields, subjects and event types may be added within it, never
#: removed or changed in meaning (readers ignore what they do not know); a breaking change raises it.
CONTRACT_VERSION = "1"
