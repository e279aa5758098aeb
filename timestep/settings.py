"""Settings, read from the environment in this one place. Every variable is listed in the README."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path



class SettingError(ValueError):
    """An environment variable with a value Timestep cannot use; the message names it and the fix."""

def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingError(f"{name}={raw!r} is not a number; set it to a number of seconds like {default}") from None
    if value <= 0:
        raise SettingError(f"{name}={raw!r} must be greater than 0")
    return value


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingError(f"{name}={raw!r} is not a whole number; set it like {default}") from None
    if value <= 0:
        raise SettingError(f"{name}={raw!r} must be greater than 0")
    return value


def _pool_size() -> int:
    value = _int("TIMESTEP_DB_POOL_SIZE", 20)
    if value < 2:
        raise SettingError(f"TIMESTEP_DB_POOL_SIZE={value} is too small: DBOS and Timestep's own tables need a connection each; set it to 2 or more")
    return value


def _flag(name: str, default: bool) -> bool:
    """On for 1/true/yes/on, off for 0/false/no/off, else `default`."""
    raw = (os.environ.get(name) or "").strip().lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    return default


def openai_api_key_set() -> bool:
    """OPENAI_API_KEY present (cheap enough to ask once per run)."""
    return bool(os.environ.get("OPENAI_API_KEY"))


#: What `TIMESTEP_OPENAI_API` may say: the OpenAI API that model names (strings) are called through.
OPENAI_APIS = ("responses", "chat_completions")


def openai_api() -> str:
    """TIMESTEP_OPENAI_API: `responses` (default) or `chat_completions` (Ollama, vLLM, LM Studio)."""
    raw = (os.environ.get("TIMESTEP_OPENAI_API") or "responses").strip().lower().replace("-", "_")
    if raw not in OPENAI_APIS:
        raise SettingError(
            f"TIMESTEP_OPENAI_API={raw!r} is not an OpenAI API; set it to chat_completions (Ollama, vLLM, LM Studio) or responses"
        )
    return raw


def openai_base_url() -> str | None:
    """OPENAI_BASE_URL (default: OpenAI): any OpenAI-compatible server; read by the openai client itself (the default
    provider is made once per value)"""
    return os.environ.get("OPENAI_BASE_URL") or None


@dataclass(frozen=True)
class ModelRetrySettings:
    """How model calls that fail for a passing reason (408, 409, 429, 5xx, no connection, timeout) are retried."""

    max_attempts: int = 10
    """TIMESTEP_MODEL_MAX_ATTEMPTS (default: `10`): calls per model turn, the first included, for
    408/409/429/5xx/connection failures (`1`: no retries; see Sessions and models)"""
    max_wait_seconds: float = 600.0
    """TIMESTEP_MODEL_RETRY_SECONDS (default: `600`): the waits between a turn's attempts add up to at most this"""
    base_seconds: float = 1.0
    """TIMESTEP_MODEL_BACKOFF_SECONDS (default: `1`): first backoff wait when the provider names none, doubled per
    attempt"""
    max_backoff_seconds: float = 60.0
    """TIMESTEP_MODEL_MAX_BACKOFF_SECONDS (default: `60`): the longest backoff wait"""

    def over(self, *levels: object) -> ModelRetrySettings:
        """These settings with the fields each level sets (a `subjects.messages.ModelRetry` or None),
        later levels winning."""
        changes: dict[str, float | int] = {}
        for level in levels:
            if level is None:
                continue
            for mine, theirs in (("max_attempts", "max_attempts"), ("max_wait_seconds", "max_wait_seconds"),
                                 ("base_seconds", "backoff_seconds"), ("max_backoff_seconds", "max_backoff_seconds")):
                value = getattr(level, theirs, None)
                if value is not None:
                    changes[mine] = value
        return replace(self, **changes) if changes else self

    @classmethod
    def from_env(cls) -> ModelRetrySettings:
        return cls(
            max_attempts=_int("TIMESTEP_MODEL_MAX_ATTEMPTS", 10),
            max_wait_seconds=_float("TIMESTEP_MODEL_RETRY_SECONDS", 600.0),
            base_seconds=_float("TIMESTEP_MODEL_BACKOFF_SECONDS", 1.0),
            max_backoff_seconds=_float("TIMESTEP_MODEL_MAX_BACKOFF_SECONDS", 60.0),
        )


