"""Settings, read from the environment in this one place. Every variable is listed in the README."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number; set it to a number of seconds like {default}") from None
    if value <= 0:
        raise ValueError(f"{name}={raw!r} must be greater than 0")
    return value


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a whole number; set it like {default}") from None
    if value <= 0:
        raise ValueError(f"{name}={raw!r} must be greater than 0")
    return value


@dataclass(frozen=True)
class Settings:
    home: Path
    """TIMESTEP_HOME: data directory (SQLite file, embedded NATS store). Default ./.timestep"""
    database_url: str | None
    """PG_CONNECTION_URI: PostgreSQL URL for DBOS and Timestep's tables; unset means SQLite in `home`."""
    executor_id: str
    """TIMESTEP_EXECUTOR_ID: this process's slot; a restarted process with the same id recovers its runs."""
    application_version: str
    """TIMESTEP_APP_VERSION: pinned so a code edit does not strand in-flight runs."""
    max_threads: int
    """TIMESTEP_MAX_THREADS: bound on DBOS's executor threads."""
    queue_poll_seconds: float
    """TIMESTEP_QUEUE_POLL_SECONDS: how often each process polls queues for runs to start."""
    tracing: bool
    """TIMESTEP_TRACING=1 turns the Agents SDK's trace export on (off by default)."""
    openai_api_key_set: bool
    """OPENAI_API_KEY present: use the SDK's OpenAI models; otherwise the offline demo model."""
    log_level: str
    """TIMESTEP_LOG_LEVEL: log level of DBOS and Timestep (default WARNING)."""

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            home=Path(os.environ.get("TIMESTEP_HOME") or ".timestep").expanduser().absolute(),
            database_url=os.environ.get("PG_CONNECTION_URI") or None,
            executor_id=os.environ.get("TIMESTEP_EXECUTOR_ID") or "local",
            application_version=os.environ.get("TIMESTEP_APP_VERSION") or "timestep-1",
            max_threads=_int("TIMESTEP_MAX_THREADS", 64),
            queue_poll_seconds=_float("TIMESTEP_QUEUE_POLL_SECONDS", 0.1),
            tracing=os.environ.get("TIMESTEP_TRACING", "") in ("1", "true", "yes", "on"),
            openai_api_key_set=bool(os.environ.get("OPENAI_API_KEY")),
            log_level=(os.environ.get("TIMESTEP_LOG_LEVEL") or "WARNING").upper(),
        )
