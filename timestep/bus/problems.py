"""What is wrong with a message body, in the library's words: msgspec's decoding errors turned
into (field, problem) pairs that name the field and the fix. Light to import (clients use it);
the library's own checks are imported only when a field they cover is at fault."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import msgspec

from subjects.ids import run_id_problem
from timestep.errors import ValidationError

_FIELD = re.compile(r" - at `\$\.?([^`]*)`$")
#: Fields the library checks itself (see `_library_problem`).
_CHECKED = {"id", "queue", "name", "priority", "limit", "period_seconds", "concurrency", "tokens_per_period", "timeout_seconds"}


def body_problem(exc: Exception, example: str = "{}", data: bytes | None = None) -> tuple[str, str]:
    """(field, problem) of a body msgspec could not decode into its type: the field as a
    dotted path (`request` for the body as a whole), the problem with what is expected. With
    the body's `data`, a field the library checks too gets the library's words for it.

    >>> body_problem(msgspec.ValidationError("Expected `int`, got `str` - at `$.limit`"))
    ('limit', 'Expected `int`, got `str`')
    >>> body_problem(msgspec.ValidationError("Expected `int` >= 1 - at `$.limit`"), data=b'{"limit": 0}')
    ('limit', '0 is not a whole number of at least 1; pass the runs allowed per period, e.g. limit=50')
    """
    if isinstance(exc, UnicodeDecodeError):  # msgspec raises it for invalid UTF-8 inside a string
        return "request", f"is not valid UTF-8 ({exc.reason} at byte {exc.start}); send JSON text encoded as UTF-8"
    if not isinstance(exc, msgspec.ValidationError):
        return "request", f"is not valid JSON ({exc}); send a JSON object like {example}"
    text = str(exc)
    match = _FIELD.search(text)
    field = match.group(1) if match else ""
    text = _FIELD.sub("", text)
    if text.startswith("Object missing required field"):
        missing = text.split("`")[1]
        field = f"{field}.{missing}" if field else missing
        text = f"is required ({text})"
    elif field and data is not None:
        found, value = _value_at(data, field)
        if found:
            text = _library_problem(field, value) or _plain_problem(text, value) or text
    return field or "request", text


def _value_at(data: bytes, path: str) -> tuple[bool, Any]:
    try:
        value = msgspec.json.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return False, None
    for token in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        if token.startswith("["):
            index = int(token[1:-1])
            if not isinstance(value, list) or index >= len(value):
                return False, None
            value = value[index]
        elif isinstance(value, dict) and token in value:
            value = value[token]
        else:
            return False, None
    return True, value


def _library_problem(field: str, value: Any) -> str | None:
    """What the library says of `value` given as this field, or None when it checks no such field
    (or takes the value: the wire's bounds may be tighter)."""
    name = field.rsplit(".", 1)[-1]
    if name not in _CHECKED or value is None:
        return None
    from timestep.durable import queues  # the library's checks need the engine: only when asked
    from timestep.durable.runs import _check_timeout

    checks: dict[str, Callable[[Any], Any]] = {
        "id": _raise_run_id,
        "queue": lambda v: queues.check_queue_name(v, name),
        "name": _raise_name,
        "priority": queues.check_priority,
        "limit": lambda v: queues.check_policy("q", v, 1.0, None),
        "period_seconds": lambda v: queues.check_policy("q", 1, v, None),
        "concurrency": lambda v: queues.check_policy("q", None, None, v),
        "tokens_per_period": lambda v: queues.check_policy("q", None, 1.0, None, v),
        "timeout_seconds": _check_timeout,
    }
    check = checks[name]
    try:
        check(value)
    except ValidationError as exc:
        return f"{exc.problem}; {exc.fix}" if exc.fix else exc.problem
    return None


def _raise_run_id(value: Any) -> None:
    problem = run_id_problem(value)
    if problem is not None:
        raise ValidationError("id", f"{value!r} {problem}" if isinstance(value, str) else problem)


def _raise_name(value: Any) -> None:
    # As `create_scheduled_agent_workflow` says of a schedule's name (a queue's is the same shape).
    problem = run_id_problem(value)
    if problem is not None or len(value) > 100:
        raise ValidationError("name", f"{value!r} {problem or 'is longer than 100 characters'}", "use up to 100 letters, digits, '_' and '-'")


_KINDS = {str: "a string", int: "a whole number", float: "a number", bool: "true or false", list: "a list", dict: "an object"}
_WIRE_KINDS = {"str": "a string", "array": "a list", "int": "a whole number", "float": "a number", "object": "an object", "bool": "true or false"}


def _plain_problem(text: str, value: Any) -> str | None:
    """msgspec's constraint texts for the fields the library does not check, in words."""
    if text.startswith("Expected `str` of length >= 1"):
        return "must not be empty"
    if text.startswith("Expected `str` of length <= ") and isinstance(value, str):
        return f"is {len(value)} characters long; the limit is {text.split('<= ')[1].split()[0]}"
    bad = next((c for c in value if ord(c) < 32 or ord(c) == 127), None) if isinstance(value, str) else None
    if text.startswith("Expected `str` matching regex") and bad is not None:
        return f"contains the control character {bad!r}; remove it"
    if text.startswith("Expected `") and ", got `" in text:
        wanted = [_WIRE_KINDS.get(k, k) for k in text.split("`")[1].split(" | ") if k != "null"]
        return f"is {_KINDS.get(type(value), type(value).__name__)}; expected {' or '.join(wanted)}"
    return None