def _port(name: str) -> int | None:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return None
    if not raw.isdigit() or int(raw) > 65535:
        raise SettingError(f"{name}={raw!r} is not a port; set it to a number from 0 (any free port) to 65535")
    return int(raw)


def _pinned_port(name: str) -> int | None:
    port = _port(name)
    if port == 0:
        raise SettingError(f"{name}=0 is not a port to pin; set it to a port from 1 to 65535, or unset it to keep the last one")
    return port


def _log_format() -> str:
    raw = (os.environ.get("TIMESTEP_LOG_FORMAT") or "human").strip().lower()
    if raw not in ("human", "json"):
        raise SettingError(f"TIMESTEP_LOG_FORMAT={raw!r} is not a log format; set it to json (one JSON object per line) or human")
    return raw


def _on_agent_change() -> str:
    raw = (os.environ.get("TIMESTEP_ON_AGENT_CHANGE") or "continue").strip().lower()
    if raw not in ("continue", "fail"):
        raise SettingError(f"TIMESTEP_ON_AGENT_CHANGE={raw!r} is not a policy; set it to continue (go on, saying what changed) or fail")
    return raw


def _prefix() -> str:
    prefix = os.environ.get("TIMESTEP_SUBJECT_PREFIX") or "timestep"
    if not all(token and all(c.isalnum() or c in "_-" for c in token) for token in prefix.split(".")):
        raise SettingError(f"TIMESTEP_SUBJECT_PREFIX={prefix!r} must be dot-separated tokens of letters, digits, '_' and '-'")
    return prefix


@dataclass(frozen=True)
class NatsSettings:
    """How to reach NATS. With `url` unset, `timestep up` starts an embedded nats-server."""

    url: str | None
    """NATS_URL (default: unset): NATS server(s), comma-separated; unset: `timestep up` runs the embedded one"""
    user: str | None
    """NATS_USER, NATS_PASSWORD (default: unset): user and password (one user per role in a deployment: see `deploy/`)"""
    password: str | None = field(repr=False)  # kept out of reprs, and so out of logs and tracebacks
    token: str | None = field(repr=False)
    """NATS_TOKEN (default: unset): token"""
    nkey_seed_file: str | None
    """NATS_NKEY_SEED_FILE (default: unset): path of an nkey seed file (needs the `nkeys` package)"""
    creds_file: str | None
    """NATS_CREDS_FILE (default: unset): path of a `.creds` file (JWT and seed; needs the `nkeys` package)"""
    tls_ca_file: str | None
    """NATS_TLS_CA_FILE, NATS_TLS_CERT_FILE, NATS_TLS_KEY_FILE (default: unset): TLS: the CA, and a client certificate"""
    tls_cert_file: str | None
    tls_key_file: str | None
    connect_deadline: float = 10.0
    """NATS_CONNECT_TIMEOUT (default: `10`): seconds the first connection may take before start-up fails (with the
    reason)"""
    embedded_port: int | None = None
    """TIMESTEP_NATS_PORT (default: unset): the embedded server's port, pinned (`timestep up` fails when it is taken);
    unset: the last port, else 4222, else a free one"""

    @classmethod
    def from_env(cls) -> NatsSettings:
        get = lambda name: os.environ.get(name) or None  # noqa: E731
        return cls(
            url=get("NATS_URL"),
            user=get("NATS_USER"),
            password=get("NATS_PASSWORD"),
            token=get("NATS_TOKEN"),
            nkey_seed_file=get("NATS_NKEY_SEED_FILE"),
            creds_file=get("NATS_CREDS_FILE"),
            tls_ca_file=get("NATS_TLS_CA_FILE"),
            tls_cert_file=get("NATS_TLS_CERT_FILE"),
            tls_key_file=get("NATS_TLS_KEY_FILE"),
            connect_deadline=_float("NATS_CONNECT_TIMEOUT", 10.0),
            embedded_port=_pinned_port("TIMESTEP_NATS_PORT"),
        )


