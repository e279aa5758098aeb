"""The DBOS boundary's start-up check: every private DBOS name Timestep relies on is looked up before
launch, and one that a DBOS release moved is named, with what it is for and what to install."""

from __future__ import annotations

import asyncio
import threading
import time

import dbos._queue
import dbos._sys_db
import pytest

from timestep.durable.engine import hooks
from timestep.errors import ConfigurationError


def test_the_installed_dbos_has_every_hook_and_the_log_wording() -> None:
    assert hooks.missing() == []
    assert hooks.reworded() == []
    hooks.check()


def test_a_hook_a_dbos_release_removed_is_named_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    # What a DBOS release that renamed these would look like to Timestep.
    monkeypatch.delattr(dbos._queue, "queue_worker_thread")
    monkeypatch.delattr(dbos._sys_db.SystemDatabase, "_is_latest_version")
    with pytest.raises(ConfigurationError) as refused:
        hooks.check()
    text = str(refused.value)
    assert "dbos._queue.queue_worker_thread (waking a queue's worker when this process enqueues)" in text
    assert "dbos._sys_db.SystemDatabase._is_latest_version (caching the application-version check of each poll)" in text
    assert f"written for DBOS {hooks.TESTED_DBOS}" in text and "pip install 'dbos~=3.4.0'" in text


def test_an_attribute_set_in_a_constructor_is_found_and_one_that_is_not_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Queue._worker_concurrency exists only on instances: found in the constructor's source."""
    assert hooks._attribute(dbos._queue.Queue, "_worker_concurrency") is dbos._queue.Queue
    with pytest.raises(AttributeError):
        hooks._attribute(dbos._queue.Queue, "_no_such_field")


def test_a_log_line_dbos_reworded_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hooks, "WORDING", hooks.WORDING + (("dbos._core", "words DBOS never wrote", "a test"),))
    assert hooks.reworded() == ["dbos._core: 'words DBOS never wrote' (a test)"]


