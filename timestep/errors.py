"""One exception hierarchy. Every message names the field at fault and the fix."""

from __future__ import annotations

from subjects.events import ErrorInfo


def _rebuild(cls: type, args: tuple, state: dict) -> TimestepError:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class TimestepError(Exception):
    """Base class of every error Timestep raises on purpose.

    Every one survives pickling with its message and attributes: DBOS stores a run's error
    pickled and raises it again where the run's outcome is read (another process, a recovery).
    Subclasses take other arguments than the message, so the copy is rebuilt from the message and
    the attributes, not by calling `__init__` again."""

    def __reduce__(self) -> tuple:
        return (_rebuild, (type(self), self.args, self.__dict__))


def error_info(exc: BaseException, kind: str | None = None) -> ErrorInfo:
    """The contract's ErrorInfo for an error: its class name (or `kind`), its message, and the
    field at fault when the error names one (so no reader splits the message to find it)."""
    field = getattr(exc, "field", None)
    return ErrorInfo(type=kind or type(exc).__name__, message=str(exc), field=field if isinstance(field, str) else None)


class ValidationError(TimestepError, ValueError):
    """Bad input, found before anything was written.

    >>> raise ValidationError("workflow_id", "contains '.'", "use letters, digits, '_' and '-'")
    """

    def __init__(self, field: str, problem: str, fix: str = "") -> None:
        self.field = field
        self.problem = problem
        self.fix = fix
        super().__init__(f"{field}: {self.reason}")

    @property
    def reason(self) -> str:
        """The message without the field: the problem, and the fix when there is one."""
        return f"{self.problem}; {self.fix}" if self.fix else self.problem


class UnknownAgentError(ValidationError):
    """No agent is registered under this name in this process."""

    def __init__(self, name: str, known: list[str], waited: float | None = None) -> None:
        names = ", ".join(sorted(known)) or "none"
        if waited is None:
            problem = f"no agent named {name!r} is registered (registered: {names})"
            fix = "call timestep.register_agent(agent) at start-up, before ensure_dbos_launched()"
        else:  # a run that was accepted for it
            problem = (
                f"no agent named {name!r} is registered in the process that executes the run, after waiting "
                f"{waited:g} s (registered: {names}); it was removed or renamed since the run was accepted"
            )
            fix = "register it again (timestep.register_agent, or the module in `timestep up --agents`) and submit the run again"
        super().__init__("agent", problem, fix)
        self.name = name


class ConfigurationError(TimestepError):
    """Timestep was configured twice in incompatible ways, or not at all."""


class DuplicateRunError(TimestepError):
    """A queued run with the same deduplication id is still queued or running."""

    field = "deduplication_id"

    def __init__(self, deduplication_id: str, queue: str) -> None:
        self.problem = (
            f"{deduplication_id!r} is already queued or running on queue {queue!r}; "
            "wait for it, or pass on_duplicate='return' to get its handle instead"
        )
        super().__init__(f"{self.field}: {self.problem}")
        self.deduplication_id = deduplication_id
        self.queue = queue


class RunCancelledError(TimestepError):
    """The run was cancelled before it finished."""

    def __init__(self, workflow_id: str, message: str | None = None) -> None:
        super().__init__(message or f"run {workflow_id!r} was cancelled")
        self.workflow_id = workflow_id


class RunTimeoutError(RunCancelledError):
    """The run exceeded its `timeout_seconds` and was cancelled."""

    def __init__(self, workflow_id: str, timeout_seconds: float) -> None:
        super().__init__(
            workflow_id,
            f"run {workflow_id!r} exceeded timeout_seconds={timeout_seconds:g} and was cancelled",
        )
        self.timeout_seconds = timeout_seconds


class PermissionDeniedError(TimestepError):
    """The NATS server refused this connection's user a publish (a JetStream API call is one too)
    or a subscription. Retrying cannot help until the user's permissions change."""

    def __init__(self, subject: str, user: str | None, what: str = "", operation: str = "publish") -> None:
        who = f"NATS user {user!r}" if user else "this connection's NATS user"
        purpose = f" ({what})" if what else ""
        if operation == "publish" and subject.startswith("_INBOX."):
            # Replies go to the requester's inbox: the permission is `allow_responses`, not a subject.
            fix = "let this user answer requests (allow_responses: true)"
        else:
            fix = f"give this user {operation} permission on {subject}"
        super().__init__(
            f"{who} may not {operation} to {subject}{purpose}: the server refused it; "
            f"{fix} (see deploy/nats/permissions.conf)"
        )
        self.subject = subject
        self.user = user
        self.operation = operation


class NatsUnreachableError(TimestepError, ConnectionError):
    """Nothing listens at the NATS URL: every connection attempt was refused."""

    def __init__(self, url: str, message: str) -> None:
        super().__init__(message)
        self.url = url


class ModelCallError(TimestepError):
    """A model call failed for good: the provider refused it (a 4xx other than 408, 409 or 429),
    or it kept failing until the retries ran out. Names the provider's error class and HTTP status.
    An openai error is raised as an instance of its own class too: `except openai.RateLimitError`
    catches it, with `.status_code` and `.response.headers` (the retry headers the provider sent)."""

    def __init__(self, provider_error: str, status_code: int | None, message: str, attempts: int = 1) -> None:
        Exception.__init__(self, self.describe(provider_error, status_code, message, attempts))
        self.provider_error = provider_error
        self.status_code = status_code
        self.provider_message = message
        self.attempts = attempts

    @staticmethod
    def describe(provider_error: str, status_code: int | None, message: str, attempts: int) -> str:
        status = f"HTTP {status_code}" if status_code is not None else "no HTTP status"
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        return f"{provider_error} ({status}){tries}: {message}"


class BudgetExceeded(TimestepError):
    """A run used more model tokens than its `max_tokens`: it stopped after the model call that
    crossed the budget, and no later call ran. `used` and `max_tokens` say by how much."""

    def __init__(self, used: int, max_tokens: int) -> None:
        self.used = used
        self.max_tokens = max_tokens
        super().__init__(
            f"the run used {used} model tokens, over its budget of max_tokens={max_tokens}; "
            "it stopped after the model call that crossed it (raise max_tokens, or pass none, to let such runs finish)"
        )


class SessionBusyError(TimestepError):
    """A run with `session_policy="reject"` arrived while another run of its session was unfinished
    (running, queued behind another, or waiting for approval)."""

    field = "session_id"

    def __init__(self, session_id: str, running_run_id: str) -> None:
        self.problem = (
            f"session {session_id!r} has an unfinished run, {running_run_id!r}; wait for it to end "
            "(or approve or reject what it waits on), or send with session_policy 'enqueue' to run after it "
            "or 'interrupt' to cancel it"
        )
        super().__init__(f"{self.field}: {self.problem}")
        self.session_id = session_id
        self.running_run_id = running_run_id


class AgentChangedError(TimestepError):
    """A run continued under another definition of its agent than the one it started with, and its
    agent is registered with `on_change="fail"` (or TIMESTEP_ON_AGENT_CHANGE=fail)."""

    def __init__(self, agent: str, changes: list[str]) -> None:
        super().__init__(
            f"agent: {agent!r} changed since this run started ({'; '.join(changes)}); the run stops here because the "
            "agent is registered with on_change='fail'; register it with on_change='continue' to let such runs go on"
        )
        self.agent = agent
        self.changes = list(changes)