@dataclass(frozen=True)
class Settings:
    home: Path
    """TIMESTEP_HOME (default: `./.timestep`): data directory; the SQLite database is `timestep.sqlite` there"""
    database_url: str | None = field(repr=False)  # may hold a password
    """PG_CONNECTION_URI (default: unset): PostgreSQL URL (`postgresql://user:pass@host:5432/db`); the database is
    created if missing"""
    executor_id: str
    """TIMESTEP_EXECUTOR_ID (default: `local`): this process's executor id (see Durability)"""
    application_version: str
    """TIMESTEP_APP_VERSION (default: `timestep-1`): the pinned application version (see Durability)"""
    max_threads: int
    """TIMESTEP_MAX_THREADS (default: `64`): bound on DBOS's executor threads"""
    queue_poll_seconds: float
    """TIMESTEP_QUEUE_POLL_SECONDS (default: `0.05`): how often a process looks for queued runs to start (runs it
    queued itself start at once) and, in its first 30 s, for runs to recover; while none waits on a queue, it looks
    less and less often, up to every 0.5 s (an idle process then spends about 1.5% of a core, not 4%)"""
    tracing: bool
    """TIMESTEP_TRACING (default: off): `1` turns on the Agents SDK's trace export"""
    openai_api_key_set: bool
    """OPENAI_API_KEY (default: unset): use the SDK's OpenAI models (else the offline demo model)"""
    log_level: str
    """TIMESTEP_LOG_LEVEL (default: `WARNING`): log level of Timestep and DBOS"""
    nats: NatsSettings
    prefix: str
    """TIMESTEP_SUBJECT_PREFIX (default: `timestep`): first token(s) of every subject"""
    max_request_bytes: int
    """TIMESTEP_MAX_REQUEST_BYTES (default: `262144`): larger run requests are rejected and dead-lettered"""
    events_max_age_seconds: float
    """TIMESTEP_EVENTS_MAX_AGE (default: `604800`): seconds the events stream keeps events (7 days)"""
    duplicate_window_seconds: float
    """TIMESTEP_DUPLICATE_WINDOW (default: `120`): seconds JetStream drops a repeated `Nats-Msg-Id`"""
    agent_concurrency: int
    """TIMESTEP_AGENT_CONCURRENCY (default: `64`): direct runs one agent actor executes at once"""
    db_pool_size: int = 20
    """TIMESTEP_DB_POOL_SIZE (default: `20`, at least `2`): PostgreSQL connections a process may hold for runs (a quarter,
    at least one, for Timestep's own tables, the rest for DBOS); processes × (this + 2), the two being the
    process's lease on its executor id and DBOS's notification listener, must stay under the server's `max_connections`"""
    ack_wait_seconds: float = 30.0
    """TIMESTEP_ACK_WAIT (default: `30`): seconds before a message an actor took but did not acknowledge (it crashed)
    goes to another; handlers acknowledge after a short durable hand-off"""
    stream_replicas: int = 1
    """TIMESTEP_STREAM_REPLICAS (default: `1`): JetStream replicas of every stream; `3` on a 3-node cluster (see
    `deploy/`)"""
    http_host: str = "127.0.0.1"
    """TIMESTEP_HTTP_HOST (default: `127.0.0.1`): address of the health and metrics endpoint (`0.0.0.0` in a container)"""
    http_port: int | None = None
    """TIMESTEP_HTTP_PORT (default: unset): port of `/healthz`, `/readyz` and `/metrics` (and the console); unset: no
    endpoint (a free port with the console), `0`: a free port (`timestep up --http-port N` overrides it)"""
    console: bool = False
    """TIMESTEP_CONSOLE (default: `0`): `1`: `timestep up` also serves the web console (as `--console`)"""
    console_login: bool = False
    """TIMESTEP_CONSOLE_LOGIN (default: `0`): `1`: the console asks for a NATS user and password on 127.0.0.1 too
    (always on any other address)"""
    log_format: str = "human"
    """TIMESTEP_LOG_FORMAT (default: `human`): `json`: every log line of a `timestep up` process is one JSON object
    (see Operating it)"""
    sqlite_wal: bool = True
    """TIMESTEP_SQLITE_WAL (default: `1`): SQLite in write-ahead-log mode (stored in the file); `0` keeps the rollback
    journal, for a file system without shared memory (NFS)"""
    stop_grace_seconds: float = 8.0
    """TIMESTEP_STOP_GRACE_SECONDS (default: `8`): on SIGTERM or SIGINT, how long `timestep up` lets the steps under
    way finish before it stops its runs at a step boundary and exits, without waiting for a tool still running (a
    second signal stops at once; see Reliability for `docker stop` and Kubernetes)"""
    model_retry: ModelRetrySettings = field(default_factory=ModelRetrySettings)
    """TIMESTEP_MODEL_*: how failed model calls are retried (read here too, so a bad value stops start-up)."""
    openai_api: str = "responses"
    """TIMESTEP_OPENAI_API (default: `responses`): `chat_completions`: model names use the Chat Completions API
    (Ollama, vLLM, LM Studio)"""
    workers: int | None = None
    """TIMESTEP_WORKERS (default: one per core): agent processes `timestep up` runs, itself included (as `--workers
    N`); `1`: one process (see The actor system)"""
    on_agent_change: str = "continue"
    """TIMESTEP_ON_AGENT_CHANGE (default: `continue`): what a run does when it goes on under another definition of its
    agent than it started with: `continue` (an `agent_changed` event says what changed) or `fail`
    (`AgentChangedError`); `register_agent(..., on_change=)` overrides it per agent (see Upgrades while runs wait)"""

    @property
    def db_pools(self) -> tuple[int, int]:
        """`db_pool_size` split in two: (DBOS's pool, the pool of Timestep's own tables)."""
        own = max(1, self.db_pool_size // 4)
        return self.db_pool_size - own, own

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            home=Path(os.environ.get("TIMESTEP_HOME") or ".timestep").expanduser().absolute(),
            database_url=os.environ.get("PG_CONNECTION_URI") or None,
            executor_id=os.environ.get("TIMESTEP_EXECUTOR_ID") or "local",
            application_version=os.environ.get("TIMESTEP_APP_VERSION") or "timestep-1",
            max_threads=_int("TIMESTEP_MAX_THREADS", 64),
            queue_poll_seconds=_float("TIMESTEP_QUEUE_POLL_SECONDS", 0.05),
            tracing=_flag("TIMESTEP_TRACING", False),
            openai_api_key_set=openai_api_key_set(),
            log_level=(os.environ.get("TIMESTEP_LOG_LEVEL") or "WARNING").upper(),
            nats=NatsSettings.from_env(),
            prefix=_prefix(),
            max_request_bytes=_int("TIMESTEP_MAX_REQUEST_BYTES", 256 * 1024),
            events_max_age_seconds=_float("TIMESTEP_EVENTS_MAX_AGE", 7 * 24 * 3600.0),
            duplicate_window_seconds=_float("TIMESTEP_DUPLICATE_WINDOW", 120.0),
            agent_concurrency=_int("TIMESTEP_AGENT_CONCURRENCY", 64),
            db_pool_size=_pool_size(),
            ack_wait_seconds=_float("TIMESTEP_ACK_WAIT", 30.0),
            stream_replicas=_int("TIMESTEP_STREAM_REPLICAS", 1),
            http_host=os.environ.get("TIMESTEP_HTTP_HOST") or "127.0.0.1",
            http_port=_port("TIMESTEP_HTTP_PORT"),
            console=_flag("TIMESTEP_CONSOLE", False),
            console_login=_flag("TIMESTEP_CONSOLE_LOGIN", False),
            log_format=_log_format(),
            sqlite_wal=_flag("TIMESTEP_SQLITE_WAL", True),
            stop_grace_seconds=_float("TIMESTEP_STOP_GRACE_SECONDS", 8.0),
            model_retry=ModelRetrySettings.from_env(),
            openai_api=openai_api(),
            on_agent_change=_on_agent_change(),
            workers=_int("TIMESTEP_WORKERS", 1) if os.environ.get("TIMESTEP_WORKERS") else None,
        )


# --- the process's settings ------------------------------------------------------------------------

_current: Settings | None = None
_current_lock = threading.Lock()


def current() -> Settings:
    """The process's settings: those its edge chose (`use`: `timestep up`, a `System` given settings),
    else the environment's, read once (a program using the library is its own edge). Everything below
    the edge reads its settings here, never the environment."""
    global _current
    with _current_lock:
        if _current is None:
            _current = Settings.from_env()
        return _current


def use(settings: Settings | None) -> None:
    """Make `settings` the process's (None: read the environment again on the next `current()`)."""
    global _current
    with _current_lock:
        _current = settings
