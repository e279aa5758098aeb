"""What is wrong with a message body, in the contract's words: msgspec's decoding errors turned
into (field, problem) pairs that name the field, quote the value and say what is allowed. What is
allowed is read from the types themselves (a Literal's values, a `Meta`'s bounds and lengths), so
the words cannot drift from the checks."""

from __future__ import annotations

import math
import re
from typing import Any

import msgspec
from msgspec import inspect

from subjects.ids import run_id_problem

_AT = re.compile(r" - at `\$\.?([^`]*)`$")
_TOKENS = re.compile(r"[^.\[\]]+|\[[^\]]*\]")
_NAME_PATTERN = re.compile(r"^\^\[A-Za-z0-9_-\]\{1,(\d+)\}\$$")
_NO_CONTROL = r"^[^\x00-\x1f\x7f]+$"
_UNREADABLE = object()  # a body that is not JSON: no value to quote
_KINDS = {str: "a string", int: "a whole number", float: "a number", bool: "true or false", list: "a list", dict: "an object", type(None): "null"}


def body_problem(exc: Exception, example: str = "{}", data: bytes | None = None, type: Any = None) -> tuple[str, str]:
    """(field, problem) of a body that did not decode into `type`: the field as a dotted path
    (`request` for the body as a whole); the problem quotes the value found in `data` and says
    what `type` allows there.

    >>> from subjects.messages import RunRequest
    >>> body_problem(msgspec.ValidationError("Expected `int` >= 1 - at `$.max_tokens`"), data=b'{"max_tokens": 0}', type=RunRequest)
    ('max_tokens', '0 is not a whole number from 1 to 2147483647')
    """
    if isinstance(exc, UnicodeDecodeError):  # msgspec raises it for invalid UTF-8 inside a string
        return "request", f"is not valid UTF-8 ({exc.reason} at byte {exc.start}); send JSON text encoded as UTF-8"
    if not isinstance(exc, msgspec.ValidationError):
        return "request", f"is not valid JSON ({exc}); send a JSON object like {example}"
    return _problem(exc, example, _decoded(data) if data is not None else _UNREADABLE, type)


def convert_problem(exc: msgspec.ValidationError, value: Any, type: Any) -> tuple[str, str]:
    """(field, problem) of `msgspec.convert(value, type)` that failed: what `body_problem` says
    of the same value sent as JSON, so a call of the library and a message on the bus are refused
    in one set of words.

    >>> from subjects.messages import RunRequest
    >>> fields = {"agent": "a", "input": "Hi", "timeout_seconds": 0}
    >>> try:
    ...     msgspec.convert(fields, RunRequest)
    ... except msgspec.ValidationError as exc:
    ...     convert_problem(exc, fields, RunRequest)
    ('timeout_seconds', '0 is not a number more than 0 and at most 31536000')
    """
    return _problem(exc, "{}", value, type)


def _problem(exc: msgspec.ValidationError, example: str, decoded: Any, type: Any) -> tuple[str, str]:
    text = str(exc)
    match = _AT.search(text)
    path = match.group(1) if match else ""
    text = _AT.sub("", text)
    info = _type_at(inspect.type_info(type), path) if type is not None else None
    if text.startswith("Object missing required field"):
        missing = text.split("`")[1]
        field = f"{path}.{missing}" if path else missing
        at = _type_at(info, missing) if info is not None else None
        return field, f"is required; expected {_allowed(at)}" if at is not None else "is required"
    found, value, where = _value_at(decoded, path)
    field = where or "request"
    if not found or info is None:
        return field, f"{_show(value)}: {text}" if found else text  # without the type, msgspec's words
    if not path:
        like = f", like {example}" if example != "{}" else ""
        return field, f"{_show(value)} is {_kind(value)}; expected {_allowed(info)}{like}"
    return field, _value_problem(value, info)


#: Types whose fields a path names: the contract's Structs, and a context type's dataclass or TypedDict.
_OBJECTS = (inspect.StructType, inspect.DataclassType, inspect.TypedDictType)


def _type_at(info: Any, path: str) -> Any:
    """The type information at `path` (`a.b`, `a[0]`, `a[...]`) inside `info`, or None."""
    for token in _TOKENS.findall(path):
        info = _unwrap(info, dict if not token.startswith("[") else (list if token[1:-1].isdigit() else dict))
        if isinstance(info, _OBJECTS) and not token.startswith("["):
            info = next((f.type for f in info.fields if f.encode_name == token), None)
        elif isinstance(info, inspect.ListType) and token.startswith("["):
            info = info.item_type
        elif isinstance(info, inspect.DictType):
            info = info.value_type
        else:
            return None
    return info


def _unwrap(info: Any, shape: type | None = None) -> Any:
    """`info` without its Meta and its null; of a union, the member of `shape` (list or dict)."""
    if isinstance(info, inspect.Metadata):
        info = info.type
    if isinstance(info, inspect.UnionType):
        members = [_unwrap(t) for t in info.types if not isinstance(t, inspect.NoneType)]
        if shape is not None:
            wanted = (inspect.ListType,) if shape is list else (*_OBJECTS, inspect.DictType)
            members = [t for t in members if isinstance(t, wanted)] or members
        return members[0] if len(members) == 1 else inspect.UnionType(tuple(members))
    return info


def _decoded(data: bytes) -> Any:
    try:
        return msgspec.json.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return _UNREADABLE


