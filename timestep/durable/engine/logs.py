"""DBOS's log lines, shortened: a cancelled or failed run is one line, not a traceback.

The filters match DBOS's wording (`hooks.WORDING` lists it, and `hooks.check()` warns when a DBOS
release changes it): a line that no longer matches passes as DBOS wrote it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from dbos import error as dbos_error

from timestep.durable.engine import hooks
from timestep.errors import TimestepError

#: Raised by `get_result()` of a workflow that was cancelled (by request or timeout).
WorkflowCancelled = (dbos_error.DBOSAwaitedWorkflowCancelledError, dbos_error.DBOSWorkflowCancelledError)


class _CancellationInOneLine(logging.Filter):
    """DBOS logs a run cancelled by request or by its timeout as an error, with a traceback of
    about 25 lines and a warning before it; a cancel is no error: one line at INFO says it.
    Every other record, errors with their tracebacks included, passes as it is."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, WorkflowCancelled):
            workflow_id = getattr(exc, "workflow_id", None) or getattr(record, "operationUUID", None) or "?"
            record.msg, record.args = "workflow %s was cancelled (by request or by its timeout)", (workflow_id,)
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info, record.exc_text = None, None
        elif record.levelno == logging.WARNING and "was cancelled during execution" in str(record.msg):
            return False  # the line above follows it
        return True


class _FailedRunInOneLine(logging.Filter):
    """DBOS logs every run that ends in an error with its traceback (about 70 lines for a
    provider's 400, at ERROR whatever the level): one line names the run and the error; the
    traceback only when DBOS logs at DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or isinstance(exc, WorkflowCancelled) or not str(record.msg).startswith("Exception encountered in"):
            return True
        run_id = getattr(record, "operationUUID", None) or hooks.context_workflow_id() or "?"
        detail = str(exc).strip() or "(no message)"
        if not detail.startswith(type(exc).__name__):
            detail = f"{type(exc).__name__}: {detail}"
        if isinstance(exc, TimestepError):  # a failure Timestep names itself (a provider's error, a budget, a timeout)
            record.msg, record.args = "run %s failed: %s", (run_id, detail)
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        else:
            record.msg, record.args = "run %s failed: %s (TIMESTEP_LOG_LEVEL=DEBUG logs its traceback)", (run_id, detail)
        if not logging.getLogger("dbos").isEnabledFor(logging.DEBUG):
            record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


logging.getLogger("dbos").addFilter(_CancellationInOneLine())


def install() -> None:
    """Shorten DBOS's lines from now on (idempotent)."""
    dbos_log = logging.getLogger("dbos")
    for kind in (_CancellationInOneLine, _FailedRunInOneLine):
        if not any(isinstance(f, kind) for f in dbos_log.filters):
            dbos_log.addFilter(kind())


class _DropCancelNotices(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Asyncio task cancelled for workflow or step")


@contextlib.contextmanager
def quiet_cancellation() -> Iterator[None]:
    """DBOS logs a warning per cancelled workflow and step; a stop says it once itself."""
    dbos_log = logging.getLogger("dbos")
    quiet = _DropCancelNotices()
    dbos_log.addFilter(quiet)
    try:
        yield
    finally:
        dbos_log.removeFilter(quiet)
