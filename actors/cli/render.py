"""How the command line shows events and replies to people (and to scripts, with --json)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from subjects.events import ErrorInfo, RunEvent


def tag(event: RunEvent) -> str:
    return event.__struct_config__.tag  # type: ignore[attr-defined]


def describe(event: RunEvent, *, with_run: bool = False) -> str:
    """One readable line: seq, type, and the fields that matter."""
    fields = {f: getattr(event, f) for f in event.__struct_fields__ if f not in ("run_id", "seq", "time")}
    if event.__struct_config__.omit_defaults:  # as on the wire: an unset optional field is left out
        fields = {f: v for f, v in fields.items() if v is not None}
    parts = []
    for key, value in fields.items():
        if isinstance(value, ErrorInfo):  # as the errors of the command line read: `Type: message`
            value = value.message if value.message.startswith(value.type) else f"{value.type}: {value.message}"
            parts.append(f"{key}={_short(value)!r}")
            continue
        if isinstance(value, msgspec.Struct) or (isinstance(value, list) and value and isinstance(value[0], msgspec.Struct)):
            value = msgspec.to_builtins(value)
        elif isinstance(value, datetime):
            value = value.isoformat(timespec="seconds")
        parts.append(f"{key}={value!r}" if not isinstance(value, str) else f"{key}={_short(value)!r}")
    run = f"{event.run_id:<34} " if with_run else ""
    return f"{run}{event.seq:>3}  {tag(event):<12} {'  '.join(parts)}".rstrip()


def as_json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