def _value_at(value: Any, path: str) -> tuple[bool, Any, str]:
    """(found, the value at `path` in `value`, the path with the key msgspec leaves out as `[...]`)."""
    if value is _UNREADABLE:
        return False, None, path
    where = path
    for token in _TOKENS.findall(path):
        if token == "[...]" and isinstance(value, dict) and value:
            # The first value that is not a string: the only kind of map value the contract has.
            key = next((k for k, v in value.items() if not isinstance(v, str)), next(iter(value)))
            where = where.replace("[...]", f"[{msgspec.json.encode(key).decode()}]", 1)
            value = value[key]
        elif token.startswith("[") and token[1:-1].isdigit():
            index = int(token[1:-1])
            if not isinstance(value, list) or index >= len(value):
                return False, None, path
            value = value[index]
        elif isinstance(value, dict) and token in value:
            value = value[token]
        else:
            return False, None, path
    return True, value, where


def _value_problem(value: Any, info: Any) -> str:
    info = _unwrap(info)
    if isinstance(info, inspect.UnionType):  # the member of the value's kind says what was wrong
        info = next((t for t in info.types if _right_kind(value, t)), info)
    shown = _show(value)
    if not _right_kind(value, info):
        return f"{shown} is {_kind(value)}; expected {_allowed(info)}"
    if isinstance(info, inspect.StrType):
        return f"{shown} {_string_problem(value, info)}"
    return f"{shown} is not {_allowed(info)}"


def _string_problem(value: str, info: inspect.StrType) -> str:
    name = _NAME_PATTERN.match(info.pattern or "")
    if name:  # a run id or a name: in the words the library uses for them
        problem = run_id_problem(value, int(name.group(1))) or "is not allowed"
        return problem if "; " in problem else f"{problem}; expected {_allowed(info)}"
    if not value:
        problem = "is empty"
    elif info.max_length is not None and len(value) > info.max_length:
        problem = f"is {len(value)} characters long"
    elif (bad := next((c for c in value if ord(c) < 32 or ord(c) == 127), None)) is not None:
        problem = f"contains the control character {bad!r}"
    else:
        problem = "is not allowed"
    return f"{problem}; expected {_allowed(info)}"


def _right_kind(value: Any, info: Any) -> bool:
    if isinstance(info, inspect.UnionType):
        return any(_right_kind(value, t) for t in info.types)
    if isinstance(info, inspect.LiteralType):
        return any(type(value) is type(v) for v in info.values)
    if isinstance(info, inspect.BoolType):
        return isinstance(value, bool)
    if isinstance(info, inspect.IntType):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(info, inspect.FloatType):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(info, inspect.StrType):
        return isinstance(value, str)
    if isinstance(info, inspect.ListType):
        return isinstance(value, list)
    if isinstance(info, (inspect.StructType, inspect.DictType)):
        return isinstance(value, dict)
    return True


def _allowed(info: Any) -> str:
    """What the type takes, in words."""
    info = _unwrap(info)
    if isinstance(info, inspect.UnionType):
        return " or ".join(_allowed(t) for t in info.types)
    if isinstance(info, inspect.LiteralType):
        return "one of " + ", ".join(repr(v) for v in info.values)
    if isinstance(info, inspect.BoolType):
        return "true or false"
    if isinstance(info, inspect.IntType):
        return "a whole number" + _bounds(info)
    if isinstance(info, inspect.FloatType):
        return "a number" + _bounds(info)
    if isinstance(info, inspect.StrType):
        return _string_allowed(info)
    if isinstance(info, inspect.ListType):
        item = _unwrap(info.item_type)
        return "a list" if isinstance(item, inspect.AnyType) else f"a list of {_plural(_allowed(item))}"
    if isinstance(info, inspect.DictType):
        value = _unwrap(info.value_type)
        return "an object" if isinstance(value, inspect.AnyType) else f"an object whose values are {_plural(_allowed(value))}"
    if isinstance(info, inspect.StructType):
        required = [f.encode_name for f in info.fields if f.required]
        if required:
            return "an object with " + " and ".join(required)
        return "an object with any of " + ", ".join(f.encode_name for f in info.fields)
    return "a JSON value"


def _plural(kind: str) -> str:
    return {"a string": "strings", "an object": "objects", "a whole number": "whole numbers", "a number": "numbers"}.get(kind, kind)


def _bounds(info: inspect.IntType | inspect.FloatType) -> str:
    low = f"{info.ge}" if info.ge is not None else None
    high = f"{info.le}" if info.le is not None else None
    if low is not None and high is not None:
        return f" from {low} to {high}"
    parts = []
    if info.gt is not None:
        parts.append(f"more than {info.gt}")
    if low is not None:
        parts.append(f"of at least {low}")
    if info.lt is not None:
        parts.append(f"less than {info.lt}")
    if high is not None:
        parts.append(f"at most {high}")
    return (" " + " and ".join(parts)) if parts else ""


def _string_allowed(info: inspect.StrType) -> str:
    name = _NAME_PATTERN.match(info.pattern or "")
    if name:
        return f"a string of 1 to {name.group(1)} letters, digits, '_' and '-'"
    low, high = info.min_length, info.max_length
    length = (
        f"{low} to {high} characters" if low and high is not None
        else f"at most {high} characters" if high is not None
        else f"at least {low} characters" if low else ""
    )
    length = f"a string of {length}" if length else "a string"
    if info.pattern == _NO_CONTROL:
        return f"{length}, no control characters"
    if info.pattern:
        return f"{length} matching {info.pattern}"
    return length


def _kind(value: Any) -> str:
    return _KINDS.get(type(value), type(value).__name__)


def _show(value: Any, limit: int = 60) -> str:
    """The value as the sender wrote it, cut to `limit` characters."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}..."
    if isinstance(value, (str, bytes)) or (isinstance(value, float) and not math.isfinite(value)):
        text = repr(value)  # JSON has no inf or nan; bytes come from the library's callers only
    else:
        try:
            text = msgspec.json.encode(value).decode()
        except TypeError:  # an object of the caller's given to the library
            text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}..."