async def test_an_idle_queue_is_checked_less_and_less_often(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """While no run waits on a queue anywhere, its worker's checks back off from the polling interval to
    IDLE_POLL_SECONDS: over 2 s at a 0.05 s interval, at most a dozen checks, not forty (an idle
    `timestep up` spent 4.2% of a core checking every 0.05 s, 1.5% with the back-off)."""
    checks: list[float] = []
    real = hooks._queued_anywhere

    def counted(queue: str, stored_policy: bool = False) -> bool:
        if queue == "no-run-waits-here":  # the launched engine's own queues check too
            checks.append(time.monotonic())
        return real(queue, stored_policy)

    monkeypatch.setattr(hooks, "_queued_anywhere", counted)
    stop = threading.Event()
    waker = hooks._Waker(stop, "no-run-waits-here")
    waiting = threading.Thread(target=waker.wait, args=(0.05,))
    waiting.start()
    await asyncio.sleep(2.0)
    stop.set()
    waiting.join(5)
    assert not waiting.is_alive()
    assert 1 <= len(checks) <= 12, len(checks)


def _step_calls(sys_db, check, record) -> tuple[list[str], list[tuple]]:
    """One workflow row, then every case of the step check and record: what each returned or raised,
    and the step rows they left."""
    import uuid

    import sqlalchemy as sa

    ws, oo = sys_db.tables.workflow_status, sys_db.tables.operation_outputs
    wid = "steps-" + uuid.uuid4().hex
    with sys_db.engine.begin() as c:
        c.execute(sa.insert(ws).values(workflow_uuid=wid, status="PENDING", name="w", owner_xid="X", created_at=0, updated_at=0))
    base = {"workflow_uuid": wid, "function_name": "s", "output": None, "error": None, "serialization": "timestep_zpickle",
            "started_at_epoch_ms": 5, "child_workflow_id": None}

    def outcome(fn, *args, **kwargs) -> str:
        try:
            return f"ok {fn(*args, **kwargs)!r}".replace(wid, "WID")
        except BaseException as exc:  # DBOS's errors of ownership are BaseExceptions
            return f"raised {type(exc).__name__}: {exc}".replace(wid, "WID")

    seen = [
        outcome(check, wid, 1, "s"),  # nothing recorded yet
        outcome(record, {**base, "function_id": 1, "output": "OUT"}, owner_xid="X", completed_at_epoch_ms=10),
        outcome(check, wid, 1, "s"),  # a replay finds it
        outcome(check, wid, 1, "other"),  # another step's name at that number
        outcome(record, {**base, "function_id": 1, "output": "OUT"}, owner_xid="X", completed_at_epoch_ms=10),  # the same retried
        outcome(record, {**base, "function_id": 1, "output": "OUT2"}, owner_xid="X", completed_at_epoch_ms=11),  # nondeterminism
        outcome(record, {**base, "function_id": 2, "error": "ERR"}, owner_xid="Y"),  # not the owner
        outcome(record, {**base, "function_id": 2, "error": "ERR", "child_workflow_id": "child-1"}, owner_xid="X", completed_at_epoch_ms=12),
        outcome(check, wid, 2, "s"),
        outcome(record, {**base, "function_id": 3, "output": "A", "error": "B"}, owner_xid="X"),  # both set
        outcome(record, {**base, "function_id": 4, "output": "no owner"}, completed_at_epoch_ms=13),  # outside a workflow
    ]
    with sys_db.engine.begin() as c:
        c.execute(sa.update(ws).where(ws.c.workflow_uuid == wid).values(status="CANCELLED"))
    seen += [outcome(check, wid, 1, "s"), outcome(check, "missing-" + wid, 1, "s")]
    columns = (oo.c.function_id, oo.c.function_name, oo.c.output, oo.c.error, oo.c.child_workflow_id, oo.c.started_at_epoch_ms,
               oo.c.completed_at_epoch_ms, oo.c.serialization, oo.c.application_name, oo.c.retention_timestamp.isnot(None))
    with sys_db.engine.connect() as c:
        rows = [tuple(r) for r in c.execute(sa.select(*columns).where(oo.c.workflow_uuid == wid).order_by(oo.c.function_id))]
    return seen, rows


async def test_steps_checked_and_recorded_with_statements_compiled_once_do_what_dbos_does(db: str) -> None:
    """The launch puts the step check and record with statements compiled once in place of DBOS's own;
    given every case DBOS's own handle (a replay, another step's name, a retry, nondeterminism, another
    owner, a cancelled or missing workflow), they return, raise and store the same."""
    sys_db = hooks.system_database()
    assert {"check_operation_execution", "record_operation_result"} <= vars(sys_db).keys(), "not in place on the installed DBOS"
    own = type(sys_db)
    theirs = await asyncio.to_thread(_step_calls, sys_db, own.check_operation_execution.__get__(sys_db), own.record_operation_result.__get__(sys_db))
    ours = await asyncio.to_thread(_step_calls, sys_db, sys_db.check_operation_execution, sys_db.record_operation_result)
    assert ours == theirs
    assert sum(s.startswith("raised") for s in ours[0]) == 6 and len(ours[1]) == 3


def test_dbos_code_that_changed_keeps_dbos_own_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """A DBOS release whose step check or record differs from the code the statements copy keeps DBOS's own."""
    from dbos._sys_db_sqlite import SQLiteSystemDatabase

    class Changed(SQLiteSystemDatabase):
        def check_operation_execution(self, *args, **kwargs):  # a subclass (another backend) with its own
            return None

    fake = Changed.__new__(Changed)
    assert hooks._why_steps_stay_unprepared(fake) == "Changed overrides check_operation_execution"
    plain = SQLiteSystemDatabase.__new__(SQLiteSystemDatabase)
    assert hooks._why_steps_stay_unprepared(plain) is None  # the installed DBOS: its code is the code copied
    monkeypatch.setattr(hooks, "STEP_SOURCES_DIGEST", "0" * 64)
    assert hooks._why_steps_stay_unprepared(plain) == "DBOS's step check or step record differs from the code these statements copy"
